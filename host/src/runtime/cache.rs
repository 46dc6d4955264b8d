//! The on-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes from 0.1 s (a small Rust processor) to 10 s (an
//! 18 MB Python one); loading a serialized one takes about a millisecond. Entries are keyed by the
//! sha256 of the `.wasm` and a hash of everything in the engine's configuration that makes
//! compiled code incompatible (wasmtime version, fuel, epochs, target), so a stale entry is never
//! loaded. The cache directory must be trusted: its files are loaded as native code.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The wasmtime release this host is built with; part of every cache path so that old entries
/// are easy to recognise and delete.
const WASMTIME_RELEASE: &str = "wasmtime-48";

/// Where compiled components are kept.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache without compiling.
    Hit,
    /// Compiled, then written to the cache.
    Compiled,
    /// Compiled; there is no cache (or writing to it failed, which is only logged).
    Uncached,
}

impl ComponentCache {
    /// A cache in `dir` (created on first write), or no cache at all for `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache { dir }
    }

    fn entry_path(&self, engine: &Engine, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let config = hasher.finish();
        Some(dir.join(WASMTIME_RELEASE).join(format!("{digest}-{config:016x}.cwasm")))
    }

    /// The cached component compiled from the `.wasm` whose sha256 is `digest`, if the cache has
    /// it — even when that file has since been replaced.
    pub fn load_by_digest(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.entry_path(engine, digest)?;
        if !path.exists() {
            return None;
        }
        deserialize(engine, &path).ok()
    }

    /// Loads the component for `bytes` (whose sha256 is `digest`) from the cache, or compiles it
    /// and stores the result.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(path) = self.entry_path(engine, digest) else {
            return Ok((Component::new(engine, bytes)?, CacheOutcome::Uncached));
        };
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                // A truncated or foreign file: recompile and overwrite it.
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e:#}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        match store(&path, &component) {
            Ok(()) => Ok((component, CacheOutcome::Compiled)),
            Err(e) => {
                tracing::warn!(path = %path.display(), "could not write the compile cache: {e:#}");
                Ok((component, CacheOutcome::Uncached))
            }
        }
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written by `store` below from `Component::serialize` of an engine
    // with the same compatibility hash (it is in the file name), and wasmtime re-checks its
    // header and version on load. The cache directory is the operator's, like the binary itself.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Writes atomically (temporary file, then rename) so that concurrent hosts and tests sharing
/// the cache never load a half-written entry.
fn store(path: &Path, component: &Component) -> wasmtime::Result<()> {
    let bytes = component.serialize()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(())
}
