//! Creating a batch from an input file: the batch row and every item, streamed with COPY, in the
//! caller's transaction — so a malformed file leaves no half-created batch behind.

use std::io::Write;

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::BatchError;
use crate::input::{self, InputError, InputSource, SourceStats};
use crate::store::batches::{self, NewBatch};

/// Inserts the batch and streams its items in, inside the caller's open transaction. A file
/// already imported as a batch of the same type is refused unless `allow_duplicate`.
pub(crate) async fn create_in_tx(
    conn: &mut PgConnection,
    mut batch: NewBatch,
    source: InputSource,
    allow_duplicate: bool,
) -> Result<SourceStats, BatchError> {
    batch.source_info = json!({ "file_name": source.name, "format": source.format });
    batches::insert(conn, &batch).await?;
    let stats = copy_items(conn, batch.id, source, batch.item_key.as_deref()).await?;
    if !allow_duplicate
        && let Some(earlier) =
            batches::find_duplicate(conn, &batch.batch_type, &stats.sha256, batch.id).await?
    {
        return Err(BatchError::Duplicate {
            name: stats.file_name,
            earlier: earlier.id,
            status: earlier.status.as_str().to_owned(),
            created: earlier.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        });
    }
    let source_info = serde_json::to_value(&stats).map_err(|e| BatchError::Host(e.to_string()))?;
    let total = i64::try_from(stats.items).map_err(|_| BatchError::Host("too many items".into()))?;
    batches::set_total(conn, batch.id, total, &source_info).await?;
    batches::announce(conn, batch.id).await?;
    Ok(stats)
}

/// Streams parsed items into `import_batch_items` with COPY, in index order; with `key`, each with
/// the hash of its value of that field (see [`key_hash`]).
async fn copy_items(
    conn: &mut PgConnection,
    batch_id: Uuid,
    source: InputSource,
    key: Option<&str>,
) -> Result<SourceStats, BatchError> {
    let source_name = source.name.clone();
    let mut reader = input::read(source);
    let columns = if key.is_some() {
        "id, batch_id, item_index, key_hash, source_data"
    } else {
        "id, batch_id, item_index, source_data"
    };
    let mut copy = conn.copy_in_raw(&format!("COPY import_batch_items ({columns}) FROM STDIN")).await?;
    let name = source_name.clone();
    let mut index: u64 = 0;
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut recent = RecentLines::default();
    while let Some(chunk) = reader.items.recv().await {
        buffer.clear();
        recent.push(index, chunk.iter().map(|item| item.line).collect());
        for item in chunk {
            // COPY's text format: tab-separated, one row per line, backslash escapes. An item's
            // text is as written, so it may hold tabs and line breaks (as whitespace between
            // tokens; JSON strings cannot hold them raw).
            let _ = write!(buffer, "{}\t{batch_id}\t{index}\t", Uuid::now_v7());
            if let Some(key) = key {
                match key_hash(&item.json, key) {
                    Some(hash) => {
                        let _ = write!(buffer, "{hash}\t");
                    }
                    None => buffer.extend_from_slice(b"\\N\t"),
                }
            }
            for &b in item.json.as_bytes() {
                match b {
                    b'\\' => buffer.extend_from_slice(b"\\\\"),
                    b'\t' => buffer.extend_from_slice(b"\\t"),
                    b'\n' => buffer.extend_from_slice(b"\\n"),
                    b'\r' => buffer.extend_from_slice(b"\\r"),
                    _ => buffer.push(b),
                }
            }
            buffer.push(b'\n');
            index += 1;
        }
        if let Err(e) = copy.send(buffer.as_slice()).await {
            drop(reader);
            return Err(recent.explain(&name, e));
        }
    }
    match reader.finish().await {
        Ok(stats) => {
            copy.finish().await.map_err(|e| recent.explain(&name, e))?;
            Ok(stats)
        }
        Err(e) => {
            let _ = copy.abort("the input file is malformed").await;
            Err(e.into())
        }
    }
}

/// The hash an item's value of the key field `key` is ordered by, or `None` when the item has no
/// such value (it is then ordered by nothing). The field is found as the validation kits find
/// columns — its exact name, else the one name that is the same ignoring case, spaces and
/// punctuation ("Order ID" = "order_id") — and text values count as equal ignoring case and
/// surrounding spaces, since processors normalise them so: treating two keys as one costs only
/// parallelism, treating one as two would cost the order.
pub(crate) fn key_hash(json: &str, key: &str) -> Option<i64> {
    use sha2::Digest as _;
    let serde_json::Value::Object(row) = serde_json::from_str(json).ok()? else { return None };
    let value = match row.get(key) {
        Some(value) => value,
        None => {
            let loose = |name: &str| {
                name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>()
            };
            let wanted = loose(key);
            let mut found = row.iter().filter(|(name, _)| loose(name) == wanted).map(|(_, v)| v);
            let first = found.next()?;
            // Two columns for one key: none of them decides.
            if found.next().is_some() {
                return None;
            }
            first
        }
    };
    let text = match value {
        serde_json::Value::Null => return None,
        serde_json::Value::String(s) if s.trim().is_empty() => return None,
        serde_json::Value::String(s) => s.trim().to_lowercase(),
        other => other.to_string(),
    };
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut bytes = [0_u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    Some(i64::from_le_bytes(bytes))
}

/// The file lines of the items most recently sent to COPY: an item PostgreSQL refuses (a value
/// too large for jsonb, a character the database's encoding lacks) is reported by its row of the
/// COPY, which was sent a few chunks before the refusal arrives.
#[derive(Default)]
struct RecentLines {
    chunks: std::collections::VecDeque<(u64, Vec<u64>)>,
}

impl RecentLines {
    /// Chunks kept: far more than PostgreSQL can have buffered unread.
    const KEEP: usize = 64;

    fn push(&mut self, first_index: u64, lines: Vec<u64>) {
        if self.chunks.len() == Self::KEEP {
            self.chunks.pop_front();
        }
        self.chunks.push_back((first_index, lines));
    }

    /// `e` as an error naming the file, line and item, when it is about one item.
    fn explain(&self, name: &str, e: sqlx::Error) -> BatchError {
        let Some(db) = e.as_database_error() else { return e.into() };
        let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() else { return e.into() };
        let row = pg.r#where().and_then(|w| {
            let rest =
                &w[w.find("COPY import_batch_items, line ")? + "COPY import_batch_items, line ".len()..];
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
        });
        let Some(index) = row.and_then(|row| row.checked_sub(1)) else { return e.into() };
        let line = self.chunks.iter().find_map(|(first, lines)| {
            let offset = usize::try_from(index.checked_sub(*first)?).ok()?;
            lines.get(offset).copied()
        });
        let detail = pg.detail().map(|d| format!(" ({d})")).unwrap_or_default();
        let message = format!("item {index}: PostgreSQL cannot store it: {}{detail}", pg.message());
        BatchError::Input(InputError::Malformed { name: name.to_owned(), line: line.unwrap_or(0), message })
    }
}

#[cfg(test)]
mod tests {
    use super::key_hash;

    #[test]
    fn a_key_is_found_as_the_kits_find_columns_and_its_text_ignores_case_and_spaces() {
        let a = key_hash(r#"{"Order ID": "ORD-1", "x": 1}"#, "Order ID");
        assert!(a.is_some());
        assert_eq!(key_hash(r#"{"order_id": " ord-1 "}"#, "Order ID"), a);
        assert_eq!(key_hash(r#"{"ORDER-ID": "Ord-1"}"#, "Order ID"), a);
        assert_ne!(key_hash(r#"{"Order ID": "ORD-2"}"#, "Order ID"), a);
        assert_eq!(key_hash(r#"{"Order ID": 7}"#, "Order ID"), key_hash(r#"{"Order ID": "7"}"#, "Order ID"));
        assert_eq!(key_hash(r#"{"Order ID": null}"#, "Order ID"), None);
        assert_eq!(key_hash(r#"{"Order ID": "  "}"#, "Order ID"), None);
        assert_eq!(key_hash(r#"{"other": "x"}"#, "Order ID"), None);
        assert_eq!(key_hash(r#"{"order id": "a", "order_id": "b"}"#, "Order ID"), None, "ambiguous");
        assert_eq!(key_hash("[1, 2]", "Order ID"), None);
    }
}
