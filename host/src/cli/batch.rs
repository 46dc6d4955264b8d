//! `ingot batch create|process|cancel|show|list` and `ingot reprocess`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::output::{self, ProgressDisplay};
use super::run::InputArgs;
use super::{Env, default_workers, exit, process_exit_code, process_to_end, stop_on_signal};
use crate::batch::{Durability, ProcessOptions, Progress};
use crate::store::BatchStatus;
use crate::store::batches::{self, ListFilter};

#[derive(Debug, Subcommand)]
pub(crate) enum BatchCommand {
    /// Create a pending batch from FILE without processing it.
    Create {
        /// The batch type: the processor's name.
        batch_type: String,
        /// The input file (.csv, .tsv, .json, .ndjson, .xlsx, .ods; plain, .gz or .zst), or - for stdin.
        file: String,
        #[command(flatten)]
        input: InputArgs,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Process a batch: start a pending one, or resume an interrupted one.
    Process {
        /// The batch id.
        id: Uuid,
        /// Concurrent workers (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// When item commits wait for the disk: batch or item (overrides the manifest).
        #[arg(long, value_enum)]
        durability: Option<Durability>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a batch for good: its pending items are never processed, items in flight finish.
    Cancel {
        /// The batch id.
        id: Uuid,
        /// Why (recorded as the batch's error, shown by `batch show`).
        #[arg(long, default_value = "cancelled by an operator")]
        reason: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a batch's summary.
    Show {
        /// The batch id.
        id: Uuid,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List batches, newest first.
    List {
        /// Only batches of this type.
        #[arg(long = "type")]
        batch_type: Option<String>,
        /// Only batches with this status.
        #[arg(long, value_parser = parse_status)]
        status: Option<BatchStatus>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
}

fn parse_status(s: &str) -> Result<BatchStatus, String> {
    BatchStatus::parse(s).ok_or_else(|| {
        let all: Vec<&str> = BatchStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown status {s:?}; use one of: {}", all.join(", "))
    })
}

impl BatchCommand {
    pub(crate) async fn run(self, env: &Env) -> anyhow::Result<ExitCode> {
        match self {
            BatchCommand::Create { batch_type, file, input, json } => {
                let source = input.source(&file)?;
                let manager = env.manager(1).await?;
                let id = manager.create(&batch_type, source, &input.create_options()).await?;
                let summary = manager.summary(id).await?;
                if json {
                    output::json(&summary)?;
                } else {
                    println!("Created batch {id} ({batch_type}) with {} items", summary.total);
                    println!("  next: ingot batch process {id}");
                }
                Ok(ExitCode::from(exit::OK))
            }
            BatchCommand::Process { id, workers, durability, json } => {
                let workers = workers.unwrap_or_else(default_workers).max(1);
                let manager = env.manager(workers).await?;
                process_to_end(&manager, id, workers, durability, json).await
            }
            BatchCommand::Cancel { id, reason, json } => {
                let manager = env.manager(1).await?;
                let cancelled = manager.cancel(id, &reason).await?;
                let summary = manager.summary(id).await?;
                if json {
                    output::json(&summary)?;
                } else if cancelled {
                    println!(
                        "Cancelled batch {id}: its {} pending items will not be processed (items in flight finish)",
                        summary.pending
                    );
                } else {
                    println!("Batch {id} was already cancelled.");
                }
                Ok(ExitCode::from(exit::OK))
            }
            BatchCommand::Show { id, json } => {
                let db = env.database(2).await?;
                let mut conn = db.pool.acquire().await?;
                let summary = batches::summary(&mut conn, id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("batch {id} does not exist (see `ingot batch list`)"))?;
                output::print(&summary, json)?;
                Ok(ExitCode::from(exit::OK))
            }
            BatchCommand::List { batch_type, status, limit, json } => {
                let db = env.database(2).await?;
                let mut conn = db.pool.acquire().await?;
                let list =
                    batches::list(&mut conn, &ListFilter { batch_type, status, limit: limit.max(0) }).await?;
                if json {
                    output::json(&list)?;
                } else if list.is_empty() {
                    println!("No batches.");
                } else {
                    println!(
                        "{:<36}  {:<20}  {:<10}  {:>8}  {:>8}  {:>8}  {:>8}  created",
                        "id", "type", "status", "total", "done", "failed", "skipped"
                    );
                    for s in &list {
                        println!(
                            "{:<36}  {:<20}  {:<10}  {:>8}  {:>8}  {:>8}  {:>8}  {}",
                            s.batch_id,
                            s.batch_type,
                            s.status.as_str(),
                            s.total,
                            s.completed,
                            s.failed,
                            s.skipped,
                            s.created_at.format("%Y-%m-%d %H:%M:%S")
                        );
                    }
                }
                Ok(ExitCode::from(exit::OK))
            }
        }
    }
}

/// Arguments of `ingot reprocess`.
#[derive(Debug, Args)]
pub(crate) struct ReprocessArgs {
    /// The batch to reprocess.
    id: Uuid,
    /// Only its failed items.
    #[arg(long)]
    failed_only: bool,
    /// Concurrent workers (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// When item commits wait for the disk: batch or item (overrides the manifest).
    #[arg(long, value_enum)]
    durability: Option<Durability>,
    /// Print the new batch's summary as JSON.
    #[arg(long)]
    json: bool,
}

impl ReprocessArgs {
    pub(crate) async fn run(self, env: &Env) -> anyhow::Result<ExitCode> {
        let workers = self.workers.unwrap_or_else(default_workers).max(1);
        let manager = env.manager(workers).await?;
        let progress = Progress::default();
        let signals = stop_on_signal(&progress);
        let display = ProgressDisplay::start(&progress, 0, self.json);
        let summary = manager
            .reprocess(
                self.id,
                self.failed_only,
                &ProcessOptions::workers(workers).with_durability(self.durability),
                Some(&progress),
            )
            .await;
        drop(display);
        signals.abort();
        let Some(summary) = summary? else {
            let what = if self.failed_only { "no failed items" } else { "no items" };
            if self.json {
                output::json(
                    &serde_json::json!({ "reprocessed": false, "reason": what, "batch_id": self.id }),
                )?;
            } else {
                println!("Batch {} has {what}; nothing to reprocess.", self.id);
            }
            return Ok(ExitCode::from(exit::OK));
        };
        output::print(&summary, self.json)?;
        Ok(process_exit_code(&summary, &progress))
    }
}
