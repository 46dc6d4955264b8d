//! `ingot db status|url|psql|stop`: the database, and the embedded one under .ingot/.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::{exit, output};
use crate::database::{self, EmbeddedCluster};

#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Show whether the embedded database exists and runs.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the database's URL (DATABASE_URL, or the embedded database's, which starts if needed),
    /// e.g. for `psql "$(ingot db url)"`.
    Url,
    /// Open psql on the database (DATABASE_URL, or the embedded one); ARGS go to psql, e.g.
    /// `ingot db psql -- -c 'SELECT count(*) FROM orders'`.
    Psql {
        /// Arguments for psql.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
        match self {
            DbCommand::Url => println!("{}", database::url(&project)?),
            DbCommand::Psql { args } => return psql(&database::url(&project)?, &args),
            DbCommand::Status { json } => {
                let status = EmbeddedCluster::new(&project)?.status();
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
                let cluster = EmbeddedCluster::new(&project)?;
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

/// Runs psql on `url` with `args`, as the user's own terminal program (its exit code is ours).
fn psql(url: &str, args: &[String]) -> anyhow::Result<ExitCode> {
    let status = match std::process::Command::new("psql").arg(url).args(args).status() {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "psql is not installed (it comes with PostgreSQL's client package); connect any client to {url}"
        ),
        Err(e) => return Err(e).context("cannot start psql"),
    };
    Ok(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(exit::ERROR)))
}
