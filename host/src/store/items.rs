//! The item transaction's statements, in the order the worker runs them on the processor's own
//! connection (README, "Security"):
//!
//! ```text
//! BEGIN          ┐
//! ingot_claim    │ opens the transaction for the host,     one round trip per transaction;
//!                │ claims up to N items (FOR UPDATE         each item's SQL runs in its own
//!                │ SKIP LOCKED)                             savepoint
//! open_scope     ┘ SAVEPOINT; SET LOCAL statement_timeout
//! RELEASE        ┐ (or ROLLBACK TO) the savepoint          one round trip between two items
//! reset          │ undo what the processor left in its     of the transaction
//!                │ session (RESET ALL, locks, …)
//! open_scope     ┘ the next item's savepoint
//! RELEASE        ┐ the last item's savepoint                one round trip that ends the
//! reset          │                                          transaction (and claims the next
//! finish         │ ingot_finish_items: every item's         items); a failure that runs
//!                │ status, logs, counter slot, metadata     on-item-error costs one more
//! COMMIT         ┘
//! ```
//!
//! `ingot_claim` returns a token that only the host knows; `ingot_finish_items` refuses a caller
//! without it, so the processor, which runs on the same connection, cannot write the framework
//! tables by calling the functions itself. An item held by a crashed worker needs no recovery: its
//! lock dies with the connection and the uncommitted row is simply pending again.
//!
//! Statements that follow processor code in one round trip are read by the server before the
//! reset in front of them runs, under whatever settings the processor left: so they hold nothing
//! but ASCII, no backslash and no quote inside a literal — processor-supplied text goes in as
//! base64 — and read the same whatever `standard_conforming_strings` or `client_encoding` say.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::{Executor, PgConnection, Row};
use uuid::Uuid;

use super::{ItemStatus, StoreError};
use crate::context::logs::LogEntry;

/// The savepoint that fences the processor's writes inside the item transaction.
const PROCESSOR_SAVEPOINT: &str = "ingot_processor";

/// The savepoint in which the deferred constraints of an item's writes are checked.
const CHECK_SAVEPOINT: &str = "ingot_check";

/// The savepoint each item of a dry run gets inside the dry run's one transaction.
pub const DRY_RUN_SAVEPOINT: &str = "ingot_item";

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
    /// The token of the transaction the claim opened; `None` on the framework owner's connection.
    pub token: Option<Uuid>,
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
    conn.execute(commit_sql(nested).as_str()).await?;
    Ok(())
}

/// Commits the transaction, waiting for its WAL flush (and with it every commit before it)
/// whatever the session says: what Ingot reports as done is on disk.
pub async fn commit_flushed(conn: &mut PgConnection) -> Result<(), StoreError> {
    conn.execute("SET LOCAL synchronous_commit = on; COMMIT").await?;
    Ok(())
}

fn commit_sql(nested: Option<&str>) -> String {
    match nested {
        None => "COMMIT".to_owned(),
        Some(name) => format!("RELEASE SAVEPOINT {name}"),
    }
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

/// Where the wall's functions live and how the processor's SQL runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSettings {
    /// The framework's schema, quoted: every host call on a processor connection names it, so
    /// nothing the processor puts on its search path can stand in for the wall's functions.
    pub framework: String,
    /// The batch type whose processor role the connection is logged in as.
    pub batch_type: String,
    /// Each processor statement's time limit.
    pub statement_timeout: Duration,
}

fn claim_call(settings: &ScopeSettings, batch_id: Uuid, floor: i64, limit: u32) -> String {
    format!(
        "SELECT token, id, item_index, data, attempts FROM {}.ingot_claim('{batch_id}', {}, {floor}, {})",
        settings.framework,
        literal(&settings.batch_type),
        limit.max(1)
    )
}

/// Where the next claim is made: in a new transaction, or (`within`: its token) in the one the
/// host holds open for an atomic batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimAt {
    /// The batch.
    pub batch_id: Uuid,
    /// The lowest index to look at.
    pub floor: i64,
    /// The token of the open transaction to claim in, if any.
    pub within: Option<Uuid>,
    /// How many items a new transaction claims at most (they commit together); an atomic
    /// batch's claims take one at a time.
    pub limit: u32,
}

impl ClaimAt {
    /// The statements that claim and open the processor's scope (the first claimed item's).
    fn statements(&self, settings: &ScopeSettings) -> Vec<String> {
        match self.within {
            None => vec![
                "BEGIN".to_owned(),
                claim_call(settings, self.batch_id, self.floor, self.limit),
                scope_sql(settings),
            ],
            Some(token) => vec![
                format!(
                    "SELECT token, id, item_index, data, attempts FROM {}.ingot_claim_in('{token}', '{}', {})",
                    settings.framework, self.batch_id, self.floor
                ),
                scope_sql(settings),
            ],
        }
    }
}

/// Opens a transaction on the processor's connection, claims up to `at.limit` items, and opens
/// the processor's scope for the first — in one round trip, because this runs once per item or
/// group of items. The statement is built from host values only (a UUID, the batch type,
/// numbers), never from anything a processor or an input file controls. Without an item, the
/// caller rolls back.
pub async fn begin_and_claim(
    conn: &mut PgConnection,
    at: ClaimAt,
    settings: &ScopeSettings,
) -> Result<Vec<ClaimedItem>, StoreError> {
    // Inside an atomic batch's transaction, the scope is opened even when nothing is claimed:
    // the caller then discards it.
    claimed(conn.fetch_all(at.statements(settings).join("; ").as_str()).await?)
}

/// A dry run's claim, on the framework owner's connection inside the dry run's transaction: the
/// item gets a savepoint of its own, and no processor code ever runs on this connection.
pub async fn claim_nested(
    conn: &mut PgConnection,
    batch_id: Uuid,
    floor: i64,
    settings: &ScopeSettings,
) -> Result<Option<ClaimedItem>, StoreError> {
    let sql = format!("SAVEPOINT {DRY_RUN_SAVEPOINT}; {}", claim_call(settings, batch_id, floor, 1));
    Ok(claimed(conn.fetch_all(sql.as_str()).await?)?.into_iter().next())
}

fn claimed(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<ClaimedItem>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(ClaimedItem {
                id: row.try_get("id")?,
                index: row.try_get("item_index")?,
                data: row.try_get("data")?,
                attempts: row.try_get("attempts")?,
                token: row.try_get("token")?,
            })
        })
        .collect()
}

/// Opens a transaction on the processor's connection for the host (a batch hook's, or a dry-run
/// item's) and returns its token.
pub async fn open(
    conn: &mut PgConnection,
    batch_id: Uuid,
    settings: &ScopeSettings,
) -> Result<Option<Uuid>, StoreError> {
    let sql = format!("BEGIN; {}", open_call(settings, batch_id));
    let rows = conn.fetch_all(sql.as_str()).await?;
    match rows.first() {
        Some(row) => Ok(row.try_get(0)?),
        None => Err(StoreError::Corrupt("ingot_open returned nothing".into())),
    }
}

fn open_call(settings: &ScopeSettings, batch_id: Uuid) -> String {
    format!("SELECT {}.ingot_open('{batch_id}', {})", settings.framework, literal(&settings.batch_type))
}

/// A dry-run scope: a transaction of its own on the processor's connection, opened for the host
/// and always rolled back, with the processor's savepoint in it.
pub async fn open_discarded_scope(
    conn: &mut PgConnection,
    batch_id: Uuid,
    settings: &ScopeSettings,
) -> Result<(), StoreError> {
    let sql = format!("BEGIN; {}; {}", open_call(settings, batch_id), scope_sql(settings));
    conn.execute(sql.as_str()).await?;
    Ok(())
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

/// Opens the processor's savepoint with its statement timeout. `SET LOCAL` inside the savepoint
/// is undone by a rollback to it, and by the reset that ends every scope.
pub async fn open_scope(conn: &mut PgConnection, settings: &ScopeSettings) -> Result<(), StoreError> {
    conn.execute(scope_sql(settings).as_str()).await?;
    Ok(())
}

fn scope_sql(settings: &ScopeSettings) -> String {
    format!(
        "SAVEPOINT {PROCESSOR_SAVEPOINT}; SET LOCAL statement_timeout = {}",
        settings.statement_timeout.as_millis().max(1)
    )
}

/// How a processor scope ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeEnd {
    /// Keep its writes (release the savepoint); more items may follow in the transaction.
    Keep,
    /// Keep its writes; the transaction commits next.
    KeepThenCommit,
    /// Roll its writes back (to the savepoint).
    Discard,
    /// Roll back the whole transaction it ran in (a dry run's throwaway transaction).
    DiscardTransaction,
}

impl ScopeEnd {
    fn statements(self) -> Vec<String> {
        match self {
            // Deferred constraints are checked while the processor's writes are still its own:
            // a violation fails the item here, not the host's COMMIT. The check runs in a
            // savepoint that is then rolled back, which puts every constraint back in its own
            // mode (SET CONSTRAINTS lasts to the end of the transaction otherwise, and the next
            // item of the transaction may rely on a deferred one) and leaves the checks to be
            // made again at COMMIT.
            ScopeEnd::Keep => vec![
                format!("SAVEPOINT {CHECK_SAVEPOINT}"),
                "SET CONSTRAINTS ALL IMMEDIATE".to_owned(),
                format!("ROLLBACK TO SAVEPOINT {CHECK_SAVEPOINT}"),
                format!("RELEASE SAVEPOINT {CHECK_SAVEPOINT}"),
                format!("RELEASE SAVEPOINT {PROCESSOR_SAVEPOINT}"),
            ],
            // The commit that follows ends every mode anyway.
            ScopeEnd::KeepThenCommit => vec![
                "SET CONSTRAINTS ALL IMMEDIATE".to_owned(),
                format!("RELEASE SAVEPOINT {PROCESSOR_SAVEPOINT}"),
            ],
            ScopeEnd::Discard => vec![
                format!("ROLLBACK TO SAVEPOINT {PROCESSOR_SAVEPOINT}"),
                format!("RELEASE SAVEPOINT {PROCESSOR_SAVEPOINT}"),
            ],
            ScopeEnd::DiscardTransaction => vec!["ROLLBACK".to_owned()],
        }
    }

    fn sql(self) -> String {
        self.statements().join("; ")
    }
}

fn reset_sql(settings: &ScopeSettings) -> String {
    format!("CALL {}.ingot_reset()", settings.framework)
}

/// Ends the processor's scope, then undoes whatever the processor left in its session, before any
/// other host statement runs: every setting goes back to what the connection started with
/// (`RESET ALL`: search_path, client_encoding, standard_conforming_strings, timeouts, read-only
/// defaults…), and session advisory locks, prepared statements, large objects, cursors, temporary
/// objects and LISTENs are released. One round trip of constant text.
pub async fn close_scope(
    conn: &mut PgConnection,
    settings: &ScopeSettings,
    end: ScopeEnd,
) -> Result<(), StoreError> {
    let sql = format!("{}; {}", end.sql(), reset_sql(settings));
    conn.execute(sql.as_str()).await?;
    Ok(())
}

/// Ends the processor's scope and resets its session as [`close_scope`] does, then opens the
/// scope of the next item claimed in the same transaction: one round trip between two items
/// that commit together.
pub async fn next_scope(
    conn: &mut PgConnection,
    settings: &ScopeSettings,
    end: ScopeEnd,
) -> Result<(), StoreError> {
    let sql = format!("{}; {}; {}", end.sql(), reset_sql(settings), scope_sql(settings));
    conn.execute(sql.as_str()).await?;
    Ok(())
}

/// Unlinks the large objects the processor's role owns: run when a worker is done with a batch
/// (a large object cannot touch the host's statements, and finding one takes a catalog scan).
pub async fn drop_large_objects(conn: &mut PgConnection, settings: &ScopeSettings) -> Result<(), StoreError> {
    conn.execute(format!("SELECT {}.ingot_drop_large_objects()", settings.framework).as_str()).await?;
    Ok(())
}

/// Quotes an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal that reads the same whatever `standard_conforming_strings` and
/// `backslash_quote` say (an `E''` string, with backslashes and quotes doubled).
pub(crate) fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An item's final state, written with its logs, its counter slot and its metadata changes in one
/// call.
#[derive(Debug, Clone)]
pub struct FinishedItem<'a> {
    /// The item's batch.
    pub batch_id: Uuid,
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
    /// Changes to merge into the batch metadata (a JSON object, as text), for a completed item.
    pub metadata: Option<&'a str>,
}

impl FinishedItem<'_> {
    /// The item as one element of `ingot_finish_items`' argument: a JSON object. Processed
    /// data, log details and metadata are JSON text already checked the way PostgreSQL will
    /// check it; they go in as they are, so PostgreSQL stores their numbers exactly.
    pub fn payload(&self) -> String {
        let item = self;
        fn field(out: &mut String, name: &str, value: &impl serde::Serialize) {
            out.push(if out.is_empty() { '{' } else { ',' });
            let _ =
                write!(out, "\"{name}\":{}", serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
        }
        let mut out = String::new();
        field(&mut out, "id", &item.id);
        field(&mut out, "status", &item.status.as_str());
        if let Some(data) = item.processed_data {
            let _ = write!(out, ",\"processed_data\":{data}");
        }
        field(&mut out, "target_table", &item.target_table);
        field(&mut out, "target_id", &item.target_id);
        field(&mut out, "error_message", &item.error_message);
        field(&mut out, "error_code", &item.error_code);
        field(&mut out, "error_field", &item.error_field);
        field(&mut out, "started_at", &item.started_at);
        field(&mut out, "duration_ms", &item.duration_ms);
        field(&mut out, "fuel_used", &item.fuel_used);
        field(&mut out, "available_at", &item.available_at);
        if let Some(metadata) = item.metadata {
            let _ = write!(out, ",\"metadata\":{metadata}");
        }
        out.push_str(",\"logs\":");
        push_logs(&mut out, item.logs);
        out.push('}');
        out
    }
}

/// Log lines as a JSON array of objects (level, source, message, details, at).
fn push_logs(out: &mut String, logs: &[LogEntry]) {
    out.push('[');
    for (i, line) in logs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let text = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into());
        let _ = write!(
            out,
            "{{\"level\":\"{}\",\"source\":\"{}\",\"message\":{},\"details\":{},\"at\":\"{}\"}}",
            line.level.as_str(),
            line.source.as_str(),
            text(&line.message),
            line.details.as_deref().unwrap_or("null"),
            line.at.to_rfc3339()
        );
    }
    out.push(']');
}

/// Log lines as `ingot_batch_record` takes them.
pub(crate) fn logs_payload(logs: &[LogEntry]) -> String {
    let mut out = String::new();
    push_logs(&mut out, logs);
    out
}

/// What the round trip that finished an item found when it went on to claim the next one.
#[derive(Debug)]
pub enum NextClaim {
    /// The next items, claimed in a new transaction (or the next item, in the atomic batch's)
    /// with the processor's scope open for the first.
    Claimed(Vec<ClaimedItem>),
    /// Nothing to claim: the new transaction is open, and the caller rolls it back (in an atomic
    /// batch's transaction: the scope is open, and the caller discards it).
    Nothing,
    /// The items committed, but the claim after them failed: the caller rolls back and tries
    /// again.
    Failed(StoreError),
}

/// How the round trip that writes items' final state ends its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending<'a> {
    /// COMMIT.
    Commit,
    /// Release this savepoint of the caller's transaction (a dry run's item).
    Release(&'a str),
    /// Leave the transaction open: an atomic batch commits once, at its end.
    KeepOpen,
}

/// The final states that end a transaction: the items it ran, written in one call.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    /// Their batch.
    pub batch_id: Uuid,
    /// The worker's counter slot.
    pub slot: i16,
    /// The token of the transaction the claim opened (`None` on the framework owner's
    /// connection).
    pub token: Option<Uuid>,
    /// Each item's [`FinishedItem::payload`], in the order the items ran.
    pub items: &'a [String],
}

/// Why the round trip that ends a transaction failed: in the statements that end the last
/// processor scope and reset its session (the last item's doing), or after them (writing the
/// items, committing).
#[derive(Debug)]
pub struct EndFailed {
    /// What failed.
    pub error: StoreError,
    /// Whether the processor's scope had ended and its session been reset when it failed.
    pub scope_ended: bool,
}

/// Writes items' final state and ends their transaction as `ending` says, in one round trip. With
/// `end`, the processor's scope is ended and its session reset first, in the same round trip (see
/// the module docs for why that is safe). With `then_claim`, the same round trip goes on to claim
/// the next items, as [`begin_and_claim`] does: one round trip per transaction fewer.
pub async fn finish_and_commit(
    conn: &mut PgConnection,
    settings: &ScopeSettings,
    end: Option<ScopeEnd>,
    finish: Finish<'_>,
    ending: Ending<'_>,
    then_claim: Option<ClaimAt>,
) -> Result<Option<NextClaim>, EndFailed> {
    let token = finish.token.map_or_else(|| "NULL".to_owned(), |t| format!("'{t}'::pg_catalog.uuid"));
    let mut statements = Vec::new();
    if let Some(end) = end {
        statements.extend(end.statements());
        statements.push(reset_sql(settings));
    }
    let scope_statements = statements.len();
    let mut array = String::with_capacity(finish.items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    array.push('[');
    for (i, item) in finish.items.iter().enumerate() {
        if i > 0 {
            array.push(',');
        }
        array.push_str(item);
    }
    array.push(']');
    statements.push(format!(
        "SELECT {}.ingot_finish_items({token}, '{}'::pg_catalog.uuid, {}::pg_catalog.int2, \
         pg_catalog.convert_from(pg_catalog.decode('{}', 'base64'), 'UTF8')::pg_catalog.jsonb)",
        settings.framework,
        finish.batch_id,
        finish.slot,
        base64::engine::general_purpose::STANDARD.encode(array),
    ));
    match ending {
        Ending::Commit => statements.push(commit_sql(None)),
        Ending::Release(name) => statements.push(commit_sql(Some(name))),
        Ending::KeepOpen => {}
    }
    // Statements up to the COMMIT decide the items; what follows is the next claim's. (Kept
    // open, the claim is part of the items' transaction, and its failure is theirs.)
    let item_statements = statements.len();
    let committed = ending != Ending::KeepOpen;
    if let Some(at) = then_claim {
        statements.extend(at.statements(settings));
    }
    let sql = statements.join("; ");
    let mut results = conn.fetch_many(sql.as_str());
    let mut done = 0;
    let mut rows = Vec::new();
    loop {
        match results.try_next().await {
            Ok(Some(sqlx::Either::Left(_))) => done += 1,
            Ok(Some(sqlx::Either::Right(row))) => {
                if done >= item_statements {
                    rows.push(row);
                }
            }
            Ok(None) => break,
            Err(e) if committed && done >= item_statements => return Ok(Some(NextClaim::Failed(e.into()))),
            Err(e) => return Err(EndFailed { error: e.into(), scope_ended: done >= scope_statements }),
        }
    }
    if then_claim.is_none() {
        return Ok(None);
    }
    Ok(Some(match claimed(rows) {
        Ok(claims) if claims.is_empty() => NextClaim::Nothing,
        Ok(claims) => NextClaim::Claimed(claims),
        Err(e) => NextClaim::Failed(e),
    }))
}

/// What recording a lost attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The item is pending again, for another attempt.
    Retry,
    /// That was its last attempt: it is failed now.
    Failed,
    /// The item is no longer pending here (it committed, or another worker holds it).
    Elsewhere,
}

/// Counts an attempt that ended with the item's connection lost, on the framework owner's
/// connection, and fails the item once `max_attempts` attempts were lost, so that an item whose
/// processing kills its own connection cannot run forever.
pub async fn record_interruption(
    conn: &mut PgConnection,
    batch_id: Uuid,
    item_id: Uuid,
    slot: i16,
    max_attempts: u32,
    cause: &str,
) -> Result<Interruption, StoreError> {
    conn.execute("BEGIN").await?;
    let result = async {
        let lost: Option<i32> = sqlx::query_scalar(
            "UPDATE import_batch_items SET interruptions = interruptions + 1
             WHERE id = (SELECT id FROM import_batch_items
                         WHERE id = $1 AND batch_id = $2 AND status = 'pending' FOR UPDATE SKIP LOCKED)
             RETURNING interruptions",
        )
        .bind(item_id)
        .bind(batch_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(lost) = lost else { return Ok::<_, StoreError>(Interruption::Elsewhere) };
        if u32::try_from(lost).unwrap_or(u32::MAX) < max_attempts {
            return Ok(Interruption::Retry);
        }
        let message = format!(
            "the item's database connection was lost in {lost} attempt(s) while it was processed \
             (last: {cause}); the processor's writes were rolled back"
        );
        fail_locked(conn, batch_id, item_id, slot, "connection_lost", &message, Vec::new()).await?;
        Ok(Interruption::Failed)
    }
    .await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.execute(end).await;
    let result = result?;
    ended?;
    Ok(result)
}

/// Fails a pending item on its own, on the framework owner's connection, after its transaction
/// could not be completed (nothing of it was kept but `logs`, the lines it wrote). `nested` runs
/// it in a savepoint of the caller's transaction instead (a dry run). `false` when the item is
/// not pending here any more.
#[allow(clippy::too_many_arguments)]
pub async fn fail_alone(
    conn: &mut PgConnection,
    nested: Option<&str>,
    batch_id: Uuid,
    item_id: Uuid,
    slot: i16,
    code: &str,
    message: &str,
    logs: Vec<LogEntry>,
) -> Result<bool, StoreError> {
    begin(conn, nested).await?;
    let result = async {
        let pending: Option<i32> = sqlx::query_scalar(
            "SELECT attempts FROM import_batch_items
             WHERE id = $1 AND batch_id = $2 AND status = 'pending' FOR UPDATE SKIP LOCKED",
        )
        .bind(item_id)
        .bind(batch_id)
        .fetch_optional(&mut *conn)
        .await?;
        if pending.is_none() {
            return Ok::<_, StoreError>(false);
        }
        fail_locked(conn, batch_id, item_id, slot, code, message, logs).await?;
        Ok(true)
    }
    .await;
    match &result {
        Ok(_) => commit(conn, nested).await?,
        Err(_) => {
            let _ = rollback(conn, nested).await;
        }
    }
    result
}

async fn fail_locked(
    conn: &mut PgConnection,
    batch_id: Uuid,
    item_id: Uuid,
    slot: i16,
    code: &str,
    message: &str,
    mut logs: Vec<LogEntry>,
) -> Result<(), StoreError> {
    let message = super::pg_text(message);
    logs.push(LogEntry {
        level: crate::context::logs::LogLevel::Error,
        source: crate::context::logs::LogSource::Host,
        message: format!("item failed: {message}"),
        details: Some(serde_json::json!({ "code": code }).to_string()),
        at: Utc::now(),
    });
    let item = FinishedItem {
        batch_id,
        id: item_id,
        status: ItemStatus::Failed,
        processed_data: None,
        target_table: None,
        target_id: None,
        error_message: Some(&message),
        error_code: Some(code),
        error_field: None,
        started_at: Utc::now(),
        duration_ms: 0.0,
        fuel_used: None,
        available_at: None,
        slot,
        logs: &logs,
        metadata: None,
    };
    sqlx::query("SELECT ingot_finish_items(NULL, $1, $2, $3::jsonb)")
        .bind(batch_id)
        .bind(slot)
        .bind(format!("[{}]", item.payload()))
        .execute(conn)
        .await?;
    Ok(())
}

/// An item as it ended, as `ingot test` compares it with what a case expects.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ItemRecord {
    /// Its index in the source.
    pub index: i64,
    /// Its status.
    pub status: ItemStatus,
    /// Its error's code, field and message.
    pub error_code: Option<String>,
    /// The field at fault.
    pub error_field: Option<String>,
    /// Why it failed or was skipped.
    pub error_message: Option<String>,
    /// Where it was written.
    pub target_table: Option<String>,
    /// The key of the written row.
    pub target_id: Option<String>,
    /// The normalised record.
    pub processed_data: Option<serde_json::Value>,
}

/// Every item of batch `batch_id` as it ended, in index order.
pub async fn records(conn: &mut PgConnection, batch_id: Uuid) -> Result<Vec<ItemRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT item_index, status, error_code, error_field, error_message, target_table, target_id, processed_data
         FROM import_batch_items WHERE batch_id = $1 ORDER BY item_index",
    )
    .bind(batch_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            Ok(ItemRecord {
                index: row.try_get("item_index")?,
                status: ItemStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown item status {status:?}")))?,
                error_code: row.try_get("error_code")?,
                error_field: row.try_get("error_field")?,
                error_message: row.try_get("error_message")?,
                target_table: row.try_get("target_table")?,
                target_id: row.try_get("target_id")?,
                processed_data: row.try_get("processed_data")?,
            })
        })
        .collect()
}

/// Writes an item's log lines at once, on the framework owner's connection, outside the item's
/// transaction: an atomic batch's failed item, whose lines must outlive a rollback of the
/// batch's one transaction.
pub async fn record_lines_now(
    conn: &mut PgConnection,
    batch_id: Uuid,
    item_id: Uuid,
    logs: &[LogEntry],
) -> Result<(), StoreError> {
    if logs.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO import_logs (batch_id, item_id, item_index, log_level, source, message, details, created_at)
         SELECT $1, $2, i.item_index, l.level, l.source, l.message, l.details, l.at
         FROM import_batch_items i,
              jsonb_to_recordset($3::jsonb) AS l(level text, source text, message text, details jsonb, at timestamptz)
         WHERE i.id = $2",
    )
    .bind(batch_id)
    .bind(item_id)
    .bind(logs_payload(logs))
    .execute(conn)
    .await?;
    Ok(())
}

/// After an atomic batch's one transaction was rolled back, marks failed, with their errors, the
/// items whose failure pass `run` recorded in their log lines (see [`record_lines_now`]), and
/// counts them in `slot`; one transaction. Returns how many.
pub async fn record_atomic_failures(
    conn: &mut PgConnection,
    batch_id: Uuid,
    run: Uuid,
    slot: i16,
) -> Result<i64, StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let failed = sqlx::query(
        "UPDATE import_batch_items i
         SET status = 'failed', error_message = l.details->>'message', error_code = l.details->>'code',
             error_field = l.details->>'field', attempts = i.attempts + 1, finished_at = l.created_at
         FROM import_logs l
         WHERE l.batch_id = $1 AND l.source = 'host' AND l.details->>'atomic_run' = $2::text
           AND i.id = l.item_id AND i.batch_id = $1 AND i.status = 'pending'",
    )
    .bind(batch_id)
    .bind(run)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let failed = i64::try_from(failed).unwrap_or(i64::MAX);
    if failed > 0 {
        sqlx::query(
            "INSERT INTO import_batch_counters AS c (batch_id, slot, failed, updated_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (batch_id, slot) DO UPDATE SET failed = c.failed + EXCLUDED.failed, updated_at = now()",
        )
        .bind(batch_id)
        .bind(slot)
        .bind(failed)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(failed)
}

/// Gets an atomic batch ready to run every item again: nothing of an unfinished atomic batch was
/// kept, so the failures an earlier run recorded (to explain itself) go back to pending, and their
/// count to 0. Only under the atomic batch's lock (see `batches::try_hold_atomic`).
pub async fn reset_atomic(conn: &mut PgConnection, batch_id: Uuid) -> Result<(), StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query(
        "UPDATE import_batch_items
         SET status = 'pending', error_message = NULL, error_code = NULL, error_field = NULL, finished_at = NULL,
             available_at = NULL
         WHERE batch_id = $1 AND status = 'failed'",
    )
    .bind(batch_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE import_batch_counters SET failed = 0 WHERE batch_id = $1")
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::literal;

    #[test]
    fn literals_read_the_same_whatever_the_session_says_about_backslashes() {
        assert_eq!(literal("plain"), "E'plain'");
        assert_eq!(literal("it's"), "E'it''s'");
        assert_eq!(literal(r"a\' , set_config"), r"E'a\\'' , set_config'");
    }
}
