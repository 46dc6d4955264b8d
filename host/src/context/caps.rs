//! Caps on everything a processor hands the host or pulls from it. A processor that exceeds one
//! fails the item it is working on with a message naming the cap; the host's memory and the
//! framework tables stay bounded whatever the guest does.

/// The caps enforced on one processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Bytes of one log message.
    pub log_message_bytes: usize,
    /// Bytes of one log line's JSON details.
    pub log_details_bytes: usize,
    /// Log lines (including captured output lines) per item or hook call.
    pub log_lines: usize,
    /// Bytes of an outcome's target table, target id and processed data together.
    pub outcome_bytes: usize,
    /// Rows one `query` may return.
    pub query_rows: usize,
    /// Parameters of one statement.
    pub params: usize,
    /// Bytes of SQL text of one statement.
    pub sql_bytes: usize,
    /// Bytes of stdout and stderr kept per item; the rest is dropped with a note.
    pub output_bytes: usize,
    /// Bytes of one metadata value.
    pub metadata_bytes: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            log_message_bytes: 8 << 10,
            log_details_bytes: 64 << 10,
            log_lines: 1_000,
            outcome_bytes: 1 << 20,
            query_rows: 10_000,
            params: 1_000,
            sql_bytes: 256 << 10,
            output_bytes: 64 << 10,
            metadata_bytes: 64 << 10,
        }
    }
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
