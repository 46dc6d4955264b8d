//! The `ingot` command line: argument parsing, one module per command, and exit codes. Each
//! command is a thin layer over the library; errors reach the user as one sentence.

mod batch;
mod db;
mod grant;
mod logs;
mod new;
mod output;
mod processors;
mod run;
mod terminal;
mod test;
mod toolchain;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::batch::{BatchManager, Durability, ProcessOptions, Progress};
use crate::context::grants::DEFAULT_ROLE_PREFIX;
use crate::database::{self, Database};
use crate::registry::Registry;
use crate::runtime::{DEFAULT_MAX_COMPONENT_BYTES, Runtime, RuntimeConfig};
use crate::store::BatchStatus;
use crate::store::batches::Summary;

/// Exit codes scripts can rely on.
pub mod exit {
    /// The batch completed and no item failed (or the command succeeded).
    pub const OK: u8 = 0;
    /// An error outside any batch: bad file, unknown type, database unreachable.
    pub const ERROR: u8 = 1;
    /// Bad usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// The batch completed, but some items failed.
    pub const ITEMS_FAILED: u8 = 3;
    /// The batch failed.
    pub const BATCH_FAILED: u8 = 4;
    /// Stopped by SIGINT or SIGTERM before the batch finished; `ingot batch process ID` resumes it.
    pub const INTERRUPTED: u8 = 5;
}

/// PostgreSQL-native batch imports with sandboxed WebAssembly processors.
#[derive(Debug, Parser)]
#[command(name = "ingot", version, about, max_term_width = 100)]
pub struct Cli {
    /// Where processors (<batch_type>.wasm and <batch_type>.toml) live.
    #[arg(long, global = true, env = "INGOT_PROCESSORS", default_value = "processors")]
    processors: PathBuf,

    /// Where compiled processors are cached.
    #[arg(long, global = true, env = "INGOT_CACHE_DIR", default_value = ".ingot/cache")]
    cache_dir: PathBuf,

    /// Prefix of the per-processor database roles (roles are shared by every database of a
    /// PostgreSQL cluster; a prefix keeps deployments apart).
    #[arg(long, global = true, env = "INGOT_ROLE_PREFIX", default_value = DEFAULT_ROLE_PREFIX)]
    role_prefix: String,

    /// The largest processor component loaded, in MiB; larger files are refused unread.
    #[arg(long, global = true, env = "INGOT_MAX_COMPONENT_MB", default_value_t = DEFAULT_MAX_COMPONENT_BYTES >> 20)]
    max_component_mb: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a batch from FILE and process it: the main job.
    Run(run::RunArgs),
    /// Create, process, show and list batches.
    #[command(subcommand)]
    Batch(batch::BatchCommand),
    /// Reprocess a batch (all its items, or only the failed ones) as a new linked batch.
    Reprocess(batch::ReprocessArgs),
    /// Show a batch's log lines.
    Logs(logs::LogsArgs),
    /// List the processors in the processors directory and check each one.
    Processors(processors::ProcessorsArgs),
    /// Apply Ingot's schema (also done automatically on first use), then each processor folder's
    /// own SQL not applied yet: processors/<type>/schema.sql and processors/<type>/migrations/*.sql.
    Migrate,
    /// Create or update processors' database roles to match their manifests (run it once as an
    /// administrator when Ingot's own database user may not create roles).
    Grant(grant::GrantArgs),
    /// Make a project folder: processors/, a .gitignore for .ingot/, a README with the next steps.
    Init(new::InitArgs),
    /// Create a processor project in Rust, Python or JavaScript.
    New(new::NewArgs),
    /// Run a processor against its test cases (processors/TYPE/tests.ndjson), each in a
    /// transaction that is rolled back; exit 1 if any fails.
    Test(test::TestArgs),
    /// Process batches as they appear, until stopped; run one per host, as many hosts as you like.
    Worker(worker::WorkerArgs),
    /// Status of, or stop, the embedded database under .ingot/.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Writes the contract's bindings for a language without its own component toolchain (C, Zig).
    Bindings(toolchain::BindingsArgs),
    /// Turns a WASI preview-1 reactor module (from zig cc, clang, …) into a processor component.
    Componentize(toolchain::ComponentizeArgs),
}

impl Cli {
    /// Whether the command only reads a few rows on one connection (`batch show`, `batch list`,
    /// `logs`): it needs no thread of its own beyond the one that waits for the database.
    pub fn is_quick_read(&self) -> bool {
        matches!(
            self.command,
            Command::Logs(_)
                | Command::Batch(batch::BatchCommand::Show { .. } | batch::BatchCommand::List { .. })
        )
    }

    /// Runs the command and returns the process exit code.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let env = Env {
            processors: self.processors,
            cache_dir: self.cache_dir,
            role_prefix: self.role_prefix,
            max_component_bytes: self.max_component_mb.saturating_mul(1 << 20),
        };
        match self.command {
            Command::Run(args) => args.run(&env).await,
            Command::Batch(command) => command.run(&env).await,
            Command::Reprocess(args) => args.run(&env).await,
            Command::Logs(args) => args.run(&env).await,
            Command::Processors(args) => args.run(&env),
            Command::Migrate => migrate(&env).await,
            Command::Db(command) => command.run(),
            Command::Grant(args) => args.run(&env).await,
            Command::Worker(args) => args.run(&env).await,
            Command::Init(args) => args.run(),
            Command::New(args) => args.run(),
            Command::Test(args) => args.run(&env).await,
            Command::Bindings(args) => args.run(),
            Command::Componentize(args) => args.run(),
        }
    }
}

/// `ingot migrate`: Ingot's schema, then the processors' own SQL files, each once.
async fn migrate(env: &Env) -> anyhow::Result<ExitCode> {
    use crate::store::schemas::{self, Applied};
    let db = env.database(2).await?;
    // Every migration, checksums checked, even when the newest is already applied.
    crate::store::migrate(&db.pool).await?;
    eprintln!("ingot: Ingot's schema is up to date ({})", db.target);
    let files = crate::registry::schema::schema_files(&env.processors)?;
    let mut conn = db.pool.acquire().await?;
    let mut applied = 0;
    for file in &files {
        let path = file.path.display();
        match schemas::apply(&mut conn, file).await {
            Ok(Applied::Now) => {
                applied += 1;
                eprintln!("ingot: applied {path}");
            }
            Ok(Applied::Before) => {}
            Ok(Applied::Changed { at }) => anyhow::bail!(
                "{path} changed since it was applied ({}); a schema file runs once: put the change in a new \
                 file under {}/migrations/ (they run in name order), or apply it yourself (`ingot db psql`)",
                at.format("%Y-%m-%d %H:%M UTC"),
                file.path.parent().map_or_else(String::new, |p| p.display().to_string())
            ),
            Err(e) => anyhow::bail!("{path} failed, so none of it was applied: {e}"),
        }
    }
    if applied == 0 && !files.is_empty() {
        eprintln!("ingot: the processors' schema files were all applied before");
    }
    Ok(ExitCode::from(exit::OK))
}

/// What every command may need, built on demand.
pub(crate) struct Env {
    processors: PathBuf,
    cache_dir: PathBuf,
    role_prefix: String,
    max_component_bytes: u64,
}

impl Env {
    fn registry(&self) -> Registry {
        Registry::new(&self.processors)
    }

    /// The engine; fuel metering is on when any manifest in the directory sets a fuel limit
    /// (it is an engine-wide setting).
    fn runtime(&self) -> anyhow::Result<Arc<Runtime>> {
        let registry = self.registry();
        let fuel_metering = registry
            .discover()
            .unwrap_or_default()
            .iter()
            .any(|found| registry.manifest(&found.batch_type).is_ok_and(|m| m.limits.fuel.is_some()));
        let runtime = Runtime::new(RuntimeConfig { cache_dir: Some(self.cache_dir.clone()), fuel_metering })
            .context("cannot start the WebAssembly runtime")?
            .with_max_component_bytes(self.max_component_bytes);
        Ok(Arc::new(runtime))
    }

    async fn database(&self, connections: u32) -> anyhow::Result<Database> {
        let project = std::env::current_dir().context("cannot read the current directory")?;
        let (options, target) = tokio::task::spawn_blocking(move || database::resolve(&project)).await??;
        Ok(database::open(options, target, connections).await?)
    }

    /// One connection, for a command that reads a few rows (see [`database::connect`]).
    async fn connection(&self) -> anyhow::Result<sqlx::PgConnection> {
        let project = std::env::current_dir().context("cannot read the current directory")?;
        let (options, target) = tokio::task::spawn_blocking(move || database::resolve(&project)).await??;
        Ok(database::connect(options, &target).await?)
    }

    async fn manager(&self, workers: usize) -> anyhow::Result<BatchManager> {
        let db = self.database(u32::try_from(workers).unwrap_or(64).saturating_add(2)).await?;
        Ok(BatchManager::new(db.pool, self.runtime()?, self.registry()).with_role_prefix(&self.role_prefix))
    }
}

/// Stops `progress` gracefully on the first SIGINT or SIGTERM (in-flight items finish, the rest
/// stay pending); a second signal exits at once, which is just as safe: uncommitted items are
/// simply pending again.
pub(crate) fn stop_on_signal(progress: &Progress) -> tokio::task::JoinHandle<()> {
    let progress = progress.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("ingot: stopping: finishing the items in flight (signal again to stop at once)");
        progress.stop();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(i32::from(exit::INTERRUPTED));
    })
}

/// Processes batch `id` with `workers` workers, showing progress on a terminal and stopping
/// gracefully on SIGINT/SIGTERM; prints the summary and returns the exit code.
pub(crate) async fn process_to_end(
    manager: &BatchManager,
    id: uuid::Uuid,
    workers: usize,
    durability: Option<Durability>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let summary = manager.summary(id).await?;
    if let Some(after) = summary.after_batch_id
        && summary.status == BatchStatus::Pending
    {
        eprintln!("ingot: batch {id} starts once batch {after} has completed (--after); waiting");
    }
    // The bar counts the whole batch, and starts where an interrupted one left off.
    let total = u64::try_from(summary.total).unwrap_or(0);
    let finished = total.saturating_sub(u64::try_from(summary.pending).unwrap_or(0));
    let progress = Progress::default();
    let signals = stop_on_signal(&progress);
    let display = output::ProgressDisplay::start(&progress, total, finished, json);
    let options = ProcessOptions::workers(workers).with_durability(durability);
    let summary = manager.process(id, &options, Some(&progress)).await;
    drop(display);
    signals.abort();
    let summary = summary?;
    output::print(&summary, json)?;
    Ok(process_exit_code(&summary, &progress))
}

/// The exit code of a `process` call: interrupted, or what the batch's state maps to.
pub(crate) fn process_exit_code(summary: &Summary, progress: &Progress) -> ExitCode {
    if progress.stopped() && summary.pending > 0 {
        eprintln!("ingot: interrupted; resume with `ingot batch process {}`", summary.batch_id);
        return ExitCode::from(exit::INTERRUPTED);
    }
    exit_code(summary)
}

/// The exit code a batch's final state maps to.
pub(crate) fn exit_code(summary: &Summary) -> ExitCode {
    ExitCode::from(match summary.status {
        BatchStatus::Failed | BatchStatus::Cancelled => exit::BATCH_FAILED,
        _ if summary.failed > 0 => exit::ITEMS_FAILED,
        _ => exit::OK,
    })
}

/// The default worker count: one per core.
/// A failure as one line: the error and each cause, where the cause adds something (an error
/// that already quotes its source is not followed by it again).
pub fn error_sentence(error: &anyhow::Error) -> String {
    let mut sentence = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !sentence.contains(&text) {
            sentence.push_str(": ");
            sentence.push_str(&text);
        }
    }
    sentence
}

pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
