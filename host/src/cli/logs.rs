//! `ingot logs ID [--item INDEX] [--level LEVEL]`.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use futures_util::StreamExt;
use uuid::Uuid;

use super::terminal::safe;
use super::{Env, exit};
use crate::context::logs::LogLevel;
use crate::database;
use crate::store::batches;
use crate::store::logs::{self, LogQuery};

/// Arguments of `ingot logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The batch.
    id: Uuid,
    /// Only the lines of the item with this index.
    #[arg(long)]
    item: Option<i64>,
    /// Only lines at this level or above: debug, info, warning, error.
    #[arg(long, value_parser = parse_level)]
    level: Option<LogLevel>,
    /// Print a JSON array of lines.
    #[arg(long)]
    json: bool,
}

fn parse_level(s: &str) -> Result<LogLevel, String> {
    LogLevel::parse(s).ok_or_else(|| format!("unknown level {s:?}; use debug, info, warning or error"))
}

impl LogsArgs {
    pub(crate) async fn run(self, env: &Env) -> anyhow::Result<ExitCode> {
        let mut conn = env.connection().await?;
        if database::read(&mut conn, async |c| batches::get(c, self.id).await).await?.is_none() {
            anyhow::bail!("batch {} does not exist (see `ingot batch list`)", self.id);
        }
        let query = LogQuery { batch_id: self.id, item_index: self.item, min_level: self.level };
        let mut lines = logs::stream(&mut conn, &query);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut count = 0_u64;
        if self.json {
            write!(out, "[")?;
        }
        while let Some(line) = lines.next().await {
            let line = line?;
            if self.json {
                write!(out, "{}\n  {}", if count == 0 { "" } else { "," }, serde_json::to_string(&line)?)?;
            } else {
                // Every line printed is exactly one line of Ingot's: what the processor or the
                // input wrote is shown with its control characters escaped.
                let item = line.item_index.map_or_else(|| "batch".to_owned(), |i| format!("item {i}"));
                writeln!(
                    out,
                    "[{item}] {} {}: {}",
                    line.level.to_uppercase(),
                    safe(&line.source),
                    safe(&line.message)
                )?;
                if let Some(details) = &line.details {
                    writeln!(out, "    details: {}", safe(&details.to_string()))?;
                }
                if let Some(data) = &line.item_data {
                    writeln!(out, "    data: {}", safe(&data.to_string()))?;
                }
            }
            count += 1;
        }
        if self.json {
            writeln!(out, "{}]", if count == 0 { "" } else { "\n" })?;
        } else if count == 0 {
            writeln!(out, "No log lines match.")?;
        }
        out.flush()?;
        Ok(ExitCode::from(exit::OK))
    }
}
