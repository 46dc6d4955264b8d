//! A worker: one connection, one processor instance, one counter slot. It claims items one at a
//! time and runs each in its own transaction until none is left or it is told to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use uuid::Uuid;

use super::BatchError;
use super::item::{ItemResult, run_item};
use super::native::Runner;
use crate::context::ProcessorContext;
use crate::context::sql::DbSession;
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
    /// Attempts per item for transient failures (1: never retry).
    pub(crate) max_attempts: u32,
    /// The batch's type, for metrics.
    pub(crate) batch_type: String,
    /// Where item outcomes are counted, in a long-running worker.
    pub(crate) metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Signals shared by the workers of one `process` call.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set from outside (a signal, a shutting-down `ingot worker`) to stop claiming new items;
    /// shared by every run the same owner starts.
    pub(crate) stop: Arc<AtomicBool>,
    /// Set when this run must end: stop-on-error, or another worker's failure.
    pub(crate) halt: AtomicBool,
    /// Why the batch must fail, if it must (the first reason wins).
    pub(crate) failure: std::sync::Mutex<Option<String>>,
    /// Items finished by this process, for progress display.
    pub(crate) done: AtomicU64,
}

impl Shared {
    pub(crate) fn fail(&self, reason: String) {
        let mut failure = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failure.get_or_insert(reason);
        self.halt.store(true, Ordering::SeqCst);
    }

    /// Whether workers should stop claiming.
    pub(crate) fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.halt.load(Ordering::SeqCst)
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// How long a worker keeps trying to get its connection back before the batch fails.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
/// The longest a worker sleeps waiting for an item's retry backoff before looking again.
const RETRY_POLL: Duration = Duration::from_secs(1);

/// One connection, one processor instance, one counter slot.
pub(crate) struct Worker {
    pub(crate) ctx: ProcessorContext,
    pub(crate) runner: Runner,
    pub(crate) slot: i16,
    /// How to connect again when the connection is lost.
    pub(crate) connect: PgConnectOptions,
    /// What permission errors tell the processor's author (set on every new connection).
    pub(crate) permission_hint: String,
    /// Where the next claim starts looking (see `items::begin_and_claim`).
    pub(crate) floor: i64,
}

impl Worker {
    /// Replaces a lost connection, trying with growing pauses for up to [`RECONNECT_FOR`]. The
    /// item that was in flight needs nothing: PostgreSQL rolled its transaction back, so it is
    /// pending again.
    pub(crate) async fn reconnect(&mut self, cause: &BatchError) -> Result<(), BatchError> {
        tracing::warn!(slot = self.slot, "lost the database connection ({cause}); reconnecting");
        self.ctx.db = None;
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match self.connect.connect().await {
                Ok(conn) => {
                    let mut session = DbSession::new(conn);
                    session.set_permission_hint(self.permission_hint.clone());
                    self.ctx.db = Some(session);
                    return Ok(());
                }
                Err(e) if started.elapsed() >= RECONNECT_FOR => {
                    return Err(BatchError::Connection(format!(
                        "lost the connection ({cause}) and could not reconnect for {} s: {e}",
                        RECONNECT_FOR.as_secs()
                    )));
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Gets ready to try again after a transient failure `cause`: rolls back what it left open
    /// and replaces the connection if that is what was lost.
    pub(crate) async fn recover(&mut self, tx: TxMode, cause: &BatchError) -> Result<(), BatchError> {
        self.rollback_quietly(tx).await;
        if cause.is_connection_lost() {
            self.reconnect(cause).await?;
        }
        Ok(())
    }

    pub(crate) fn conn(&mut self) -> Result<&mut PgConnection, BatchError> {
        self.ctx
            .db
            .as_mut()
            .map(DbSession::conn)
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

    /// Claims and processes items until none is left or `shared.stop` is set. A lost
    /// connection (a restarted server, a terminated backend) or a deadlock in the host's own
    /// statements is survived: reconnect if needed and carry on with the next claim.
    pub(crate) async fn run(&mut self, batch: &BatchScope, shared: &Shared) -> Result<(), BatchError> {
        while !shared.should_stop() {
            match self.step(batch, shared).await {
                Ok(Step::Processed) => {}
                Ok(Step::Finished) => return Ok(()),
                Ok(Step::Wait(until)) => {
                    let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default().min(RETRY_POLL);
                    tokio::time::sleep(wait).await;
                }
                Err(e) if e.is_transient() && batch.tx == TxMode::PerItem => {
                    self.recover(batch.tx, &e).await?
                }
                Err(e) => {
                    self.rollback_quietly(batch.tx).await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// One item's transaction, or the news that there is nothing (yet) to claim.
    async fn step(&mut self, batch: &BatchScope, shared: &Shared) -> Result<Step, BatchError> {
        let floor = self.floor;
        let claimed =
            items::begin_and_claim(self.conn()?, savepoint(batch.tx), batch.id, floor, &batch.settings)
                .await?;
        let Some(claimed) = claimed else {
            // Nothing was done; rolling back also ends the scope's role (which may not read the
            // items table) even inside a dry run's outer transaction.
            items::rollback(self.conn()?, savepoint(batch.tx)).await?;
            if floor > 0 {
                // Look once more from the start: items skipped while locked by others may have
                // been rolled back, and retries wait below the floor.
                self.floor = 0;
                return Ok(Step::Processed);
            }
            let next = items::next_retry_at(self.conn()?, batch.id).await?;
            return Ok(next.map_or(Step::Finished, Step::Wait));
        };
        self.floor = claimed.index + 1;
        let result: ItemResult = run_item(self, batch, claimed).await?;
        self.commit(batch.tx).await?;
        if result.status != ItemStatus::Pending {
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(metrics) = &batch.metrics {
            let outcome = if result.status == ItemStatus::Pending { "retry" } else { result.status.as_str() };
            metrics.record_item(&batch.batch_type, outcome, result.duration.as_secs_f64());
        }
        if result.status == ItemStatus::Failed && batch.stop_on_error {
            shared.fail(format!(
                "stopped at item {} because stop_on_error is set: {}",
                result.index,
                result.error.as_deref().unwrap_or("failed")
            ));
        }
        Ok(Step::Processed)
    }
}

/// What one step of a worker found.
enum Step {
    /// An item reached a new state.
    Processed,
    /// Nothing is pending.
    Finished,
    /// Items are pending, waiting out a retry backoff until this time.
    Wait(chrono::DateTime<chrono::Utc>),
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
