//! `ingot worker`: process batches as they appear, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::{Env, default_workers, exit, stop_on_signal};
use crate::batch::{Durability, ProcessOptions, Progress};
use crate::daemon::{self, DaemonOptions};
use crate::metrics::{self, Metrics};

/// Arguments of `ingot worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Only these batch types (comma-separated); by default every type in the processors directory.
    #[arg(long, value_delimiter = ',')]
    types: Option<Vec<String>>,
    /// Concurrent workers per batch (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Seconds between looks for new batches when no notification arrives.
    #[arg(long, default_value_t = 5.0)]
    poll_interval: f64,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9187.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// When item commits wait for the disk: batch (a flushed commit at least every 2 s while
    /// serving) or item; overrides the manifests.
    #[arg(long, value_enum)]
    durability: Option<Durability>,
}

impl WorkerArgs {
    pub(crate) async fn run(self, env: &Env) -> anyhow::Result<ExitCode> {
        let workers = self.workers.unwrap_or_else(default_workers).max(1);
        let manager = env.manager(workers).await?;
        let registry = env.registry();
        let metrics = match self.metrics {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
                let metrics = Metrics::new();
                tokio::spawn(metrics::serve(listener, metrics.clone(), manager.pool().clone()));
                Some(metrics)
            }
            None => None,
        };
        let poll_interval = Duration::try_from_secs_f64(self.poll_interval.max(0.05))
            .context("--poll-interval must be a number of seconds")?;
        let options = DaemonOptions {
            batch_types: self.types,
            process: ProcessOptions { workers, metrics, durability: self.durability },
            poll_interval,
        };
        let what =
            options.batch_types.as_ref().map_or_else(|| "every processor type".to_owned(), |t| t.join(", "));
        eprintln!(
            "ingot worker: serving {what} with {workers} workers per batch (stop with Ctrl-C or SIGTERM)"
        );
        let progress = Progress::default();
        let signals = stop_on_signal(&progress);
        let report = daemon::run(&manager, &registry, &options, &progress).await;
        signals.abort();
        let report = report?;
        eprintln!("ingot worker: stopped after {} items in {} batches", report.items, report.batches);
        Ok(ExitCode::from(exit::OK))
    }
}
