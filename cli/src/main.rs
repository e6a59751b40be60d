//! The `ferry` binary: parse, set up logging, run, map the outcome to an exit status.
//! Everything else lives in the `ferry_cli` library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit with status 2 inside `parse`, --help and --version with 0.
    let cli = ferry_cli::Cli::parse();
    // Warnings by default (e.g. skipped special files); RUST_LOG for more, on stderr so
    // stdout stays for results. OTEL_EXPORTER_OTLP_ENDPOINT also exports spans (`ferry
    // serve`'s jobs and RPCs); the guard flushes them when main returns.
    let config = match cli.command {
        // A component logs as its own binary does.
        ferry_cli::Command::Service(_) => ferry_rpc::TracingConfig::from_env("info"),
        _ => ferry_rpc::TracingConfig::from_env("warn"),
    };
    let _tracing = ferry_rpc::init_tracing_with(config.with_log_args(&cli.log));
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
