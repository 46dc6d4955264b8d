//! Item and batch logs written by a processor (and its stdout/stderr), buffered in memory
//! during a call so that they survive the rollback of a failed item: the host writes them in the
//! same transaction as the item's final status.

use chrono::{DateTime, Utc};

use super::caps::{CapExceeded, Caps};
use super::jsonb;
use super::sql::ContextTrap;
use super::wasi::{Drained, Stream};
use crate::runtime::bindings::LogLevel as WitLevel;
use crate::store::{pg_json, pg_text};

/// Severity of a log line, as stored in `import_logs.log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Unexpected, not failing.
    Warning,
    /// A failure.
    Error,
}

impl LogLevel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }

    /// Parses a stored or user-typed name (`warn` is accepted for `warning`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warning" | "warn" => Some(LogLevel::Warning),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

impl From<WitLevel> for LogLevel {
    fn from(level: WitLevel) -> Self {
        match level {
            WitLevel::Debug => LogLevel::Debug,
            WitLevel::Info => LogLevel::Info,
            WitLevel::Warning => LogLevel::Warning,
            WitLevel::Error => LogLevel::Error,
        }
    }
}

/// Who wrote a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The processor, through `context.log`.
    Processor,
    /// The processor's stdout.
    Stdout,
    /// The processor's stderr.
    Stderr,
    /// The host, about the item or batch (failures, truncation, hook errors).
    Host,
}

impl LogSource {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Processor => "processor",
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
            LogSource::Host => "host",
        }
    }
}

/// One buffered log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Severity.
    pub level: LogLevel,
    /// Who wrote it.
    pub source: LogSource,
    /// The line.
    pub message: String,
    /// Structured details, as JSON text.
    pub details: Option<String>,
    /// When it was written.
    pub at: DateTime<Utc>,
}

/// The lines of the current item or hook call.
#[derive(Debug, Default)]
pub struct LogBuffer {
    entries: Vec<LogEntry>,
    /// Lines from the processor, by any source.
    lines: usize,
    /// Bytes of the processor's messages and details.
    bytes: usize,
    output_bytes: usize,
    output_truncated: bool,
}

impl LogBuffer {
    /// Starts a new item: forgets the counts of the previous one.
    pub(crate) fn reset(&mut self) {
        *self = LogBuffer::default();
    }

    /// A line from `context.log`. Details that are not JSON at all are kept as a JSON string;
    /// JSON that PostgreSQL cannot store (a lone surrogate, a number out of `numeric`'s range,
    /// nesting too deep) fails the item with `invalid_log`.
    pub(crate) fn push_guest(
        &mut self,
        caps: &Caps,
        level: LogLevel,
        message: String,
        details: Option<String>,
    ) -> Result<(), ContextTrap> {
        if message.len() > caps.log_message_bytes {
            return Err(CapExceeded::bytes("log message size", caps.log_message_bytes).into());
        }
        if details.as_ref().is_some_and(|d| d.len() > caps.log_details_bytes) {
            return Err(CapExceeded::bytes("log details size", caps.log_details_bytes).into());
        }
        self.lines += 1;
        if self.lines > caps.log_lines {
            return Err(CapExceeded::count("log lines per item", caps.log_lines, "lines").into());
        }
        self.bytes += message.len() + details.as_ref().map_or(0, String::len);
        if self.bytes > caps.log_bytes {
            return Err(CapExceeded::bytes("log bytes per item", caps.log_bytes).into());
        }
        let details = match details.as_deref().map(jsonb::check) {
            None => None,
            Some(Ok(checked)) => Some(checked.into_owned()),
            Some(Err(refused)) if refused.syntax => {
                details.as_deref().map(|d| serde_json::Value::String(pg_text(d).into_owned()).to_string())
            }
            Some(Err(refused)) => {
                return Err(ContextTrap::InvalidLog(format!(
                    "processor wrote log details PostgreSQL cannot store: {refused}"
                )));
            }
        };
        let message = pg_text(&message).into_owned();
        self.entries.push(LogEntry { level, source: LogSource::Processor, message, details, at: Utc::now() });
        Ok(())
    }

    /// Turns captured stdout/stderr into lines, within the per-item output budget and the
    /// item's log lines (which output shares with `context.log`).
    pub(crate) fn push_output(&mut self, caps: &Caps, drained: Drained) {
        let mut dropped = drained.dropped;
        for (stream, bytes) in drained.chunks {
            let room = if self.lines < caps.log_lines {
                caps.output_bytes.saturating_sub(self.output_bytes)
            } else {
                0
            };
            let kept = bytes.len().min(room);
            dropped += bytes.len() - kept;
            self.output_bytes += kept;
            let text = String::from_utf8_lossy(&bytes[..kept]);
            let text = text.trim_end_matches('\n');
            if text.is_empty() {
                continue;
            }
            let (level, source) = match stream {
                Stream::Stdout => (LogLevel::Info, LogSource::Stdout),
                Stream::Stderr => (LogLevel::Warning, LogSource::Stderr),
            };
            self.lines += 1;
            self.entries.push(LogEntry {
                level,
                source,
                message: pg_text(text).into_owned(),
                details: None,
                at: Utc::now(),
            });
        }
        if dropped > 0 && !self.output_truncated {
            self.output_truncated = true;
            self.push_host(
                LogLevel::Warning,
                format!(
                    "processor output truncated: stdout/stderr is kept up to {} bytes and {} log lines per item",
                    caps.output_bytes, caps.log_lines
                ),
                None,
            );
        }
    }

    /// A line written by the host about the item or batch. It may quote the processor (an error
    /// message), so it gets the same NUL scrubbing.
    pub(crate) fn push_host(&mut self, level: LogLevel, message: String, details: Option<serde_json::Value>) {
        self.entries.push(LogEntry {
            level,
            source: LogSource::Host,
            message: pg_text(&message).into_owned(),
            details: details.map(|d| pg_json(&d.to_string()).into_owned()),
            at: Utc::now(),
        });
    }

    /// What the processor said on stderr before it trapped, sorted by language; an uncaught
    /// Python or JavaScript exception also has its stderr line cleaned of the language
    /// runtime's own dying words (a Rust panic inside componentize-py, an abort), so the log
    /// shows the guest's traceback and nothing else.
    pub(crate) fn guest_failure(&mut self) -> Option<GuestFailure> {
        let last = self.entries.iter_mut().rev().find(|e| e.source == LogSource::Stderr)?;
        let failure = classify_stderr(&last.message)?;
        if let GuestFailure::Exception(_) = failure {
            let kept: Vec<&str> = last.message.lines().filter(|l| !is_runtime_noise(l.trim())).collect();
            last.message = kept.join("\n").trim_end().to_owned();
            last.level = LogLevel::Error;
        }
        Some(failure)
    }

    /// Takes the buffered lines.
    pub(crate) fn take(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.entries)
    }

    /// Puts back lines taken with [`take`](Self::take) whose write failed, for another try.
    pub(crate) fn restore(&mut self, entries: Vec<LogEntry>) {
        self.entries = entries;
    }

    /// The buffered lines.
    pub fn entries(&self) -> &[LogEntry] {
        &self.entries
    }
}

/// Why a guest trapped, as its stderr tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GuestFailure {
    /// A Rust processor panicked: its message and where (`src/lib.rs:12:5`).
    Panic {
        /// The panic message.
        message: Option<String>,
        /// The file, line and column.
        location: Option<String>,
    },
    /// An uncaught Python or JavaScript exception: `Class: message`.
    Exception(String),
    /// Anything else: its informative line.
    Other(String),
}

/// Lines a language runtime prints when it gives up on a guest's exception.
fn is_runtime_noise(line: &str) -> bool {
    (line.starts_with("thread '") && line.contains(" panicked at "))
        || line == "Python function threw an unexpected exception"
        || line.starts_with("note: run with `RUST_BACKTRACE")
        || line.starts_with("Redirecting call to abort()")
}

fn classify_stderr(text: &str) -> Option<GuestFailure> {
    if let Some(traceback) = text.find("Traceback (most recent call last)") {
        // The exception is the last unindented line of the traceback (the last one of a chain).
        let exception = text[traceback..]
            .lines()
            .skip(1)
            .take_while(|l| !is_runtime_noise(l.trim()))
            .filter(|l| !l.trim().is_empty() && !l.starts_with(' ') && !l.starts_with('\t'))
            .filter(|l| !l.starts_with("Traceback (") && !l.starts_with("During handling of"))
            .filter(|l| !l.starts_with("The above exception was the direct cause"))
            .last();
        if let Some(exception) = exception {
            return Some(GuestFailure::Exception(clip(exception.trim().to_owned())));
        }
    }
    // componentize-js lowers a thrown error it cannot turn into the hook's result with
    // "… (received `TypeError: row is null`)".
    if let Some((_, rest)) = text.split_once("(received `")
        && let Some((thrown, _)) = rest.split_once("`)")
    {
        return Some(GuestFailure::Exception(clip(thrown.trim().to_owned())));
    }
    let javascript =
        text.lines().any(|l| l.trim() == "Stack:" || l.trim().starts_with("Redirecting call to abort()"));
    let (message, location) = dying_words(text);
    if location.is_some() && !javascript {
        return Some(GuestFailure::Panic { message: message.map(clip), location });
    }
    let summary = summarize(message, location)?;
    Some(if javascript { GuestFailure::Exception(summary) } else { GuestFailure::Other(summary) })
}

fn clip(mut text: String) -> String {
    if text.len() > 300 {
        let cut = (0..=300).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// The informative line of a guest's dying words, with where a Rust guest panicked.
fn summarize(message: Option<String>, location: Option<String>) -> Option<String> {
    let summary = match (message, location) {
        (Some(message), Some(location)) => format!("{message} (at {location})"),
        (Some(message), None) => message,
        (None, Some(location)) => format!("panicked at {location}"),
        (None, None) => return None,
    };
    Some(clip(summary))
}

/// The first informative line of a guest's stderr, and where a Rust guest panicked if its
/// panic came first.
fn dying_words(text: &str) -> (Option<String>, Option<String>) {
    let mut location = None;
    let mut message = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // Rust: "thread '<unnamed>' (1) panicked at src/lib.rs:12:5:" then the message.
        if line.starts_with("thread '") && line.contains(" panicked at ") {
            // Where a Rust guest panicked; a panic after the message (a language runtime giving
            // up on an exception) points into the runtime, not the processor.
            if message.is_none() {
                location = line.split(" panicked at ").nth(1).map(|l| l.trim_end_matches(':').to_owned());
            }
            continue;
        }
        let noise = is_runtime_noise(line)
            || line == "Stack:"
            || line.starts_with("Traceback (most recent call last)")
            || line.starts_with("File \"")
            // A JavaScript stack frame: "name@file.js:1040:17".
            || (line.contains('@') && line.rsplit(':').take(2).all(|p| p.parse::<u32>().is_ok()));
        if !noise && message.is_none() {
            message = Some(line.to_owned());
        }
    }
    (message, location)
}

#[cfg(test)]
mod tests {
    use super::{GuestFailure, classify_stderr, dying_words, summarize};

    fn summarize_stderr(text: &str) -> Option<String> {
        let (message, location) = dying_words(text);
        summarize(message, location)
    }

    #[test]
    fn a_trap_is_read_as_the_guest_languages_own_failure() {
        let rust = "thread '<unnamed>' (1) panicked at src/lib.rs:12:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            classify_stderr(rust),
            Some(GuestFailure::Panic {
                message: Some("boom".into()),
                location: Some("src/lib.rs:12:5".into())
            })
        );
        let python = "Traceback (most recent call last):\n  File \"/0/app.py\", line 13, in process_item\n    return row.get(\"x\")\n           ^^^^^^^\nValueError: first\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"/0/app.py\", line 15, in process_item\nKeyError: 'x'\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception\n";
        assert_eq!(classify_stderr(python), Some(GuestFailure::Exception("KeyError: 'x'".into())));
        let js = "invalid variant tag value `undefined` (received `TypeError: row is null`)\nStack:\n  f@/tmp/x/initializer.js:1040:17\n\nRedirecting call to abort() to mozalloc_abort";
        assert_eq!(classify_stderr(js), Some(GuestFailure::Exception("TypeError: row is null".into())));
        let js_other =
            "Error: something\nStack:\n  f@app.js:3:9\nRedirecting call to abort() to mozalloc_abort";
        assert_eq!(classify_stderr(js_other), Some(GuestFailure::Exception("Error: something".into())));
        assert_eq!(classify_stderr("out of cheese\n"), Some(GuestFailure::Other("out of cheese".into())));
        assert_eq!(classify_stderr(""), None);
    }

    #[test]
    fn the_informative_line_is_picked_from_each_runtime() {
        let rust = "\nthread '<unnamed>' (1) panicked at probe/src/lib.rs:172:24:\nprobe panic: boom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(summarize_stderr(rust).as_deref(), Some("probe panic: boom (at probe/src/lib.rs:172:24)"));
        let python = "Traceback (most recent call last):\n  File \"/0/app.py\", line 13, in process_item\nAttributeError: 'list' object has no attribute 'get'\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace";
        assert_eq!(
            summarize_stderr(python).as_deref(),
            Some("AttributeError: 'list' object has no attribute 'get'")
        );
        let js = "invalid variant tag value `undefined` (received `TypeError: row is null`)\nStack:\n  export_processor$validateItem@/tmp/x/initializer.js:1040:17\n\nRedirecting call to abort() to mozalloc_abort";
        assert_eq!(
            summarize_stderr(js).as_deref(),
            Some("invalid variant tag value `undefined` (received `TypeError: row is null`)")
        );
        assert_eq!(summarize_stderr("\n\n"), None);
    }
}
