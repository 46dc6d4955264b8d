//! `ingot batch create|process|cancel|prune|purge-source|show|list` and `ingot reprocess`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::output::{self, ProgressDisplay};
use super::run::InputArgs;
use super::{Env, default_workers, exit, process_exit_code, process_to_end, stop_on_signal};
use crate::batch::{Durability, ProcessOptions, Progress};
use crate::database;
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
    /// Delete ended batches (completed, failed, cancelled) older than a given age, with their
    /// items and logs, in short chunks.
    Prune {
        /// Their age: e.g. 90d, 12h, 2w, 30m.
        #[arg(long, value_parser = parse_age)]
        older_than: chrono::Duration,
        /// Only batches of this type.
        #[arg(long = "type")]
        batch_type: Option<String>,
        /// Keep batches that failed or have failed items.
        #[arg(long)]
        keep_failed: bool,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the source data of a batch's completed items (their status, target, processed data
    /// and logs stay), e.g. for a privacy request.
    PurgeSource {
        /// The batch id.
        id: Uuid,
        /// Print the result as JSON.
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

fn parse_age(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: i64 =
        number.parse().map_err(|_| format!("{s:?} is not an age; write e.g. 90d, 12h, 2w or 30m"))?;
    let age = match unit {
        "m" | "min" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        "w" => chrono::Duration::try_weeks(n),
        _ => None,
    };
    age.ok_or_else(|| format!("{s:?} is not an age; write e.g. 90d, 12h, 2w or 30m"))
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
            BatchCommand::Prune { older_than, batch_type, keep_failed, dry_run, json } => {
                let db = env.database(2).await?;
                let mut conn = db.pool.acquire().await?;
                let before = chrono::Utc::now() - older_than;
                let ids = batches::prunable(&mut conn, before, batch_type.as_deref(), keep_failed).await?;
                let mut pruned = batches::Pruned::default();
                if dry_run {
                    pruned.batches = ids;
                } else {
                    for id in ids {
                        if let Some((items, logs)) = batches::prune(&mut conn, id).await? {
                            pruned.batches.push(id);
                            pruned.items += items;
                            pruned.log_lines += logs;
                        }
                    }
                }
                if json {
                    output::json(&pruned)?;
                } else if dry_run {
                    println!(
                        "Would delete {} batches created before {}:",
                        pruned.batches.len(),
                        before.format("%Y-%m-%d %H:%M UTC")
                    );
                    for id in &pruned.batches {
                        println!("  {id}");
                    }
                } else {
                    println!(
                        "Deleted {} batches created before {}, with {} items and {} log lines",
                        pruned.batches.len(),
                        before.format("%Y-%m-%d %H:%M UTC"),
                        pruned.items,
                        pruned.log_lines
                    );
                }
                Ok(ExitCode::from(exit::OK))
            }
            BatchCommand::PurgeSource { id, json } => {
                let db = env.database(2).await?;
                let mut conn = db.pool.acquire().await?;
                if batches::get(&mut conn, id).await?.is_none() {
                    anyhow::bail!("batch {id} does not exist (see `ingot batch list`)");
                }
                let purged = batches::purge_source(&mut conn, id).await?;
                if json {
                    output::json(&serde_json::json!({"batch_id": id, "purged_items": purged}))?;
                } else {
                    println!(
                        "Removed the source data of {purged} completed items of batch {id} (their status, target and logs stay)"
                    );
                }
                Ok(ExitCode::from(exit::OK))
            }
            BatchCommand::Show { id, json } => {
                let mut conn = env.connection().await?;
                let summary = database::read(&mut conn, async |c| batches::summary(c, id).await)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("batch {id} does not exist (see `ingot batch list`)"))?;
                output::print(&summary, json)?;
                Ok(ExitCode::from(exit::OK))
            }
            BatchCommand::List { batch_type, status, limit, json } => {
                let mut conn = env.connection().await?;
                let filter = ListFilter { batch_type, status, limit: limit.max(0) };
                let list = database::read(&mut conn, async |c| batches::list(c, &filter).await).await?;
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
        let display = ProgressDisplay::start(&progress, 0, 0, self.json);
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
