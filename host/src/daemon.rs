//! `ingot worker`: a long-running host that processes whatever batches appear.
//!
//! PostgreSQL is the only coordinator. New batches are announced with `NOTIFY` when their
//! creating transaction commits; a worker wakes on that, or on its polling interval if a
//! notification was missed. A notification is only a hint — any role may send one on the channel
//! — so its payload is never read: a worker that wakes looks in the database, at most a few times
//! a second however many notifications arrive. Any number of workers, on any number of hosts, can serve one
//! database: the first to move a pending batch to `processing` runs its start hooks, every worker
//! claims items with `FOR UPDATE SKIP LOCKED`, and whoever finds the last item done completes the
//! batch. Processors are looked up afresh for every batch, so a new or replaced `.wasm` is picked
//! up without a restart, while a batch already running keeps the version it started with.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::batch::{BatchError, BatchManager, ProcessOptions, Progress};
use crate::registry::Registry;
use crate::store::batches::{self, BATCH_CHANNEL};

/// What an `ingot worker` serves.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Only these batch types; `None` for every type with a processor in the directory.
    pub batch_types: Option<Vec<String>>,
    /// How each batch is processed (workers, metrics).
    pub process: ProcessOptions,
    /// How often to look for work when no notification arrives.
    pub poll_interval: Duration,
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonReport {
    /// Batches it worked on (some may have been finished by other workers).
    pub batches: u64,
    /// Items it brought to a final status.
    pub items: u64,
}

/// Serves batches until `progress` is stopped; the batch in hand is left with its in-flight items
/// finished and the rest pending, for this or another worker to take up.
pub async fn run(
    manager: &BatchManager,
    registry: &Registry,
    options: &DaemonOptions,
    progress: &Progress,
) -> Result<DaemonReport, BatchError> {
    let mut listener = PgListener::connect_with(manager.pool()).await?;
    listener.listen(BATCH_CHANNEL).await?;
    // Item commits of batch durability do not wait for the disk; this makes each of them durable
    // within FLUSH_EVERY, whatever the batches in hand are doing.
    let flusher = tokio::spawn(flush_periodically(manager.pool().clone()));
    let served = serve(manager, registry, options, progress, &mut listener).await;
    flusher.abort();
    if let Err(e) = batches::flush(manager.pool()).await {
        tracing::warn!("could not flush before stopping: {e}");
    }
    served
}

/// The longest a committed item of batch durability waits, in a running worker, for the disk.
const FLUSH_EVERY: Duration = Duration::from_secs(2);

async fn flush_periodically(pool: sqlx::PgPool) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        if let Err(e) = batches::flush(&pool).await {
            tracing::debug!("periodic flush failed: {e}");
        }
    }
}

async fn serve(
    manager: &BatchManager,
    registry: &Registry,
    options: &DaemonOptions,
    progress: &Progress,
    listener: &mut PgListener,
) -> Result<DaemonReport, BatchError> {
    let mut report = DaemonReport::default();
    // Batches that just gave this worker nothing to do (all their items are in flight elsewhere,
    // or they cannot run here): left alone until the next poll.
    let mut resting: HashMap<Uuid, Instant> = HashMap::new();
    let mut discovery_error: Option<String> = None;
    while !progress.stopped() {
        resting.retain(|_, until| *until > Instant::now());
        let types = match &options.batch_types {
            Some(types) => types.clone(),
            None => match registry.discover() {
                Ok(found) => {
                    discovery_error = None;
                    found.into_iter().map(|d| d.batch_type).collect()
                }
                // A broken processors folder (say, a typo in ingot.toml) is fixed without a
                // restart; until then this worker serves nothing, and says why once.
                Err(e) => {
                    let message = e.to_string();
                    if discovery_error.as_ref() != Some(&message) {
                        tracing::error!("serving no batches until the processors folder is fixed: {message}");
                        discovery_error = Some(message);
                    }
                    Vec::new()
                }
            },
        };
        let skip: Vec<Uuid> = resting.keys().copied().collect();
        let next = {
            let mut conn = manager.pool().acquire().await?;
            batches::next_runnable(&mut conn, &types, &skip).await?
        };
        let Some(id) = next else {
            wait_for_work(listener, options.poll_interval, progress).await;
            continue;
        };
        let run = progress.child();
        match manager.process(id, &options.process, Some(&run)).await {
            Ok(summary) => {
                report.batches += 1;
                report.items += run.done();
                tracing::info!(batch = %id, status = %summary.status, items = run.done(), "worked on batch");
                if run.done() == 0 {
                    resting.insert(id, Instant::now() + options.poll_interval);
                }
            }
            Err(e) => {
                tracing::warn!(batch = %id, "cannot work on batch now: {e}");
                resting.insert(id, Instant::now() + options.poll_interval);
            }
        }
    }
    Ok(report)
}

/// The shortest time between two looks at the database that notifications cause.
const WAKE_GAP: Duration = Duration::from_millis(200);

/// Returns on a batch announcement, after `poll`, or soon after a stop request. Notifications
/// that arrived together wake the worker once.
async fn wait_for_work(listener: &mut PgListener, poll: Duration, progress: &Progress) {
    let started = tokio::time::Instant::now();
    let deadline = started + poll;
    while !progress.stopped() && tokio::time::Instant::now() < deadline {
        let slice = Duration::from_millis(250).min(deadline - tokio::time::Instant::now());
        match tokio::time::timeout(slice, listener.recv()).await {
            Ok(Ok(_hint)) => {
                // However many arrive, they ask for the same thing: one look at the database.
                tokio::time::sleep_until(started + WAKE_GAP).await;
                while listener.next_buffered().is_some() {}
                return;
            }
            // The listener reconnects by itself; a failure here only means polling for a while.
            Ok(Err(e)) => {
                tracing::warn!("batch notifications interrupted: {e}");
                tokio::time::sleep(slice).await;
            }
            Err(_) => {}
        }
    }
}
