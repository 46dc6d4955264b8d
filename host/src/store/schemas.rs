//! `ingot_processor_schemas`: which of the processors' own SQL files `ingot migrate` applied.

use chrono::{DateTime, Utc};
use sqlx::{Connection, Executor, PgConnection};

use super::StoreError;
use crate::registry::schema::SchemaFile;

/// What applying one file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// It ran now.
    Now,
    /// It had run before, with the same bytes.
    Before,
    /// It ran before with other bytes: it changed since, and was not run again.
    Changed {
        /// When it was applied.
        at: DateTime<Utc>,
    },
}

/// Applies `file` unless it was applied before, in one transaction with its record, as the
/// host's own login. Serialised across hosts: two `ingot migrate` at once apply each file once.
pub async fn apply(conn: &mut PgConnection, file: &SchemaFile) -> Result<Applied, StoreError> {
    let mut tx = conn.begin().await?;
    sqlx::query("LOCK TABLE ingot_processor_schemas IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
    let before: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT sha256, applied_at FROM ingot_processor_schemas WHERE batch_type = $1 AND file = $2",
    )
    .bind(&file.batch_type)
    .bind(&file.name)
    .fetch_optional(&mut *tx)
    .await?;
    match before {
        Some((sha256, _)) if sha256 == file.sha256 => return Ok(Applied::Before),
        Some((_, at)) => return Ok(Applied::Changed { at }),
        None => {}
    }
    tx.execute(file.sql.as_str()).await?;
    sqlx::query("INSERT INTO ingot_processor_schemas (batch_type, file, sha256) VALUES ($1, $2, $3)")
        .bind(&file.batch_type)
        .bind(&file.name)
        .bind(&file.sha256)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Applied::Now)
}
