//! `ingot run TYPE FILE`: create a batch from a file and process it.

use std::process::ExitCode;

use clap::Args;

use super::output;
use super::{Env, default_workers, exit_code, process_to_end};
use crate::batch::{CreateOptions, Durability};
use crate::input::{Format, InputSource};

/// Arguments of `ingot run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The batch type: the processor's name (processors/<TYPE>.wasm).
    batch_type: String,
    /// The input file (.csv, .json, .ndjson), or - for stdin.
    file: String,
    #[command(flatten)]
    input: InputArgs,
    /// Run every item and roll everything back: report what would happen, keep nothing.
    #[arg(long)]
    dry_run: bool,
    /// Concurrent workers (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// When item commits wait for the disk: batch (default: the batch's end does) or item (each
    /// one); overrides the manifest's [batch] durability.
    #[arg(long, value_enum)]
    durability: Option<Durability>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Options shared by the commands that read an input file.
#[derive(Debug, Args)]
pub(crate) struct InputArgs {
    /// The input format; by default taken from the file extension.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Stop the batch at its first failed item.
    #[arg(long)]
    stop_on_error: bool,
    /// Initial batch metadata, a JSON object.
    #[arg(long, value_parser = parse_metadata)]
    metadata: Option<serde_json::Value>,
}

impl InputArgs {
    pub(crate) fn source(&self, file: &str) -> anyhow::Result<InputSource> {
        Ok(InputSource::from_arg(file, self.format)?)
    }

    pub(crate) fn create_options(&self) -> CreateOptions {
        CreateOptions { stop_on_error: self.stop_on_error, metadata: self.metadata.clone() }
    }
}

fn parse_metadata(s: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err("metadata must be a JSON object, e.g. '{\"source\": \"crm\"}'".into()),
        Err(e) => Err(format!("metadata is not valid JSON: {e}")),
    }
}

impl RunArgs {
    pub(crate) async fn run(self, env: &Env) -> anyhow::Result<ExitCode> {
        let source = self.input.source(&self.file)?;
        let workers = self.workers.unwrap_or_else(default_workers).max(1);
        let manager = env.manager(workers).await?;
        let create = self.input.create_options();
        if self.dry_run {
            let summary = manager.dry_run(&self.batch_type, source, &create).await?;
            output::print(&summary, self.json)?;
            return Ok(exit_code(&summary));
        }
        let id = manager.create(&self.batch_type, source, &create).await?;
        process_to_end(&manager, id, workers, self.durability, self.json).await
    }
}
