//! Item logic compiled into the host instead of a WebAssembly component — to measure what the
//! sandbox costs, nothing else. A native processor runs in the same item transaction, under the
//! same role, through the same SQL gate and caps; only the logic is not sandboxed, so it must be
//! trusted code. `ingot` itself never uses one; the throughput benchmark does.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::context::ProcessorContext;
use crate::runtime::bindings::{BatchInfo, Item, ItemError, Outcome};
use crate::runtime::{CallError, Instance};

/// A processor's `process-item` written in Rust and run in the host.
pub trait NativeProcessor: Send + Sync {
    /// Imports one item; its SQL goes through `ctx` exactly as a component's would.
    fn process_item<'a>(
        &'a self,
        ctx: &'a mut ProcessorContext,
        item: &'a Item,
    ) -> BoxFuture<'a, Result<Outcome, ItemError>>;
}

/// What runs a worker's items: a sandboxed instance, or native logic.
pub(crate) enum Runner {
    Wasm(Instance),
    Native(Arc<dyn NativeProcessor>),
}

impl Runner {
    pub(crate) fn fuel_metering(&self) -> bool {
        match self {
            Runner::Wasm(instance) => instance.code().fuel_metering,
            Runner::Native(_) => false,
        }
    }

    pub(crate) async fn validate_batch(
        &mut self,
        ctx: &mut ProcessorContext,
        batch: &BatchInfo,
    ) -> Result<Result<(), String>, CallError> {
        match self {
            Runner::Wasm(instance) => instance.validate_batch(ctx, batch).await,
            Runner::Native(_) => Ok(Ok(())),
        }
    }

    pub(crate) async fn on_batch_start(
        &mut self,
        ctx: &mut ProcessorContext,
        batch: &BatchInfo,
    ) -> Result<Result<(), String>, CallError> {
        match self {
            Runner::Wasm(instance) => instance.on_batch_start(ctx, batch).await,
            Runner::Native(_) => Ok(Ok(())),
        }
    }

    pub(crate) async fn on_batch_complete(
        &mut self,
        ctx: &mut ProcessorContext,
        batch: &BatchInfo,
        success: bool,
    ) -> Result<Result<(), String>, CallError> {
        match self {
            Runner::Wasm(instance) => instance.on_batch_complete(ctx, batch, success).await,
            Runner::Native(_) => Ok(Ok(())),
        }
    }

    pub(crate) async fn validate_item(
        &mut self,
        ctx: &mut ProcessorContext,
        item: &Item,
    ) -> Result<Result<(), ItemError>, CallError> {
        match self {
            Runner::Wasm(instance) => instance.validate_item(ctx, item).await,
            Runner::Native(_) => Ok(Ok(())),
        }
    }

    pub(crate) async fn process_item(
        &mut self,
        ctx: &mut ProcessorContext,
        item: &Item,
    ) -> Result<Result<Outcome, ItemError>, CallError> {
        match self {
            Runner::Wasm(instance) => instance.process_item(ctx, item).await,
            Runner::Native(logic) => Ok(logic.process_item(ctx, item).await),
        }
    }

    pub(crate) async fn on_item_error(
        &mut self,
        ctx: &mut ProcessorContext,
        item: &Item,
        error: &ItemError,
    ) -> Result<(), CallError> {
        match self {
            Runner::Wasm(instance) => instance.on_item_error(ctx, item, error).await,
            Runner::Native(_) => Ok(()),
        }
    }
}
