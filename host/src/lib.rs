//! Ingot: PostgreSQL-native batch imports whose per-item logic runs as sandboxed WebAssembly
//! components.
//!
//! # Layout
//! - [`batch`]: the BatchManager — create, process, reprocess, dry-run — and the item
//!   transaction ("how is an item processed?").
//! - [`store`]: all SQL on the framework tables ("what SQL touches framework tables?").
//! - [`context`]: everything a processor can touch — SQL behind the gate and its role, logs,
//!   metadata, WASI — and the caps ("what may a guest touch?").
//! - [`runtime`]: the wasmtime engine, compile cache, limits, and processor instances.
//! - [`registry`]: processor discovery, naming and manifests.
//! - [`input`]: CSV, JSON and NDJSON, streamed.
//! - [`database`]: `DATABASE_URL` or the embedded cluster.
//! - [`daemon`], [`metrics`]: the long-running `ingot worker` and its Prometheus metrics.
//! - [`scaffold`]: `ingot init` and `ingot new`: project folders, processor projects in Rust,
//!   Python or JavaScript.
//! - [`cases`]: `ingot test`, a processor's test cases.
//! - [`cli`]: the `ingot` command line, a thin layer over the rest.

pub mod batch;
pub mod cases;
pub mod cli;
pub mod context;
pub mod daemon;
pub mod database;
pub mod input;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod scaffold;
pub mod store;
pub mod toolchain;
