//! Log lines: batch-level lines from hooks and the host, and reading lines back.

use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::StoreError;
use crate::context::logs::{LogEntry, LogLevel};

/// Writes lines about the batch itself (hooks, host notes), not tied to an item.
pub async fn insert_batch_lines(
    conn: &mut PgConnection,
    batch_id: Uuid,
    lines: &[LogEntry],
) -> Result<(), StoreError> {
    if lines.is_empty() {
        return Ok(());
    }
    let levels: Vec<&str> = lines.iter().map(|l| l.level.as_str()).collect();
    let sources: Vec<&str> = lines.iter().map(|l| l.source.as_str()).collect();
    let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    let details: Vec<Option<&str>> = lines.iter().map(|l| l.details.as_deref()).collect();
    let times: Vec<DateTime<Utc>> = lines.iter().map(|l| l.at).collect();
    sqlx::query(
        "INSERT INTO import_logs (batch_id, log_level, source, message, details, created_at)
         SELECT $1, l.level, l.source, l.message, l.details::jsonb, l.at
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
              AS l(level, source, message, details, at)",
    )
    .bind(batch_id)
    .bind(levels)
    .bind(sources)
    .bind(messages)
    .bind(details)
    .bind(times)
    .execute(conn)
    .await?;
    Ok(())
}

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
