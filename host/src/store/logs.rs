//! Reading log lines back. (Lines are written with their item, or through
//! [`batches::record`](super::batches::record) for the batch itself.)

use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::StoreError;
use crate::context::logs::LogLevel;

/// One stored line, as `ingot logs` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// The line's id (its order).
    pub id: i64,
    /// The item's index, for item lines.
    pub item_index: Option<i64>,
    /// Severity.
    pub level: String,
    /// processor, stdout, stderr or host.
    pub source: String,
    /// The line.
    pub message: String,
    /// Structured details.
    pub details: Option<Value>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// The item's source data, on the host's line that records an item failure.
    pub item_data: Option<Value>,
}

/// Which lines to read.
#[derive(Debug, Clone)]
pub struct LogQuery {
    /// The batch.
    pub batch_id: Uuid,
    /// Only this item's lines.
    pub item_index: Option<i64>,
    /// Only lines at this level or above.
    pub min_level: Option<LogLevel>,
}

/// Streams the matching lines in the order they were written.
pub fn stream<'c>(
    conn: &'c mut PgConnection,
    query: &LogQuery,
) -> impl Stream<Item = Result<LogLine, StoreError>> + 'c {
    let levels: Vec<&'static str> = [LogLevel::Debug, LogLevel::Info, LogLevel::Warning, LogLevel::Error]
        .into_iter()
        .filter(|l| query.min_level.is_none_or(|min| *l >= min))
        .map(LogLevel::as_str)
        .collect();
    sqlx::query(
        "SELECT l.id, l.item_index, l.log_level, l.source, l.message, l.details, l.created_at,
                CASE WHEN l.source = 'host' AND l.log_level = 'error' THEN i.source_data END AS item_data
         FROM import_logs l
         LEFT JOIN import_batch_items i ON i.id = l.item_id
         WHERE l.batch_id = $1 AND ($2::bigint IS NULL OR l.item_index = $2) AND l.log_level = ANY($3)
         ORDER BY l.item_index NULLS FIRST, l.id",
    )
    .bind(query.batch_id)
    .bind(query.item_index)
    .bind(levels)
    .fetch(conn)
    .map(|row| {
        let row = row?;
        Ok(LogLine {
            id: row.try_get("id")?,
            item_index: row.try_get("item_index")?,
            level: row.try_get("log_level")?,
            source: row.try_get("source")?,
            message: row.try_get("message")?,
            details: row.try_get("details")?,
            created_at: row.try_get("created_at")?,
            item_data: row.try_get("item_data")?,
        })
    })
}
