//! How results reach the terminal: one JSON document with `--json`, otherwise a short human
//! summary that ends with the next command to run.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::terminal::safe;
use crate::batch::Progress;
use crate::store::BatchStatus;
use crate::store::batches::Summary;

/// Prints `value` as one pretty JSON document on stdout.
pub(crate) fn json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn short(id: &uuid::Uuid) -> String {
    id.to_string()
}

/// A summary as JSON or for people.
pub(crate) fn print(summary: &Summary, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        json(summary)
    } else {
        self::summary(summary);
        Ok(())
    }
}

/// The human summary of a batch.
pub(crate) fn summary(summary: &Summary) {
    let mut out = String::new();
    let verdict = match summary.status {
        BatchStatus::Completed if summary.failed > 0 => "completed with failures",
        BatchStatus::Completed => "completed",
        BatchStatus::Failed => "FAILED",
        BatchStatus::Processing => "is being processed by another worker or host",
        BatchStatus::Interrupted => "was interrupted: no worker is processing it",
        BatchStatus::Pending => "is pending",
        BatchStatus::Cancelled => "was cancelled",
    };
    let dry = if summary.dry_run { " (dry run: nothing was written)" } else { "" };
    out.push_str(&format!(
        "Batch {} ({}) {verdict}{dry}\n",
        short(&summary.batch_id),
        safe(&summary.batch_type)
    ));
    if let Some(parent) = summary.parent_batch_id {
        out.push_str(&format!("  reprocesses {parent} (retry {})\n", summary.retry_count));
    }
    for child in &summary.reprocessed_by {
        out.push_str(&format!(
            "  reprocessed by {} ({}: {} of {} completed, {} failed)\n",
            child.batch_id,
            child.status.as_str(),
            child.completed,
            child.total,
            child.failed
        ));
    }
    if !summary.reprocessed_by.is_empty() && summary.failed > 0 {
        out.push_str(&format!(
            "  {} of its {} failed items have since been fixed by a reprocess\n",
            summary.failures_fixed, summary.failed
        ));
    }
    let rate = summary.items_per_second.map_or(String::new(), |r| format!(" · {r:.0} items/s"));
    let duration = summary.duration_ms.map_or(String::new(), |ms| format!(" · {:.1} s", ms as f64 / 1000.0));
    out.push_str(&format!(
        "  total {} · completed {} · failed {} · skipped {}{}{duration}{rate}\n",
        summary.total,
        summary.completed,
        summary.failed,
        summary.skipped,
        if summary.pending > 0 { format!(" · pending {}", summary.pending) } else { String::new() },
    ));
    if let Some(error) = &summary.error_message {
        out.push_str(&format!("  error: {}\n", safe(error)));
    }
    if !summary.top_errors.is_empty() {
        out.push_str("  top errors:\n");
        let codes: Vec<String> =
            summary.top_errors.iter().map(|e| safe(e.code.as_deref().unwrap_or("-")).into_owned()).collect();
        let width = codes.iter().map(String::len).max().unwrap_or(0);
        for (e, code) in summary.top_errors.iter().zip(&codes) {
            out.push_str(&format!("    {:>6} × {code:width$}  {}\n", e.count, safe(&e.message)));
        }
        if summary.top_errors_more > 0 {
            out.push_str(&format!(
                "    {:>6} × other codes (see `ingot logs {} --level error`)\n",
                summary.top_errors_more, summary.batch_id
            ));
        }
    }
    let id = summary.batch_id;
    let mut next = Vec::new();
    if summary.status == BatchStatus::Interrupted {
        next.push(format!("ingot batch process {id}   (resumes it)"));
    }
    if !summary.dry_run && (summary.failed > 0 || summary.status == BatchStatus::Failed) {
        next.push(format!("ingot logs {id} --level error"));
        // A reprocess is the next step once the batch has ended; an atomic batch kept nothing,
        // so it runs again as a whole instead.
        let ended =
            matches!(summary.status, BatchStatus::Completed | BatchStatus::Failed | BatchStatus::Cancelled);
        if summary.atomic && summary.status == BatchStatus::Failed {
            next.push(format!("ingot batch process {id}   (runs every item again, once fixed)"));
        } else if summary.failed > 0 && ended {
            next.push(format!("ingot reprocess {id} --failed-only"));
        }
    }
    for (i, line) in next.iter().enumerate() {
        out.push_str(if i == 0 { "  next: " } else { "        " });
        out.push_str(line);
        out.push('\n');
    }
    print!("{out}");
}

/// A progress bar on stderr for runs that last over a second; nothing when stderr is not a
/// terminal or the output is JSON.
pub(crate) struct ProgressDisplay {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressDisplay {
    /// A bar over the batch's `total` items, of which `finished` were final before this run; the
    /// rate and the ETA count only what this run does, averaged since it began (the bar shows up
    /// a second in, and a jump from 0 must not read as a burst).
    pub(crate) fn start(progress: &Progress, total: u64, finished: u64, json: bool) -> Self {
        if json || !std::io::stderr().is_terminal() {
            return ProgressDisplay { task: None };
        }
        let progress = progress.clone();
        let began = std::time::Instant::now();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (bar, template) = match total {
                0 => (ProgressBar::no_length(), "{spinner} {pos} items · {msg}"),
                n => (ProgressBar::new(n), "{bar:40} {pos}/{len} items · {msg}"),
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            loop {
                let done = progress.done();
                bar.set_position(finished + done);
                bar.set_message(rate_and_eta(done, began.elapsed(), total.saturating_sub(finished + done)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        ProgressDisplay { task: Some(task) }
    }
}

/// "123/s · eta 40s": items finished per second of this run, and the time the rest would take.
fn rate_and_eta(done: u64, elapsed: Duration, remaining: u64) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    #[allow(clippy::cast_precision_loss)]
    let rate = done as f64 / seconds;
    if done == 0 {
        return "starting".to_owned();
    }
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let eta = (remaining as f64 / rate).round() as u64;
    let eta = match eta {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    };
    format!("{rate:.0}/s · eta {eta}")
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Clear the bar's line.
            eprint!("\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rate_and_eta;
    use std::time::Duration;

    #[test]
    fn the_rate_is_this_runs_items_over_its_time() {
        assert_eq!(rate_and_eta(0, Duration::from_secs(1), 100), "starting");
        assert_eq!(rate_and_eta(50, Duration::from_secs(2), 100), "25/s · eta 4s");
        assert_eq!(rate_and_eta(10, Duration::from_secs(1), 1_000), "10/s · eta 1m40s");
        assert_eq!(rate_and_eta(1, Duration::from_secs(1), 7_200), "1/s · eta 2h00m");
    }
}
