//! `ingot db status|stop`: the embedded database under .ingot/.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::{exit, output};
use crate::database::EmbeddedCluster;

#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Show whether the embedded database exists and runs.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the embedded database (it starts again on the next command that needs it).
    Stop {
        /// Stop at once, without a checkpoint, as a crash would: the server replays its log at
        /// the next start (for testing what survives a database crash).
        #[arg(long)]
        immediate: bool,
    },
}

impl DbCommand {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let project = std::env::current_dir().context("cannot read the current directory")?;
        let cluster = EmbeddedCluster::new(&project)?;
        match self {
            DbCommand::Status { json } => {
                let status = cluster.status();
                if json {
                    output::json(&status)?;
                } else {
                    let state = match (status.initialized, status.running) {
                        (false, _) => "not created yet (the first command that needs it creates it)",
                        (true, false) => "stopped",
                        (true, true) => "running",
                    };
                    println!("embedded database in {}: {state}", status.path.display());
                    if std::env::var_os("DATABASE_URL").is_some() {
                        println!("(DATABASE_URL is set, so ingot uses that database instead)");
                    }
                }
            }
            DbCommand::Stop { immediate } => {
                if cluster.stop(immediate)? {
                    println!("stopped the embedded database in {}", cluster.status().path.display());
                } else {
                    println!("the embedded database is not running");
                }
            }
        }
        Ok(ExitCode::from(exit::OK))
    }
}
