//! Caps on everything a processor hands the host or makes it hold. A processor that exceeds one
//! fails the item it is working on with `cap_exceeded` and a message naming the cap; the host's
//! memory and the framework tables stay bounded whatever the guest does. Every cap has a default
//! and can be changed in the manifest's `[limits]` (README, "The sandbox").

/// The caps enforced on one processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Bytes of SQL text of one statement.
    pub sql_bytes: usize,
    /// Parameters of one statement.
    pub params: usize,
    /// Bytes of one statement's parameters together.
    pub param_bytes: usize,
    /// Rows one `query` may return.
    pub query_rows: usize,
    /// Bytes the server may send in answer to the processor's statements, per item (or hook
    /// call): rows times their size, and the protocol around them.
    pub result_bytes: usize,
    /// Log lines per item or hook call, from every source (`context.log`, stdout, stderr).
    pub log_lines: usize,
    /// Bytes of log messages and details together, per item or hook call.
    pub log_bytes: usize,
    /// Bytes of one log message.
    pub log_message_bytes: usize,
    /// Bytes of one log line's JSON details.
    pub log_details_bytes: usize,
    /// Bytes of stdout and stderr kept per item; the rest is dropped with a note.
    pub output_bytes: usize,
    /// Bytes of an outcome's target table, target id and processed data together.
    pub outcome_bytes: usize,
    /// Bytes of an error message kept; a longer one is cut, saying so.
    pub error_bytes: usize,
    /// Keys of the batch metadata.
    pub metadata_keys: usize,
    /// Bytes of the batch metadata (keys and values).
    pub metadata_bytes: usize,
    /// Bytes of one metadata value.
    pub metadata_value_bytes: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            sql_bytes: 64 << 10,
            params: 1_000,
            param_bytes: 16 << 20,
            query_rows: 10_000,
            result_bytes: 8 << 20,
            log_lines: 1_000,
            log_bytes: 2 << 20,
            log_message_bytes: 8 << 10,
            log_details_bytes: 64 << 10,
            output_bytes: 64 << 10,
            outcome_bytes: 1 << 20,
            error_bytes: 8 << 10,
            metadata_keys: 1_000,
            metadata_bytes: 1 << 20,
            metadata_value_bytes: 64 << 10,
        }
    }
}

/// Bytes of an error code kept (codes are identifiers such as `invalid_email`).
pub const ERROR_CODE_BYTES: usize = 64;
/// Bytes of an error's field name kept.
pub const ERROR_FIELD_BYTES: usize = 256;
/// Bytes of one metadata key.
pub const METADATA_KEY_BYTES: usize = 256;

impl Caps {
    /// An error message, cut to [`error_bytes`](Self::error_bytes) with a note saying how long
    /// it was.
    pub(crate) fn message<'a>(&self, message: &'a str) -> std::borrow::Cow<'a, str> {
        if message.len() <= self.error_bytes {
            return std::borrow::Cow::Borrowed(message);
        }
        let mut cut = clip(message, self.error_bytes).to_owned();
        cut.push_str(&format!("… (cut: the message had {} bytes)", message.len()));
        std::borrow::Cow::Owned(cut)
    }
}

/// The longest prefix of `text` of at most `bytes` bytes that ends on a character boundary.
pub(crate) fn clip(text: &str, bytes: usize) -> &str {
    if text.len() <= bytes {
        return text;
    }
    let end = (0..=bytes).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    &text[..end]
}

/// A cap a processor exceeded. Raised as a trap from inside the host call, so the guest cannot
/// catch it and carry on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("processor exceeded the cap on {what} ({limit}); the item fails")]
pub struct CapExceeded {
    /// What was capped, e.g. "log lines per item".
    pub what: &'static str,
    /// The cap, with its unit, e.g. "1000 lines".
    pub limit: String,
}

impl CapExceeded {
    pub(crate) fn bytes(what: &'static str, limit: usize) -> Self {
        CapExceeded { what, limit: format!("{limit} bytes") }
    }

    pub(crate) fn count(what: &'static str, limit: usize, unit: &str) -> Self {
        CapExceeded { what, limit: format!("{limit} {unit}") }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Caps, clip};

    #[test]
    fn long_messages_are_cut_on_a_character_boundary_saying_so() {
        let caps = Caps { error_bytes: 5, ..Caps::default() };
        assert_eq!(caps.message("short"), "short");
        assert_eq!(caps.message("ééééé"), "éé… (cut: the message had 10 bytes)");
        assert_eq!(clip("abc", 0), "");
    }
}
