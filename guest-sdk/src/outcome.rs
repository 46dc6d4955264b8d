//! What processing an item produced.

use serde::Serialize;

use crate::__private::wit;
use crate::ItemError;

/// The result of a processed item: where it went and the normalised record, kept on the item for
/// audit.
///
/// ```
/// # use ingot_guest::{Outcome, ItemError};
/// # fn f() -> Result<Outcome, ItemError> {
/// Outcome::new("customers", "42").with_data(&serde_json::json!({"email": "a@b.co"}))
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    target_table: Option<String>,
    target_id: Option<String>,
    processed_data: Option<String>,
}

impl Outcome {
    /// An outcome naming the table written and the key of the written row.
    pub fn new(target_table: impl Into<String>, target_id: impl ToString) -> Self {
        Outcome {
            target_table: Some(target_table.into()),
            target_id: Some(target_id.to_string()),
            processed_data: None,
        }
    }

    /// An outcome that names no target, for items that wrote nothing worth pointing at.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Attaches the normalised record. Fails only when `data` cannot be written as JSON (e.g. a
    /// map with non-string keys).
    pub fn with_data(mut self, data: &impl Serialize) -> Result<Self, ItemError> {
        let json = serde_json::to_string(data).map_err(|e| {
            ItemError::invalid(format!("processed data cannot be written as JSON: {e}"))
                .code("invalid_outcome")
        })?;
        self.processed_data = Some(json);
        Ok(self)
    }

    /// Attaches the normalised record as JSON text, exactly as given (e.g. numbers with more
    /// precision than `f64` holds, from your own serializer). The host checks it the way
    /// PostgreSQL will; text PostgreSQL cannot store fails the item with `invalid_outcome`.
    pub fn with_json(mut self, json: impl Into<String>) -> Self {
        self.processed_data = Some(json.into());
        self
    }

    pub(crate) fn into_wit(self) -> wit::Outcome {
        wit::Outcome {
            target_table: self.target_table,
            target_id: self.target_id,
            processed_data: self.processed_data,
        }
    }
}
