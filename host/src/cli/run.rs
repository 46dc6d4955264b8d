//! `ingot run TYPE FILE`: create a batch from a file and process it.

use std::process::ExitCode;

use clap::Args;

use super::output;
use super::{Env, default_workers, exit_code, process_to_end};
use crate::batch::{CreateOptions, Durability};
use crate::input::{Format, InputSource, ReadOptions, TextEncoding};

/// Arguments of `ingot run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The batch type: the processor's name (processors/<TYPE>.wasm).
    batch_type: String,
    /// The input file (.csv, .tsv, .json, .ndjson, .xlsx, .ods; plain, .gz or .zst), or - for stdin.
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
    /// The input format; by default taken from the file extension (.csv.gz and .csv.zst too).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The CSV delimiter: , ; | or \t (tab); by default detected from the header row.
    #[arg(long, value_parser = parse_delimiter)]
    delimiter: Option<u8>,
    /// The text encoding of the file (default utf-8; a UTF-16 byte-order mark is recognised).
    #[arg(long, value_enum)]
    encoding: Option<TextEncoding>,
    /// The sheet of an .xlsx or .ods file to read (default: the first).
    #[arg(long)]
    sheet: Option<String>,
    /// Stop the batch at its first failed item.
    #[arg(long)]
    stop_on_error: bool,
    /// Import the file even if a batch of the same type was already made from the same bytes.
    #[arg(long)]
    allow_duplicate: bool,
    /// Start only once batch ID has completed (if it fails or is cancelled, this one fails).
    #[arg(long, value_name = "ID")]
    after: Option<uuid::Uuid>,
    /// Fail the batch once more than N items failed (the rest stays pending, resumable).
    #[arg(long, value_name = "N")]
    max_failures: Option<u64>,
    /// Fail the batch once more than this share of its items failed: 0.05 or 5% (of the finished
    /// ones once 100 have finished, or of the whole batch).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    max_failure_rate: Option<f64>,
    /// All or nothing: every item in one transaction, kept only if no item failed (or the
    /// thresholds above held); otherwise nothing is kept and the batch fails (exit 4).
    #[arg(long)]
    atomic: bool,
    /// Initial batch metadata, a JSON object.
    #[arg(long, value_parser = parse_metadata)]
    metadata: Option<serde_json::Value>,
}

impl InputArgs {
    pub(crate) fn source(&self, file: &str) -> anyhow::Result<InputSource> {
        let options = ReadOptions {
            format: self.format,
            delimiter: self.delimiter,
            encoding: self.encoding,
            sheet: self.sheet.clone(),
        };
        Ok(InputSource::from_arg_with(file, options)?)
    }

    pub(crate) fn create_options(&self) -> CreateOptions {
        CreateOptions {
            stop_on_error: self.stop_on_error,
            allow_duplicate: self.allow_duplicate,
            after: self.after,
            max_failures: self.max_failures,
            max_failure_rate: self.max_failure_rate,
            atomic: self.atomic,
            metadata: self.metadata.clone(),
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let (number, scale) = match s.trim().strip_suffix('%') {
        Some(percent) => (percent.trim(), 100.0),
        None => (s.trim(), 1.0),
    };
    let rate = number.parse::<f64>().map_err(|_| format!("{s:?} is not a number; write 0.05 or 5%"))? / scale;
    crate::registry::manifest::check_failure_rate(rate)
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "," | ";" | "|" => Ok(s.as_bytes()[0]),
        "\\t" | "\t" | "tab" => Ok(b'\t'),
        _ => Err("the delimiter must be one of , ; | or \\t (tab)".into()),
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
