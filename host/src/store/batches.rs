//! Batches: creation, the pending → processing → completed/failed life, summaries and lists.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{BatchStatus, StoreError};

/// A batch row.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    /// The batch id.
    pub id: Uuid,
    /// The processor that handles it.
    pub batch_type: String,
    /// Its status.
    pub status: BatchStatus,
    /// File name, format, bytes and sha256 of the input.
    pub source_info: Value,
    /// The batch metadata.
    pub metadata: Value,
    /// Stop at the first failed item.
    pub stop_on_error: bool,
    /// Fail once more items than this failed.
    pub max_failures: Option<i64>,
    /// Fail once more than this share of the finished items failed.
    pub max_failure_rate: Option<f64>,
    /// All or nothing: every item in one transaction, kept only if the thresholds hold.
    pub atomic: bool,
    /// The item field whose equal values run one at a time, in file order.
    pub item_key: Option<String>,
    /// sha256 of the processor that ran it.
    pub processor_digest: Option<String>,
    /// Items in the batch.
    pub total_items: i64,
    /// Why the batch failed.
    pub error_message: Option<String>,
    /// 0, or n for the n-th reprocessing.
    pub retry_count: i32,
    /// The batch this one reprocesses.
    pub parent_batch_id: Option<Uuid>,
    /// The batch this one waits for.
    pub after_batch_id: Option<Uuid>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When processing first started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached completed or failed.
    pub completed_at: Option<DateTime<Utc>>,
}

const BATCH_COLUMNS: &str = "id, batch_type, status, source_info, metadata, stop_on_error, max_failures, max_failure_rate, atomic, item_key, processor_digest, \
     total_items, error_message, retry_count, parent_batch_id, after_batch_id, created_at, started_at, completed_at";

/// A row's `status` column, which only Ingot writes.
fn status_of(row: &sqlx::postgres::PgRow) -> Result<BatchStatus, StoreError> {
    let status: String = row.try_get("status")?;
    BatchStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("unknown batch status {status:?}")))
}

fn batch_from_row(row: &sqlx::postgres::PgRow) -> Result<Batch, StoreError> {
    Ok(Batch {
        id: row.try_get("id")?,
        batch_type: row.try_get("batch_type")?,
        status: status_of(row)?,
        source_info: row.try_get("source_info")?,
        metadata: row.try_get("metadata")?,
        stop_on_error: row.try_get("stop_on_error")?,
        max_failures: row.try_get("max_failures")?,
        max_failure_rate: row.try_get("max_failure_rate")?,
        atomic: row.try_get("atomic")?,
        item_key: row.try_get("item_key")?,
        processor_digest: row.try_get("processor_digest")?,
        total_items: row.try_get("total_items")?,
        error_message: row.try_get("error_message")?,
        retry_count: row.try_get("retry_count")?,
        parent_batch_id: row.try_get("parent_batch_id")?,
        after_batch_id: row.try_get("after_batch_id")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

/// What a new batch starts with.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// Its id.
    pub id: Uuid,
    /// Its processor.
    pub batch_type: String,
    /// Where its items come from.
    pub source_info: Value,
    /// Initial metadata.
    pub metadata: Value,
    /// Stop at the first failed item.
    pub stop_on_error: bool,
    /// Fail once more items than this failed.
    pub max_failures: Option<i64>,
    /// Fail once more than this share of the finished items failed.
    pub max_failure_rate: Option<f64>,
    /// All or nothing (see [`Batch::atomic`]).
    pub atomic: bool,
    /// The key field (see [`Batch::item_key`]).
    pub item_key: Option<String>,
    /// The batch it reprocesses.
    pub parent_batch_id: Option<Uuid>,
    /// The batch it waits for.
    pub after_batch_id: Option<Uuid>,
    /// 0, or the parent's + 1.
    pub retry_count: i32,
}

/// Inserts a pending batch with no items; [`set_total`] records the count once they are in.
pub async fn insert(conn: &mut PgConnection, batch: &NewBatch) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO import_batches (id, batch_type, source_info, metadata, stop_on_error, parent_batch_id, retry_count,
                                     max_failures, max_failure_rate, after_batch_id, atomic, item_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(batch.id)
    .bind(&batch.batch_type)
    .bind(&batch.source_info)
    .bind(&batch.metadata)
    .bind(batch.stop_on_error)
    .bind(batch.parent_batch_id)
    .bind(batch.retry_count)
    .bind(batch.max_failures)
    .bind(batch.max_failure_rate)
    .bind(batch.after_batch_id)
    .bind(batch.atomic)
    .bind(&batch.item_key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records how many items the batch holds, and the finished source description.
pub async fn set_total(
    conn: &mut PgConnection,
    id: Uuid,
    total: i64,
    source_info: &Value,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE import_batches SET total_items = $2, source_info = $3 WHERE id = $1")
        .bind(id)
        .bind(total)
        .bind(source_info)
        .execute(conn)
        .await?;
    Ok(())
}

/// One batch, if it exists.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Batch>, StoreError> {
    let row = sqlx::query(&format!("SELECT {BATCH_COLUMNS} FROM import_batches WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(batch_from_row).transpose()
}

/// Waits until everything committed so far is on disk: a transaction that writes a commit
/// record and waits for its flush, which flushes all WAL before it (the asynchronous commits of
/// batch durability included).
pub async fn flush(pool: &sqlx::PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = on").execute(&mut *tx).await?;
    // Assigning a transaction id is what makes the commit write (and wait for) a record.
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// A batch's metadata as JSON text (exactly as stored: numbers keep every digit).
pub async fn metadata_text(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, StoreError> {
    let text = sqlx::query_scalar("SELECT metadata::text FROM import_batches WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(text)
}

/// Where a batch moves to, through `ingot_batch_transition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition<'a> {
    /// From pending or failed to processing, recording the processor's sha256 and
    /// clearing any old error. Takes the batch row's lock until the transaction ends, so exactly
    /// one host runs the batch's start hooks.
    Start {
        /// The processor's digest.
        digest: &'a str,
    },
    /// From processing to completed.
    Complete,
    /// From pending or processing to failed, with a reason (which may quote the processor; NUL
    /// characters are scrubbed).
    Fail {
        /// Why.
        reason: &'a str,
    },
    /// From pending, processing or failed to cancelled, for good: no item is claimed any more.
    Cancel {
        /// Why (shown as the batch's error).
        reason: &'a str,
    },
}

/// Moves a batch along its life, in the caller's transaction: on a processor connection through
/// the wall (`token` is the transaction's), or on the framework owner's own (`token` `None`).
/// `false` when the batch was in none of the states it may move from. The host's statements on a
/// processor connection are not kept prepared, so the processor never finds them in
/// `pg_prepared_statements`.
pub async fn transition(
    conn: &mut PgConnection,
    framework: &str,
    token: Option<Uuid>,
    id: Uuid,
    to: Transition<'_>,
) -> Result<bool, StoreError> {
    let (name, digest, reason) = match to {
        Transition::Start { digest } => ("processing", Some(digest), None),
        Transition::Complete => ("completed", None, None),
        Transition::Fail { reason } => ("failed", None, Some(super::pg_text(reason))),
        Transition::Cancel { reason } => ("cancelled", None, Some(super::pg_text(reason))),
    };
    let moved: bool =
        sqlx::query_scalar(&format!("SELECT {framework}.ingot_batch_transition($1, $2, $3, $4, $5)"))
            .persistent(false)
            .bind(token)
            .bind(id)
            .bind(name)
            .bind(digest)
            .bind(reason.as_deref())
            .fetch_one(conn)
            .await?;
    Ok(moved)
}

/// What a batch hook is told about its batch, read in the caller's transaction (see
/// [`transition`] for `framework` and `token`).
#[derive(Debug, Clone)]
pub struct HookView {
    /// The batch type.
    pub batch_type: String,
    /// Items in the batch.
    pub total_items: i64,
    /// Its counts now.
    pub counts: Counts,
    /// The batch metadata, JSON text.
    pub metadata: String,
    /// Its source description, JSON text.
    pub source_info: String,
    /// 0, or n for the n-th reprocessing.
    pub retry_count: i32,
    /// The batch it reprocesses.
    pub parent_batch_id: Option<Uuid>,
}

/// Reads what a hook is told about batch `id`.
pub async fn hook_view(
    conn: &mut PgConnection,
    framework: &str,
    token: Option<Uuid>,
    id: Uuid,
) -> Result<Option<HookView>, StoreError> {
    let row = sqlx::query(&format!("SELECT * FROM {framework}.ingot_batch_info($1, $2)"))
        .persistent(false)
        .bind(token)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(HookView {
        batch_type: row.try_get("batch_type")?,
        total_items: row.try_get("total_items")?,
        counts: Counts {
            completed: row.try_get("completed")?,
            failed: row.try_get("failed")?,
            skipped: row.try_get("skipped")?,
            last_at: None,
        },
        metadata: row.try_get("metadata")?,
        source_info: row.try_get("source_info")?,
        retry_count: row.try_get("retry_count")?,
        parent_batch_id: row.try_get("parent_batch_id")?,
    }))
}

/// Keeps what a batch hook (or the host, about the batch) leaves behind: metadata changes to
/// merge (a JSON object) and log lines about the batch, in the caller's transaction (see
/// [`transition`] for `framework` and `token`).
pub async fn record(
    conn: &mut PgConnection,
    framework: &str,
    token: Option<Uuid>,
    id: Uuid,
    metadata: Option<&str>,
    lines: &[crate::context::logs::LogEntry],
) -> Result<(), StoreError> {
    if metadata.is_none() && lines.is_empty() {
        return Ok(());
    }
    let mut payload = String::from("{\"logs\":");
    payload.push_str(&super::items::logs_payload(lines));
    if let Some(metadata) = metadata {
        payload.push_str(",\"metadata\":");
        payload.push_str(metadata);
    }
    payload.push('}');
    sqlx::query(&format!("SELECT {framework}.ingot_batch_record($1, $2, $3::jsonb)"))
        .persistent(false)
        .bind(token)
        .bind(id)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// An earlier batch of `batch_type` made from a file with the bytes `sha256` (not a reprocess),
/// other than `id`, that imported or may still import something: pending, processing or
/// completed, or stopped after at least one item completed. A batch refused before any item ran
/// (a missing table, say) does not count: importing the file again is then the fix. Waits for
/// any other transaction checking the same file, so two hosts importing it at once cannot both
/// pass.
pub async fn find_duplicate(
    conn: &mut PgConnection,
    batch_type: &str,
    sha256: &str,
    id: Uuid,
) -> Result<Option<Batch>, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))")
        .bind(batch_type)
        .bind(sha256)
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query(&format!(
        "SELECT {BATCH_COLUMNS} FROM import_batches b
         WHERE batch_type = $1 AND source_info->>'sha256' = $2 AND id <> $3 AND parent_batch_id IS NULL
           AND (status IN ('pending', 'processing', 'completed')
                OR EXISTS (SELECT 1 FROM import_batch_counters c WHERE c.batch_id = b.id AND c.completed > 0))
         ORDER BY created_at DESC LIMIT 1"
    ))
    .bind(batch_type)
    .bind(sha256)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(batch_from_row).transpose()
}

/// The first key of the advisory locks that say a host is working on a batch (the second is a
/// hash of the batch id): every `process` call holds one, shared, on a connection of its own for
/// as long as it works on the batch, so it is gone the moment the host stops or dies — no
/// heartbeat to miss, no lease to expire.
const LIVE_LOCKS: i32 = 0x696e_676f;
/// The first key of the lock an atomic batch's one runner holds: its one transaction cannot be
/// shared with another host.
const ATOMIC_LOCKS: i32 = 0x696e_6761;

/// `pg_locks` rows of the live lock of batch `import_batches.id` (PostgreSQL shows an advisory
/// lock on two int4 keys as classid, objid and objsubid 2; the lock space is the database's).
const LIVE_LOCK_OF_ID: &str = "l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND l.classid = 1768843119::oid AND l.objid = hashtext(import_batches.id::text)::oid";

/// Says, until `conn` closes, that this host works on batch `id`.
pub async fn hold_live(conn: &mut PgConnection, id: Uuid) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_lock_shared($1, hashtext($2::text))")
        .bind(LIVE_LOCKS)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes, until `conn` closes, the right to run atomic batch `id`; `false` when another host
/// holds it.
pub async fn try_hold_atomic(conn: &mut PgConnection, id: Uuid) -> Result<bool, StoreError> {
    let held = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2::text))")
        .bind(ATOMIC_LOCKS)
        .bind(id)
        .fetch_one(conn)
        .await?;
    Ok(held)
}

/// Whether some host is working on batch `id` now (see [`hold_live`]).
pub async fn is_live(conn: &mut PgConnection, id: Uuid) -> Result<bool, StoreError> {
    let live = sqlx::query_scalar(&live_sql("$1")).bind(id).fetch_one(conn).await?;
    Ok(live)
}

/// Whether batch `id` (an SQL expression) is live, as one boolean `live`.
fn live_sql(id: &str) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM import_batches, pg_locks l WHERE import_batches.id = {id} AND {LIVE_LOCK_OF_ID}) AS live"
    )
}

/// Whether any item of the batch is still pending (committed state: items in flight on other
/// connections count as pending).
pub async fn has_pending(conn: &mut PgConnection, id: Uuid) -> Result<bool, StoreError> {
    let pending: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM import_batch_items WHERE batch_id = $1 AND status = 'pending')",
    )
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(pending)
}

/// Completed, failed and skipped counts, summed over the counter slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Items completed.
    pub completed: i64,
    /// Items failed.
    pub failed: i64,
    /// Items skipped.
    pub skipped: i64,
    /// When the last of them finished.
    #[serde(skip)]
    pub last_at: Option<DateTime<Utc>>,
}

impl Counts {
    /// Items that reached a final status.
    pub fn finished(&self) -> i64 {
        self.completed + self.failed + self.skipped
    }
}

/// The batch's counts: a sum over a handful of counter slots, O(1) in the batch size.
pub async fn counts(conn: &mut PgConnection, id: Uuid) -> Result<Counts, StoreError> {
    let row = sqlx::query(&counts_sql("$1")).bind(id).fetch_one(conn).await?;
    counts_from_row(&row)
}

/// The counts of batch `id` (an SQL expression): one row.
fn counts_sql(id: &str) -> String {
    format!(
        "SELECT coalesce(sum(completed), 0)::bigint AS completed, coalesce(sum(failed), 0)::bigint AS failed,
                coalesce(sum(skipped), 0)::bigint AS skipped, max(updated_at) AS last_at
         FROM import_batch_counters WHERE batch_id = {id}"
    )
}

fn counts_from_row(row: &sqlx::postgres::PgRow) -> Result<Counts, StoreError> {
    Ok(Counts {
        completed: row.try_get("completed")?,
        failed: row.try_get("failed")?,
        skipped: row.try_get("skipped")?,
        last_at: row.try_get("last_at")?,
    })
}

/// One cause of failure and how many items it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopError {
    /// The error code (absent when the processor gave none).
    pub code: Option<String>,
    /// The most common message among items with that code.
    pub message: String,
    /// Failed items with that code.
    pub count: i64,
}

/// Failure codes a summary lists; the failed items of the other codes are counted together.
pub const TOP_ERROR_CODES: i64 = 10;

/// The most frequent failure codes of the batch's failed items, most frequent first, at most
/// `limit` of them; and how many failed items have a code not listed.
pub async fn top_errors(
    conn: &mut PgConnection,
    id: Uuid,
    limit: i64,
) -> Result<(Vec<TopError>, i64), StoreError> {
    let rows = sqlx::query(&top_errors_sql("$1", "$2")).bind(id).bind(limit).fetch_all(conn).await?;
    top_errors_from_rows(&rows)
}

/// The `limit` most frequent error codes of batch `id` (SQL expressions).
fn top_errors_sql(id: &str, limit: &str) -> String {
    format!(
        "WITH codes AS (
             SELECT error_code, mode() WITHIN GROUP (ORDER BY error_message) AS message, count(*) AS n
             FROM import_batch_items
             WHERE batch_id = {id} AND status = 'failed'
             GROUP BY error_code)
         SELECT error_code, message, n, sum(n) OVER ()::bigint AS all_failed
         FROM codes
         ORDER BY n DESC, error_code NULLS LAST
         LIMIT {limit}"
    )
}

fn top_errors_from_rows(rows: &[sqlx::postgres::PgRow]) -> Result<(Vec<TopError>, i64), StoreError> {
    let all_failed: i64 = match rows.first() {
        Some(row) => row.try_get("all_failed")?,
        None => 0,
    };
    let top = rows
        .iter()
        .map(|row| {
            Ok(TopError {
                code: row.try_get("error_code")?,
                message: row.try_get::<Option<String>, _>("message")?.unwrap_or_default(),
                count: row.try_get("n")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let listed: i64 = top.iter().map(|e| e.count).sum();
    Ok((top, all_failed - listed))
}

/// Everything `ingot batch show` and `ingot run` report about a batch.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The batch id.
    pub batch_id: Uuid,
    /// Its processor.
    pub batch_type: String,
    /// Its status.
    pub status: BatchStatus,
    /// Items in the batch.
    pub total: i64,
    /// Items completed.
    pub completed: i64,
    /// Items failed.
    pub failed: i64,
    /// Items skipped.
    pub skipped: i64,
    /// Items not yet final.
    pub pending: i64,
    /// All or nothing: its items' writes are kept only if its thresholds held.
    pub atomic: bool,
    /// The batch it reprocesses.
    pub parent_batch_id: Option<Uuid>,
    /// The batch it waits for (`--after`).
    pub after_batch_id: Option<Uuid>,
    /// 0, or n for the n-th reprocessing.
    pub retry_count: i32,
    /// sha256 of the processor that ran it.
    pub processor_digest: Option<String>,
    /// Why the batch failed.
    pub error_message: Option<String>,
    /// File name, format, bytes and sha256 of the input.
    pub source_info: Value,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When processing started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed or failed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Processing time so far.
    pub duration_ms: Option<i64>,
    /// Finished items per second of processing time.
    pub items_per_second: Option<f64>,
    /// The most frequent failure codes (at most ten).
    pub top_errors: Vec<TopError>,
    /// Failed items whose code is not among `top_errors`.
    pub top_errors_more: i64,
    /// The batches that reprocess this one (directly), oldest first.
    pub reprocessed_by: Vec<Reprocess>,
    /// This batch's failed items that a reprocess (at any depth) has since completed.
    pub failures_fixed: i64,
    /// True for a dry run: nothing it reports was kept.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

impl Summary {
    /// Builds a summary from a batch row, its counts and its top errors; `live`: whether some
    /// host is working on it now (a `processing` batch nobody works on reads `interrupted`, and
    /// its time stops at its last finished item).
    pub fn new(
        batch: Batch,
        counts: Counts,
        (top_errors, top_errors_more): (Vec<TopError>, i64),
        live: bool,
    ) -> Self {
        let interrupted = batch.status == BatchStatus::Processing && !live;
        let end = match batch.completed_at {
            Some(at) => at,
            None if interrupted => counts.last_at.or(batch.started_at).unwrap_or_else(Utc::now),
            None => Utc::now(),
        };
        let duration_ms = batch.started_at.map(|start| (end - start).num_milliseconds().max(0));
        #[allow(clippy::cast_precision_loss)]
        let items_per_second =
            duration_ms.filter(|ms| *ms > 0).map(|ms| (counts.finished() as f64) * 1000.0 / ms as f64);
        Summary {
            batch_id: batch.id,
            batch_type: batch.batch_type,
            status: if interrupted { BatchStatus::Interrupted } else { batch.status },
            total: batch.total_items,
            completed: counts.completed,
            failed: counts.failed,
            skipped: counts.skipped,
            pending: (batch.total_items - counts.finished()).max(0),
            atomic: batch.atomic,
            parent_batch_id: batch.parent_batch_id,
            after_batch_id: batch.after_batch_id,
            retry_count: batch.retry_count,
            processor_digest: batch.processor_digest,
            error_message: batch.error_message,
            source_info: batch.source_info,
            created_at: batch.created_at,
            started_at: batch.started_at,
            completed_at: batch.completed_at,
            duration_ms,
            items_per_second,
            top_errors,
            top_errors_more,
            reprocessed_by: Vec::new(),
            failures_fixed: 0,
            dry_run: false,
        }
    }
}

/// The summary of one batch, if it exists.
pub async fn summary(conn: &mut PgConnection, id: Uuid) -> Result<Option<Summary>, StoreError> {
    // `ingot batch show` is a process of its own, on a new connection, whose server process
    // reads the catalog entry of every table and index a statement touches the first time: so
    // the statements go as one simple query (one round trip, where each prepared statement would
    // take two), and the items table (a catalog entry per index) and pg_locks are read only when
    // there is something to find there. The batch id is written in as a literal, a UUID.
    let id_literal = format!("'{id}'::uuid");
    let sets = simple_query(
        conn,
        &[
            format!("SELECT {BATCH_COLUMNS} FROM import_batches WHERE id = {id_literal}"),
            counts_sql(&id_literal),
            reprocessed_by_sql(&id_literal),
        ],
    )
    .await?;
    let [batch, counts, reprocesses] = sets.as_slice() else {
        return Err(StoreError::Corrupt(format!("a batch summary read {} result sets, not 3", sets.len())));
    };
    let Some(batch) = batch.first().map(batch_from_row).transpose()? else {
        return Ok(None);
    };
    let counts = match counts.first() {
        Some(row) => counts_from_row(row)?,
        None => return Err(StoreError::Corrupt("a batch's counts read no row".into())),
    };
    let mut more = Vec::new();
    if counts.failed > 0 {
        more.push(top_errors_sql(&id_literal, &TOP_ERROR_CODES.to_string()));
    }
    let processing = batch.status == BatchStatus::Processing;
    if processing {
        more.push(live_sql(&id_literal));
    }
    let mut more = simple_query(conn, &more).await?.into_iter();
    let top = if counts.failed > 0 {
        top_errors_from_rows(&more.next().unwrap_or_default())?
    } else {
        (Vec::new(), 0)
    };
    let live = processing
        && more
            .next()
            .unwrap_or_default()
            .first()
            .map(|row| row.try_get::<bool, _>("live"))
            .transpose()?
            .unwrap_or(false);
    let mut summary = Summary::new(batch, counts, top, live);
    summary.reprocessed_by = reprocesses_from_rows(reprocesses)?;
    if !summary.reprocessed_by.is_empty() && summary.failed > 0 {
        summary.failures_fixed = failures_fixed(conn, id).await?;
    }
    Ok(Some(summary))
}

/// Runs `statements` as one simple query (one round trip) and returns each one's rows; none when
/// there is no statement. Only for statements built from the host's own values.
async fn simple_query(
    conn: &mut PgConnection,
    statements: &[String],
) -> Result<Vec<Vec<sqlx::postgres::PgRow>>, StoreError> {
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    let sql = statements.join(";\n");
    let mut sets = vec![Vec::new()];
    let mut results = sqlx::raw_sql(&sql).fetch_many(conn);
    while let Some(result) = results.try_next().await? {
        match result {
            // One per statement, after its rows.
            sqlx::Either::Left(_) => sets.push(Vec::new()),
            sqlx::Either::Right(row) => {
                if let Some(set) = sets.last_mut() {
                    set.push(row);
                }
            }
        }
    }
    sets.pop();
    Ok(sets)
}

/// A batch that reprocesses another, as that one's summary lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reprocess {
    /// The reprocessing batch.
    pub batch_id: Uuid,
    /// Its status.
    pub status: BatchStatus,
    /// Its items.
    pub total: i64,
    /// Of them, completed.
    pub completed: i64,
    /// Of them, failed.
    pub failed: i64,
}

/// The batches that reprocess `id` directly, oldest first, with their counts.
fn reprocessed_by_sql(id: &str) -> String {
    format!(
        "SELECT b.id, b.status, b.total_items,
                coalesce(sum(c.completed), 0)::bigint AS completed, coalesce(sum(c.failed), 0)::bigint AS failed
         FROM import_batches b LEFT JOIN import_batch_counters c ON c.batch_id = b.id
         WHERE b.parent_batch_id = {id}
         GROUP BY b.id ORDER BY b.created_at"
    )
}

fn reprocesses_from_rows(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Reprocess>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(Reprocess {
                batch_id: row.try_get("id")?,
                status: status_of(row)?,
                total: row.try_get("total_items")?,
                completed: row.try_get("completed")?,
                failed: row.try_get("failed")?,
            })
        })
        .collect()
}

/// How many of `id`'s failed items a reprocess at any depth (a reprocess keeps item indexes)
/// has since completed.
async fn failures_fixed(conn: &mut PgConnection, id: Uuid) -> Result<i64, StoreError> {
    let fixed = sqlx::query_scalar(
        "WITH RECURSIVE chain AS (
             SELECT id FROM import_batches WHERE parent_batch_id = $1
             UNION
             SELECT b.id FROM import_batches b JOIN chain ON b.parent_batch_id = chain.id)
         SELECT count(*) FROM import_batch_items p
         WHERE p.batch_id = $1 AND p.status = 'failed'
           AND EXISTS (SELECT 1 FROM import_batch_items c
                       WHERE c.batch_id IN (SELECT id FROM chain) AND c.item_index = p.item_index
                         AND c.status = 'completed')",
    )
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(fixed)
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this batch type.
    pub batch_type: Option<String>,
    /// Only this status.
    pub status: Option<BatchStatus>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// The newest batches matching `filter`, with their counts.
pub async fn list(conn: &mut PgConnection, filter: &ListFilter) -> Result<Vec<Summary>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {BATCH_COLUMNS} FROM import_batches
         WHERE ($1::text IS NULL OR batch_type = $1) AND ($2::text IS NULL OR status = $2)
           AND ($4::boolean IS NULL OR $4 = EXISTS (SELECT 1 FROM pg_locks l WHERE {LIVE_LOCK_OF_ID}))
         ORDER BY created_at DESC, id DESC
         LIMIT $3"
    ))
    .bind(&filter.batch_type)
    .bind(filter.status.map(|s| match s {
        // Derived from processing: the live ones, or the others.
        BatchStatus::Interrupted => BatchStatus::Processing.as_str(),
        other => other.as_str(),
    }))
    .bind(filter.limit)
    .bind(match filter.status {
        Some(BatchStatus::Processing) => Some(true),
        Some(BatchStatus::Interrupted) => Some(false),
        _ => None,
    })
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let batch = batch_from_row(row)?;
        let live = batch.status == BatchStatus::Processing && is_live(conn, batch.id).await?;
        let counts = counts(conn, batch.id).await?;
        let top = match counts.failed {
            0 => (Vec::new(), 0),
            _ => top_errors(conn, batch.id, TOP_ERROR_CODES).await?,
        };
        out.push(Summary::new(batch, counts, top, live));
    }
    Ok(out)
}

/// Copies a parent batch's items (all, or only the failed ones) into a new batch, keeping their
/// original index. Returns how many were copied.
pub async fn copy_items_from(
    conn: &mut PgConnection,
    parent: Uuid,
    child: Uuid,
    failed_only: bool,
) -> Result<i64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO import_batch_items (id, batch_id, item_index, key_hash, source_data)
         SELECT gen_random_uuid(), $2, item_index, key_hash, source_data
         FROM import_batch_items
         WHERE batch_id = $1 AND (NOT $3 OR status = 'failed') AND source_purged_at IS NULL
         ORDER BY item_index",
    )
    .bind(parent)
    .bind(child)
    .bind(failed_only)
    .execute(conn)
    .await?;
    i64::try_from(done.rows_affected()).map_err(|_| StoreError::Corrupt("too many items".into()))
}

/// Rows deleted or changed per statement by retention, so that no statement holds its locks
/// (or its WAL) for long and other work interleaves.
const RETENTION_CHUNK: i64 = 5_000;

/// What [`prune`] would delete or deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// The batches.
    pub batches: Vec<Uuid>,
    /// Their items.
    pub items: i64,
    /// Their log lines.
    pub log_lines: i64,
}

/// The batches created before `before` that have ended (completed, failed or cancelled), of
/// `batch_type` if given, and (with `keep_failed`) without a failed item or a failed status,
/// oldest first.
pub async fn prunable(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    batch_type: Option<&str>,
    keep_failed: bool,
) -> Result<Vec<Uuid>, StoreError> {
    let ids = sqlx::query_scalar(
        "SELECT b.id FROM import_batches b
         WHERE b.created_at < $1 AND b.status IN ('completed', 'failed', 'cancelled')
           AND ($2::text IS NULL OR b.batch_type = $2)
           AND NOT ($3 AND (b.status = 'failed'
                OR EXISTS (SELECT 1 FROM import_batch_counters c WHERE c.batch_id = b.id AND c.failed > 0)))
         ORDER BY b.created_at",
    )
    .bind(before)
    .bind(batch_type)
    .bind(keep_failed)
    .fetch_all(conn)
    .await?;
    Ok(ids)
}

/// Deletes batch `id` — its log lines and items in chunks, each its own transaction, then the
/// batch and its counters — if it has ended. Returns the items and log lines deleted; `None`
/// when the batch is not there or has not ended (it is left alone). An interrupted prune leaves
/// the batch with part of its rows; pruning again finishes it.
pub async fn prune(conn: &mut PgConnection, id: Uuid) -> Result<Option<(i64, i64)>, StoreError> {
    let ended: Option<bool> = sqlx::query_scalar(
        "SELECT status IN ('completed', 'failed', 'cancelled') FROM import_batches WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if ended != Some(true) {
        return Ok(None);
    }
    let mut deleted = [0_i64; 2];
    for (n, sql) in [
        "DELETE FROM import_logs WHERE id IN (SELECT id FROM import_logs WHERE batch_id = $1 LIMIT $2)",
        "DELETE FROM import_batch_items WHERE id IN (SELECT id FROM import_batch_items WHERE batch_id = $1 LIMIT $2)",
    ]
    .into_iter()
    .enumerate()
    {
        loop {
            let done = sqlx::query(sql).bind(id).bind(RETENTION_CHUNK).execute(&mut *conn).await?;
            let rows = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
            deleted[n] += rows;
            if rows < RETENTION_CHUNK {
                break;
            }
        }
    }
    sqlx::query("DELETE FROM import_batches WHERE id = $1").bind(id).execute(&mut *conn).await?;
    Ok(Some((deleted[1], deleted[0])))
}

/// Removes the source data of batch `id`'s completed items, in chunks (their status, target,
/// processed data and log lines stay), and records when in its `source_info`. Returns how many
/// items it purged.
pub async fn purge_source(conn: &mut PgConnection, id: Uuid) -> Result<i64, StoreError> {
    let mut purged = 0_i64;
    loop {
        let done = sqlx::query(
            "UPDATE import_batch_items SET source_data = 'null', source_purged_at = now()
             WHERE id IN (SELECT id FROM import_batch_items
                          WHERE batch_id = $1 AND status = 'completed' AND source_purged_at IS NULL
                          LIMIT $2)",
        )
        .bind(id)
        .bind(RETENTION_CHUNK)
        .execute(&mut *conn)
        .await?;
        let rows = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
        purged += rows;
        if rows < RETENTION_CHUNK {
            break;
        }
    }
    sqlx::query(
        "UPDATE import_batches
         SET source_info = source_info || jsonb_build_object('source_purged_at', now(),
                                                            'source_purged_items', coalesce((source_info->>'source_purged_items')::bigint, 0) + $2)
         WHERE id = $1",
    )
    .bind(id)
    .bind(purged)
    .execute(conn)
    .await?;
    Ok(purged)
}

/// How many batches are in each status.
pub async fn count_by_status(conn: &mut PgConnection) -> Result<Vec<(BatchStatus, i64)>, StoreError> {
    let rows = sqlx::query("SELECT status, count(*) AS n FROM import_batches GROUP BY status")
        .fetch_all(conn)
        .await?;
    rows.iter().map(|row| Ok((status_of(row)?, row.try_get("n")?))).collect()
}

/// The channel `ingot worker` listens on; a new batch is announced on it with its id.
pub const BATCH_CHANNEL: &str = "ingot_batches";

/// Announces a new batch to listening workers; delivered when the caller's transaction commits.
pub async fn announce(conn: &mut PgConnection, id: Uuid) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(BATCH_CHANNEL).bind(id.to_string()).execute(conn).await?;
    Ok(())
}

/// The oldest batch of one of `batch_types` that is pending or processing, other than `skip`.
pub async fn next_runnable(
    conn: &mut PgConnection,
    batch_types: &[String],
    skip: &[Uuid],
) -> Result<Option<Uuid>, StoreError> {
    let id = sqlx::query_scalar(
        "SELECT id FROM import_batches
         WHERE status IN ('pending', 'processing') AND batch_type = ANY($1) AND NOT (id = ANY($2))
           -- Not before the batch it waits for has ended (and then only to complete or be failed).
           AND (after_batch_id IS NULL OR EXISTS (
               SELECT 1 FROM import_batches d
               WHERE d.id = import_batches.after_batch_id AND d.status IN ('completed', 'failed', 'cancelled')))
         ORDER BY created_at
         LIMIT 1",
    )
    .bind(batch_types)
    .bind(skip)
    .fetch_optional(conn)
    .await?;
    Ok(id)
}
