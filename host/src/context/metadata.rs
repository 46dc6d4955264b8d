//! Batch metadata as the processor sees it: the batch's JSON object when the worker joined the
//! batch, plus the changes of the current scope. Changes are written by the host together with
//! the item (or hook) they belong to, so a failed item's changes vanish with its other writes.

use serde_json::{Map, Value};

use super::caps::{CapExceeded, Caps};
use crate::store::{pg_json, pg_text};

/// The metadata view of one worker.
#[derive(Debug, Default)]
pub struct MetadataView {
    snapshot: Map<String, Value>,
    pending: Map<String, Value>,
}

impl MetadataView {
    /// Replaces the snapshot (read from the batch row) and drops pending changes.
    pub(crate) fn load(&mut self, metadata: &Value) {
        self.snapshot = metadata.as_object().cloned().unwrap_or_default();
        self.pending.clear();
    }

    /// One key as JSON text.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.pending.get(key).or_else(|| self.snapshot.get(key)).map(Value::to_string)
    }

    /// Sets one key; the value must be JSON. Oversized values trap.
    pub(crate) fn set(
        &mut self,
        caps: &Caps,
        key: String,
        value: &str,
    ) -> Result<Result<(), String>, CapExceeded> {
        if value.len() > caps.metadata_bytes || key.len() > 256 {
            return Err(CapExceeded::bytes("metadata value size", caps.metadata_bytes));
        }
        match serde_json::from_str(&pg_json(value)) {
            Ok(v) => {
                self.pending.insert(pg_text(&key).into_owned(), v);
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(format!("metadata {key:?}: the value is not JSON: {e}"))),
        }
    }

    /// The changes of the current scope, to write, merged into the snapshot.
    pub(crate) fn commit(&mut self) -> Option<Value> {
        if self.pending.is_empty() {
            return None;
        }
        let changes = std::mem::take(&mut self.pending);
        for (k, v) in &changes {
            self.snapshot.insert(k.clone(), v.clone());
        }
        Some(Value::Object(changes))
    }

    /// Forgets the changes of a scope that failed.
    pub(crate) fn discard(&mut self) {
        self.pending.clear();
    }
}
