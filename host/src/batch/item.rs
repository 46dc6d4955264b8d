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
use super::worker::{BatchScope, Worker};
use crate::context::logs::LogLevel;
use crate::runtime::CallError;
use crate::runtime::bindings::{ErrorDetail, Item, ItemError, Outcome};
use crate::store::items::{ClaimedItem, FinishedItem};
use crate::store::{ItemStatus, pg_json, pg_text};

/// How an item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemResult {
    pub(crate) index: i64,
    pub(crate) status: ItemStatus,
    pub(crate) error: Option<String>,
    pub(crate) duration: std::time::Duration,
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
    fn failed(code: &str, message: String) -> Self {
        let detail = ErrorDetail { message: message.clone(), code: Some(code.to_owned()), field: None };
        Verdict::Failed {
            code: Some(code.to_owned()),
            message,
            field: None,
            error: ItemError::Invalid(detail),
            retryable: false,
        }
    }

    fn from_item_error(error: ItemError) -> Self {
        match error {
            ItemError::Skip(detail) => Verdict::Skipped(detail),
            ItemError::Invalid(ref detail) | ItemError::Retryable(ref detail) => Verdict::Failed {
                code: detail.code.clone(),
                message: detail.message.clone(),
                field: detail.field.clone(),
                retryable: matches!(error, ItemError::Retryable(_)),
                error,
            },
        }
    }

    fn from_call(error: &CallError) -> Self {
        Verdict::failed(error.code(), error.to_string())
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
    if let Verdict::Failed { error, message, code, .. } = &verdict {
        let details = serde_json::json!({ "attempt": item.attempt, "code": code, "retry_at": retry_at });
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

    let logs = worker.ctx.logs.take();
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
    let processed_data = outcome.and_then(|o| o.processed_data.as_deref()).map(pg_json);
    let target_table = outcome.and_then(|o| o.target_table.as_deref()).map(pg_text);
    let target_id = outcome.and_then(|o| o.target_id.as_deref()).map(pg_text);
    let message = error.map(|(_, m, _)| pg_text(m));
    let code = error.and_then(|(c, _, _)| c).map(pg_text);
    let field = error.and_then(|(_, _, f)| f).map(pg_text);
    let slot = worker.slot;
    worker
        .finish_item(
            batch,
            keep,
            &FinishedItem {
                batch_id: batch.id,
                id: claimed.id,
                status,
                processed_data: processed_data.as_deref(),
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
                metadata: metadata.as_ref(),
            },
        )
        .await?;
    Ok(ItemResult {
        index: claimed.index,
        status,
        error: message.map(|m| m.into_owned()),
        duration: clock.elapsed(),
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
    if let Some(db) = worker.ctx.db.as_mut() {
        db.open();
    }
    if let Err(error) = worker.runner.validate_item(&mut worker.ctx, item).await? {
        return Ok(Verdict::from_item_error(error));
    }
    Ok(match worker.runner.process_item(&mut worker.ctx, item).await? {
        Ok(outcome) => Verdict::Completed(outcome),
        Err(error) => Verdict::from_item_error(error),
    })
}

/// Closes the processor's database access and folds in what the processor cannot overrule: a
/// failed SQL statement fails an item the processor reported as done (an item it failed or
/// skipped keeps the processor's own reason), an oversized or non-JSON outcome fails it, and a broken
/// connection is the host's failure.
fn settle(worker: &mut Worker, verdict: Result<Verdict, CallError>) -> Result<Verdict, BatchError> {
    let (sql_failure, broken, ended_for_time) = match worker.ctx.db.as_mut() {
        Some(db) => (db.close(), db.broken().map(str::to_owned), db.ended_for_time()),
        None => (None, None, false),
    };
    if let Some(broken) = broken {
        // The host itself ended the backend of a statement that outlived the time limit: the
        // item failed for its time, and is recorded on a fresh connection.
        if ended_for_time && let Err(call @ CallError::Timeout { .. }) = &verdict {
            return Err(BatchError::ItemLost { code: call.code(), message: call.to_string() });
        }
        return Err(BatchError::Connection(broken));
    }
    let verdict = match verdict {
        Err(CallError::Connection(message)) => return Err(BatchError::Connection(message)),
        Err(call) => Verdict::from_call(&call),
        Ok(verdict) => verdict,
    };
    Ok(match (verdict, sql_failure) {
        (Verdict::Completed(_), Some(failure)) => {
            let mut verdict = Verdict::failed("sql_error", failure.to_string());
            if let Verdict::Failed { retryable, .. } = &mut verdict {
                // Serialization failures and deadlocks (class 40) are worth another attempt.
                *retryable = failure.sqlstate.as_deref().is_some_and(|s| s.starts_with("40"));
            }
            verdict
        }
        (Verdict::Completed(outcome), None) => check_outcome(&worker.ctx.caps, outcome),
        (verdict, _) => verdict,
    })
}

fn check_outcome(caps: &crate::context::caps::Caps, outcome: Outcome) -> Verdict {
    let size = [&outcome.target_table, &outcome.target_id, &outcome.processed_data]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum::<usize>();
    if size > caps.outcome_bytes {
        return Verdict::failed(
            "cap_exceeded",
            format!(
                "processor exceeded the cap on outcome size ({} bytes); the item fails",
                caps.outcome_bytes
            ),
        );
    }
    if let Some(data) = &outcome.processed_data
        && serde_json::from_str::<serde::de::IgnoredAny>(data).is_err()
    {
        return Verdict::failed(
            "invalid_outcome",
            "processor returned processed data that is not valid JSON".into(),
        );
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
    if let Some(db) = worker.ctx.db.as_mut() {
        db.open();
    }
    let result = worker.runner.on_item_error(&mut worker.ctx, item, error).await;
    let (sql_failure, broken, ended_for_time) = match worker.ctx.db.as_mut() {
        Some(db) => (db.close(), db.broken().map(str::to_owned), db.ended_for_time()),
        None => (None, None, false),
    };
    if let Some(broken) = broken {
        if ended_for_time {
            // on-item-error ran out of time; the item's own failure is what gets recorded.
            return Err(BatchError::ItemLost {
                code: "timeout",
                message: format!("on-item-error: {broken}"),
            });
        }
        return Err(BatchError::Connection(broken));
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
