//! One item, inside the transaction its claim opened on the processor's connection (SPEC §4):
//!
//! 1. the claim opened the processor scope (savepoint, statement timeout);
//! 2. `validate-item`, then `process-item`; the processor's SQL runs in the scope;
//! 3. success keeps the scope's writes; any failure (invalid, retryable, trap, timeout, cap,
//!    SQL error) rolls them back; a transient failure with attempts left leaves the item pending
//!    behind a backoff, any other runs `on-item-error` in a scope of its own;
//! 4. in one round trip: the last scope ends (kept or rolled back), the processor's session is
//!    reset, the item's status, its buffered logs, the counter slot and metadata changes are
//!    written in one call through the wall, and the transaction commits.
//!
//! So the processor's writes and the `completed` mark commit together or not at all. When the
//! transaction cannot be completed after the processor ran (its session left unusable, a value
//! PostgreSQL refuses, a deferred constraint at COMMIT), the item fails alone: see
//! [`BatchError::ItemLost`].

use std::time::Instant;

use chrono::Utc;

use super::BatchError;
use super::worker::{BatchScope, TxMode, Worker};
use crate::context::caps::{Caps, ERROR_CODE_BYTES, ERROR_FIELD_BYTES, clip};
use crate::context::jsonb;
use crate::context::logs::LogLevel;
use crate::context::sql::Ended;
use crate::runtime::CallError;
use crate::runtime::bindings::{ErrorDetail, Item, ItemError, Outcome};
use crate::store::items::{ClaimedItem, FinishedItem};
use crate::store::{ItemStatus, pg_text};

/// How an item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemResult {
    pub(crate) index: i64,
    pub(crate) status: ItemStatus,
    pub(crate) error: Option<String>,
    pub(crate) duration: std::time::Duration,
    /// Left pending for another attempt: when it may be claimed again.
    pub(crate) retry_at: Option<chrono::DateTime<Utc>>,
    /// Whether its transaction committed with it; otherwise it commits with a later item of the
    /// same transaction.
    pub(crate) committed: bool,
}

/// The item's fate, before it is written.
enum Verdict {
    Completed(Outcome),
    Skipped(ErrorDetail),
    Failed {
        code: Option<String>,
        message: String,
        field: Option<String>,
        error: ItemError,
        /// A transient failure: another attempt may succeed.
        retryable: bool,
    },
}

impl Verdict {
    fn failed(caps: &Caps, code: &str, message: &str) -> Self {
        let message = caps.message(message).into_owned();
        let detail = ErrorDetail { message: message.clone(), code: Some(code.to_owned()), field: None };
        Verdict::Failed {
            code: Some(code.to_owned()),
            message,
            field: None,
            error: ItemError::Invalid(detail),
            retryable: false,
        }
    }

    /// The processor's own verdict, its message, code and field cut to their caps (a code
    /// longer than an index entry may be would fail the host's write).
    fn from_item_error(caps: &Caps, error: ItemError) -> Self {
        let cut = |d: ErrorDetail| ErrorDetail {
            message: caps.message(&d.message).into_owned(),
            code: d.code.as_deref().map(|c| clip(c, ERROR_CODE_BYTES).to_owned()),
            field: d.field.as_deref().map(|f| clip(f, ERROR_FIELD_BYTES).to_owned()),
        };
        let (detail, retryable) = match error {
            ItemError::Skip(detail) => return Verdict::Skipped(cut(detail)),
            ItemError::Invalid(detail) => (cut(detail), false),
            ItemError::Retryable(detail) => (cut(detail), true),
        };
        Verdict::Failed {
            code: detail.code.clone(),
            message: detail.message.clone(),
            field: detail.field.clone(),
            retryable,
            error: if retryable { ItemError::Retryable(detail) } else { ItemError::Invalid(detail) },
        }
    }

    fn from_call(caps: &Caps, error: &CallError) -> Self {
        Verdict::failed(caps, error.code(), &error.to_string())
    }
}

/// Runs one claimed item, whose processor scope is open, to its final state. Errors are host
/// failures (the connection, the framework tables); everything the processor does wrong ends as
/// a failed item instead.
pub(crate) async fn run_item(
    worker: &mut Worker,
    batch: &BatchScope,
    claimed: ClaimedItem,
) -> Result<ItemResult, BatchError> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let item = Item {
        id: claimed.id.to_string(),
        index: u64::try_from(claimed.index).unwrap_or(0),
        data: claimed.data,
        attempt: u32::try_from(claimed.attempts).unwrap_or(0) + 1,
    };
    worker.ctx.begin_scope();

    // The caller claimed the item and opened the processor's scope in the same round trip.
    let verdict = call_processor(worker, &item).await;
    let verdict = settle(worker, verdict)?;
    // The scope the item's final write ends: the item's own, or on-item-error's.
    let mut keep = matches!(verdict, Verdict::Completed(_));

    // A transient failure with attempts left: the item stays pending until its backoff ends.
    let retry_at = match &verdict {
        Verdict::Failed { retryable: true, .. } if item.attempt < batch.max_attempts => {
            Some(Utc::now() + backoff(item.attempt))
        }
        _ => None,
    };
    if let Verdict::Failed { error, message, code, field, .. } = &verdict {
        let mut details = serde_json::json!({ "attempt": item.attempt, "code": code, "field": field, "retry_at": retry_at });
        if let (TxMode::Atomic { run }, None) = (batch.tx, retry_at) {
            // What records the failure if the batch's one transaction is rolled back (see
            // `items::record_atomic_failures`).
            details["atomic_run"] = run.to_string().into();
            details["message"] = message.clone().into();
        }
        if let Some(at) = retry_at {
            let wait = (at - Utc::now()).num_milliseconds().max(0) as f64 / 1000.0;
            let line = format!(
                "attempt {} of {} failed, retrying in {wait:.1} s: {message}",
                item.attempt, batch.max_attempts
            );
            worker.ctx.logs.push_host(LogLevel::Warning, line, Some(details));
        } else {
            let line = match item.attempt {
                1 => format!("item failed: {message}"),
                n => format!("item failed after {n} attempts: {message}"),
            };
            worker.ctx.logs.push_host(LogLevel::Error, line, Some(details));
            worker.close_scope(batch, false).await?;
            keep = call_on_item_error(worker, batch, &item, error).await?;
        }
    }
    let metadata = match verdict {
        Verdict::Completed(_) => worker.ctx.metadata.commit(),
        _ => None,
    };
    worker.ctx.metadata.discard();

    let mut logs = worker.ctx.logs.take();
    if batch.tx.is_atomic() && retry_at.is_none() && matches!(verdict, Verdict::Failed { .. }) {
        // An atomic batch's failed item: its lines must outlive a rollback of the batch's one
        // transaction, so they are written now, outside it, and not again with the item.
        let mut conn = worker.host.acquire().await?;
        crate::store::items::record_lines_now(&mut conn, batch.id, claimed.id, &logs).await?;
        logs.clear();
    }
    let caps = worker.ctx.caps;
    let fuel_used =
        worker.runner.fuel_metering().then(|| i64::try_from(worker.ctx.fuel_used).unwrap_or(i64::MAX));
    let (status, outcome, error) = match &verdict {
        Verdict::Completed(outcome) => (ItemStatus::Completed, Some(outcome), None),
        Verdict::Skipped(detail) => (
            ItemStatus::Skipped,
            None,
            Some((detail.code.as_deref(), detail.message.as_str(), detail.field.as_deref())),
        ),
        Verdict::Failed { code, message, field, .. } => {
            let status = if retry_at.is_some() { ItemStatus::Pending } else { ItemStatus::Failed };
            (status, None, Some((code.as_deref(), message.as_str(), field.as_deref())))
        }
    };
    // Processed data was checked against PostgreSQL's rules when the outcome was settled.
    let processed_data = outcome.and_then(|o| o.processed_data.as_deref());
    let target_table = outcome.and_then(|o| o.target_table.as_deref()).map(pg_text);
    let target_id = outcome.and_then(|o| o.target_id.as_deref()).map(pg_text);
    let message = error.map(|(_, m, _)| pg_text(m));
    let code = error.and_then(|(c, _, _)| c).map(pg_text);
    let field = error.and_then(|(_, _, f)| f).map(pg_text);
    debug_assert!(message.as_ref().is_none_or(|m| m.len() <= caps.error_bytes + 100));
    let slot = worker.slot;
    let written = worker
        .finish_item(
            batch,
            keep,
            &FinishedItem {
                batch_id: batch.id,
                id: claimed.id,
                status,
                processed_data,
                target_table: target_table.as_deref(),
                target_id: target_id.as_deref(),
                error_message: message.as_deref(),
                error_code: code.as_deref(),
                error_field: field.as_deref(),
                started_at,
                duration_ms: clock.elapsed().as_secs_f64() * 1000.0,
                fuel_used,
                available_at: retry_at,
                slot,
                logs: &logs,
                metadata: metadata.as_deref(),
            },
        )
        .await;
    let committed = match written {
        Ok(committed) => committed,
        Err(e) => {
            // The item fails alone on another connection; its logs go with the failure.
            if matches!(e, BatchError::ItemLost { .. }) {
                worker.ctx.logs.restore(logs);
            }
            return Err(e);
        }
    };
    Ok(ItemResult {
        index: claimed.index,
        status,
        error: message.map(|m| m.into_owned()),
        duration: clock.elapsed(),
        retry_at,
        committed,
    })
}

/// How long an item waits before attempt `attempt + 1`: 200 ms doubling per attempt, at most
/// 30 s, with jitter (half to all of it) so that items failing together do not retry together.
fn backoff(attempt: u32) -> chrono::Duration {
    let base = 200.0 * 2_f64.powi(i32::try_from(attempt.saturating_sub(1)).unwrap_or(30).min(30));
    let capped = base.min(30_000.0);
    let jitter = 0.5 + (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 2000.0;
    chrono::Duration::milliseconds((capped * jitter) as i64)
}

/// validate-item, then process-item; the first that does not succeed decides.
async fn call_processor(worker: &mut Worker, item: &Item) -> Result<Verdict, CallError> {
    let caps = worker.ctx.caps;
    if let Some(db) = worker.ctx.db.as_mut() {
        db.open(caps.result_bytes);
    }
    if let Err(error) = worker.runner.validate_item(&mut worker.ctx, item).await? {
        return Ok(Verdict::from_item_error(&caps, error));
    }
    Ok(match worker.runner.process_item(&mut worker.ctx, item).await? {
        Ok(outcome) => Verdict::Completed(outcome),
        Err(error) => Verdict::from_item_error(&caps, error),
    })
}

/// Why the host ended the processor's connection, as the item's failure.
fn lost_for(ended: &Ended, verdict: &Result<Verdict, CallError>, broken: &str) -> BatchError {
    match (ended, verdict) {
        (Ended::Time, Err(call @ CallError::Timeout { .. })) => {
            BatchError::ItemLost { code: call.code(), message: call.to_string() }
        }
        (Ended::Time, _) => BatchError::ItemLost { code: "timeout", message: broken.to_owned() },
        (Ended::Cap(cap), _) => BatchError::ItemLost { code: "cap_exceeded", message: cap.to_string() },
    }
}

/// Closes the processor's database access and folds in what the processor cannot overrule: a
/// failed SQL statement fails an item the processor reported as done (an item it failed or
/// skipped keeps the processor's own reason), an oversized or non-JSON outcome fails it, and a broken
/// connection is the host's failure.
fn settle(worker: &mut Worker, verdict: Result<Verdict, CallError>) -> Result<Verdict, BatchError> {
    let caps = worker.ctx.caps;
    let (sql_failure, broken, ended) = match worker.ctx.db.as_mut() {
        Some(db) => (db.close(), db.broken().map(str::to_owned), db.ended().cloned()),
        None => (None, None, None),
    };
    if let Some(broken) = broken {
        // The host itself ended the connection (a statement outlived the time limit, or the
        // results their cap): the item failed for that, and is recorded on a fresh connection.
        return Err(match &ended {
            Some(ended) => lost_for(ended, &verdict, &broken),
            None => BatchError::Connection(broken),
        });
    }
    let verdict = match verdict {
        Err(CallError::Connection(message)) => return Err(BatchError::Connection(message)),
        Err(call) => Verdict::from_call(&caps, &call),
        Ok(verdict) => verdict,
    };
    Ok(match (verdict, sql_failure) {
        (Verdict::Completed(_), Some(failure)) => {
            let mut verdict = Verdict::failed(&caps, "sql_error", &failure.to_string());
            if let Verdict::Failed { retryable, .. } = &mut verdict {
                // Serialization failures and deadlocks (class 40) are worth another attempt.
                *retryable = failure.sqlstate.as_deref().is_some_and(|s| s.starts_with("40"));
            }
            verdict
        }
        (Verdict::Completed(outcome), None) => check_outcome(&caps, outcome),
        (verdict, _) => verdict,
    })
}

/// An outcome within its cap, whose processed data PostgreSQL will store (with NUL made
/// U+FFFD), or the item's failure.
fn check_outcome(caps: &Caps, mut outcome: Outcome) -> Verdict {
    let size = [&outcome.target_table, &outcome.target_id, &outcome.processed_data]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum::<usize>();
    if size > caps.outcome_bytes {
        return Verdict::failed(
            caps,
            "cap_exceeded",
            &format!(
                "processor exceeded the cap on outcome size ({} bytes); the item fails",
                caps.outcome_bytes
            ),
        );
    }
    if let Some(data) = outcome.processed_data.take() {
        match jsonb::check(&data) {
            Ok(std::borrow::Cow::Borrowed(_)) => outcome.processed_data = Some(data),
            Ok(std::borrow::Cow::Owned(fixed)) => outcome.processed_data = Some(fixed),
            Err(refused) => {
                let what =
                    if refused.syntax { "that is not valid JSON" } else { "that PostgreSQL cannot store" };
                return Verdict::failed(
                    caps,
                    "invalid_outcome",
                    &format!("processor returned processed data {what}: {refused}"),
                );
            }
        }
    }
    Verdict::Completed(outcome)
}

/// Runs on-item-error in a scope of its own, which the item's final write then ends: its writes
/// commit with the failure mark (`true`), or, if it fails, are rolled back (`false`) and the
/// failure is only logged; the item's recorded error stays as it is.
async fn call_on_item_error(
    worker: &mut Worker,
    batch: &BatchScope,
    item: &Item,
    error: &ItemError,
) -> Result<bool, BatchError> {
    worker
        .open_scope(batch)
        .await
        .map_err(|e| BatchError::after_processor(e, "opening on-item-error's scope"))?;
    let result_bytes = worker.ctx.caps.result_bytes;
    if let Some(db) = worker.ctx.db.as_mut() {
        db.open(result_bytes);
    }
    let result = worker.runner.on_item_error(&mut worker.ctx, item, error).await;
    let (sql_failure, broken, ended) = match worker.ctx.db.as_mut() {
        Some(db) => (db.close(), db.broken().map(str::to_owned), db.ended().cloned()),
        None => (None, None, None),
    };
    if let Some(broken) = broken {
        return Err(match ended {
            // on-item-error ran out of time or past its results' cap: the item fails for that.
            Some(Ended::Time) => {
                BatchError::ItemLost { code: "timeout", message: format!("on-item-error: {broken}") }
            }
            Some(Ended::Cap(cap)) => {
                BatchError::ItemLost { code: "cap_exceeded", message: format!("on-item-error: {cap}") }
            }
            None => BatchError::Connection(broken),
        });
    }
    let problem = match (result, sql_failure) {
        (Err(CallError::Connection(message)), _) => return Err(BatchError::Connection(message)),
        (Err(call), _) => Some(call.to_string()),
        (Ok(()), Some(failure)) => Some(failure.to_string()),
        (Ok(()), None) => None,
    };
    let keep = problem.is_none();
    if let Some(problem) = problem {
        worker.ctx.logs.push_host(LogLevel::Warning, format!("on-item-error failed: {problem}"), None);
    }
    Ok(keep)
}
