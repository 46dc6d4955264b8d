//! A worker: one connection logged in as the processor's role, one processor instance, one
//! counter slot. It claims items one at a time and runs each in its own transaction until none is
//! left or it is told to stop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgConnection;
use sqlx::postgres::PgPool;
use uuid::Uuid;

use super::BatchError;
use super::item::{ItemResult, run_item};
use super::native::Runner;
use crate::context::ProcessorContext;
use crate::context::login::ProcessorLogin;
use crate::context::metadata::MetadataView;
use crate::context::sql::DbSession;
use crate::runtime::bindings::BatchInfo;
use crate::store::items::{
    self, ClaimAt, ClaimedItem, DRY_RUN_SAVEPOINT, EndFailed, Ending, Finish, FinishedItem, Interruption,
    NextClaim, ScopeEnd, ScopeSettings,
};
use crate::store::{ItemStatus, StoreError, batches};

/// Whether each item commits on its own, or everything runs inside one transaction that the
/// caller rolls back (a dry run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxMode {
    /// BEGIN / COMMIT per item, on the processor's connection.
    PerItem,
    /// The batch and its items live in one transaction on the host's own connection, with a
    /// savepoint per item; the processor's scopes run in throwaway transactions on its
    /// connection, so its writes are always rolled back.
    DryRun,
    /// All or nothing: every item in one transaction on the processor's connection, each in the
    /// processor's savepoint, committed once at the end (see `batch::atomic`). `run` names this
    /// pass over the batch in the log lines of its failed items.
    Atomic {
        /// This pass.
        run: Uuid,
    },
}

impl TxMode {
    /// Whether items run in one transaction that the host keeps open between them.
    pub(crate) fn is_atomic(self) -> bool {
        matches!(self, TxMode::Atomic { .. })
    }
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
    /// The batch's error thresholds.
    pub(crate) thresholds: Thresholds,
    /// Most items one transaction runs (1: each item commits on its own).
    pub(crate) items_per_commit: u32,
}

/// When failed items fail the batch: more than `max_failures` of them, or more than
/// `max_failure_rate` of the finished items once a sample of them has finished (or of the whole
/// batch, at any time).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Thresholds {
    pub(crate) max_failures: Option<i64>,
    pub(crate) max_failure_rate: Option<f64>,
    /// Items in the batch.
    pub(crate) total: i64,
}

impl Thresholds {
    /// Finished items a rate is judged on (or the whole batch, when smaller): one early failure
    /// is not a rate.
    const RATE_SAMPLE: i64 = 100;

    pub(crate) fn is_set(&self) -> bool {
        self.max_failures.is_some() || self.max_failure_rate.is_some()
    }

    /// Why the batch must stop, given its failed and finished items.
    pub(crate) fn exceeded(&self, failed: i64, finished: i64) -> Option<String> {
        if let Some(max) = self.max_failures
            && failed > max
        {
            return Some(format!("{failed} items failed, more than max_failures ({max}) allows"));
        }
        let rate = self.max_failure_rate?;
        let sample = Self::RATE_SAMPLE.min(self.total).max(1);
        let share = failed as f64 / finished.max(1) as f64;
        // Judged on a sample of finished items, or at once when the failures already are more
        // than that share of the whole batch, whatever the rest does.
        let over = (finished >= sample && share > rate) || failed as f64 > rate * self.total as f64;
        over.then(|| {
            format!(
                "{failed} of the {finished} items finished so far failed ({:.1} %), more than max_failure_rate ({} %) allows",
                100.0 * share,
                100.0 * rate
            )
        })
    }
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
/// How long a transaction that runs several items takes more: past it, the item that ends commits
/// (the rows its items wrote stay locked until then, and a crash of the server would take them all).
const GROUP_TIME: Duration = Duration::from_millis(50);
/// How many bytes of source data one claim brings at most, once the items' size is known.
const GROUP_BYTES: usize = 1 << 20;

/// The items that ran in the current transaction and commit with it.
#[derive(Debug, Default)]
pub(crate) struct Group {
    /// Each item's final state ([`FinishedItem::payload`]), in the order they ran.
    payloads: Vec<String>,
    /// How each ended: reported once they are committed.
    pub(crate) results: Vec<ItemResult>,
    /// When the first began.
    started: Option<Instant>,
    /// The lowest index claimed with the transaction: where the next claim looks again when it
    /// is lost.
    lowest: Option<i64>,
    /// The batch metadata as the transaction found it (its items' changes are in the worker's
    /// view before they commit).
    metadata: Option<MetadataView>,
    /// Bytes of the source data claimed with the transaction.
    bytes: usize,
    /// Items claimed with the transaction.
    claimed: usize,
}

/// One processor connection, one processor instance, one counter slot.
pub(crate) struct Worker {
    pub(crate) ctx: ProcessorContext,
    pub(crate) runner: Runner,
    pub(crate) slot: i16,
    /// How to log in as the processor's role again when the connection is lost or spoiled.
    pub(crate) login: Arc<ProcessorLogin>,
    /// The host's own pool: reads outside item transactions, and the writes that record an item
    /// whose transaction could not be completed.
    pub(crate) host: PgPool,
    /// What permission errors tell the processor's author (set on every new connection).
    pub(crate) permission_hint: String,
    /// Whether the processor's statements go through the SQL gate (see
    /// `BatchManager::without_sql_gate`).
    pub(crate) gate: bool,
    /// Where the next claim starts looking (see `items::begin_and_claim`).
    pub(crate) floor: i64,
    /// A dry run's one transaction, on the host's own connection: the batch and its items exist
    /// only there.
    pub(crate) outer: Option<PgConnection>,
    /// The token of the transaction the host opened on the processor's connection: the wall's
    /// functions refuse any call without it.
    pub(crate) token: Option<Uuid>,
    /// Ingot's schema, quoted: where the server-side checks of the processor's rows live.
    pub(crate) framework: String,
    /// Whether the round trip that finishes the current item also claims the next.
    pub(crate) pipeline: bool,
    /// What that round trip found when it claimed nothing, for the next step.
    pub(crate) prefetched: Option<NextClaim>,
    /// Items claimed with the current transaction and not yet run, lowest index first; the
    /// processor's scope is open for the first of them.
    pub(crate) queue: VecDeque<ClaimedItem>,
    /// The items that ran in the current transaction.
    pub(crate) group: Group,
    /// How many items the next claim takes: it doubles up to the batch's `items_per_commit`
    /// while transactions commit whole, and falls back to 1 when one fails or meets a conflict.
    pub(crate) claim_size: u32,
    /// In an atomic batch: what this pass's items came to so far (uncommitted, so only this
    /// worker can count them).
    pub(crate) run_counts: batches::Counts,
    /// In an atomic batch: when items this pass left pending for a retry may be claimed again
    /// (their state is uncommitted, so only this worker can see it).
    pub(crate) retries: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Worker {
    /// Puts `session` to work for the processor: the permission hint and the gate setting.
    pub(crate) fn adopt(&mut self, mut session: DbSession) {
        session.set_permission_hint(self.permission_hint.clone());
        session.check_rows_in(&self.framework);
        if !self.gate {
            session.without_gate();
        }
        self.ctx.db = Some(session);
        self.token = None;
        self.prefetched = None;
        self.abandon_group();
    }

    /// Forgets the items of a transaction that will not commit: they are pending again (the
    /// next claim looks from the lowest of them), their metadata changes are undone, and the next
    /// transactions take one item each until one commits.
    fn abandon_group(&mut self) {
        let group = std::mem::take(&mut self.group);
        self.queue.clear();
        if let Some(lowest) = group.lowest {
            self.floor = self.floor.min(lowest);
        }
        if let Some(metadata) = group.metadata {
            self.ctx.metadata = metadata;
        }
        if group.claimed > 1 {
            self.claim_size = 1;
        }
    }

    /// Replaces a lost connection, trying with growing pauses for up to [`RECONNECT_FOR`]. The
    /// item that was in flight needs nothing: PostgreSQL rolled its transaction back, so it is
    /// pending again.
    pub(crate) async fn reconnect(&mut self, cause: &BatchError) -> Result<(), BatchError> {
        tracing::warn!(slot = self.slot, "lost the database connection ({cause}); reconnecting");
        self.connect_again(cause).await
    }

    /// Drops the processor's connection and logs in afresh.
    async fn connect_again(&mut self, cause: &BatchError) -> Result<(), BatchError> {
        self.ctx.db = None;
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match self.login.connect().await {
                Ok(session) => {
                    self.adopt(session);
                    return Ok(());
                }
                Err(
                    e @ (crate::context::login::LoginError::Refused { .. }
                    | crate::context::login::LoginError::WrongUser { .. }),
                ) => return Err(e.into()),
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

    /// The processor's connection, for the host's statements that frame its scopes.
    pub(crate) fn session(&mut self) -> Result<&mut DbSession, BatchError> {
        self.ctx.db.as_mut().ok_or_else(|| BatchError::Host("worker has no database connection".into()))
    }

    /// Where the framework's rows of the current transaction are written, and the token to
    /// present there: the processor's connection through the wall, or a dry run's transaction
    /// on the host's own connection (which needs no token).
    pub(crate) fn framework(&mut self) -> Result<Framework<'_>, BatchError> {
        if let Some(outer) = self.outer.as_mut() {
            return Ok(Framework { token: None, on: On::Outer(outer) });
        }
        let token = self.token;
        let session = self
            .ctx
            .db
            .as_mut()
            .ok_or_else(|| BatchError::Host("worker has no database connection".into()))?;
        Ok(Framework { token, on: On::Processor(session) })
    }

    /// Opens a transaction for a batch hook: on the processor's connection, opened for the host
    /// (a dry run: a savepoint of its one transaction).
    pub(crate) async fn begin(&mut self, batch: &BatchScope) -> Result<(), BatchError> {
        match self.outer.as_mut() {
            Some(outer) => items::begin(outer, Some(DRY_RUN_SAVEPOINT)).await?,
            None => {
                let token =
                    self.session()?.host(|c| Box::pin(items::open(c, batch.id, &batch.settings))).await?;
                self.token = token;
            }
        }
        Ok(())
    }

    /// Commits what [`begin`](Self::begin) or a claim opened; `flushed`: waiting for the WAL
    /// flush whatever the batch's durability (the batch's final commit).
    pub(crate) async fn commit(&mut self, flushed: bool) -> Result<(), BatchError> {
        match self.outer.as_mut() {
            Some(outer) => items::commit(outer, Some(DRY_RUN_SAVEPOINT)).await?,
            None if flushed => self.session()?.host(|c| Box::pin(items::commit_flushed(c))).await?,
            None => self.session()?.host(|c| Box::pin(items::commit(c, None))).await?,
        }
        self.token = None;
        Ok(())
    }

    /// Rolls back after a failure; errors are ignored because the connection may be what failed.
    pub(crate) async fn rollback_quietly(&mut self, tx: TxMode) {
        self.token = None;
        self.prefetched = None;
        self.abandon_group();
        if tx == TxMode::DryRun
            && let Some(outer) = self.outer.as_mut()
        {
            let _ = items::rollback(outer, Some(DRY_RUN_SAVEPOINT)).await;
        }
        if let Ok(session) = self.session() {
            let _ = session.host(|c| Box::pin(items::rollback(c, None))).await;
        }
    }

    /// Opens the processor's scope: a savepoint in the current transaction (a dry run: a
    /// throwaway transaction of its own on the processor's connection).
    pub(crate) async fn open_scope(&mut self, batch: &BatchScope) -> Result<(), BatchError> {
        let session = self.session()?;
        match batch.tx {
            TxMode::PerItem | TxMode::Atomic { .. } => {
                session.host(|c| Box::pin(items::open_scope(c, &batch.settings))).await?
            }
            TxMode::DryRun => {
                session.host(|c| Box::pin(items::open_discarded_scope(c, batch.id, &batch.settings))).await?
            }
        }
        Ok(())
    }

    /// Ends the processor's scope, keeping its writes or not, and resets its session. The
    /// processor ran just before: a failure here is the item's (see [`BatchError::after_processor`]).
    pub(crate) async fn close_scope(&mut self, batch: &BatchScope, keep: bool) -> Result<(), BatchError> {
        let end = match (batch.tx, keep) {
            (TxMode::DryRun, _) => ScopeEnd::DiscardTransaction,
            (TxMode::PerItem | TxMode::Atomic { .. }, true) => ScopeEnd::Keep,
            (TxMode::PerItem | TxMode::Atomic { .. }, false) => ScopeEnd::Discard,
        };
        self.session()?
            .host(|c| Box::pin(items::close_scope(c, &batch.settings, end)))
            .await
            .map_err(|e| BatchError::after_processor(e, "ending the processor's scope"))
    }

    /// Ends the processor's scope (keeping its writes or not), resets its session, and either
    /// opens the scope of the next item claimed with the same transaction, or writes the final
    /// state of the transaction's items and commits them (and claims the next ones): one round
    /// trip on the processor's connection either way. `true` when the item committed. A dry run
    /// ends its throwaway transaction there and writes the item in the dry run's transaction. The
    /// processor ran just before: a failure here is the item's, or, when it comes from writing
    /// several items, [`BatchError::GroupLost`].
    pub(crate) async fn finish_item(
        &mut self,
        batch: &BatchScope,
        keep: bool,
        item: &FinishedItem<'_>,
    ) -> Result<bool, BatchError> {
        let end = if keep { ScopeEnd::Keep } else { ScopeEnd::Discard };
        if self.outer.is_some() {
            self.close_scope(batch, false).await?;
            let Some(outer) = self.outer.as_mut() else {
                return Err(BatchError::Host("no dry-run transaction".into()));
            };
            let payload = [item.payload()];
            let finish = Finish { batch_id: batch.id, slot: self.slot, token: None, items: &payload };
            items::finish_and_commit(
                outer,
                &batch.settings,
                None,
                finish,
                Ending::Release(DRY_RUN_SAVEPOINT),
                None,
            )
            .await
            .map_err(|e| BatchError::after_processor(e.error, "completing the item"))?;
            return Ok(true);
        }
        // The next item claimed with this transaction runs in it too, unless this one failed (a
        // failure is committed at once, for the thresholds and stop_on_error to see), the run is
        // ending, or the transaction has held its rows long enough.
        let goes_on = batch.tx == TxMode::PerItem
            && !self.queue.is_empty()
            && matches!(item.status, ItemStatus::Completed | ItemStatus::Skipped)
            && self.pipeline
            && self.group.started.is_some_and(|t| t.elapsed() < GROUP_TIME);
        if goes_on {
            self.session()?
                .host(|c| Box::pin(items::next_scope(c, &batch.settings, end)))
                .await
                .map_err(|e| BatchError::after_processor(e, "ending the processor's scope"))?;
            self.group.payloads.push(item.payload());
            return Ok(false);
        }
        let mut payloads = std::mem::take(&mut self.group.payloads);
        payloads.push(item.payload());
        let finish = Finish { batch_id: batch.id, slot: self.slot, token: self.token, items: &payloads };
        // Items claimed with the transaction that did not run are let go by its commit.
        let released = self.queue.front().map(|c| c.index);
        let claim_size = self.next_claim_size(batch, payloads.len(), item.status == ItemStatus::Pending);
        let then_claim = self.pipeline.then(|| ClaimAt {
            floor: released.unwrap_or(self.floor),
            limit: if batch.tx == TxMode::PerItem { claim_size } else { 1 },
            ..self.claim_at(batch)
        });
        let (ending, end) = match (batch.tx.is_atomic(), end) {
            (true, end) => (Ending::KeepOpen, end),
            (false, ScopeEnd::Keep) => (Ending::Commit, ScopeEnd::KeepThenCommit),
            (false, end) => (Ending::Commit, end),
        };
        let finished = self
            .session()?
            .host(|c| {
                Box::pin(items::finish_and_commit(c, &batch.settings, Some(end), finish, ending, then_claim))
            })
            .await;
        self.release_token(batch);
        match finished {
            Ok(next) => {
                if let Some(index) = released {
                    self.floor = self.floor.min(index);
                }
                self.queue.clear();
                let results = std::mem::take(&mut self.group.results);
                self.group = Group { results, ..Group::default() };
                self.claim_size = claim_size;
                match next {
                    Some(NextClaim::Claimed(claims)) => self.take_claims(claims),
                    other => self.prefetched = other,
                }
                Ok(true)
            }
            Err(EndFailed { error, scope_ended }) if payloads.len() > 1 && scope_ended => {
                let lost = BatchError::after_processor(error, "completing the items");
                if lost.is_transient() {
                    return Err(lost);
                }
                // Writing the items failed, not this item's scope: which item's state could not
                // be written is not known. They all run again, one per transaction, where the
                // one at fault fails alone.
                self.rollback_quietly(batch.tx).await;
                Err(BatchError::GroupLost(lost.to_string()))
            }
            Err(EndFailed { error, .. }) => Err(BatchError::after_processor(error, "completing the item")),
        }
    }

    /// How many items the claim after a transaction that ran `ran` items takes: twice as many
    /// when it ran all it claimed, twice what it ran when it ended early (its time was up), one
    /// after a transient failure (a conflict is likelier in a larger transaction); and, once the
    /// items' size is known, no more than [`GROUP_BYTES`] of them.
    fn next_claim_size(&self, batch: &BatchScope, ran: usize, transient: bool) -> u32 {
        if transient {
            return 1;
        }
        let ran = u32::try_from(ran).unwrap_or(u32::MAX);
        let mut size = if ran >= u32::try_from(self.group.claimed).unwrap_or(0) {
            self.claim_size.max(ran)
        } else {
            ran
        };
        size = size.saturating_mul(2);
        if let Some(average) = self.group.bytes.checked_div(self.group.claimed).filter(|a| *a > 0) {
            size = size.min(u32::try_from(GROUP_BYTES / average).unwrap_or(u32::MAX));
        }
        size.clamp(1, batch.items_per_commit.max(1))
    }

    /// Starts a transaction with the items its claim took.
    fn take_claims(&mut self, claims: Vec<ClaimedItem>) {
        self.group.started = Some(Instant::now());
        self.group.lowest = claims.first().map(|c| c.index);
        self.group.bytes = claims.iter().map(|c| c.data.len()).sum();
        self.group.claimed = claims.len();
        self.group.metadata = (claims.len() > 1).then(|| self.ctx.metadata.clone());
        self.queue = claims.into();
    }

    /// Where the next claim is made: a new transaction, or the atomic batch's open one.
    fn claim_at(&self, batch: &BatchScope) -> ClaimAt {
        let limit = if batch.tx == TxMode::PerItem {
            self.claim_size.clamp(1, batch.items_per_commit.max(1))
        } else {
            1
        };
        // (An atomic batch claims in its one transaction, one item at a time.)
        ClaimAt {
            batch_id: batch.id,
            floor: self.floor,
            within: self.token.filter(|_| batch.tx.is_atomic()),
            limit,
        }
    }

    /// Forgets the token of an item's transaction once it ended (an atomic batch's lasts until
    /// the batch's end).
    fn release_token(&mut self, batch: &BatchScope) {
        if !batch.tx.is_atomic() {
            self.token = None;
        }
    }

    /// Builds what the processor may know about the batch, with its current counts.
    pub(crate) async fn batch_info(&mut self, batch: &BatchScope) -> Result<BatchInfo, BatchError> {
        let dry_run = batch.tx == TxMode::DryRun;
        let framework = batch.settings.framework.clone();
        let at = self.framework()?;
        let token = at.token;
        let view = at
            .run(|c| Box::pin(batches::hook_view(c, &framework, token, batch.id)))
            .await?
            .ok_or(BatchError::NotFound(batch.id))?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(BatchInfo {
            id: batch.id.to_string(),
            batch_type: view.batch_type,
            item_count: count(view.total_items),
            completed: count(view.counts.completed),
            failed: count(view.counts.failed),
            skipped: count(view.counts.skipped),
            metadata: view.metadata,
            source: view.source_info,
            retry_count: u32::try_from(view.retry_count).unwrap_or(0),
            parent_id: view.parent_batch_id.map(|p| p.to_string()),
            dry_run,
        })
    }

    /// Removes what the processor may have left in the database for longer than an item: large
    /// objects its role owns. Best effort: the next worker done with a batch of this type tries
    /// again.
    pub(crate) async fn tidy(&mut self, batch: &BatchScope) {
        if batch.tx == TxMode::DryRun {
            // Every processor transaction of a dry run was rolled back, and its objects with it.
            return;
        }
        if let Ok(session) = self.session()
            && let Err(e) = session.host(|c| Box::pin(items::drop_large_objects(c, &batch.settings))).await
        {
            tracing::debug!("could not remove the processor's large objects: {e}");
        }
    }

    /// Claims and processes items until none is left or `shared.stop` is set. A lost
    /// connection (a restarted server, a terminated backend) or a deadlock in the host's own
    /// statements is survived: reconnect if needed and carry on with the next claim.
    pub(crate) async fn run(&mut self, batch: &BatchScope, shared: &Shared) -> Result<(), BatchError> {
        let result = self.run_items(batch, shared).await;
        self.tidy(batch).await;
        result
    }

    pub(crate) async fn run_items(&mut self, batch: &BatchScope, shared: &Shared) -> Result<(), BatchError> {
        let result = self.run_steps(batch, shared).await;
        if result.is_ok() && !self.group.payloads.is_empty() {
            // Stopped between two items of one transaction: the ones that ran commit.
            return self.commit_group(batch, shared).await;
        }
        if self.prefetched.take().is_some() || !self.queue.is_empty() {
            // Stopped with the next items claimed: let them go (they stay pending).
            self.rollback_quietly(batch.tx).await;
        }
        result
    }

    /// Commits the items that ran in the current transaction when the run ends before the next
    /// one claimed with them (whose scope is open, and discarded): one round trip.
    async fn commit_group(&mut self, batch: &BatchScope, shared: &Shared) -> Result<(), BatchError> {
        let payloads = std::mem::take(&mut self.group.payloads);
        let finish = Finish { batch_id: batch.id, slot: self.slot, token: self.token, items: &payloads };
        let finished = self
            .session()?
            .host(|c| {
                Box::pin(items::finish_and_commit(
                    c,
                    &batch.settings,
                    Some(ScopeEnd::Discard),
                    finish,
                    Ending::Commit,
                    None,
                ))
            })
            .await;
        if let Err(EndFailed { error, .. }) = finished {
            // Nothing of them was kept: they are pending, for the next run.
            self.rollback_quietly(batch.tx).await;
            tracing::warn!(slot = self.slot, "the last items of this run could not be committed: {error}");
            return Ok(());
        }
        self.release_token(batch);
        if let Some(first) = self.queue.front() {
            self.floor = self.floor.min(first.index);
        }
        self.queue.clear();
        let results = std::mem::take(&mut self.group.results);
        self.group = Group::default();
        for result in results {
            self.report(batch, shared, result).await?;
        }
        Ok(())
    }

    async fn run_steps(&mut self, batch: &BatchScope, shared: &Shared) -> Result<(), BatchError> {
        while !shared.should_stop() {
            match self.step(batch, shared).await {
                Ok(Step::Processed) => {}
                Ok(Step::Finished) => return Ok(()),
                Ok(Step::Wait(until)) => {
                    let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default().min(RETRY_POLL);
                    tokio::time::sleep(wait).await;
                }
                // (An atomic batch's transaction is gone with it: the caller starts over.)
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

    /// The next item: one claimed with the current transaction, whose scope is open; or a claim
    /// of new ones, which opens their transaction and the first one's scope (made by the last
    /// item's round trip, or now).
    async fn claim(&mut self, batch: &BatchScope) -> Result<Option<ClaimedItem>, BatchError> {
        if self.queue.is_empty() {
            match self.prefetched.take() {
                Some(NextClaim::Claimed(claims)) => self.take_claims(claims),
                Some(NextClaim::Nothing) => return Ok(None),
                Some(NextClaim::Failed(e)) => {
                    // The last items committed; the claim after them did not: start clean.
                    self.rollback_quietly(batch.tx).await;
                    return Err(e.into());
                }
                None => self.claim_now(batch).await?,
            }
        }
        let claimed = self.queue.pop_front();
        if let Some(claimed) = &claimed {
            self.token = claimed.token.or(self.token);
        }
        Ok(claimed)
    }

    /// Claims new items into the queue.
    async fn claim_now(&mut self, batch: &BatchScope) -> Result<(), BatchError> {
        let at = self.claim_at(batch);
        let claims = match self.outer.as_mut() {
            None => {
                self.session()?.host(|c| Box::pin(items::begin_and_claim(c, at, &batch.settings))).await?
            }
            Some(outer) => {
                let claimed = items::claim_nested(outer, batch.id, at.floor, &batch.settings).await?;
                if claimed.is_some() {
                    self.open_scope(batch).await?;
                }
                claimed.into_iter().collect()
            }
        };
        if !batch.tx.is_atomic() {
            self.token = claims.first().and_then(|c| c.token);
        }
        self.take_claims(claims);
        Ok(())
    }

    /// One item's transaction, or the news that there is nothing (yet) to claim.
    async fn step(&mut self, batch: &BatchScope, shared: &Shared) -> Result<Step, BatchError> {
        let floor = self.floor;
        let Some(claimed) = self.claim(batch).await? else {
            // Nothing was done: end the transaction the claim opened (in an atomic batch's: the
            // processor scope the claim opened).
            match self.outer.as_mut() {
                Some(outer) => items::rollback(outer, Some(DRY_RUN_SAVEPOINT)).await?,
                None if batch.tx.is_atomic() => {
                    let settings = &batch.settings;
                    self.session()?
                        .host(|c| Box::pin(items::close_scope(c, settings, ScopeEnd::Discard)))
                        .await?
                }
                None => self.session()?.host(|c| Box::pin(items::rollback(c, None))).await?,
            }
            self.release_token(batch);
            if floor > 0 {
                // Look once more from the start: items skipped while locked by others may have
                // been rolled back, and retries wait below the floor.
                self.floor = 0;
                return Ok(Step::Processed);
            }
            let next = match self.outer.as_mut() {
                Some(outer) => items::next_retry_at(outer, batch.id).await?,
                None if batch.tx.is_atomic() => {
                    // Every retry due by now was claimed again: the others still wait.
                    let now = chrono::Utc::now();
                    self.retries.retain(|at| *at > now);
                    self.retries.iter().min().copied()
                }
                None => items::next_retry_at(&mut *self.host.acquire().await?, batch.id).await?,
            };
            return Ok(next.map_or(Step::Finished, Step::Wait));
        };
        self.floor = claimed.index + 1;
        let (id, index) = (claimed.id, claimed.index);
        let started = Instant::now();
        // The item's last round trip claims the next one, unless the run is ending.
        self.pipeline = batch.tx != TxMode::DryRun && !shared.should_stop();
        let result: ItemResult = match run_item(self, batch, claimed).await {
            Ok(result) => result,
            Err(e) if e.is_connection_lost() && batch.tx == TxMode::PerItem => {
                // The item's transaction died with its connection. Count that, so that an item
                // whose processing kills its own connection fails instead of running forever.
                self.count_interruption(batch, id, &e).await;
                return Err(e);
            }
            Err(BatchError::ItemLost { code, message }) if batch.tx.is_atomic() => {
                // The batch's one transaction cannot go on: it is rolled back (nothing of the
                // batch is kept), this item's failure is recorded, and the batch fails.
                let result = self.fail_alone(batch, id, index, code, message, started).await?;
                shared.fail(format!(
                    "item {index} could not be completed: {}",
                    result.error.as_deref().unwrap_or("its transaction failed")
                ));
                return Ok(Step::Finished);
            }
            Err(BatchError::ItemLost { code, message }) => {
                self.fail_alone(batch, id, index, code, message, started).await?
            }
            Err(BatchError::GroupLost(why)) => {
                // Rolled back: the items run again, one per transaction.
                tracing::debug!(
                    slot = self.slot,
                    "the items of a transaction could not be written ({why}); running them again"
                );
                return Ok(Step::Processed);
            }
            Err(e) => return Err(e),
        };
        if result.committed {
            self.release_token(batch);
        }
        // Reported once committed, with the items that ran before it in the same transaction.
        let committed = result.committed;
        self.group.results.push(result);
        if committed {
            for result in std::mem::take(&mut self.group.results) {
                self.report(batch, shared, result).await?;
            }
        }
        Ok(Step::Processed)
    }

    /// Counts a committed item's outcome, and stops the run when the batch's rules say so.
    async fn report(
        &mut self,
        batch: &BatchScope,
        shared: &Shared,
        result: ItemResult,
    ) -> Result<(), BatchError> {
        if batch.tx.is_atomic() {
            match result.status {
                ItemStatus::Completed => self.run_counts.completed += 1,
                ItemStatus::Failed => self.run_counts.failed += 1,
                ItemStatus::Skipped => self.run_counts.skipped += 1,
                ItemStatus::Pending | ItemStatus::Processing => self.retries.extend(result.retry_at),
            }
        }
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
        if result.status == ItemStatus::Failed && batch.thresholds.is_set() {
            // The batch's counts over every worker and host (committed: this item's included);
            // an atomic batch's are this worker's own, uncommitted.
            let counts = match self.outer.as_mut() {
                _ if batch.tx.is_atomic() => self.run_counts,
                Some(outer) => batches::counts(outer, batch.id).await?,
                None => batches::counts(&mut *self.host.acquire().await?, batch.id).await?,
            };
            if let Some(reason) = batch.thresholds.exceeded(counts.failed, counts.finished()) {
                // (An atomic batch says what stopping means for it when it ends.)
                let rest = if batch.tx.is_atomic() {
                    String::new()
                } else {
                    format!(
                        "; the other items stay pending (fix the cause, then `ingot batch process {}`)",
                        batch.id
                    )
                };
                shared.fail(format!("stopped after item {}: {reason}{rest}", result.index));
            }
        }
        Ok(())
    }

    /// Records, on the host's own connection, an attempt of item `id` that ended with its
    /// connection lost. Best effort: when the server itself is down, nothing can be recorded,
    /// and nothing needs to be (the item is pending again either way).
    async fn count_interruption(&mut self, batch: &BatchScope, id: Uuid, cause: &BatchError) {
        let recorded = async {
            let mut conn = self.host.acquire().await.map_err(StoreError::from)?;
            items::record_interruption(
                &mut conn,
                batch.id,
                id,
                self.slot,
                batch.max_attempts,
                &cause.to_string(),
            )
            .await
        }
        .await;
        match recorded {
            Ok(Interruption::Failed) => {
                tracing::warn!(item = %id, "item failed: its connection was lost in every attempt ({cause})");
            }
            Ok(Interruption::Retry | Interruption::Elsewhere) => {}
            Err(e) => tracing::debug!(item = %id, "could not count the lost attempt: {e}"),
        }
    }

    /// Fails item `id` on its own after its transaction could not be completed: everything of
    /// it is rolled back, the processor's connection (whose session may be what broke) is
    /// replaced, and the failure is written on the host's own connection.
    async fn fail_alone(
        &mut self,
        batch: &BatchScope,
        id: Uuid,
        index: i64,
        code: &'static str,
        message: String,
        started: Instant,
    ) -> Result<ItemResult, BatchError> {
        self.rollback_quietly(batch.tx).await;
        tracing::debug!(item = %id, "the item's transaction could not be completed ({message}); failing it alone");
        // What the processor logged goes with the failure; its metadata changes do not.
        let logs = self.ctx.logs.take();
        self.ctx.metadata.discard();
        self.connect_again(&BatchError::Host(message.clone())).await?;
        let failed = match self.outer.as_mut() {
            Some(outer) => {
                items::fail_alone(
                    outer,
                    Some(DRY_RUN_SAVEPOINT),
                    batch.id,
                    id,
                    self.slot,
                    code,
                    &message,
                    logs,
                )
                .await?
            }
            None => {
                let mut conn = self.host.acquire().await?;
                items::fail_alone(&mut conn, None, batch.id, id, self.slot, code, &message, logs).await?
            }
        };
        let status = if failed { ItemStatus::Failed } else { ItemStatus::Pending };
        Ok(ItemResult {
            index,
            status,
            error: Some(message),
            duration: started.elapsed(),
            retry_at: None,
            committed: true,
        })
    }
}

/// Where the framework's statements of the current transaction run, and the token they present.
pub(crate) struct Framework<'a> {
    pub(crate) token: Option<Uuid>,
    on: On<'a>,
}

enum On<'a> {
    /// The processor's connection, through its relay.
    Processor(&'a mut DbSession),
    /// A dry run's transaction on the host's own connection.
    Outer(&'a mut PgConnection),
}

impl<'a> Framework<'a> {
    /// Runs `work` on the connection.
    pub(crate) async fn run<T>(
        self,
        work: impl FnOnce(&'a mut PgConnection) -> futures_util::future::BoxFuture<'a, T>,
    ) -> T {
        match self.on {
            On::Processor(session) => session.host(work).await,
            On::Outer(conn) => work(conn).await,
        }
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
