//! `ingot new NAME --lang rust|python|js|c|zig [--dir processors]` and `ingot init [DIR]`.

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
        let dir = if self.dir == std::path::Path::new("processors") {
            String::new()
        } else {
            format!("--processors {} ", self.dir.display())
        };
        let name = &created.batch_type;
        println!("Created {project} (manifest: {})", created.manifest.display());
        println!("  build: {project}/build.sh");
        println!("  test:  ingot {dir}test {name}          (its cases: {project}/tests.ndjson)");
        println!("  run:   ingot {dir}run {name} {project}/sample.ndjson");
        Ok(ExitCode::from(exit::OK))
    }
}

/// Arguments of `ingot init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The project folder (made if missing; default: the current folder).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

impl InitArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let done = scaffold::init(&self.dir)?;
        for path in &done.created {
            println!("created {}", path.display());
        }
        if done.created.is_empty() {
            println!("{} already is an Ingot project folder", self.dir.display());
        }
        let cd = if self.dir == std::path::Path::new(".") {
            String::new()
        } else {
            format!("cd {} && ", self.dir.display())
        };
        println!("next: {cd}ingot new my_import --lang python   (or rust, js, c, zig)");
        Ok(ExitCode::from(exit::OK))
    }
}
