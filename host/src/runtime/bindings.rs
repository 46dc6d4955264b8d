//! The `import-processor` world's bindings, generated once for the whole host.
//!
//! Imports are async (the context talks to PostgreSQL) and trappable: a host call that hits a
//! limit ends the guest call with a trap instead of handing the guest an error to ignore.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "import-processor",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::exports::ingot::processor::processor::{BatchInfo, Item, ItemError, Outcome};
pub use self::ingot::processor::types::{ErrorDetail, LogLevel, Rows, SqlError, SqlErrorKind, SqlValue};

/// The contract this host speaks, as components name it in their imports and exports.
pub const CONTRACT_PACKAGE: &str = "ingot:processor";
/// The contract version this host speaks.
pub const CONTRACT_VERSION: &str = "0.1.0";
/// The export every processor must provide.
pub const PROCESSOR_EXPORT: &str = "ingot:processor/processor@0.1.0";
