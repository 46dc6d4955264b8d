//! `ingot new NAME --lang rust|python|js [--dir processors]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::exit;
use crate::scaffold::{self, Language};

/// Arguments of `ingot new`.
#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The processor's name, which is also its batch type (e.g. customer_data).
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    lang: Language,
    /// Where processors live; the project goes in DIR/NAME and builds DIR/NAME.wasm.
    #[arg(long, default_value = "processors")]
    dir: PathBuf,
}

impl NewArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let created = scaffold::create(&self.name, self.lang, &self.dir)?;
        let project = created.project.display();
        println!("Created {project} (manifest: {})", created.manifest.display());
        println!("  build: {project}/build.sh");
        println!(
            "  run:   ingot --processors {} run {} {project}/sample.ndjson",
            self.dir.display(),
            created.batch_type
        );
        Ok(ExitCode::from(exit::OK))
    }
}
