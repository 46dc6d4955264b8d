//! Creating a batch from an input file: the batch row and every item, streamed with COPY, in the
//! caller's transaction — so a malformed file leaves no half-created batch behind.

use std::io::Write;

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::BatchError;
use crate::input::{self, InputSource, SourceStats};
use crate::store::batches::{self, NewBatch};

/// Inserts the batch and streams its items in, inside the caller's open transaction.
pub(crate) async fn create_in_tx(
    conn: &mut PgConnection,
    mut batch: NewBatch,
    source: InputSource,
) -> Result<SourceStats, BatchError> {
    batch.source_info = json!({ "file_name": source.name, "format": source.format });
    batches::insert(conn, &batch).await?;
    let stats = copy_items(conn, batch.id, source).await?;
    let source_info = serde_json::to_value(&stats).map_err(|e| BatchError::Host(e.to_string()))?;
    let total = i64::try_from(stats.items).map_err(|_| BatchError::Host("too many items".into()))?;
    batches::set_total(conn, batch.id, total, &source_info).await?;
    batches::announce(conn, batch.id).await?;
    Ok(stats)
}

/// Streams parsed items into `import_batch_items` with COPY, in index order.
async fn copy_items(
    conn: &mut PgConnection,
    batch_id: Uuid,
    source: InputSource,
) -> Result<SourceStats, BatchError> {
    let mut reader = input::read(source);
    let mut copy = conn
        .copy_in_raw("COPY import_batch_items (id, batch_id, item_index, source_data) FROM STDIN")
        .await?;
    let mut index: u64 = 0;
    let mut buffer = Vec::with_capacity(1 << 20);
    while let Some(chunk) = reader.items.recv().await {
        buffer.clear();
        for item in chunk {
            // COPY's text format: tab-separated, one row per line, backslash escapes. JSON from
            // serde_json has no raw control characters, so only backslashes need escaping.
            let _ = write!(buffer, "{}\t{batch_id}\t{index}\t", Uuid::now_v7());
            for &b in item.json.as_bytes() {
                if b == b'\\' {
                    buffer.push(b'\\');
                }
                buffer.push(b);
            }
            buffer.push(b'\n');
            index += 1;
        }
        if let Err(e) = copy.send(buffer.as_slice()).await {
            drop(reader);
            return Err(e.into());
        }
    }
    match reader.finish().await {
        Ok(stats) => {
            copy.finish().await?;
            Ok(stats)
        }
        Err(e) => {
            let _ = copy.abort("the input file is malformed").await;
            Err(e.into())
        }
    }
}
