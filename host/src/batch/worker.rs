//! A worker: one connection, one processor instance, one counter slot. It claims items one at a
//! time and runs each in its own transaction until none is left or it is told to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::PgConnection;
use uuid::Uuid;

use super::BatchError;
use super::item::{ItemResult, run_item};
use crate::context::ProcessorContext;
use crate::runtime::Instance;
use crate::runtime::bindings::BatchInfo;
use crate::store::items::{self, ScopeSettings};
use crate::store::{ItemStatus, batches};

/// Whether each item commits on its own, or everything runs inside one transaction that the
/// caller rolls back (a dry run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxMode {
    /// BEGIN / COMMIT per item.
    PerItem,
    /// SAVEPOINT / RELEASE per item inside the caller's transaction; the processor's writes are
    /// always rolled back.
    DryRun,
}

/// What a worker knows about the batch it works on.
#[derive(Debug, Clone)]
pub(crate) struct BatchScope {
    pub(crate) id: Uuid,
    pub(crate) stop_on_error: bool,
    pub(crate) settings: ScopeSettings,
    pub(crate) tx: TxMode,
}

/// Signals shared by the workers of one `process` call.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set to stop claiming new items (stop-on-error, a shutdown, another worker's failure).
    pub(crate) stop: AtomicBool,
    /// Why the batch must fail, if it must (the first reason wins).
    pub(crate) failure: std::sync::Mutex<Option<String>>,
    /// Items finished by this process, for progress display.
    pub(crate) done: AtomicU64,
}

impl Shared {
    pub(crate) fn fail(&self, reason: String) {
        let mut failure = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failure.get_or_insert(reason);
        self.stop.store(true, Ordering::SeqCst);
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// One connection, one instance, one counter slot.
pub(crate) struct Worker {
    pub(crate) ctx: ProcessorContext,
    pub(crate) instance: Instance,
    pub(crate) slot: i16,
}

impl Worker {
    pub(crate) fn conn(&mut self) -> Result<&mut PgConnection, BatchError> {
        self.ctx
            .db
            .as_mut()
            .map(crate::context::sql::DbSession::conn)
            .ok_or_else(|| BatchError::Host("worker has no database connection".into()))
    }

    pub(crate) async fn begin(&mut self, tx: TxMode) -> Result<(), BatchError> {
        items::begin(self.conn()?, savepoint(tx)).await.map_err(Into::into)
    }

    pub(crate) async fn commit(&mut self, tx: TxMode) -> Result<(), BatchError> {
        items::commit(self.conn()?, savepoint(tx)).await.map_err(Into::into)
    }

    /// Rolls back after a failure; errors are ignored because the connection may be what failed.
    pub(crate) async fn rollback_quietly(&mut self, tx: TxMode) {
        if let Ok(conn) = self.conn() {
            let _ = items::rollback(conn, savepoint(tx)).await;
        }
    }

    /// Builds what the processor may know about the batch, with its current counts.
    pub(crate) async fn batch_info(&mut self, id: Uuid, dry_run: bool) -> Result<BatchInfo, BatchError> {
        let conn = self.conn()?;
        let batch = batches::get(conn, id).await?.ok_or(BatchError::NotFound(id))?;
        let counts = batches::counts(conn, id).await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(BatchInfo {
            id: batch.id.to_string(),
            batch_type: batch.batch_type,
            item_count: count(batch.total_items),
            completed: count(counts.completed),
            failed: count(counts.failed),
            skipped: count(counts.skipped),
            metadata: batch.metadata.to_string(),
            source: batch.source_info.to_string(),
            retry_count: u32::try_from(batch.retry_count).unwrap_or(0),
            parent_id: batch.parent_batch_id.map(|p| p.to_string()),
            dry_run,
        })
    }

    /// Claims and processes items until none is left or `shared.stop` is set.
    pub(crate) async fn run(&mut self, batch: &BatchScope, shared: &Shared) -> Result<(), BatchError> {
        while !shared.stop.load(Ordering::SeqCst) {
            self.begin(batch.tx).await?;
            let claimed = match items::claim(self.conn()?, batch.id).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    self.rollback_quietly(batch.tx).await;
                    return Err(e.into());
                }
            };
            let Some(claimed) = claimed else {
                self.commit(batch.tx).await?;
                return Ok(());
            };
            let result: ItemResult = match run_item(self, batch, claimed).await {
                Ok(result) => result,
                Err(e) => {
                    self.rollback_quietly(batch.tx).await;
                    return Err(e);
                }
            };
            self.commit(batch.tx).await?;
            shared.done.fetch_add(1, Ordering::Relaxed);
            if result.status == ItemStatus::Failed && batch.stop_on_error {
                shared.fail(format!(
                    "stopped at item {} because stop_on_error is set: {}",
                    result.index,
                    result.error.as_deref().unwrap_or("failed")
                ));
            }
        }
        Ok(())
    }
}

fn savepoint(tx: TxMode) -> Option<&'static str> {
    match tx {
        TxMode::PerItem => None,
        TxMode::DryRun => Some("ingot_item"),
    }
}

/// Runs `workers` on the batch concurrently and waits for all of them. The first worker error
/// stops the others and is returned.
pub(crate) async fn run_all(
    workers: Vec<Worker>,
    batch: &BatchScope,
    shared: &Arc<Shared>,
) -> Result<(), BatchError> {
    let mut tasks = tokio::task::JoinSet::new();
    for mut worker in workers {
        let batch = batch.clone();
        let shared = Arc::clone(shared);
        tasks.spawn(async move {
            let result = worker.run(&batch, &shared).await;
            if let Err(e) = &result {
                shared.fail(e.to_string());
            }
            result
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(|e| BatchError::Host(format!("a worker crashed: {e}"))).and_then(|r| r);
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
