//! Processor discovery: `processors/*.wasm`, one batch type per file, named by convention.
//!
//! `processors/CustomerData.wasm` and `processors/customer-data.wasm` both serve batch type
//! `customer_data`; having both is an error naming both. A file whose name does not say its type
//! is named in `processors/ingot.toml` (see [`naming`]). The operator's manifest sits beside the
//! component as `processors/<batch_type>.toml`. Discovery is cheap (a directory listing); loading
//! compiles, or reads the compile cache.

pub mod manifest;
pub mod naming;
pub mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use self::manifest::{Manifest, ManifestError};
pub use self::naming::batch_type_from_stem;
use self::naming::{NameMap, NameMapError, RESERVED_BATCH_TYPE};
use crate::runtime::{LoadError, ProcessorCode, Runtime};

/// One discovered processor file (or a clash of several for one type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The batch type.
    pub batch_type: String,
    /// The component file.
    pub path: PathBuf,
    /// Every file that maps to this type, when more than one does.
    pub clash: Vec<PathBuf>,
    /// Whether `ingot.toml` gave the type, rather than the file name.
    pub named_in_config: bool,
}

/// Why a processor cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The processors directory is missing or unreadable.
    #[error("cannot read the processors directory {dir}: {source} (set --processors or INGOT_PROCESSORS)")]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No processor for the type.
    #[error(
        "no processor for batch type {batch_type:?} in {dir} ({known}); build one and copy it to {dir}/{batch_type}.wasm"
    )]
    Unknown {
        /// The type asked for.
        batch_type: String,
        /// The directory searched.
        dir: PathBuf,
        /// What is there instead.
        known: String,
    },
    /// Two files for one type.
    #[error("{} all map to batch type {batch_type:?}; keep only one", .paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "))]
    Duplicate {
        /// The type.
        batch_type: String,
        /// The clashing files.
        paths: Vec<PathBuf>,
    },
    /// The component cannot be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The directory's `ingot.toml` is invalid.
    #[error(transparent)]
    Names(#[from] NameMapError),
}

/// A processor ready to run: its code and its operator's manifest.
#[derive(Debug, Clone)]
pub struct Processor {
    /// The batch type.
    pub batch_type: String,
    /// The component file.
    pub path: PathBuf,
    /// Compiled and linked code.
    pub code: Arc<ProcessorCode>,
    /// Grants, limits and batch options.
    pub manifest: Manifest,
}

/// The processors directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// A registry over `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Registry { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lists the processors in the directory, sorted by batch type. Files whose name makes no
    /// batch type (and that `ingot.toml` does not name) are skipped with a warning.
    pub fn discover(&self) -> Result<Vec<Discovered>, RegistryError> {
        let names = NameMap::load(&self.dir)?;
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|source| RegistryError::Directory { dir: self.dir.clone(), source })?;
        let mut by_type: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for entry in entries {
            let path =
                entry.map_err(|source| RegistryError::Directory { dir: self.dir.clone(), source })?.path();
            if path.extension().is_none_or(|ext| ext != "wasm") || !path.is_file() {
                continue;
            }
            let file_name = path.file_name().and_then(|s| s.to_str()).unwrap_or_default();
            match names.batch_type_of(file_name) {
                Some(batch_type) if batch_type != RESERVED_BATCH_TYPE => {
                    by_type.entry(batch_type).or_default().push(path)
                }
                Some(_) => tracing::warn!(
                    path = %path.display(),
                    "skipping: batch type \"ingot\" is reserved (its manifest would be ingot.toml); rename the file or name its type in ingot.toml"
                ),
                None => tracing::warn!(
                    path = %path.display(),
                    "skipping: its name makes no batch type (use letters, digits, - and _, starting with a letter, or name its type in ingot.toml)"
                ),
            }
        }
        Ok(by_type
            .into_iter()
            .map(|(batch_type, mut paths)| {
                paths.sort();
                let clash = if paths.len() > 1 { paths.clone() } else { Vec::new() };
                let path = paths.swap_remove(0);
                let named_in_config =
                    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| names.is_mapped(n));
                Discovered { batch_type, path, clash, named_in_config }
            })
            .collect())
    }

    /// Finds the processor file for `batch_type`.
    pub fn find(&self, batch_type: &str) -> Result<Discovered, RegistryError> {
        let all = self.discover()?;
        let known = if all.is_empty() {
            "it has no .wasm files".to_owned()
        } else {
            format!("it has: {}", all.iter().map(|d| d.batch_type.as_str()).collect::<Vec<_>>().join(", "))
        };
        let found = all.into_iter().find(|d| d.batch_type == batch_type).ok_or_else(|| {
            RegistryError::Unknown { batch_type: batch_type.to_owned(), dir: self.dir.clone(), known }
        })?;
        if !found.clash.is_empty() {
            return Err(RegistryError::Duplicate { batch_type: found.batch_type, paths: found.clash });
        }
        Ok(found)
    }

    /// Where the operator's manifest for a batch type lives: `<dir>/<batch_type>.toml`.
    pub fn manifest_path(&self, batch_type: &str) -> PathBuf {
        self.dir.join(format!("{batch_type}.toml"))
    }

    /// The operator's manifest for a batch type; the default (no grants) when there is none.
    pub fn manifest(&self, batch_type: &str) -> Result<Manifest, ManifestError> {
        Manifest::load(&self.manifest_path(batch_type))
    }

    /// Loads a discovered processor: compiles (or reads the cache), checks the contract, reads
    /// the manifest.
    pub fn load_discovered(&self, runtime: &Runtime, found: &Discovered) -> Result<Processor, RegistryError> {
        if !found.clash.is_empty() {
            return Err(RegistryError::Duplicate {
                batch_type: found.batch_type.clone(),
                paths: found.clash.clone(),
            });
        }
        let manifest = self.manifest(&found.batch_type)?;
        let code = runtime.load(&found.path)?;
        Ok(Processor { batch_type: found.batch_type.clone(), path: found.path.clone(), code, manifest })
    }

    /// Finds and loads the processor for `batch_type`.
    pub fn load(&self, runtime: &Runtime, batch_type: &str) -> Result<Processor, RegistryError> {
        let found = self.find(batch_type)?;
        self.load_discovered(runtime, &found)
    }
}
