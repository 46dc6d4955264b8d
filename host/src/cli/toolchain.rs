//! `ingot bindings --lang c [--out DIR]` and `ingot componentize CORE.wasm -o NAME.wasm`: what a
//! C or Zig processor is built with (see `toolchain`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::exit;
use crate::toolchain;

/// A language whose bindings `ingot bindings` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BindingsLanguage {
    /// C (also what Zig and C++ build against).
    C,
}

/// Arguments of `ingot bindings`.
#[derive(Debug, Args)]
pub(crate) struct BindingsArgs {
    /// The language of the bindings.
    #[arg(long, value_enum)]
    lang: BindingsLanguage,
    /// Where to write them (made if missing; the generated files in it are replaced).
    #[arg(long, default_value = "bindings")]
    out: PathBuf,
}

impl BindingsArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let BindingsLanguage::C = self.lang;
        for path in toolchain::write_c_bindings(&self.out)? {
            println!("wrote {}", path.display());
        }
        Ok(ExitCode::from(exit::OK))
    }
}

/// Arguments of `ingot componentize`.
#[derive(Debug, Args)]
pub(crate) struct ComponentizeArgs {
    /// The WASI preview-1 reactor module your compiler wrote, linked with the C bindings.
    core: PathBuf,
    /// The processor component to write, e.g. processors/inventory.wasm.
    #[arg(short, long)]
    out: PathBuf,
}

impl ComponentizeArgs {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let bytes = toolchain::componentize(&self.core, &self.out)?;
        println!("wrote {} ({bytes} bytes)", self.out.display());
        Ok(ExitCode::from(exit::OK))
    }
}
