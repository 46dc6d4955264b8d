//! What one call into a processor may use: wall time, linear memory, and optionally fuel.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Limits applied to every call into a processor (each hook and each item function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall time per call, enforced by epoch interruption (and, for SQL, the statement timeout).
    pub timeout: Duration,
    /// Total linear memory of the instance, across all its memories.
    pub memory_bytes: usize,
    /// Fuel per call when fuel metering is on; `None` means unmetered.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(10), memory_bytes: 128 << 20, fuel: None }
    }
}

/// Caps the instance's total linear memory and remembers a refusal, so that the trap that
/// follows (a Rust guest aborts when allocation fails) can be reported as what it is.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    max_bytes: usize,
    in_use: usize,
    refused: Option<usize>,
}

impl MemoryCap {
    pub(crate) fn new(max_bytes: usize) -> Self {
        MemoryCap { max_bytes, in_use: 0, refused: None }
    }

    /// The size a refused growth asked for, if any growth was refused.
    pub(crate) fn refused(&self) -> Option<usize> {
        self.refused
    }

    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.in_use.saturating_sub(current).saturating_add(desired);
        if total > self.max_bytes {
            self.refused = Some(total);
            return Ok(false);
        }
        self.in_use = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table element is a pointer: a million of them is 8 MB, far beyond any real guest.
        Ok(desired <= 1_000_000)
    }
}
