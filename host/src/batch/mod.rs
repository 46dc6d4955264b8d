//! Batches: create, process, reprocess, dry-run. "How is an item processed?" is answered in
//! [`item`]; the hooks around a batch in [`hooks`]; concurrency in [`worker`].

mod atomic;
mod create;
mod hooks;
mod item;
pub mod native;
mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, PgConnection};
use uuid::Uuid;

use self::native::{NativeProcessor, Runner};
use self::worker::{BatchScope, Shared, TxMode, Worker};
use crate::context::ProcessorContext;
use crate::context::grants::{self, DEFAULT_ROLE_PREFIX, GrantError, Login};
use crate::context::login::{self, LoginError, ProcessorLogin};
use crate::context::logs::LogLevel;
use crate::context::sql::DbSession;
use crate::input::{InputError, InputSource};
pub use crate::registry::manifest::Durability;
use crate::registry::manifest::Manifest;
use crate::registry::{Processor, Registry, RegistryError};
use crate::runtime::{Instance, Runtime};
use crate::store::batches::{self, NewBatch, Summary};
use crate::store::items::{self, ScopeSettings};
use crate::store::{BatchStatus, StoreError, roles};

/// Why a batch operation could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// No such batch.
    #[error("batch {0} does not exist (see `ingot batch list`)")]
    NotFound(Uuid),
    /// The batch was cancelled: it is final.
    #[error(
        "batch {id} was cancelled ({reason}); its pending items are never processed: to import them, create a new batch from the file"
    )]
    Cancelled {
        /// The batch.
        id: Uuid,
        /// Why it was cancelled.
        reason: String,
    },
    /// The file was already imported as a batch of the same type.
    #[error(
        "{name} was already imported as batch {earlier} ({status}, {created}); importing it again would apply every item twice: pass --allow-duplicate if that is what you want"
    )]
    Duplicate {
        /// The file name.
        name: String,
        /// The earlier batch.
        earlier: Uuid,
        /// Its status.
        status: String,
        /// When it was created.
        created: String,
    },
    /// The batch to wait for does not exist.
    #[error("batch {0}, given with --after, does not exist (see `ingot batch list`)")]
    NoSuchDependency(Uuid),
    /// An atomic batch is running on another host: its one transaction cannot be shared.
    #[error(
        "batch {0} is all-or-nothing (atomic) and another host is processing it now; one transaction cannot be \
         shared: wait for it to end (`ingot batch show {0}`)"
    )]
    AtomicElsewhere(Uuid),
    /// The batch completed: there is nothing left to cancel.
    #[error("batch {0} has completed; there is nothing left to cancel")]
    AlreadyCompleted(Uuid),
    /// The processor is missing or unusable.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The input is unreadable or malformed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A framework-table operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database connection failed.
    #[error("the database connection failed: {0}")]
    Connection(String),
    /// The processor's database role could not be set up.
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// The host could not log in as the processor's role.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// An item's transaction could not be completed after its processor ran: the processor left
    /// its session unusable, returned a value PostgreSQL refuses, broke a deferred constraint, or
    /// ran out of time in a statement the host had to end. Nothing of the transaction is kept;
    /// the worker fails that item alone, on a fresh connection, and goes on.
    #[error("{message}")]
    ItemLost {
        /// The error code recorded on the item.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// The final state of items that ran in one transaction could not be written, and it is
    /// not known which item is at fault: the transaction was rolled back, and the worker runs its
    /// items again, one per transaction, where the one at fault fails alone.
    #[error("the items of one transaction could not be completed: {0}")]
    GroupLost(String),
    /// Anything else the host could not do.
    #[error("{0}")]
    Host(String),
}

impl BatchError {
    /// The database connection is gone (server restarted, backend terminated, network): a new
    /// connection can carry on.
    pub fn is_connection_lost(&self) -> bool {
        let sqlx_error = match self {
            BatchError::Connection(_) => return true,
            BatchError::Store(StoreError::Database(e)) => e,
            _ => return false,
        };
        match sqlx_error {
            sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                // 08: connection exception; 57P01-03: administrator or crash shutdown, cannot connect now.
                db.code()
                    .is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03"))
            }
            _ => false,
        }
    }

    /// Worth another try: a lost connection, or a serialization failure or deadlock in the host's
    /// own statements (their transaction rolled back, so nothing was applied).
    pub fn is_transient(&self) -> bool {
        let deadlock = match self {
            BatchError::Store(StoreError::Database(sqlx::Error::Database(db))) => {
                db.code().is_some_and(|c| c.starts_with("40"))
            }
            _ => false,
        };
        deadlock || self.is_connection_lost()
    }
}

impl BatchError {
    /// Sorts a failure of a host statement that ran after processor code in the same transaction
    /// (`doing` says which): a lost connection or a deadlock stays what it is (the item runs
    /// again), and anything PostgreSQL refused is the item's, which then fails alone.
    pub(crate) fn after_processor(e: impl Into<BatchError>, doing: &str) -> BatchError {
        let e = e.into();
        if e.is_transient() {
            return e;
        }
        match &e {
            // A constraint of one of the processor's tables: a deferred one, checked when its
            // scope ended. (The framework's own tables are the host's writes.)
            BatchError::Store(StoreError::Database(sqlx::Error::Database(db)))
                if db.code().is_some_and(|c| c.starts_with("23"))
                    && db.table().is_some_and(|t| !roles::FRAMEWORK_RELATIONS.contains(&t)) =>
            {
                BatchError::ItemLost {
                    code: "sql_error",
                    message: format!(
                        "SQL error {}: {} (a deferred constraint, checked when the processor's writes were kept); \
                         nothing of the item was kept",
                        db.code().unwrap_or_default(),
                        db.message()
                    ),
                }
            }
            BatchError::Store(StoreError::Database(sqlx::Error::Database(db))) => {
                let state = db.code().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default();
                BatchError::ItemLost {
                    code: "transaction_failed",
                    message: format!(
                        "the item's transaction could not be completed when {doing}: {}{state}; nothing of it was kept",
                        db.message()
                    ),
                }
            }
            _ => e,
        }
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Store(StoreError::Database(e))
    }
}

/// Options for creating a batch.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Stop at the first failed item (also set by the processor's manifest).
    pub stop_on_error: bool,
    /// Import the file even when a batch of the same type was already made from the same bytes.
    pub allow_duplicate: bool,
    /// Start the batch only once this one has completed (fail it if that one fails or is
    /// cancelled).
    pub after: Option<Uuid>,
    /// Fail the batch once more items than this failed (default: the manifest's).
    pub max_failures: Option<u64>,
    /// Fail the batch once more than this share of its finished items failed (default: the
    /// manifest's).
    pub max_failure_rate: Option<f64>,
    /// All or nothing: keep the items' writes only if the thresholds hold (also set by the
    /// manifest).
    pub atomic: bool,
    /// Initial batch metadata (a JSON object).
    pub metadata: Option<Value>,
}

/// Options for processing a batch.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Concurrent workers, each with its own connection and instance.
    pub workers: usize,
    /// Where to count item outcomes (a long-running `ingot worker` exports them).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// When item commits wait for the WAL flush; `None`: as the processor's manifest says.
    pub durability: Option<Durability>,
}

impl ProcessOptions {
    /// `workers` workers, no metrics, the manifest's durability.
    pub fn workers(workers: usize) -> Self {
        ProcessOptions { workers, metrics: None, durability: None }
    }

    /// The same, with item commits waiting for the WAL flush as `durability` says.
    pub fn with_durability(mut self, durability: Option<Durability>) -> Self {
        self.durability = durability;
        self
    }
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self::workers(1)
    }
}

/// Follows a running `process` call: items finished so far.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Shared>);

impl Progress {
    /// Items this process finished so far.
    pub fn done(&self) -> u64 {
        self.0.done.load(Ordering::Relaxed)
    }

    /// Asks the workers to stop claiming items: in-flight items finish, the rest stay pending
    /// and the batch stays `processing`, to be resumed by `ingot batch process`. Stops every run
    /// made with this progress or a [`child`](Self::child) of it.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }

    /// Whether [`stop`](Self::stop) was called (and not because a run failed).
    pub fn stopped(&self) -> bool {
        self.0.stop.load(Ordering::SeqCst) && self.0.failure().is_none()
    }

    /// A fresh progress for another run, stopped whenever this one is.
    pub fn child(&self) -> Progress {
        Progress(Arc::new(Shared { stop: Arc::clone(&self.0.stop), ..Shared::default() }))
    }
}

/// Creates, processes and reprocesses batches.
#[derive(Clone)]
pub struct BatchManager {
    pool: PgPool,
    connect: PgConnectOptions,
    runtime: Arc<Runtime>,
    registry: Registry,
    role_prefix: String,
    native: Option<Arc<dyn NativeProcessor>>,
    gate: bool,
}

/// What a processor's SQL runs as: its login and how its scopes are set up.
struct Sandbox {
    settings: ScopeSettings,
    credentials: Login,
    login: Arc<ProcessorLogin>,
}

impl std::fmt::Debug for BatchManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchManager")
            .field("registry", &self.registry)
            .field("role_prefix", &self.role_prefix)
            .field("native", &self.native.is_some())
            .finish_non_exhaustive()
    }
}

impl BatchManager {
    /// A manager over `pool`'s database, running processors from `registry` in `runtime`.
    pub fn new(pool: PgPool, runtime: Arc<Runtime>, registry: Registry) -> Self {
        let connect = pool.connect_options().as_ref().clone().application_name("ingot worker");
        BatchManager {
            pool,
            connect,
            runtime,
            registry,
            role_prefix: DEFAULT_ROLE_PREFIX.to_owned(),
            native: None,
            gate: true,
        }
    }

    /// Lets every processor statement past the SQL gate, so that only PostgreSQL's own wall (the
    /// processor's login role) contains the processor. For testing that wall alone; never for
    /// production, where the gate is the second line of defence.
    #[doc(hidden)]
    pub fn without_sql_gate(mut self) -> Self {
        self.gate = false;
        self
    }

    /// Runs items with `native` logic instead of the processor's component (everything else —
    /// manifest, role, gate, transactions — stays the same). For measuring the sandbox's cost.
    #[doc(hidden)]
    pub fn with_native_logic(mut self, native: Arc<dyn NativeProcessor>) -> Self {
        self.native = Some(native);
        self
    }

    /// Names processor roles `<prefix><batch_type>` instead of `ingot_p_<batch_type>` (roles are
    /// shared by every database of a cluster; a prefix keeps separate deployments apart).
    pub fn with_role_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.role_prefix = prefix.into();
        self
    }

    /// Creates or updates the processor's role so its privileges equal the manifest's grants,
    /// and returns how its SQL must run: logged in as that role.
    async fn sandbox(
        &self,
        conn: &mut PgConnection,
        processor: &Processor,
        durability: Durability,
    ) -> Result<Sandbox, BatchError> {
        let role = grants::role_name(&self.role_prefix, &processor.batch_type);
        let credentials = grants::sync(conn, &role, &processor.batch_type, &processor.manifest).await?;
        self.sandbox_as(conn, processor, credentials, durability).await
    }

    /// How `processor`'s SQL runs when it logs in with `credentials`.
    async fn sandbox_as(
        &self,
        conn: &mut PgConnection,
        processor: &Processor,
        credentials: Login,
        durability: Durability,
    ) -> Result<Sandbox, BatchError> {
        let framework = roles::framework_schema(conn).await?;
        let search_path = login::host_search_path(conn).await?;
        let login =
            ProcessorLogin::new(self.pool.clone(), &self.connect, &credentials, &search_path, durability);
        Ok(Sandbox {
            settings: ScopeSettings {
                framework,
                batch_type: processor.batch_type.clone(),
                statement_timeout: processor.manifest.statement_timeout,
            },
            credentials,
            login: Arc::new(login),
        })
    }

    /// The first connection as the processor's role. A refused login gets the role's password
    /// set again once (an administrator made the role, or its password was changed), when the
    /// host may.
    async fn first_session(
        &self,
        owner: &mut PgConnection,
        sandbox: &Sandbox,
    ) -> Result<DbSession, BatchError> {
        match sandbox.login.connect().await {
            Err(e) if e.is_refused() => {
                if grants::reset_password(owner, &sandbox.credentials).await.is_ok() {
                    return Ok(sandbox.login.connect().await?);
                }
                Err(e.into())
            }
            other => Ok(other?),
        }
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Loads the processor for `batch_type`.
    pub fn processor(&self, batch_type: &str) -> Result<Processor, BatchError> {
        Ok(self.registry.load(&self.runtime, batch_type)?)
    }

    async fn connect(&self) -> Result<PgConnection, BatchError> {
        self.connect.connect().await.map_err(|e| BatchError::Connection(e.to_string()))
    }

    async fn worker(
        &self,
        processor: &Processor,
        sandbox: &Sandbox,
        slot: i16,
        metadata: &str,
    ) -> Result<Worker, BatchError> {
        let session = sandbox.login.connect().await?;
        Ok(self.worker_on(session, processor, sandbox, slot, metadata))
    }

    fn worker_on(
        &self,
        session: DbSession,
        processor: &Processor,
        sandbox: &Sandbox,
        slot: i16,
        metadata: &str,
    ) -> Worker {
        let mut ctx = ProcessorContext { caps: processor.manifest.caps, ..ProcessorContext::default() };
        ctx.metadata.load(metadata);
        let mut worker = Worker {
            ctx,
            runner: match &self.native {
                Some(native) => Runner::Native(Arc::clone(native)),
                None => Runner::Wasm(Instance::new(Arc::clone(&processor.code), processor.manifest.limits)),
            },
            slot,
            login: Arc::clone(&sandbox.login),
            host: self.pool.clone(),
            permission_hint: permission_hint(processor),
            gate: self.gate,
            floor: 0,
            outer: None,
            token: None,
            framework: sandbox.settings.framework.clone(),
            pipeline: false,
            prefetched: None,
            queue: std::collections::VecDeque::new(),
            group: worker::Group::default(),
            claim_size: 1,
            run_counts: batches::Counts::default(),
            retries: Vec::new(),
        };
        worker.adopt(session);
        worker
    }

    fn scope(
        id: Uuid,
        settings: ScopeSettings,
        stop_on_error: bool,
        tx: TxMode,
        processor: &Processor,
    ) -> BatchScope {
        // A dry run reports what the first attempt would do; it does not wait out retries.
        let max_attempts = if tx == TxMode::DryRun { 1 } else { processor.manifest.max_attempts };
        BatchScope {
            id,
            stop_on_error,
            settings,
            tx,
            max_attempts,
            batch_type: processor.batch_type.clone(),
            metrics: None,
            thresholds: worker::Thresholds::default(),
            items_per_commit: 1,
        }
    }

    /// Creates a pending batch of `batch_type` from `source`. Nothing is left behind if the
    /// input turns out to be malformed.
    pub async fn create(
        &self,
        batch_type: &str,
        source: InputSource,
        options: &CreateOptions,
    ) -> Result<Uuid, BatchError> {
        // Check the type and its manifest before reading the file; compiling waits for processing.
        self.registry.find(batch_type)?;
        let manifest = self.registry.manifest(batch_type).map_err(RegistryError::from)?;
        let batch = new_batch(batch_type, &manifest, options);
        let id = batch.id;
        let mut conn = self.connect().await?;
        if let Some(after) = options.after
            && batches::get(&mut conn, after).await?.is_none()
        {
            return Err(BatchError::NoSuchDependency(after));
        }
        items::begin(&mut conn, None).await?;
        match create::create_in_tx(&mut conn, batch, source, options.allow_duplicate).await {
            Ok(_) => {
                items::commit(&mut conn, None).await?;
                Ok(id)
            }
            Err(e) => {
                let _ = items::rollback(&mut conn, None).await;
                Err(e)
            }
        }
    }

    /// Processes a batch to the end with `options.workers` concurrent workers and returns its
    /// summary. A pending batch is started (its start hooks run); a failed or cancelled one is
    /// started again (the start hooks run again, then the items not yet final); an interrupted
    /// `processing` one is resumed with its items not yet final; a completed one is left as it is.
    pub async fn process(
        &self,
        id: Uuid,
        options: &ProcessOptions,
        progress: Option<&Progress>,
    ) -> Result<Summary, BatchError> {
        let mut conn = self.connect().await?;
        let batch = batches::get(&mut conn, id).await?.ok_or(BatchError::NotFound(id))?;
        match batch.status {
            BatchStatus::Completed => return self.summary(id).await,
            BatchStatus::Cancelled => {
                let reason = batch.error_message.unwrap_or_else(|| "cancelled".into());
                return Err(BatchError::Cancelled { id, reason });
            }
            _ => {}
        }
        // Not started (or started again) before the batch it waits for has completed.
        if matches!(batch.status, BatchStatus::Pending | BatchStatus::Failed)
            && let Some(after) = batch.after_batch_id
            && !self.wait_for(&mut conn, id, after, progress).await?
        {
            return self.summary(id).await;
        }
        // From here until the summary, this connection says that this host works on the batch.
        batches::hold_live(&mut conn, id).await?;
        let batch = if batch.atomic {
            if !batches::try_hold_atomic(&mut conn, id).await? {
                return Err(BatchError::AtomicElsewhere(id));
            }
            // Read again under the lock: another host may have ended it meanwhile.
            let batch = batches::get(&mut conn, id).await?.ok_or(BatchError::NotFound(id))?;
            match batch.status {
                BatchStatus::Completed | BatchStatus::Cancelled => return self.summary(id).await,
                _ => items::reset_atomic(&mut conn, id).await?,
            }
            batch
        } else {
            batch
        };
        let ready = self.get_ready(&mut conn, &batch, options).await;
        let (processor, sandbox, session, replaced) = match ready {
            Ok(ready) => ready,
            // A batch that cannot start (its processor missing or broken, its manifest or grants
            // invalid, a granted table missing) is failed with the reason, so that no worker takes
            // it up later: its data was refused, and the operator was told so.
            Err(e) if batch.status == BatchStatus::Pending && !e.is_transient() => {
                move_batch(
                    &mut conn,
                    id,
                    batches::Transition::Fail { reason: &format!("the batch could not start: {e}") },
                )
                .await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let durability = options.durability.unwrap_or(processor.manifest.durability);
        let scope = BatchScope {
            metrics: options.metrics.clone(),
            // A flush per item means a commit per item.
            items_per_commit: match durability {
                Durability::Batch => processor.manifest.items_per_commit,
                Durability::Item => 1,
            },
            thresholds: worker::Thresholds {
                max_failures: batch.max_failures,
                max_failure_rate: batch.max_failure_rate,
                total: batch.total_items,
            },
            ..Self::scope(id, sandbox.settings.clone(), batch.stop_on_error, TxMode::PerItem, &processor)
        };
        let base_slot: i16 = (Uuid::new_v4().as_u128() % 64) as i16;
        let metadata = batch.metadata.to_string();
        let mut coordinator = self.worker_on(session, &processor, &sandbox, base_slot, &metadata);

        if batch.status == BatchStatus::Processing {
            // Interrupted (or running on other hosts): join in; the start hooks already ran.
            if let Some(started) = replaced {
                let message = format!(
                    "resumed with processor sha256 {}: the version the batch started with ({started}) is no longer \
                     available on this host",
                    processor.code.digest
                );
                hooks::note(&mut coordinator, &scope, LogLevel::Warning, message).await?;
            }
        } else if let hooks::Start::Rejected(_) =
            hooks::start(&mut coordinator, &scope, &processor.code.digest).await?
        {
            // Pending, or stopped and started again: the start hooks decide, every time.
            return self.summary(id).await;
        }

        // The coordinator's connection metadata was read before the start hooks ran; the exact
        // text now, numbers and all.
        let metadata = {
            let mut conn = self.pool.acquire().await?;
            batches::metadata_text(&mut conn, id).await?.unwrap_or_else(|| "{}".into())
        };
        coordinator.ctx.metadata.load(&metadata);
        let shared = progress.map_or_else(|| Arc::new(Shared::default()), |p| Arc::clone(&p.0));
        let (outcome, failure) = if batch.atomic {
            // One transaction, so one connection: the coordinator's.
            match atomic::process(&mut coordinator, &scope, &shared).await {
                Ok(failure) => (Ok(()), failure),
                Err(e) => (Err(e), None),
            }
        } else {
            let mut workers = Vec::with_capacity(options.workers.max(1));
            for i in 0..options.workers.max(1) {
                let slot = (base_slot + 1 + i16::try_from(i).unwrap_or(0)) % 64;
                workers.push(self.worker(&processor, &sandbox, slot, &metadata).await?);
            }
            (worker::run_all(workers, &scope, &shared).await, shared.failure())
        };
        let failure = match &outcome {
            Err(e) => Some(format!("processing stopped: {e}")),
            Ok(()) => failure,
        };
        let stopped = shared.stop.load(Ordering::SeqCst) && failure.is_none();
        match (failure, outcome) {
            // A host failure the batch records: the summary reports it (status failed). When even
            // recording it fails, the database is what failed: report that instead.
            (Some(reason), outcome) => {
                match (outcome, finish_batch(&mut coordinator, &scope, Some(&reason)).await) {
                    (Err(e), Err(_)) | (Ok(()), Err(e)) => return Err(e),
                    _ => {}
                }
            }
            // Stopped from outside (a signal): the rest stays pending for the next run.
            (None, _) if stopped => {}
            // An atomic batch that did not fail has ended already (completed, or cancelled).
            (None, _) if batch.atomic => {}
            (None, _) => finish_batch(&mut coordinator, &scope, None).await?,
        }
        // The batch hooks ran on the coordinator's connection.
        coordinator.tidy(&scope).await;
        if durability == Durability::Batch {
            // Whatever this call reports is on disk before it is reported: the batch's final
            // commit already waited; an interrupted or shared batch's items wait here.
            batches::flush(&self.pool).await?;
        }
        // This host no longer works on the batch: the summary says whether anyone still does.
        drop(conn);
        self.summary(id).await
    }

    /// Waits until batch `after`, which pending batch `id` waits for, has ended: `true` when it
    /// completed (or is gone), so `id` may start; `false` when `id` must not start: `after`
    /// failed or was cancelled (then `id` is failed with the reason), or a stop was asked.
    async fn wait_for(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        after: Uuid,
        progress: Option<&Progress>,
    ) -> Result<bool, BatchError> {
        loop {
            let status = batches::get(conn, after).await?.map(|b| b.status);
            match status {
                None | Some(BatchStatus::Completed) => return Ok(true),
                Some(ended @ (BatchStatus::Failed | BatchStatus::Cancelled)) => {
                    let reason = format!(
                        "not started: batch {after}, which it waits for (--after), {}",
                        if ended == BatchStatus::Failed { "failed" } else { "was cancelled" }
                    );
                    move_batch(conn, id, batches::Transition::Fail { reason: &reason }).await?;
                    return Ok(false);
                }
                Some(BatchStatus::Pending | BatchStatus::Processing | BatchStatus::Interrupted) => {
                    if progress.is_some_and(Progress::stopped) {
                        return Ok(false);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// The processor (the version a running batch started with, when this host has it), its
    /// sandbox and a first session as its role; and the digest it started with when that
    /// version is no longer here.
    async fn get_ready(
        &self,
        conn: &mut PgConnection,
        batch: &batches::Batch,
        options: &ProcessOptions,
    ) -> Result<(Processor, Sandbox, DbSession, Option<String>), BatchError> {
        let mut processor = self.processor(&batch.batch_type)?;
        // A batch already running keeps the processor version it started with, when this host
        // still has it (in memory or in the compile cache), even if the .wasm was replaced since.
        let mut replaced = None;
        if batch.status == BatchStatus::Processing
            && let Some(started) = batch.processor_digest.as_deref()
            && started != processor.code.digest
        {
            match self.runtime.load_digest(started) {
                Some(code) => processor.code = code,
                None => replaced = Some(started.to_owned()),
            }
        }
        let durability = options.durability.unwrap_or(processor.manifest.durability);
        let sandbox = self.sandbox(conn, &processor, durability).await?;
        let session = self.first_session(conn, &sandbox).await?;
        Ok((processor, sandbox, session, replaced))
    }

    /// Cancels a batch for good: its pending items are never claimed again (by any host), items
    /// in flight finish, and the batch ends `cancelled` with `reason`. `false` when it already
    /// was cancelled; an error when it completed.
    pub async fn cancel(&self, id: Uuid, reason: &str) -> Result<bool, BatchError> {
        let mut conn = self.connect().await?;
        // One statement, committed on its own: from then on no claim takes an item of the batch.
        if move_batch(&mut conn, id, batches::Transition::Cancel { reason }).await? {
            return Ok(true);
        }
        let batch = batches::get(&mut conn, id).await?.ok_or(BatchError::NotFound(id))?;
        match batch.status {
            BatchStatus::Cancelled => Ok(false),
            _ => Err(BatchError::AlreadyCompleted(id)),
        }
    }

    /// Creates a batch from `source` and processes it: `ingot run`.
    pub async fn run(
        &self,
        batch_type: &str,
        source: InputSource,
        create: &CreateOptions,
        process: &ProcessOptions,
        progress: Option<&Progress>,
    ) -> Result<Summary, BatchError> {
        // A processor that cannot load refuses the file before a batch exists (loading now also
        // warms what processing will use).
        self.processor(batch_type)?;
        let id = self.create(batch_type, source, create).await?;
        self.process(id, process, progress).await
    }

    /// Runs every item of `source` through the processor and rolls everything back: each
    /// item's writes right after it ran, and the batch itself at the end. Nothing is kept, not
    /// even the batch row; the summary says what would have happened.
    pub async fn dry_run(
        &self,
        batch_type: &str,
        source: InputSource,
        options: &CreateOptions,
    ) -> Result<Summary, BatchError> {
        self.dry_run_with_items(batch_type, source, options).await.map(|(summary, _)| summary)
    }

    /// A dry run that also tells how each item ended (before everything is rolled back): what
    /// `ingot test` compares with its cases.
    pub async fn dry_run_with_items(
        &self,
        batch_type: &str,
        source: InputSource,
        options: &CreateOptions,
    ) -> Result<(Summary, Vec<items::ItemRecord>), BatchError> {
        let processor = self.processor(batch_type)?;
        let mut conn = self.connect().await?;
        // The processor must log in as a role that exists (is committed) and holds exactly its
        // manifest's grants. Its own role is left as it is: the dry run makes a throwaway one
        // and drops it, so the database ends as it began.
        let sandbox = self.dry_run_sandbox(&mut conn, &processor).await?;
        let result = match self.first_session(&mut conn, &sandbox).await {
            Ok(session) => self.dry_run_as(conn, session, &sandbox, &processor, options, source).await,
            Err(e) => Err(e),
        };
        let mut conn = self.connect().await?;
        if let Err(e) = grants::drop_role(&mut conn, &sandbox.credentials.role).await {
            tracing::warn!("a dry run could not drop its throwaway role {}: {e}", sandbox.credentials.role);
        }
        result.map(|(summary, records)| (Summary { dry_run: true, ..summary }, records))
    }

    /// A throwaway role for the processor of a dry run, with its manifest's grants.
    async fn dry_run_sandbox(
        &self,
        conn: &mut PgConnection,
        processor: &Processor,
    ) -> Result<Sandbox, BatchError> {
        let role = format!("{}dry_{}", self.role_prefix, &Uuid::new_v4().simple().to_string()[..12]);
        let credentials = match grants::sync(conn, &role, &processor.batch_type, &processor.manifest).await {
            Ok(credentials) => credentials,
            Err(e) => {
                // Nothing of a failed sync may stay behind either.
                let _ = grants::drop_role(conn, &role).await;
                return Err(e.into());
            }
        };
        // Nothing of a dry run is kept: whether its commits wait for the disk does not matter.
        self.sandbox_as(conn, processor, credentials, Durability::Item).await
    }

    /// The dry run itself, logged in as `session`; the batch lives in one transaction on `conn`,
    /// rolled back at the end, and the processor's connection is closed before its role goes.
    async fn dry_run_as(
        &self,
        mut conn: PgConnection,
        session: DbSession,
        sandbox: &Sandbox,
        processor: &Processor,
        options: &CreateOptions,
        source: InputSource,
    ) -> Result<(Summary, Vec<items::ItemRecord>), BatchError> {
        let batch = new_batch(&processor.batch_type, &processor.manifest, options);
        let allow_duplicate = options.allow_duplicate;
        let id = batch.id;
        let scope = Self::scope(id, sandbox.settings.clone(), batch.stop_on_error, TxMode::DryRun, processor);
        let mut worker = self.worker_on(session, processor, sandbox, 0, "{}");
        items::begin(&mut conn, None).await?;
        worker.outer = Some(conn);
        // Whether the processor's connection may hold a transaction to roll back: not when the
        // file was refused before any item ran (a ROLLBACK then only draws a warning).
        let mut items_ran = false;
        let result = async {
            let outer =
                worker.outer.as_mut().ok_or_else(|| BatchError::Host("no dry-run transaction".into()))?;
            create::create_in_tx(outer, batch, source, allow_duplicate).await?;
            items_ran = true;
            dry_run_items(&mut worker, &scope, processor).await?;
            let outer =
                worker.outer.as_mut().ok_or_else(|| BatchError::Host("no dry-run transaction".into()))?;
            let summary = batches::summary(outer, id).await?.ok_or(BatchError::NotFound(id))?;
            Ok((summary, items::records(outer, id).await?))
        }
        .await;
        if let Some(mut outer) = worker.outer.take() {
            let _ = items::rollback(&mut outer, None).await;
        }
        // Each item's throwaway transaction ended with it; one is left open only by a failure.
        if items_ran && result.is_err() {
            worker.rollback_quietly(TxMode::PerItem).await;
        }
        if let Some(session) = worker.ctx.db.take() {
            session.disconnect().await;
        }
        result
    }

    /// Reprocesses a batch: a new batch linked to it, with all its items or only the failed
    /// ones (original indexes kept), processed by the processor installed now. `None` when there
    /// is nothing to reprocess.
    pub async fn reprocess(
        &self,
        parent_id: Uuid,
        failed_only: bool,
        options: &ProcessOptions,
        progress: Option<&Progress>,
    ) -> Result<Option<Summary>, BatchError> {
        let mut conn = self.connect().await?;
        let parent = batches::get(&mut conn, parent_id).await?.ok_or(BatchError::NotFound(parent_id))?;
        self.processor(&parent.batch_type)?;
        let id = Uuid::now_v7();
        items::begin(&mut conn, None).await?;
        let created = async {
            let mut source_info = json!({ "reprocess_of": parent_id, "failed_only": failed_only });
            if let (Some(info), Some(parent_info)) =
                (source_info.as_object_mut(), parent.source_info.as_object())
            {
                for (k, v) in parent_info {
                    info.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            batches::insert(
                &mut conn,
                &NewBatch {
                    id,
                    batch_type: parent.batch_type.clone(),
                    source_info: source_info.clone(),
                    metadata: parent.metadata.clone(),
                    stop_on_error: parent.stop_on_error,
                    max_failures: parent.max_failures,
                    max_failure_rate: parent.max_failure_rate,
                    atomic: parent.atomic,
                    item_key: parent.item_key.clone(),
                    after_batch_id: None,
                    parent_batch_id: Some(parent_id),
                    retry_count: parent.retry_count + 1,
                },
            )
            .await?;
            let copied = batches::copy_items_from(&mut conn, parent_id, id, failed_only).await?;
            batches::set_total(&mut conn, id, copied, &source_info).await?;
            Ok::<i64, BatchError>(copied)
        }
        .await;
        match created {
            Ok(0) => {
                items::rollback(&mut conn, None).await?;
                Ok(None)
            }
            Ok(_) => {
                items::commit(&mut conn, None).await?;
                self.process(id, options, progress).await.map(Some)
            }
            Err(e) => {
                let _ = items::rollback(&mut conn, None).await;
                Err(e)
            }
        }
    }

    /// The summary of one batch.
    pub async fn summary(&self, id: Uuid) -> Result<Summary, BatchError> {
        let mut conn = self.pool.acquire().await?;
        batches::summary(&mut conn, id).await?.ok_or(BatchError::NotFound(id))
    }
}

/// A new batch: stop-on-error when asked for or when the processor's manifest says so.
fn new_batch(batch_type: &str, manifest: &Manifest, options: &CreateOptions) -> NewBatch {
    NewBatch {
        id: Uuid::now_v7(),
        batch_type: batch_type.to_owned(),
        source_info: Value::Null,
        metadata: options.metadata.clone().unwrap_or_else(|| json!({})),
        stop_on_error: options.stop_on_error || manifest.stop_on_error,
        max_failures: options
            .max_failures
            .or(manifest.max_failures)
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        max_failure_rate: options.max_failure_rate.or(manifest.max_failure_rate),
        atomic: options.atomic || manifest.atomic,
        item_key: manifest.key.clone(),
        parent_batch_id: None,
        after_batch_id: options.after,
        retry_count: 0,
    }
}

/// Moves batch `id` as the host's own login (the framework owner, who needs no token), outside
/// any processor's transaction; `false` when it was in none of the states it may move from.
async fn move_batch(
    conn: &mut PgConnection,
    id: Uuid,
    to: batches::Transition<'_>,
) -> Result<bool, BatchError> {
    let framework = roles::framework_schema(conn).await?;
    Ok(batches::transition(conn, &framework, None, id, to).await?)
}

/// Completes the batch if nothing is pending any more (or fails it with `failure`), running
/// on-batch-complete; survives a connection lost since the workers started by reconnecting.
async fn finish_batch(
    coordinator: &mut Worker,
    scope: &BatchScope,
    failure: Option<&str>,
) -> Result<(), BatchError> {
    let mut tries = 0;
    loop {
        let attempt = async {
            match failure {
                Some(reason) => hooks::finish(coordinator, scope, Some(reason)).await.map(drop),
                None if batches::has_pending(&mut *coordinator.host.acquire().await?, scope.id).await? => {
                    Ok(())
                }
                None => hooks::finish(coordinator, scope, None).await.map(drop),
            }
        }
        .await;
        match attempt {
            Err(e) if e.is_transient() && tries < 3 => {
                tries += 1;
                coordinator.recover(scope.tx, &e).await?;
            }
            other => return other,
        }
    }
}

/// What a permission error tells the processor's author: what its manifest grants.
fn permission_hint(processor: &Processor) -> String {
    let manifest = &processor.manifest;
    match &manifest.path {
        None => format!(
            "processor {} has no manifest, so it may use no table; grant what it needs in {}.toml beside it",
            processor.batch_type, processor.batch_type
        ),
        Some(path) if manifest.grants.is_empty() => {
            format!("processor {} may use no table: {} grants nothing", processor.batch_type, path.display())
        }
        Some(path) => {
            let granted: Vec<String> = manifest
                .grants
                .iter()
                .map(|(table, privileges)| {
                    let privileges: Vec<&str> = privileges.iter().map(|p| p.as_sql()).collect();
                    format!("{table} ({})", privileges.join(", ").to_lowercase())
                })
                .collect();
            format!(
                "processor {} may use only what {} grants: {}",
                processor.batch_type,
                path.display(),
                granted.join("; ")
            )
        }
    }
}

/// The dry run's item loop: start hooks, every item, completion hook, all nested in the
/// caller's transaction.
async fn dry_run_items(
    worker: &mut Worker,
    scope: &BatchScope,
    processor: &Processor,
) -> Result<(), BatchError> {
    let shared = Shared::default();
    if let hooks::Start::Rejected(_) = hooks::start(worker, scope, &processor.code.digest).await? {
        return Ok(());
    }
    worker.run(scope, &shared).await?;
    let failure = shared.failure();
    hooks::finish(worker, scope, failure.as_deref()).await?;
    Ok(())
}
