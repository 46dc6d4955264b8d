//! Ingot: PostgreSQL-native batch imports whose per-item logic runs as sandboxed WebAssembly
//! components.
//!
//! # Layout
//! - [`runtime`]: the wasmtime engine, compile cache, limits, and processor instances.
//! - [`context`]: everything a processor can touch — SQL, logs, metadata, WASI — and the caps.
//! - [`registry`]: processor discovery, naming and manifests.

pub mod batch;
pub mod cli;
pub mod context;
pub mod database;
pub mod input;
pub mod registry;
pub mod runtime;
pub mod store;
