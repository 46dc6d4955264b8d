//! The item transaction's statements, in the order the worker runs them:
//!
//! ```text
//! BEGIN          ┐
//! claim          │ SELECT … FOR UPDATE SKIP LOCKED    the row lock is the claim
//! open_scope     ┘ SAVEPOINT processor; SET LOCAL …   one round trip; processor SQL runs in here
//! close_scope    RELEASE or ROLLBACK TO the savepoint success keeps its writes
//! finish         item status + logs + counter slot    one statement, counter last
//! COMMIT
//! ```
//!
//! An item held by a crashed worker needs no recovery: its lock dies with the connection and the
//! uncommitted row is simply pending again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Executor, PgConnection, Row};
use uuid::Uuid;

use super::{ItemStatus, StoreError};
use crate::context::logs::LogEntry;

/// The savepoint that fences the processor's writes inside the item transaction.
const PROCESSOR_SAVEPOINT: &str = "ingot_processor";

/// A claimed item, locked by the caller's open transaction.
#[derive(Debug, Clone)]
pub struct ClaimedItem {
    /// The item id.
    pub id: Uuid,
    /// Its index in the source.
    pub index: i64,
    /// Its source data as JSON text.
    pub data: String,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// Opens a transaction (or, nested in one, a savepoint named `name`).
pub async fn begin(conn: &mut PgConnection, nested: Option<&str>) -> Result<(), StoreError> {
    conn.execute(begin_sql(nested).as_str()).await?;
    Ok(())
}

fn begin_sql(nested: Option<&str>) -> String {
    match nested {
        None => "BEGIN".to_owned(),
        Some(name) => format!("SAVEPOINT {name}"),
    }
}

/// Commits the transaction (or releases the savepoint `name`).
pub async fn commit(conn: &mut PgConnection, nested: Option<&str>) -> Result<(), StoreError> {
    match nested {
        None => conn.execute("COMMIT").await?,
        Some(name) => conn.execute(format!("RELEASE SAVEPOINT {name}").as_str()).await?,
    };
    Ok(())
}

/// Rolls the transaction back (or back to the savepoint `name`).
pub async fn rollback(conn: &mut PgConnection, nested: Option<&str>) -> Result<(), StoreError> {
    match nested {
        None => conn.execute("ROLLBACK").await?,
        Some(name) => {
            conn.execute(format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}").as_str()).await?
        }
    };
    Ok(())
}

/// The claim (see migrations/…_claim_function.sql): the lowest-index pending item at or after
/// `floor` that no other transaction holds and that is not waiting out a retry backoff. The floor
/// lets a worker start where it left off instead of stepping over every finished item's dead
/// index entry on each claim (which makes a long batch slow down as it progresses); a claim from
/// 0 still finds anything left behind.
fn claim_sql(batch_id: Uuid, floor: i64) -> String {
    format!("SELECT id, item_index, data, attempts FROM ingot_claim('{batch_id}', {floor})")
}

/// Opens the item's transaction (or, nested in one, the savepoint `nested`), claims an item, and
/// opens the processor's scope — in one round trip, because this runs once per item. The
/// statement is built from host values only (a UUID, a quoted role name, a number), never from
/// anything a processor or an input file controls. Without an item, the caller just commits.
pub async fn begin_and_claim(
    conn: &mut PgConnection,
    nested: Option<&str>,
    batch_id: Uuid,
    floor: i64,
    settings: &ScopeSettings,
) -> Result<Option<ClaimedItem>, StoreError> {
    let sql = format!("{}; {}; {}", begin_sql(nested), claim_sql(batch_id, floor), scope_sql(settings));
    let rows = conn.fetch_all(sql.as_str()).await?;
    let Some(row) = rows.first() else { return Ok(None) };
    Ok(Some(ClaimedItem {
        id: row.try_get("id")?,
        index: row.try_get("item_index")?,
        data: row.try_get("data")?,
        attempts: row.try_get("attempts")?,
    }))
}

/// When the earliest item waiting out a retry backoff becomes claimable, if any item waits.
pub async fn next_retry_at(
    conn: &mut PgConnection,
    batch_id: Uuid,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let next = sqlx::query_scalar(
        "SELECT min(available_at) FROM import_batch_items
         WHERE batch_id = $1 AND status = 'pending' AND available_at > clock_timestamp()",
    )
    .bind(batch_id)
    .fetch_one(conn)
    .await?;
    Ok(next)
}

/// How the processor's SQL runs: under which role, with which statement timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSettings {
    /// The processor's database role; `None` runs as the host's own role.
    pub role: Option<String>,
    /// Each processor statement's time limit.
    pub statement_timeout: Duration,
}

/// Opens the processor's savepoint and switches to its role and statement timeout, in one round
/// trip. `SET LOCAL` inside the savepoint is undone by a rollback to it.
pub async fn open_scope(conn: &mut PgConnection, settings: &ScopeSettings) -> Result<(), StoreError> {
    conn.execute(scope_sql(settings).as_str()).await?;
    Ok(())
}

fn scope_sql(settings: &ScopeSettings) -> String {
    let mut sql = format!(
        "SAVEPOINT {PROCESSOR_SAVEPOINT}; SET LOCAL statement_timeout = {}",
        settings.statement_timeout.as_millis().max(1)
    );
    if let Some(role) = &settings.role {
        sql.push_str(&format!("; SET LOCAL ROLE {}", quote_ident(role)));
    }
    sql
}

/// Ends the processor's scope: keeps its writes (`keep`) or rolls them back, and returns to the
/// host's role and the default statement timeout.
pub async fn close_scope(conn: &mut PgConnection, keep: bool) -> Result<(), StoreError> {
    if !keep {
        // Rolling back to the savepoint also undoes its SET LOCALs.
        return rollback(conn, Some(PROCESSOR_SAVEPOINT)).await;
    }
    let sql = format!(
        "RELEASE SAVEPOINT {PROCESSOR_SAVEPOINT}; RESET ROLE; SET LOCAL statement_timeout TO DEFAULT"
    );
    conn.execute(sql.as_str()).await?;
    Ok(())
}

/// Quotes an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An item's final state, written with its logs and its counter slot in one statement.
#[derive(Debug, Clone)]
pub struct FinishedItem<'a> {
    /// The item.
    pub id: Uuid,
    /// Its new status.
    pub status: ItemStatus,
    /// The normalised record, JSON text.
    pub processed_data: Option<&'a str>,
    /// Where it was written.
    pub target_table: Option<&'a str>,
    /// The key of the written row.
    pub target_id: Option<&'a str>,
    /// Why it failed or was skipped.
    pub error_message: Option<&'a str>,
    /// The error's code.
    pub error_code: Option<&'a str>,
    /// The field at fault.
    pub error_field: Option<&'a str>,
    /// When this attempt began.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: f64,
    /// Fuel burned, when metered.
    pub fuel_used: Option<i64>,
    /// For an item left pending for another attempt: when it may be claimed again.
    pub available_at: Option<DateTime<Utc>>,
    /// The counter slot of the worker.
    pub slot: i16,
    /// Log lines to keep with it.
    pub logs: &'a [LogEntry],
}

/// Writes an item's final state, its log lines and its counter increment. The counter slot is
/// updated last, so its row lock is held only until the commit that immediately follows.
pub async fn finish(conn: &mut PgConnection, item: &FinishedItem<'_>) -> Result<(), StoreError> {
    let levels: Vec<&str> = item.logs.iter().map(|l| l.level.as_str()).collect();
    let sources: Vec<&str> = item.logs.iter().map(|l| l.source.as_str()).collect();
    let messages: Vec<&str> = item.logs.iter().map(|l| l.message.as_str()).collect();
    let details: Vec<Option<&str>> = item.logs.iter().map(|l| l.details.as_deref()).collect();
    let times: Vec<DateTime<Utc>> = item.logs.iter().map(|l| l.at).collect();
    let updated: i64 = sqlx::query_scalar(
        "WITH item AS (
             UPDATE import_batch_items
             SET status = $2, processed_data = $3::jsonb, target_table = $4, target_id = $5,
                 error_message = $6, error_code = $7, error_field = $8,
                 attempts = attempts + 1, started_at = $9,
                 finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END,
                 duration_ms = $10, fuel_used = $11, available_at = $18
             WHERE id = $1
             RETURNING batch_id, item_index
         ), logs AS (
             INSERT INTO import_logs (batch_id, item_id, item_index, log_level, source, message, details, created_at)
             SELECT item.batch_id, $1, item.item_index, l.level, l.source, l.message, l.details::jsonb, l.at
             FROM item, unnest($12::text[], $13::text[], $14::text[], $15::text[], $16::timestamptz[])
                  AS l(level, source, message, details, at)
         ), counter AS (
             INSERT INTO import_batch_counters AS c (batch_id, slot, completed, failed, skipped)
             SELECT item.batch_id, $17, ($2 = 'completed')::int, ($2 = 'failed')::int, ($2 = 'skipped')::int
             FROM item
             ON CONFLICT (batch_id, slot) DO UPDATE
             SET completed = c.completed + EXCLUDED.completed,
                 failed = c.failed + EXCLUDED.failed,
                 skipped = c.skipped + EXCLUDED.skipped
         )
         SELECT count(*) FROM item",
    )
    .bind(item.id)
    .bind(item.status.as_str())
    .bind(item.processed_data)
    .bind(item.target_table)
    .bind(item.target_id)
    .bind(item.error_message)
    .bind(item.error_code)
    .bind(item.error_field)
    .bind(item.started_at)
    .bind(item.duration_ms)
    .bind(item.fuel_used)
    .bind(levels)
    .bind(sources)
    .bind(messages)
    .bind(details)
    .bind(times)
    .bind(item.slot)
    .bind(item.available_at)
    .fetch_one(conn)
    .await?;
    if updated != 1 {
        return Err(StoreError::Corrupt(format!(
            "item {} disappeared while it was being processed",
            item.id
        )));
    }
    Ok(())
}
