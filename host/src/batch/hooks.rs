//! The batch hooks: validate-batch and on-batch-start when a batch starts, on-batch-complete
//! when it ends. Each runs in the transaction that changes the batch's status, inside a
//! processor scope, so a hook's writes commit with the status change or not at all.

use super::BatchError;
use super::worker::{BatchScope, Worker};
use crate::context::logs::LogLevel;
use crate::runtime::CallError;
use crate::store::batches::{self, Transition};

/// The outcome of trying to start a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    /// This host moved it to processing and its start hooks accepted it.
    Started,
    /// It was no longer pending: another host started it.
    AlreadyStarted,
    /// validate-batch or on-batch-start refused it; it is now failed with this reason.
    Rejected(String),
}

/// Moves the batch from pending to processing, running validate-batch and on-batch-start. A
/// rejected batch is failed, and on-batch-complete(false) runs, in the same transaction.
pub(crate) async fn start(
    worker: &mut Worker,
    batch: &BatchScope,
    digest: &str,
) -> Result<Start, BatchError> {
    worker.begin(batch).await?;
    if !transition(worker, batch, Transition::Start { digest }).await? {
        worker.rollback_quietly(batch.tx).await;
        return Ok(Start::AlreadyStarted);
    }
    let info = worker.batch_info(batch).await?;
    worker.ctx.begin_scope();
    worker.open_scope(batch).await?;
    open_db(worker);
    let mut rejection = match worker.runner.validate_batch(&mut worker.ctx, &info).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(format!("the processor rejected the batch (validate-batch): {reason}")),
        Err(call) => Some(call_failure("validate-batch", &call)?),
    };
    if rejection.is_none() {
        rejection = match worker.runner.on_batch_start(&mut worker.ctx, &info).await {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(format!("on-batch-start failed: {reason}")),
            Err(call) => Some(call_failure("on-batch-start", &call)?),
        };
    }
    if let Some(failure) = close_db(worker)? {
        rejection.get_or_insert(format!("a batch hook's SQL failed: {failure}"));
    }
    let keep = rejection.is_none();
    worker.close_scope(batch, keep).await?;
    let changes = if keep { worker.ctx.metadata.commit() } else { None };
    worker.ctx.metadata.discard();
    if let Some(reason) = &rejection {
        worker.ctx.logs.push_host(LogLevel::Error, format!("batch failed: {reason}"), None);
    }
    record(worker, batch, changes.as_ref()).await?;
    if let Some(reason) = &rejection {
        transition(worker, batch, Transition::Fail { reason }).await?;
        run_on_batch_complete(worker, batch, false).await?;
    }
    worker.commit().await?;
    Ok(rejection.map_or(Start::Started, Start::Rejected))
}

/// Ends the batch: completed when `failure` is `None`, else failed with that reason; then runs
/// on-batch-complete. A failing hook is logged and does not change the status. Returns `false`
/// when another host had already ended the batch.
pub(crate) async fn finish(
    worker: &mut Worker,
    batch: &BatchScope,
    failure: Option<&str>,
) -> Result<bool, BatchError> {
    worker.begin(batch).await?;
    let to = match failure {
        None => Transition::Complete,
        Some(reason) => Transition::Fail { reason },
    };
    if !transition(worker, batch, to).await? {
        worker.rollback_quietly(batch.tx).await;
        return Ok(false);
    }
    run_on_batch_complete(worker, batch, failure.is_none()).await?;
    worker.commit().await?;
    Ok(true)
}

/// on-batch-complete for a batch whose final status is already written in the open transaction.
pub(crate) async fn run_on_batch_complete(
    worker: &mut Worker,
    batch: &BatchScope,
    success: bool,
) -> Result<(), BatchError> {
    let info = worker.batch_info(batch).await?;
    worker.ctx.begin_scope();
    worker.open_scope(batch).await?;
    open_db(worker);
    let mut problem = match worker.runner.on_batch_complete(&mut worker.ctx, &info, success).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(call) => Some(call_failure("on-batch-complete", &call)?),
    };
    if let Some(failure) = close_db(worker)? {
        problem.get_or_insert(failure);
    }
    let keep = problem.is_none();
    worker.close_scope(batch, keep).await?;
    let changes = if keep { worker.ctx.metadata.commit() } else { None };
    worker.ctx.metadata.discard();
    if let Some(problem) = problem {
        let message = format!("on-batch-complete failed (the batch status is unchanged): {problem}");
        worker.ctx.logs.push_host(LogLevel::Warning, message, None);
    }
    record(worker, batch, changes.as_ref()).await
}

/// Moves the batch along, in the hook transaction.
async fn transition(worker: &mut Worker, batch: &BatchScope, to: Transition<'_>) -> Result<bool, BatchError> {
    let (conn, token) = worker.framework()?;
    Ok(batches::transition(conn, &batch.settings.framework, token, batch.id, to).await?)
}

/// Keeps a hook's metadata changes and the buffered lines about the batch, in the hook
/// transaction.
async fn record(
    worker: &mut Worker,
    batch: &BatchScope,
    changes: Option<&serde_json::Value>,
) -> Result<(), BatchError> {
    let lines = worker.ctx.logs.take();
    let (conn, token) = worker.framework()?;
    batches::record(conn, &batch.settings.framework, token, batch.id, changes, &lines).await?;
    Ok(())
}

fn open_db(worker: &mut Worker) {
    if let Some(db) = worker.ctx.db.as_mut() {
        db.open();
    }
}

/// Ends the processor's database access; a SQL failure is returned as text, a broken
/// connection as the host's error.
fn close_db(worker: &mut Worker) -> Result<Option<String>, BatchError> {
    let Some(db) = worker.ctx.db.as_mut() else {
        return Ok(None);
    };
    let failure = db.close().map(|f| f.to_string());
    match db.broken() {
        Some(broken) => Err(BatchError::Connection(broken.to_owned())),
        None => Ok(failure),
    }
}

fn call_failure(hook: &str, call: &CallError) -> Result<String, BatchError> {
    match call {
        CallError::Connection(message) => Err(BatchError::Connection(message.clone())),
        other => Ok(format!("{hook} failed: {other}")),
    }
}

/// Logs a line about the batch outside any hook (e.g. a resume), on the host's own connection.
pub(crate) async fn note(
    worker: &mut Worker,
    batch: &BatchScope,
    level: LogLevel,
    message: String,
) -> Result<(), BatchError> {
    worker.ctx.logs.push_host(level, message, None);
    let lines = worker.ctx.logs.take();
    let mut conn = worker.host.acquire().await?;
    batches::record(&mut conn, &batch.settings.framework, None, batch.id, None, &lines).await?;
    Ok(())
}
