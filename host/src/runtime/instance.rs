//! A processor instance, and the one place where the host calls into a guest.
//!
//! One instance serves many items. A trap (or any failed call) poisons the whole `Store` —
//! wasmtime refuses to enter any instance of it again — so after a failure the store is dropped
//! and the next call instantiates afresh (about 20 µs for a Rust processor).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, Trap};

use super::bindings::{BatchInfo, ImportProcessor, Item, ItemError, Outcome};
use super::limits::Limits;
use super::state::HostState;
use super::{EPOCH_TICK, ProcessorCode};
use crate::context::ProcessorContext;
use crate::context::logs::GuestFailure;
use crate::context::sql::ContextTrap;

/// Why a call into a processor did not return. Each variant is a sentence a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Ran past its wall-time limit.
    #[error("processor ran longer than its {} ms time limit", .limit.as_millis())]
    Timeout {
        /// The limit.
        limit: Duration,
    },
    /// Burned all its fuel.
    #[error("processor used up its fuel limit of {limit}")]
    OutOfFuel {
        /// The limit.
        limit: u64,
    },
    /// Tried to grow memory past its cap.
    #[error("processor needed more than its {} MiB memory limit", .limit_bytes >> 20)]
    MemoryLimit {
        /// The cap in bytes.
        limit_bytes: usize,
    },
    /// Exceeded a context cap (log lines, rows, outcome size, …).
    #[error("{0}")]
    Cap(String),
    /// Wrote a log line PostgreSQL cannot store.
    #[error("{0}")]
    InvalidLog(String),
    /// Trapped: a panic, an `unreachable`, an out-of-bounds access.
    #[error("processor trapped: {message}")]
    Trap {
        /// The trap, and what the guest last wrote to stderr.
        message: String,
    },
    /// A Rust processor panicked.
    #[error("the processor panicked{}{}", .location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default(), .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Panic {
        /// The panic message.
        message: Option<String>,
        /// Where, as `file:line:column`.
        location: Option<String>,
    },
    /// A Python or JavaScript processor raised an exception it did not catch (`Class: message`;
    /// the traceback is in the item's log).
    #[error("{message}")]
    Exception {
        /// `Class: message`.
        message: String,
    },
    /// The database connection failed under the processor; the host, not the item, is at fault.
    #[error("{0}")]
    Connection(String),
    /// The instance could not be created (e.g. its start function trapped).
    #[error("processor could not be instantiated: {0}")]
    Instantiate(String),
}

impl CallError {
    /// The stable error code recorded on the item.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Timeout { .. } => "timeout",
            CallError::OutOfFuel { .. } => "out_of_fuel",
            CallError::MemoryLimit { .. } => "memory_limit",
            CallError::Cap(_) => "cap_exceeded",
            CallError::InvalidLog(_) => "invalid_log",
            CallError::Trap { .. } => "trap",
            CallError::Panic { .. } => "panic",
            CallError::Exception { .. } => "exception",
            CallError::Connection(_) => "connection_lost",
            CallError::Instantiate(_) => "instantiate_failed",
        }
    }
}

struct Live {
    store: Store<HostState>,
    processor: ImportProcessor,
}

/// An instance of one processor with its limits. Not shared between workers.
pub struct Instance {
    code: Arc<ProcessorCode>,
    limits: Limits,
    live: Option<Live>,
    instantiations: u64,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("code", &self.code)
            .field("limits", &self.limits)
            .field("instantiations", &self.instantiations)
            .finish_non_exhaustive()
    }
}

/// Expands to one typed guest call wrapped in [`Instance::enter`] / [`Instance::leave`].
macro_rules! guest_call {
    ($self:ident, $ctx:ident, $method:ident ( $($arg:expr),* )) => {{
        let backstop = $self.backstop();
        let result = match $self.enter($ctx).await {
            Ok(live) => {
                let call = live.processor.ingot_processor_processor().$method(&mut live.store, $($arg),*);
                tokio::time::timeout(backstop, call).await
            }
            Err(e) => return Err(e),
        };
        $self.leave($ctx, result)
    }};
}

impl Instance {
    /// An instance of `code` under `limits`; the store is created on the first call.
    pub fn new(code: Arc<ProcessorCode>, limits: Limits) -> Self {
        Instance { code, limits, live: None, instantiations: 0 }
    }

    /// The processor's code.
    pub fn code(&self) -> &Arc<ProcessorCode> {
        &self.code
    }

    /// How many stores this instance has created; more than one means a call failed.
    pub fn instantiations(&self) -> u64 {
        self.instantiations
    }

    /// The processor's `validate-batch`.
    pub async fn validate_batch(
        &mut self,
        ctx: &mut ProcessorContext,
        batch: &BatchInfo,
    ) -> Result<Result<(), String>, CallError> {
        guest_call!(self, ctx, call_validate_batch(batch))
    }

    /// The processor's `validate-item`.
    pub async fn validate_item(
        &mut self,
        ctx: &mut ProcessorContext,
        item: &Item,
    ) -> Result<Result<(), ItemError>, CallError> {
        guest_call!(self, ctx, call_validate_item(item))
    }

    /// The processor's `process-item`.
    pub async fn process_item(
        &mut self,
        ctx: &mut ProcessorContext,
        item: &Item,
    ) -> Result<Result<Outcome, ItemError>, CallError> {
        guest_call!(self, ctx, call_process_item(item))
    }

    /// The processor's `on-batch-start`.
    pub async fn on_batch_start(
        &mut self,
        ctx: &mut ProcessorContext,
        batch: &BatchInfo,
    ) -> Result<Result<(), String>, CallError> {
        guest_call!(self, ctx, call_on_batch_start(batch))
    }

    /// The processor's `on-batch-complete`.
    pub async fn on_batch_complete(
        &mut self,
        ctx: &mut ProcessorContext,
        batch: &BatchInfo,
        success: bool,
    ) -> Result<Result<(), String>, CallError> {
        guest_call!(self, ctx, call_on_batch_complete(batch, success))
    }

    /// The processor's `on-item-error`.
    pub async fn on_item_error(
        &mut self,
        ctx: &mut ProcessorContext,
        item: &Item,
        error: &ItemError,
    ) -> Result<(), CallError> {
        guest_call!(self, ctx, call_on_item_error(item, error))
    }

    /// The outer bound on a call, for a guest blocked inside a host call where epochs cannot
    /// reach it (the SQL statement timeout normally ends those first).
    fn backstop(&self) -> Duration {
        self.limits.timeout * 2 + Duration::from_secs(1)
    }

    fn epoch_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_millis().max(1);
        u64::try_from(self.limits.timeout.as_millis().div_ceil(tick)).unwrap_or(u64::MAX).max(1)
    }

    /// Moves the context into the store (instantiating first if there is no live store) and
    /// arms the limits for one call.
    async fn enter(&mut self, ctx: &mut ProcessorContext) -> Result<&mut Live, CallError> {
        if self.live.is_none() {
            let live = self.instantiate(ctx).await?;
            self.live = Some(live);
        }
        let ticks = self.epoch_ticks();
        let fuel = self.code.fuel_metering.then(|| self.limits.fuel.unwrap_or(u64::MAX));
        let Some(live) = self.live.as_mut() else {
            return Err(CallError::Instantiate("no instance".into()));
        };
        live.store.data_mut().context = std::mem::take(ctx);
        // SQL the call runs is bounded by the same wall-clock limit (the context cancels it).
        live.store.data_mut().context.deadline = Some(std::time::Instant::now() + self.limits.timeout);
        live.store.set_epoch_deadline(ticks);
        if let Some(fuel) = fuel {
            live.store.set_fuel(fuel).map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        }
        Ok(live)
    }

    async fn instantiate(&mut self, ctx: &mut ProcessorContext) -> Result<Live, CallError> {
        let mut store = Store::new(self.code.pre.engine(), HostState::new(self.limits.memory_bytes));
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.epoch_ticks());
        if self.code.fuel_metering {
            store
                .set_fuel(self.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        }
        // Start functions may already log or print (or run SQL): they run with the context in place.
        store.data_mut().context = std::mem::take(ctx);
        store.data_mut().context.deadline = Some(std::time::Instant::now() + self.limits.timeout);
        let instantiated =
            tokio::time::timeout(self.backstop(), self.code.pre.instantiate_async(&mut store)).await;
        self.instantiations += 1;
        let mut live_store = store;
        let result = match instantiated {
            Ok(Ok(processor)) => Ok(processor),
            Ok(Err(e)) => Err(classify(&self.limits, &mut live_store, &e)),
            Err(_) => Err(CallError::Timeout { limit: self.limits.timeout }),
        };
        self.take_back(ctx, &mut live_store);
        match result {
            Ok(processor) => Ok(Live { store: live_store, processor }),
            Err(CallError::Trap { message }) => Err(CallError::Instantiate(message)),
            Err(other) => Err(other),
        }
    }

    /// Takes the context back out of the store, with the call's captured output and fuel.
    fn take_back(&self, ctx: &mut ProcessorContext, store: &mut Store<HostState>) {
        let fuel_left = self.code.fuel_metering.then(|| store.get_fuel().ok()).flatten();
        let state = store.data_mut();
        let drained = state.output.drain();
        *ctx = std::mem::take(&mut state.context);
        ctx.deadline = None;
        ctx.logs.push_output(&ctx.caps, drained);
        if let Some(left) = fuel_left {
            ctx.fuel_used += self.limits.fuel.unwrap_or(u64::MAX).saturating_sub(left);
        }
    }

    /// Takes the context back and turns the call's result into ours; a failed call drops the
    /// store, because wasmtime will not enter it again.
    fn leave<R>(
        &mut self,
        ctx: &mut ProcessorContext,
        result: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
    ) -> Result<R, CallError> {
        let Some(mut live) = self.live.take() else {
            return Err(CallError::Instantiate("no instance".into()));
        };
        self.take_back(ctx, &mut live.store);
        let error = match result {
            Ok(Ok(value)) => {
                self.live = Some(live);
                return Ok(value);
            }
            Ok(Err(e)) => classify(&self.limits, &mut live.store, &e),
            Err(_) => CallError::Timeout { limit: self.limits.timeout },
        };
        let error = match error {
            CallError::Trap { message } => match ctx.logs.guest_failure() {
                Some(GuestFailure::Panic { message, location }) => CallError::Panic { message, location },
                Some(GuestFailure::Exception(message)) => CallError::Exception { message },
                Some(GuestFailure::Other(stderr)) => {
                    CallError::Trap { message: format!("{message}; its stderr said: {stderr}") }
                }
                None => CallError::Trap { message },
            },
            other => other,
        };
        Err(error)
    }
}

/// Sorts a failed call by cause. Blame: the guest for traps and exhausted limits, the host for
/// connection failures.
fn classify(limits: &Limits, store: &mut Store<HostState>, e: &wasmtime::Error) -> CallError {
    if let Some(trap) = e.downcast_ref::<ContextTrap>() {
        return match trap {
            ContextTrap::Cap(cap) => CallError::Cap(cap.to_string()),
            ContextTrap::Connection(_) => CallError::Connection(trap.to_string()),
            ContextTrap::TimeLimit => CallError::Timeout { limit: limits.timeout },
            ContextTrap::InvalidLog(message) => CallError::InvalidLog(message.clone()),
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout { limit: limits.timeout },
        Some(Trap::OutOfFuel) => CallError::OutOfFuel { limit: limits.fuel.unwrap_or(u64::MAX) },
        _ if store.data().memory.refused().is_some() => {
            CallError::MemoryLimit { limit_bytes: store.data().memory.max_bytes() }
        }
        Some(trap) => CallError::Trap { message: trap.to_string() },
        None => CallError::Trap { message: e.root_cause().to_string() },
    }
}
