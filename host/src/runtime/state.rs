//! Everything one `Store` holds: the WASI context, the resource table, the memory limiter, the
//! captured stdout/stderr, and the Ingot context the guest's imports talk to.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::MemoryCap;
use crate::context::ProcessorContext;
use crate::context::wasi::{CapturedOutput, sandboxed_wasi};

/// Per-`Store` state. A store lives as long as its instance: until the instance traps, or the
/// worker that owns it ends.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) output: CapturedOutput,
    /// Lent to the store for the duration of each call, then taken back by the caller.
    pub(crate) context: ProcessorContext,
}

impl HostState {
    pub(crate) fn new(memory_bytes: usize) -> Self {
        let output = CapturedOutput::default();
        HostState {
            wasi: sandboxed_wasi(&output),
            table: ResourceTable::new(),
            memory: MemoryCap::new(memory_bytes),
            output,
            context: ProcessorContext::default(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
