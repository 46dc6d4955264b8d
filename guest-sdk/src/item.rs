//! What the host hands a processor: one item, or the batch it belongs to.

use std::cell::OnceCell;

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::__private::wit;
use crate::ItemError;

/// One source item: a CSV row, a JSON array element or an NDJSON line.
#[derive(Debug)]
pub struct Item {
    raw: wit::Item,
    json: OnceCell<Result<Value, String>>,
    /// Its columns with their values as written, for the validation kit.
    columns: OnceCell<Result<Vec<Column>, String>>,
}

/// A column's name and its value's JSON text as written.
pub(crate) type Column = (String, Box<RawValue>);

impl Item {
    /// Wraps the item the host passed in.
    pub(crate) fn from_wit(raw: wit::Item) -> Self {
        Item { raw, json: OnceCell::new(), columns: OnceCell::new() }
    }

    /// An item holding `data`, as the host would pass it (index 0, first attempt): for unit tests
    /// of a processor's rules, which run natively with `cargo test`.
    pub fn from_json(data: &Value) -> Self {
        Self::from_wit(wit::Item { id: String::new(), index: 0, data: data.to_string(), attempt: 1 })
    }

    /// The item's columns with their values as written (exact digits), in order.
    pub(crate) fn columns(&self) -> Result<&[Column], ItemError> {
        self.columns
            .get_or_init(|| {
                serde_json::from_str::<RawColumns>(&self.raw.data)
                    .map(|c| c.0)
                    .map_err(|e| format!("item data is not an object of named fields: {e}"))
            })
            .as_ref()
            .map(Vec::as_slice)
            .map_err(|e| ItemError::invalid(e.clone()).code("invalid_data"))
    }

    /// The item's id (a UUID), stable for its life in the batch.
    pub fn id(&self) -> &str {
        &self.raw.id
    }

    /// The item's position in the source file, from 0 (kept when it is reprocessed).
    pub fn index(&self) -> u64 {
        self.raw.index
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.raw.attempt
    }

    /// The item's data as JSON text. A CSV row is an object keyed by the header row.
    pub fn data(&self) -> &str {
        &self.raw.data
    }

    /// The item's data as a JSON value.
    pub fn json(&self) -> Result<&Value, ItemError> {
        self.json
            .get_or_init(|| serde_json::from_str(&self.raw.data).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| ItemError::invalid(format!("item data is not valid JSON: {e}")).code("invalid_data"))
    }

    /// Deserializes the whole item into `T`. A shape mismatch is an `invalid` error with code
    /// `invalid_data` naming what did not fit.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ItemError> {
        serde_json::from_str(&self.raw.data).map_err(|e| {
            ItemError::invalid(format!("item data does not have the expected shape: {e}"))
                .code("invalid_data")
        })
    }

    /// Deserializes one field of an object item into `T`. A missing field reads as JSON null, so
    /// `Option<T>` fields may be absent; any other mismatch is an `invalid` error naming the field.
    pub fn field<T: DeserializeOwned>(&self, name: &str) -> Result<T, ItemError> {
        let value = self.json()?.get(name).cloned().unwrap_or(Value::Null);
        let missing = value.is_null();
        serde_json::from_value(value).map_err(|e| {
            let (message, code) = if missing {
                (format!("{name} is required"), "missing_field")
            } else {
                (format!("{name} has the wrong type: {e}"), "invalid_field")
            };
            ItemError::invalid(message).code(code).field(name)
        })
    }
}

/// The batch a hook runs for.
#[derive(Debug)]
pub struct Batch {
    raw: wit::BatchInfo,
}

impl Batch {
    pub(crate) fn from_wit(raw: wit::BatchInfo) -> Self {
        Batch { raw }
    }

    /// The batch id (a UUID).
    pub fn id(&self) -> &str {
        &self.raw.id
    }

    /// The batch type, i.e. this processor's name.
    pub fn batch_type(&self) -> &str {
        &self.raw.batch_type
    }

    /// How many items the batch holds.
    pub fn item_count(&self) -> u64 {
        self.raw.item_count
    }

    /// Items completed so far.
    pub fn completed(&self) -> u64 {
        self.raw.completed
    }

    /// Items failed so far.
    pub fn failed(&self) -> u64 {
        self.raw.failed
    }

    /// Items skipped so far.
    pub fn skipped(&self) -> u64 {
        self.raw.skipped
    }

    /// The batch metadata, a JSON object.
    pub fn metadata(&self) -> Value {
        serde_json::from_str(&self.raw.metadata).unwrap_or(Value::Null)
    }

    /// Where the items came from: file name, format, bytes and sha256, as a JSON object.
    pub fn source(&self) -> Value {
        serde_json::from_str(&self.raw.source).unwrap_or(Value::Null)
    }

    /// 0 for an original batch; n for the n-th reprocessing of it.
    pub fn retry_count(&self) -> u32 {
        self.raw.retry_count
    }

    /// The batch this one reprocesses, if any.
    pub fn parent_id(&self) -> Option<&str> {
        self.raw.parent_id.as_deref()
    }

    /// True when nothing this run does will be committed.
    pub fn is_dry_run(&self) -> bool {
        self.raw.dry_run
    }
}

/// An object's fields in order, each value's JSON text as written.
struct RawColumns(Vec<Column>);

impl<'de> serde::Deserialize<'de> for RawColumns {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawColumns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of named fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawColumns, A::Error> {
                let mut columns = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    columns.push((key, value));
                }
                Ok(RawColumns(columns))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}
