//! Batch metadata: a JSON object on the batch that processors may read and extend, e.g. to count
//! something across items or to pass a value from `on_batch_start` to every item.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__private::bindings::ingot::processor::context;

/// Reads one key of the batch metadata; `None` when it is unset or not a `T`.
pub fn get<T: DeserializeOwned>(key: &str) -> Option<T> {
    context::get_metadata(key).and_then(|json| serde_json::from_str(&json).ok())
}

/// Sets one key of the batch metadata. Inside an item the change commits with the item and is
/// undone if the item fails.
pub fn set(key: &str, value: &impl Serialize) -> Result<(), String> {
    let json = serde_json::to_string(value).map_err(|e| format!("{key}: value is not JSON: {e}"))?;
    context::set_metadata(key, &json)
}
