//! Batch metadata as the processor sees it: the batch's JSON object when the worker joined the
//! batch, plus the changes of the current scope. Changes are written by the host together with
//! the item (or hook) they belong to, so a failed item's changes vanish with its other writes.
//!
//! Values are kept as the JSON text the processor wrote (checked the way PostgreSQL will check
//! it), so numbers keep every digit. The metadata of a batch is capped in keys and bytes: it is
//! read by every worker and every hook, and kept with the batch.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::caps::{CapExceeded, Caps, METADATA_KEY_BYTES};
use super::jsonb;
use crate::store::pg_text;

/// The metadata view of one worker.
#[derive(Debug, Default, Clone)]
pub struct MetadataView {
    /// Key → JSON text, as the batch row held it.
    snapshot: BTreeMap<String, String>,
    /// Changes of the current scope.
    pending: BTreeMap<String, String>,
    /// Keys and bytes (keys and values) of the snapshot, and of the snapshot with the changes:
    /// kept as they change, so that a processor setting many keys costs no more per key.
    saved: Size,
    current: Size,
}

#[derive(Debug, Default, Clone, Copy)]
struct Size {
    keys: usize,
    bytes: usize,
}

impl MetadataView {
    /// Replaces the snapshot with the batch row's metadata (JSON text of an object) and drops
    /// pending changes.
    pub(crate) fn load(&mut self, metadata: &str) {
        self.snapshot = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(metadata)
            .map(|map| map.into_iter().map(|(k, v)| (k, v.get().to_owned())).collect())
            .unwrap_or_default();
        self.pending.clear();
        self.saved = Size {
            keys: self.snapshot.len(),
            bytes: self.snapshot.iter().map(|(k, v)| k.len() + v.len()).sum(),
        };
        self.current = self.saved;
    }

    /// One key as JSON text.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.pending.get(key).or_else(|| self.snapshot.get(key)).cloned()
    }

    /// Sets one key; the value must be JSON that PostgreSQL can store (else the processor is
    /// told why). Traps when the key, the value or the batch's metadata as a whole would pass its
    /// cap.
    pub(crate) fn set(
        &mut self,
        caps: &Caps,
        key: String,
        value: &str,
    ) -> Result<Result<(), String>, CapExceeded> {
        if key.len() > METADATA_KEY_BYTES {
            return Err(CapExceeded::bytes("metadata key size", METADATA_KEY_BYTES));
        }
        if value.len() > caps.metadata_value_bytes {
            return Err(CapExceeded::bytes("metadata value size", caps.metadata_value_bytes));
        }
        let value = match jsonb::check(value) {
            Ok(value) => value.into_owned(),
            Err(refused) if refused.syntax => {
                return Ok(Err(format!("metadata {key:?}: the value is not JSON: {refused}")));
            }
            Err(refused) => {
                return Ok(Err(format!("metadata {key:?}: PostgreSQL cannot store the value: {refused}")));
            }
        };
        let key = pg_text(&key).into_owned();
        let old = self.pending.get(&key).or_else(|| self.snapshot.get(&key)).map(String::len);
        let size = match old {
            Some(old) => Size { keys: self.current.keys, bytes: self.current.bytes - old + value.len() },
            None => {
                if self.current.keys + 1 > caps.metadata_keys {
                    return Err(CapExceeded::count("metadata keys per batch", caps.metadata_keys, "keys"));
                }
                Size { keys: self.current.keys + 1, bytes: self.current.bytes + key.len() + value.len() }
            }
        };
        if size.bytes > caps.metadata_bytes {
            return Err(CapExceeded::bytes("metadata per batch", caps.metadata_bytes));
        }
        self.current = size;
        self.pending.insert(key, value);
        Ok(Ok(()))
    }

    /// The changes of the current scope as a JSON object (text), to write, merged into the
    /// snapshot.
    pub(crate) fn commit(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let changes = std::mem::take(&mut self.pending);
        let mut object = String::from("{");
        for (i, (k, v)) in changes.iter().enumerate() {
            if i > 0 {
                object.push(',');
            }
            object.push_str(&serde_json::Value::String(k.clone()).to_string());
            object.push(':');
            object.push_str(v);
        }
        object.push('}');
        self.snapshot.extend(changes);
        self.saved = self.current;
        Some(object)
    }

    /// Forgets the changes of a scope that failed.
    pub(crate) fn discard(&mut self) {
        self.pending.clear();
        self.current = self.saved;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::MetadataView;
    use crate::context::caps::Caps;

    #[test]
    fn values_keep_every_digit_and_the_batch_stays_within_its_caps() {
        let caps = Caps { metadata_keys: 3, metadata_bytes: 40, ..Caps::default() };
        let mut view = MetadataView::default();
        view.load(r#"{"a": 12345678901234567890.5}"#);
        assert_eq!(view.get("a").as_deref(), Some("12345678901234567890.5"));
        view.set(&caps, "b".into(), "1.10").unwrap().unwrap();
        assert_eq!(view.commit().as_deref(), Some(r#"{"b":1.10}"#));
        // Replacing a key does not count it twice.
        view.set(&caps, "b".into(), "2").unwrap().unwrap();
        view.set(&caps, "c".into(), "3").unwrap().unwrap();
        let too_many = view.set(&caps, "d".into(), "4").unwrap_err();
        assert_eq!(too_many.what, "metadata keys per batch");
        let too_big = view.set(&caps, "c".into(), &format!("\"{}\"", "x".repeat(20))).unwrap_err();
        assert_eq!(too_big.what, "metadata per batch");
        assert!(view.set(&caps, "c".into(), r#""\ud800""#).unwrap().unwrap_err().contains("surrogate"));
        assert!(view.set(&caps, "c".into(), "not json").unwrap().unwrap_err().contains("not JSON"));
    }

    #[test]
    fn a_discarded_scope_gives_its_keys_and_bytes_back() {
        let caps = Caps { metadata_keys: 2, metadata_bytes: 1000, ..Caps::default() };
        let mut view = MetadataView::default();
        view.load(r#"{"a": 1}"#);
        view.set(&caps, "b".into(), "2").unwrap().unwrap();
        assert_eq!(view.set(&caps, "c".into(), "3").unwrap_err().what, "metadata keys per batch");
        view.discard();
        view.set(&caps, "c".into(), "3").unwrap().unwrap();
        assert_eq!(view.commit().as_deref(), Some(r#"{"c":3}"#));
        // Replacing a committed key's value counts its new size only.
        let caps = Caps { metadata_bytes: 6, ..caps };
        view.set(&caps, "c".into(), "333").unwrap().unwrap();
        assert_eq!(view.set(&caps, "c".into(), "3333").unwrap_err().what, "metadata per batch");
    }
}
