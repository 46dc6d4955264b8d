//! `ingot test TYPE [CASES]`: runs a processor against its test cases and says which pass.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::terminal::safe;
use super::{Env, exit, output};
use crate::batch::CreateOptions;
use crate::cases::{self, Verdict};
use crate::input::{Format, InputSource};

/// Arguments of `ingot test`.
#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// The batch type: the processor's name.
    batch_type: String,
    /// The cases file (default: processors/TYPE/tests.ndjson), one case per line: {"name": …,
    /// "item": {…}, "expect": {"status": "failed", "code": …, "field": …}}.
    cases: Option<PathBuf>,
    /// Print the verdicts as JSON.
    #[arg(long)]
    json: bool,
}

impl TestArgs {
    pub(crate) async fn run(self, env: &Env) -> anyhow::Result<ExitCode> {
        let path =
            self.cases.clone().unwrap_or_else(|| env.processors.join(&self.batch_type).join("tests.ndjson"));
        let cases = cases::load(&path)?;
        // The items go in as a file of their own, exactly as the cases wrote them.
        let items = tempfile_path();
        let text: String = cases.iter().map(|c| format!("{}\n", c.item)).collect();
        std::fs::write(&items, text).with_context(|| format!("cannot write {}", items.display()))?;
        let source = InputSource::from_arg(&items.to_string_lossy(), Some(Format::Ndjson));
        let manager = env.manager(1).await?;
        // The cases run again and again on purpose.
        let options = CreateOptions { allow_duplicate: true, ..CreateOptions::default() };
        let ran = match source {
            Ok(source) => manager.dry_run_with_items(&self.batch_type, source, &options).await,
            Err(e) => Err(e.into()),
        };
        let _ = std::fs::remove_file(&items);
        let (_, records) = ran?;
        let verdicts = cases::judge(&cases, &records);
        let failed = verdicts.iter().filter(|v| !v.passed).count();
        if self.json {
            output::json(&verdicts)?;
        } else {
            report(&self.batch_type, &path, &verdicts);
        }
        Ok(ExitCode::from(if failed == 0 { exit::OK } else { exit::ERROR }))
    }
}

fn tempfile_path() -> PathBuf {
    std::env::temp_dir().join(format!("ingot-test-{}.ndjson", uuid::Uuid::new_v4().simple()))
}

fn report(batch_type: &str, path: &std::path::Path, verdicts: &[Verdict]) {
    let mut out = String::new();
    out.push_str(&format!("{} cases of {batch_type} from {}\n", verdicts.len(), path.display()));
    for verdict in verdicts {
        let mark = if verdict.passed { "ok  " } else { "FAIL" };
        out.push_str(&format!("  {mark}  {} (line {})\n", safe(&verdict.name), verdict.line));
        for d in &verdict.differences {
            out.push_str(&format!(
                "          {}: expected {}, got {}\n",
                d.what,
                safe(&d.expected.to_string()),
                safe(&d.actual.to_string())
            ));
        }
        if !verdict.passed
            && let Some(message) = &verdict.actual.error_message
        {
            out.push_str(&format!("          (its error: {})\n", safe(message)));
        }
    }
    let failed = verdicts.iter().filter(|v| !v.passed).count();
    out.push_str(&format!("{} passed, {failed} failed\n", verdicts.len() - failed));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
}
