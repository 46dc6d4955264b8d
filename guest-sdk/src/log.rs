//! Item logs. Lines written while an item runs are kept even when the item fails and its
//! database writes are rolled back; `ingot logs BATCH --item N` shows them.

use serde::Serialize;

use crate::__private::bindings::ingot::processor::context;
use crate::__private::wit::LogLevel;

fn write(level: LogLevel, message: &str, details: Option<String>) {
    context::log(level, message, details.as_deref());
}

/// Logs a debug line.
pub fn debug(message: impl AsRef<str>) {
    write(LogLevel::Debug, message.as_ref(), None);
}

/// Logs an info line.
pub fn info(message: impl AsRef<str>) {
    write(LogLevel::Info, message.as_ref(), None);
}

/// Logs a warning.
pub fn warn(message: impl AsRef<str>) {
    write(LogLevel::Warning, message.as_ref(), None);
}

/// Logs an error line.
pub fn error(message: impl AsRef<str>) {
    write(LogLevel::Error, message.as_ref(), None);
}

/// The severity of a line written with [`with_details`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Debug detail.
    Debug,
    /// Normal progress.
    Info,
    /// Unexpected but not failing.
    Warning,
    /// A failure.
    Error,
}

/// Logs a line with structured details (stored as JSON). Details that cannot be written as JSON
/// are replaced by a note saying why, so the line itself is never lost.
pub fn with_details(level: Level, message: impl AsRef<str>, details: &impl Serialize) {
    let details = serde_json::to_string(details)
        .unwrap_or_else(|e| serde_json::json!({ "unserializable_details": e.to_string() }).to_string());
    let level = match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warning => LogLevel::Warning,
        Level::Error => LogLevel::Error,
    };
    write(level, message.as_ref(), Some(details));
}
