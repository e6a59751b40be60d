//! The `ferry` command line as a library: argument types, the commands and their error
//! type, so the thin binary only parses, runs and maps the outcome to an exit code.
//!
//! It holds `ferry repo`, the data mover on its own, and `ferry serve`, every service in
//! one process; the control plane's client commands will sit beside them as further
//! [`Command`] variants.

/// The exit statuses, as one literal so several help texts can `concat!` it.
macro_rules! exit_codes_help {
    () => {
        "Exit status:
  0    success
  1    failure (including `check` finding problems)
  2    usage error (bad or missing arguments)
  10   the repository does not exist
  12   wrong key for the repository
  130  interrupted (Ctrl-C or SIGTERM); nothing partial is left visible"
    };
}

mod error;
mod output;
mod progress;
pub mod repo;
pub mod serve;
mod signal;

use clap::{Parser, Subcommand};

pub use error::{Error, Result};

/// Exit statuses, shown in `--help` and in cli/README.md.
pub const EXIT_CODES_HELP: &str = exit_codes_help!();

/// Ferry moves stateful Kubernetes applications between clusters.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, after_long_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Use the data mover on its own: back up, list, restore and check an encrypted
    /// repository in a directory or an S3 bucket.
    Repo(repo::RepoArgs),
    /// Run every Ferry service (agent, pairing, catalog, transfer) in this process on
    /// one port, until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
}

/// Runs a parsed command line. Ctrl-C and SIGTERM cancel the command cleanly; a second
/// signal ends the process at once.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Repo(args) => repo::run(args, signal::cancel_on_signals()).await,
        // Its own handlers: the first signal drains and stops the server (exit 0).
        Command::Serve(args) => Ok(serve::run(args).await?),
    }
}
