//! `ingot grant [TYPE…]`: make processors' database roles match their manifests now.

use std::process::ExitCode;

use clap::Args;

use super::{Env, exit};
use crate::context::grants;

/// Arguments of `ingot grant`.
#[derive(Debug, Args)]
pub(crate) struct GrantArgs {
    /// The batch types to sync; all discovered processors when none is given.
    batch_types: Vec<String>,
}

impl GrantArgs {
    pub(crate) async fn run(self, env: &Env) -> anyhow::Result<ExitCode> {
        let registry = env.registry();
        let types = if self.batch_types.is_empty() {
            registry.discover()?.into_iter().map(|d| d.batch_type).collect()
        } else {
            for batch_type in &self.batch_types {
                registry.find(batch_type)?;
            }
            self.batch_types
        };
        let db = env.database(2).await?;
        let mut conn = db.pool.acquire().await?;
        for batch_type in types {
            let manifest = registry.manifest(&batch_type)?;
            let role = grants::role_name(&env.role_prefix, &batch_type);
            grants::sync(&mut conn, &role, &batch_type, &manifest).await?;
            let granted = if manifest.grants.is_empty() {
                "no table".to_owned()
            } else {
                manifest.grants.keys().cloned().collect::<Vec<_>>().join(", ")
            };
            println!("{role}: may use {granted}");
        }
        Ok(ExitCode::from(exit::OK))
    }
}
