//! The sandbox: one wasmtime [`Engine`], the linker, the compile cache, and processor instances.
//!
//! # Layout
//! - [`bindings`]: the `bindgen!` output for the contract, wrapped here and nowhere else.
//! - [`cache`]: compiled components on disk, keyed by wasm digest and engine configuration.
//! - [`limits`]: wall time, memory and fuel per call.
//! - [`state`]: the per-`Store` host state (WASI context, limiter, captured output, context).
//! - [`instance`]: a processor instance and the one place where guest calls are made.

pub mod bindings;
pub mod cache;
pub mod instance;
pub mod limits;
pub mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use self::bindings::{CONTRACT_PACKAGE, CONTRACT_VERSION, ImportProcessor, ImportProcessorPre};
use self::cache::{CacheOutcome, ComponentCache};
pub use self::instance::{CallError, Instance};
pub use self::limits::Limits;
use self::state::HostState;

/// The largest component file loaded by default (Python components are about 20 MB).
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// How often the epoch advances; wall-time limits are rounded up to a multiple of it.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine-wide settings.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Meter fuel. Compiled code differs with and without it, so it is an engine-wide choice.
    pub fuel_metering: bool,
}

/// Why a `.wasm` file cannot be used as a processor. Every message names the file and says what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is larger than any processor should be; it is not read.
    #[error(
        "{path} is {} MiB, over the {} MiB a processor component may be (set INGOT_MAX_COMPONENT_MB to \
         allow more); it was not loaded",
        .size >> 20, .limit >> 20
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The cap in bytes.
        limit: u64,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not WebAssembly at all.
    #[error("{path} is not a WebAssembly file (it does not start with \\0asm)")]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// A core module rather than a component.
    #[error(
        "{path} is a core WebAssembly module, not a component: build it for the wasm32-wasip2 \
         target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule {
        /// The file.
        path: PathBuf,
    },
    /// Cranelift or the validator rejected it.
    #[error("{path} is not a valid component: {message}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        message: String,
    },
    /// Built against another version of the contract.
    #[error(
        "{path} was built for {found}; this host speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION} \
         (0.1.x) — rebuild it against this host's wit/ (Rust: ingot-guest 0.1)"
    )]
    IncompatibleContract {
        /// The file.
        path: PathBuf,
        /// The contract it was built for, e.g. `ingot:processor@0.2.0`.
        found: String,
    },
    /// Does not export the processor interface at all.
    #[error(
        "{path} does not export {CONTRACT_PACKAGE}/processor, so it is not an Ingot processor \
         (it exports: {exports}); build it against the `import-processor` world in wit/"
    )]
    NotAProcessor {
        /// The file.
        path: PathBuf,
        /// What it exports instead.
        exports: String,
    },
    /// Imports something the host does not provide.
    #[error(
        "{path} imports {import}, which Ingot does not provide to processors; processors may \
         import only {CONTRACT_PACKAGE}/context and WASI 0.2 interfaces (for JavaScript, build \
         with `--disable http fetch-event` to drop wasi:http)"
    )]
    UnsupportedImport {
        /// The file.
        path: PathBuf,
        /// The import.
        import: String,
    },
    /// The linker could not satisfy it for another reason (e.g. a type mismatch).
    #[error("{path} cannot be linked: {message}")]
    Link {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        message: String,
    },
}

/// Advances the engine's epoch every [`EPOCH_TICK`] for as long as anything that can run guest
/// code exists: the runtime, and every processor loaded from it (an instance may outlive the
/// runtime that loaded it, and without ticks its time limit would never fire).
struct EpochTicker {
    running: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> std::io::Result<Arc<Self>> {
        let running = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&running);
        let engine = engine.clone();
        std::thread::Builder::new().name("ingot-epoch".into()).spawn(move || {
            while flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(Arc::new(EpochTicker { running }))
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

/// A processor compiled and linked, ready to instantiate any number of times.
pub struct ProcessorCode {
    pub(crate) pre: ImportProcessorPre<HostState>,
    pub(crate) fuel_metering: bool,
    _ticker: Arc<EpochTicker>,
    /// Hex sha256 of the `.wasm` file.
    pub digest: String,
    /// The contract it was built for, e.g. `ingot:processor@0.1.0`.
    pub contract: String,
    /// Whether the compiled code came from the cache.
    pub cache: CacheOutcome,
}

impl std::fmt::Debug for ProcessorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorCode")
            .field("digest", &self.digest)
            .field("contract", &self.contract)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// The engine, the linker and the compile cache, shared by every processor of a host.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: ComponentCache,
    fuel_metering: bool,
    ticker: Arc<EpochTicker>,
    /// Every processor version loaded so far, by digest: a long-running host loads each once,
    /// and a batch that started on one version keeps it after the file is replaced.
    loaded: Mutex<HashMap<String, Arc<ProcessorCode>>>,
    /// Component files larger than this are refused before they are read.
    max_component_bytes: u64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("cache", &self.cache).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine (component model, epoch interruption, optional fuel) and the linker
    /// (WASI 0.2 plus the Ingot context, nothing else), and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true);
        wasm.epoch_interruption(true);
        wasm.consume_fuel(config.fuel_metering);
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        ImportProcessor::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)?;

        let ticker = EpochTicker::start(&engine)?;
        Ok(Runtime {
            engine,
            linker,
            cache: ComponentCache::new(config.cache_dir),
            fuel_metering: config.fuel_metering,
            ticker,
            loaded: Mutex::new(HashMap::new()),
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
        })
    }

    /// Refuses component files larger than `bytes` (default [`DEFAULT_MAX_COMPONENT_BYTES`]).
    pub fn with_max_component_bytes(mut self, bytes: u64) -> Self {
        self.max_component_bytes = bytes;
        self
    }

    /// Reads a component file whole, unless it is larger than the cap.
    fn read_component(&self, path: &Path) -> Result<Vec<u8>, LoadError> {
        use std::io::Read as _;
        let read_error = |source| LoadError::Read { path: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let size = file.metadata().map_err(read_error)?.len();
        let too_large =
            |size| LoadError::TooLarge { path: path.to_owned(), size, limit: self.max_component_bytes };
        if size > self.max_component_bytes {
            return Err(too_large(size));
        }
        // The file may grow while it is read: never read past the cap.
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(self.max_component_bytes + 1).read_to_end(&mut bytes).map_err(read_error)?;
        if bytes.len() as u64 > self.max_component_bytes {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Whether this engine meters fuel.
    pub fn fuel_metering(&self) -> bool {
        self.fuel_metering
    }

    /// Reads, checks, compiles (or loads from the cache) and links the processor at `path`. A
    /// version loaded before (same sha256) is returned as it is.
    pub fn load(&self, path: &Path) -> Result<Arc<ProcessorCode>, LoadError> {
        let bytes = self.read_component(path)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(code) = self.memo().get(&digest) {
            return Ok(Arc::clone(code));
        }
        match bytes.get(0..8) {
            Some([0, b'a', b's', b'm', _, _, 0x01, 0x00]) => {}
            Some([0, b'a', b's', b'm', ..]) => return Err(LoadError::CoreModule { path: path.to_owned() }),
            _ => return Err(LoadError::NotWasm { path: path.to_owned() }),
        }
        let (component, cache) = self
            .cache
            .load_or_compile(&self.engine, &digest, &bytes)
            .map_err(|e| LoadError::Compile { path: path.to_owned(), message: format!("{e:#}") })?;
        self.link(component, digest, cache, path)
    }

    /// The processor version with sha256 `digest`, from memory or the compile cache, even if its
    /// `.wasm` has been replaced since; `None` when neither has it.
    pub fn load_digest(&self, digest: &str) -> Option<Arc<ProcessorCode>> {
        // It comes from the database: anything but a sha256 names nothing.
        if !cache::is_digest(digest) {
            return None;
        }
        if let Some(code) = self.memo().get(digest) {
            return Some(Arc::clone(code));
        }
        let component = self.cache.load_by_digest(&self.engine, digest)?;
        self.link(component, digest.to_owned(), CacheOutcome::Hit, Path::new(digest)).ok()
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ProcessorCode>>> {
        self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn link(
        &self,
        component: wasmtime::component::Component,
        digest: String,
        cache: CacheOutcome,
        path: &Path,
    ) -> Result<Arc<ProcessorCode>, LoadError> {
        let contract = check_contract(&self.engine, &component, path)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| link_error(path, &e))?;
        let pre = ImportProcessorPre::new(pre)
            .map_err(|e| LoadError::Link { path: path.to_owned(), message: format!("{e:#}") })?;
        let code = Arc::new(ProcessorCode {
            pre,
            fuel_metering: self.fuel_metering,
            _ticker: Arc::clone(&self.ticker),
            digest: digest.clone(),
            contract,
            cache,
        });
        self.memo().insert(digest, Arc::clone(&code));
        Ok(code)
    }
}

/// The hex sha256 of a file, read in pieces (whatever its size).
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Finds the contract version the component was built for, refusing any other than 0.1.x.
fn check_contract(
    engine: &Engine,
    component: &wasmtime::component::Component,
    path: &Path,
) -> Result<String, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
    let prefix = format!("{CONTRACT_PACKAGE}/processor");
    let Some(export) = exports.iter().find(|name| name.starts_with(&prefix)) else {
        let exports = if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") };
        return Err(LoadError::NotAProcessor { path: path.to_owned(), exports });
    };
    let version = export.split_once('@').map_or("(unversioned)", |(_, v)| v);
    let contract = format!("{CONTRACT_PACKAGE}@{version}");
    if !compatible(version) {
        return Err(LoadError::IncompatibleContract { path: path.to_owned(), found: contract });
    }
    for (import, _) in ty.imports(engine) {
        let known = import.starts_with("wasi:") || import.starts_with(&format!("{CONTRACT_PACKAGE}/"));
        if !known {
            return Err(LoadError::UnsupportedImport { path: path.to_owned(), import: import.to_owned() });
        }
        if let Some(v) = import.strip_prefix(CONTRACT_PACKAGE).and_then(|r| r.split_once('@'))
            && !compatible(v.1)
        {
            let found = format!("{CONTRACT_PACKAGE}@{}", v.1);
            return Err(LoadError::IncompatibleContract { path: path.to_owned(), found });
        }
    }
    Ok(contract)
}

/// Semver compatibility for 0.x: the same minor version.
fn compatible(version: &str) -> bool {
    let ours: Vec<&str> = CONTRACT_VERSION.split('.').collect();
    let theirs: Vec<&str> = version.split('.').collect();
    theirs.len() == 3 && theirs[0] == ours[0] && theirs[1] == ours[1]
}

fn link_error(path: &Path, e: &wasmtime::Error) -> LoadError {
    let message = format!("{e:#}");
    // wasmtime: "component imports instance `wasi:http/types@0.2.10`, but a matching
    // implementation was not found in the linker"
    if let Some(rest) = message.split("imports instance `").nth(1)
        && let Some((import, _)) = rest.split_once('`')
    {
        return LoadError::UnsupportedImport { path: path.to_owned(), import: import.to_owned() };
    }
    LoadError::Link { path: path.to_owned(), message }
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn contract_versions_follow_semver_for_0x() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.1.0"));
        assert!(!compatible("0.1"));
    }
}
