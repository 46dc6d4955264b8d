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
/// rejected batch is failed, and on-batch-complete(false) runs, in the same transaction. When
/// PostgreSQL refuses what the hooks left to record, the batch fails with that reason instead, so
/// it never stays pending for a start that can never succeed.
pub(crate) async fn start(
    worker: &mut Worker,
    batch: &BatchScope,
    digest: &str,
) -> Result<Start, BatchError> {
    match start_once(worker, batch, digest).await {
        Err(e) if refused(&e) => {
            worker.rollback_quietly(batch.tx).await;
            let reason = format!("the batch's start could not be recorded: {e}");
            end_plainly(worker, batch, Transition::Fail { reason: &reason }, LogLevel::Error, &reason)
                .await?;
            Ok(Start::Rejected(reason))
        }
        other => other,
    }
}

/// A database refusal of something a hook made the host write (not a lost connection or a
/// deadlock, which are worth another try as they are).
fn refused(e: &BatchError) -> bool {
    !e.is_transient()
        && matches!(
            e,
            BatchError::Store(crate::store::StoreError::Database(sqlx::Error::Database(_)))
                | BatchError::ItemLost { .. }
        )
}

/// Moves the batch on the host's own connection, without running any hook, and records `note`:
/// the way to a final state when a hook's own writes cannot be recorded.
async fn end_plainly(
    worker: &mut Worker,
    batch: &BatchScope,
    to: Transition<'_>,
    level: LogLevel,
    note_text: &str,
) -> Result<bool, BatchError> {
    // The hook's own lines are what could not be stored: only the note is kept.
    worker.ctx.logs.take();
    worker.ctx.logs.push_host(level, note_text.to_owned(), None);
    let lines = worker.ctx.logs.take();
    let framework = batch.settings.framework.clone();
    if let Some(outer) = worker.outer.as_mut() {
        // A dry run: the batch lives only in its transaction, on the host's connection already.
        let moved = batches::transition(outer, &framework, None, batch.id, to).await?;
        batches::record(outer, &framework, None, batch.id, None, &lines).await?;
        return Ok(moved);
    }
    let mut tx = worker.host.begin().await?;
    let moved = batches::transition(&mut tx, &framework, None, batch.id, to).await?;
    batches::record(&mut tx, &framework, None, batch.id, None, &lines).await?;
    tx.commit().await?;
    Ok(moved)
}

async fn start_once(worker: &mut Worker, batch: &BatchScope, digest: &str) -> Result<Start, BatchError> {
    worker.begin(batch).await?;
    if !transition(worker, batch, Transition::Start { digest }).await? {
        worker.rollback_quietly(batch.tx).await;
        return Ok(Start::AlreadyStarted);
    }
    let info = worker.batch_info(batch).await?;
    worker.ctx.begin_scope();
    worker.open_scope(batch).await?;
    open_db(worker);
    let caps = worker.ctx.caps;
    let mut rejection = match worker.runner.validate_batch(&mut worker.ctx, &info).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => {
            Some(format!("the processor rejected the batch (validate-batch): {}", caps.message(&reason)))
        }
        Err(call) => Some(call_failure("validate-batch", &call)?),
    };
    if rejection.is_none() {
        rejection = match worker.runner.on_batch_start(&mut worker.ctx, &info).await {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(format!("on-batch-start failed: {}", caps.message(&reason))),
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
    record(worker, batch, changes.as_deref()).await?;
    if let Some(reason) = &rejection {
        transition(worker, batch, Transition::Fail { reason }).await?;
        run_on_batch_complete(worker, batch, false).await?;
    }
    // A rejected batch has ended: that is reported, so it waits for the disk.
    worker.commit(rejection.is_some()).await?;
    Ok(rejection.map_or(Start::Started, Start::Rejected))
}

/// Ends the batch: completed when `failure` is `None`, else failed with that reason; then runs
/// on-batch-complete. A failing hook is logged and does not change the status; when PostgreSQL
/// refuses even what the hook left to record, the batch ends without it, saying so. Returns
/// `false` when another host had already ended the batch.
pub(crate) async fn finish(
    worker: &mut Worker,
    batch: &BatchScope,
    failure: Option<&str>,
) -> Result<bool, BatchError> {
    let to = match failure {
        None => Transition::Complete,
        Some(reason) => Transition::Fail { reason },
    };
    match finish_once(worker, batch, to, failure.is_none()).await {
        Err(e) if refused(&e) => {
            worker.rollback_quietly(batch.tx).await;
            let note =
                format!("on-batch-complete's writes could not be recorded, so they were not kept: {e}");
            end_plainly(worker, batch, to, LogLevel::Warning, &note).await
        }
        other => other,
    }
}

async fn finish_once(
    worker: &mut Worker,
    batch: &BatchScope,
    to: Transition<'_>,
    success: bool,
) -> Result<bool, BatchError> {
    worker.begin(batch).await?;
    if !transition(worker, batch, to).await? {
        worker.rollback_quietly(batch.tx).await;
        return Ok(false);
    }
    run_on_batch_complete(worker, batch, success).await?;
    // The batch's end is what Ingot reports: this commit waits for the disk, and so makes every
    // item commit before it durable too.
    worker.commit(true).await?;
    Ok(true)
}

/// Completes the batch in the transaction the host holds open (an atomic batch's, with every
/// item's writes in it), runs on-batch-complete(true) there and commits, waiting for the disk.
/// `false`, with the transaction still open, when the batch is no longer processing (it was
/// cancelled meanwhile).
pub(crate) async fn complete_open(worker: &mut Worker, batch: &BatchScope) -> Result<bool, BatchError> {
    if !transition(worker, batch, Transition::Complete).await? {
        return Ok(false);
    }
    run_on_batch_complete(worker, batch, true).await?;
    worker.commit(true).await?;
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
    let caps = worker.ctx.caps;
    let mut problem = match worker.runner.on_batch_complete(&mut worker.ctx, &info, success).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(caps.message(&reason).into_owned()),
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
    record(worker, batch, changes.as_deref()).await
}

/// Moves the batch along, in the hook transaction.
async fn transition(worker: &mut Worker, batch: &BatchScope, to: Transition<'_>) -> Result<bool, BatchError> {
    let at = worker.framework()?;
    let token = at.token;
    Ok(at.run(|c| Box::pin(batches::transition(c, &batch.settings.framework, token, batch.id, to))).await?)
}

/// Keeps a hook's metadata changes and the buffered lines about the batch, in the hook
/// transaction.
async fn record(worker: &mut Worker, batch: &BatchScope, changes: Option<&str>) -> Result<(), BatchError> {
    let lines = worker.ctx.logs.take();
    let at = worker.framework()?;
    let token = at.token;
    at.run(|c| Box::pin(batches::record(c, &batch.settings.framework, token, batch.id, changes, &lines)))
        .await?;
    Ok(())
}

fn open_db(worker: &mut Worker) {
    let result_bytes = worker.ctx.caps.result_bytes;
    if let Some(db) = worker.ctx.db.as_mut() {
        db.open(result_bytes);
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
