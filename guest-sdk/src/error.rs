//! Why an item was not imported.

use std::fmt;

use crate::__private::wit;
use crate::db::SqlError;

/// What the host does with a failed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad data; never retried. The item ends `failed`.
    Invalid,
    /// A transient problem; the host may retry the item.
    Retryable,
    /// Deliberately not imported (e.g. a duplicate). The item ends `skipped`.
    Skip,
}

/// An item error: a kind, a sentence, and optionally a machine-readable code and the field at
/// fault. Summaries group failures by code, so keep codes stable and messages free of item data
/// when you want them counted together.
///
/// ```
/// # use ingot_guest::ItemError;
/// let e = ItemError::invalid("email is not a valid address").code("invalid_email").field("email");
/// assert_eq!(e.code_str(), Some("invalid_email"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ItemError {
    kind: ErrorKind,
    message: String,
    code: Option<String>,
    field: Option<String>,
}

impl ItemError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ItemError { kind, message: message.into(), code: None, field: None }
    }

    /// Bad data: the item fails and is never retried.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    /// A transient failure: the host may try the item again.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retryable, message)
    }

    /// Deliberately not imported: the item ends `skipped`.
    pub fn skip(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Skip, message)
    }

    /// Sets the machine-readable code, e.g. `"invalid_email"`.
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets the source field at fault, e.g. `"email"`.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error's sentence.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error's code, if set.
    pub fn code_str(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The field at fault, if set.
    pub fn field_str(&self) -> Option<&str> {
        self.field.as_deref()
    }

    pub(crate) fn into_wit(self) -> wit::ItemError {
        let detail = wit::ErrorDetail { message: self.message, code: self.code, field: self.field };
        match self.kind {
            ErrorKind::Invalid => wit::ItemError::Invalid(detail),
            ErrorKind::Retryable => wit::ItemError::Retryable(detail),
            ErrorKind::Skip => wit::ItemError::Skip(detail),
        }
    }

    pub(crate) fn from_wit(error: wit::ItemError) -> Self {
        let (kind, detail) = match error {
            wit::ItemError::Invalid(d) => (ErrorKind::Invalid, d),
            wit::ItemError::Retryable(d) => (ErrorKind::Retryable, d),
            wit::ItemError::Skip(d) => (ErrorKind::Skip, d),
        };
        ItemError { kind, message: detail.message, code: detail.code, field: detail.field }
    }
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ItemError {}

/// A database error propagated with `?`: serialization failures and deadlocks (SQLSTATE class
/// 40) are retryable, everything else fails the item with code `sql_error`.
impl From<SqlError> for ItemError {
    fn from(e: SqlError) -> Self {
        let transient = e.sqlstate().is_some_and(|s| s.starts_with("40"));
        let error = if transient { Self::retryable(e.to_string()) } else { Self::invalid(e.to_string()) };
        error.code("sql_error")
    }
}
