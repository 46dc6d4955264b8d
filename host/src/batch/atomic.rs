//! All-or-nothing batches (`--atomic`, `[batch] atomic = true`).
//!
//! Every item runs in one transaction on the processor's connection, each in the processor's
//! savepoint as usual, and the transaction commits — with the batch `completed` and
//! on-batch-complete in it — only if the batch's failures stay within its thresholds (by default:
//! none). Otherwise it is rolled back: no item's writes are kept. A failed item's log lines are
//! written at once, outside the transaction, so that after a rollback the failures can still be
//! recorded and explained (`ingot logs`); every other item is pending again.
//!
//! One transaction cannot be shared, so an atomic batch runs on one connection, on one host at a
//! time (a lock says which), and a lost connection means the whole pass runs again.

use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::BatchError;
use super::hooks;
use super::worker::{BatchScope, Shared, Thresholds, TxMode, Worker};
use crate::store::batches::Counts;
use crate::store::items;

/// Passes over the batch before a lost connection fails it.
const PASSES: u32 = 3;

/// Runs atomic batch `scope.id`, already started, on `worker` alone. Returns why it failed, if
/// it did and nothing was kept; `None` when it completed, was cancelled, or was stopped from
/// outside (then every item is pending, for `ingot batch process` to run again).
pub(crate) async fn process(
    worker: &mut Worker,
    scope: &BatchScope,
    shared: &Shared,
) -> Result<Option<String>, BatchError> {
    let mut pass = 1;
    loop {
        let this = BatchScope { tx: TxMode::Atomic { run: Uuid::new_v4() }, ..scope.clone() };
        worker.run_counts = Counts::default();
        worker.retries.clear();
        worker.floor = 0;
        shared.done.store(0, Ordering::Relaxed);
        match pass_once(worker, &this, shared).await {
            Err(e) if e.is_transient() && pass < PASSES => {
                tracing::warn!(batch = %scope.id, "an atomic batch's transaction was lost ({e}); running every item again");
                worker.recover(TxMode::PerItem, &e).await?;
                pass += 1;
            }
            other => return other,
        }
    }
}

async fn pass_once(
    worker: &mut Worker,
    scope: &BatchScope,
    shared: &Shared,
) -> Result<Option<String>, BatchError> {
    worker.begin(scope).await?;
    // On an error, the transaction was rolled back.
    worker.run_items(scope, shared).await?;
    if shared.stop.load(Ordering::SeqCst) && shared.failure().is_none() {
        worker.rollback_quietly(scope.tx).await;
        return Ok(None);
    }
    let mut failure = shared.failure().or_else(|| verdict(&scope.thresholds, worker.run_counts));
    if failure.is_none() {
        match hooks::complete_open(worker, scope).await {
            Ok(true) => return Ok(None),
            // Cancelled meanwhile: nothing is kept.
            Ok(false) => {}
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => failure = Some(format!("the batch's end could not be recorded: {e}")),
        }
    }
    worker.rollback_quietly(scope.tx).await;
    if let TxMode::Atomic { run } = scope.tx {
        let mut conn = worker.host.acquire().await?;
        items::record_atomic_failures(&mut conn, scope.id, run, worker.slot).await?;
    }
    Ok(failure.map(|reason| {
        format!(
            "{reason}; the batch is all-or-nothing (atomic), so nothing of it was kept: fix the cause, then \
             `ingot batch process {}` runs every item again",
            scope.id
        )
    }))
}

/// Why a pass that ran every item cannot be kept: more failures than the thresholds allow, or
/// any failure when none is set.
fn verdict(thresholds: &Thresholds, counts: Counts) -> Option<String> {
    if thresholds.is_set() {
        return thresholds.exceeded(counts.failed, counts.finished());
    }
    (counts.failed > 0).then(|| format!("{} of its {} items failed", counts.failed, thresholds.total))
}
