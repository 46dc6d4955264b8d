//! `ingot processors [--json]`: what is in the processors directory, and whether each loads.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::{Env, exit, output};
use crate::registry::RegistryError;
use crate::runtime::LoadError;

/// Arguments of `ingot processors`.
#[derive(Debug, Args)]
pub(crate) struct ProcessorsArgs {
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Entry {
    batch_type: String,
    /// Where the batch type comes from: "file name" or "ingot.toml".
    named_by: &'static str,
    path: String,
    digest: Option<String>,
    contract: Option<String>,
    status: &'static str,
    error: Option<String>,
}

impl ProcessorsArgs {
    pub(crate) fn run(self, env: &Env) -> anyhow::Result<ExitCode> {
        let registry = env.registry();
        let found = registry.discover()?;
        let runtime = env.runtime()?;
        let entries: Vec<Entry> = found
            .iter()
            .map(|d| {
                let (digest, contract, error) = match registry.load_discovered(&runtime, d) {
                    Ok(p) => (Some(p.code.digest.clone()), Some(p.code.contract.clone()), None),
                    Err(e) => {
                        // A file that does not load still gets its digest, to tell versions apart
                        // (read in pieces: it may be the file that was too large to load).
                        let digest = crate::runtime::file_digest(&d.path).ok();
                        // A component built for another version still says which one.
                        let contract = match &e {
                            RegistryError::Load(LoadError::IncompatibleContract { found, .. }) => {
                                Some(found.clone())
                            }
                            _ => None,
                        };
                        (digest, contract, Some(e.to_string()))
                    }
                };
                Entry {
                    batch_type: d.batch_type.clone(),
                    named_by: if d.named_in_config { "ingot.toml" } else { "file name" },
                    path: d.path.display().to_string(),
                    digest,
                    contract,
                    status: if error.is_none() { "ok" } else { "error" },
                    error,
                }
            })
            .collect();
        if self.json {
            output::json(&entries)?;
        } else if entries.is_empty() {
            println!(
                "No processors in {} (build one and copy it there as <batch_type>.wasm).",
                registry.dir().display()
            );
        } else {
            for e in &entries {
                match &e.error {
                    None => println!(
                        "{:<24} ok     {}  {}",
                        e.batch_type,
                        e.contract.as_deref().unwrap_or("-"),
                        e.digest.as_deref().map_or("-", |d| &d[..12])
                    ),
                    Some(error) => println!("{:<24} error  {error}", e.batch_type),
                }
            }
        }
        Ok(ExitCode::from(exit::OK))
    }
}
