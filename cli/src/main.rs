//! The `ferry` binary: parse, set up logging, run, map the outcome to an exit status.
//! Everything else lives in the `ferry_cli` library.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Usage errors exit with status 2 inside `parse`, --help and --version with 0.
    let cli = ferry_cli::Cli::parse();
    // Warnings by default (e.g. skipped special files); RUST_LOG for more. Stdout
    // stays for results.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(ferry_cli::run(cli));
    // After an interruption, blocking readers may still be winding down; they hold no
    // state that matters, so the process does not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
