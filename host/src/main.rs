//! The `ingot` binary: parse the command line, run it, print failures as one sentence.

use std::process::ExitCode;

use clap::Parser;
use ingot::cli::{Cli, exit};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INGOT_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // A read waits on one connection: the calling thread can drive it, and starting worker
    // threads (and waking them for each reply) costs a quick command more than its queries.
    let mut builder = if cli.is_quick_read() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ingot: cannot start: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ingot: {}", ingot::cli::error_sentence(&e));
            ExitCode::from(exit::ERROR)
        }
    }
}
