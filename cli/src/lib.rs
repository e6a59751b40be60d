//! The `ferry` command line as a library: argument types, the commands and their error
//! type, so the thin binary only parses, runs and maps the outcome to an exit code.
//!
//! It holds `ferry repo`, the data mover on its own; `ferry serve`, every service in one
//! process; and the control plane's client commands (pair, profile, migrate, export, restore,
//! jobs, restore-points, schedules, activate, version), which reach a Ferry through the
//! SDK in crates/client, named by a kubeconfig context or `--server`.

/// The exit statuses, as one literal so several help texts can `concat!` it.
macro_rules! exit_codes_help {
    () => {
        "Exit status:
  0    success
  1    failure (including `check` finding problems)
  2    usage error (bad or missing arguments)
  10   the repository does not exist
  12   wrong key for the repository
  13   a job ended without succeeding (failed, partially succeeded, cancelled)
  14   Ctrl-C stopped following a job, which goes on (ferry jobs cancel JOB_ID stops it)
  130  interrupted (Ctrl-C or SIGTERM); nothing partial is left visible"
    };
}

pub mod catalog;
pub mod certs;
pub mod connect;
mod error;
pub mod export;
mod format;
pub mod import_policy;
pub mod jobs;
pub mod migrate;
mod output;
pub mod pair;
mod progress;
pub mod repo;
pub mod restore_points;
pub mod schedules;
pub mod serve;
pub mod service;
mod signal;
pub mod token;
pub mod version;
mod watch;

use clap::{Parser, Subcommand};

pub use error::{Error, Result};
pub use output::Format as OutputFormat;

/// Exit statuses, shown in `--help` and in cli/README.md.
pub const EXIT_CODES_HELP: &str = exit_codes_help!();

/// Ferry moves stateful Kubernetes applications between clusters.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, after_long_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub connect: connect::ConnectArgs,
    /// How control-plane commands print results: tables, the API's messages as
    /// protobuf JSON, or the same objects as YAML (`ferry repo` prints its own JSON
    /// with -o json too, and has no YAML).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub log: ferry_rpc::LogArgs,
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
    Serve(Box<serve::ServeArgs>),
    /// Run one of Ferry's components (pairing, catalog, transfer, scheduler, agent,
    /// gateway) with the flags of its own binary: how the Helm chart's pods run.
    Service(service::ServiceArgs),
    /// Pair two clusters so one can migrate to the other.
    Pair(pair::PairArgs),
    /// Profiles: how this cluster reaches a repository (S3 bucket or directory).
    Profile(catalog::ProfileArgs),
    /// Move an application with its volume data to a paired cluster.
    Migrate(migrate::MigrateArgs),
    /// Write an application's restore point to an export profile's repository, and
    /// print the migration token for the destination.
    Export(export::ExportArgs),
    /// Restore a restore point from a repository onto this cluster.
    Restore(export::RestoreArgs),
    /// List, follow and cancel jobs.
    Jobs(jobs::JobsArgs),
    /// Move a warm migration's application now: stop it on the source, copy the last
    /// change, start it on the destination, and report the downtime.
    Cutover(jobs::CutoverArgs),
    /// List the restore points a repository holds.
    RestorePoints(restore_points::RestorePointsArgs),
    /// Recurring migrations.
    Schedules(schedules::SchedulesArgs),
    /// Import policies: import (and restore) what a source exports to a shared bucket,
    /// on an interval or a cron expression.
    ImportPolicy(import_policy::ImportPolicyArgs),
    /// Print this cluster's import key (created on first use), for a source's
    /// `ferry export --recipient-key-file`.
    ImportKey,
    /// Print a migration token for a namespace's restore points in an export profile's
    /// repository (all of them, or one), for a destination's import profile.
    MigrationToken(token::MigrationTokenArgs),
    /// Start a migrated application that arrived scaled to zero.
    Activate(catalog::ActivateArgs),
    /// Make a CA and certificates to try TLS and mutual TLS with (test setups).
    Certs(certs::CertsArgs),
    /// Print Ferry's CustomResourceDefinitions (ClusterPair, Migration) as YAML: the
    /// chart installs them; `ferry crds | kubectl apply -f -` upgrades them.
    Crds,
    /// Wait until SIGTERM or Ctrl-C, doing nothing: what a mover pod runs while it holds a
    /// claim mounted for a node's agent.
    #[command(hide = true)]
    Hold,
    /// Print this client's version and the version of the Ferry it reaches (--context
    /// or --server); exits 1 when no Ferry answers.
    Version,
    /// Print a shell completion script for ferry's commands and flags.
    #[command(after_long_help = "Examples:
  source <(ferry completion bash)                      # this bash session
  ferry completion bash > /etc/bash_completion.d/ferry
  ferry completion zsh > \"${fpath[1]}/_ferry\"          # then restart zsh
  ferry completion fish > ~/.config/fish/completions/ferry.fish")]
    Completion {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs a parsed command line. Ctrl-C and SIGTERM cancel the command cleanly; a second
/// signal ends the process at once.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Repo(mut args) => {
            if cli.output == OutputFormat::Yaml {
                return Err(Error::Usage(
                    "`ferry repo` prints text or JSON; use -o json (or --json) instead of -o yaml"
                        .into(),
                ));
            }
            args.json |= cli.output == OutputFormat::Json;
            repo::run(args, signal::cancel_on_signals()).await
        }
        // Its own handlers: the first signal drains and stops the server (exit 0).
        Command::Serve(args) => Ok(serve::run(*args).await?),
        // Its own handlers, as the component's binary has.
        Command::Service(args) => service::run(args).await,
        Command::Hold => {
            signal::cancel_on_signals().cancelled().await;
            Ok(())
        }
        Command::Pair(args) => pair::run(&cli.connect, args, cli.output).await,
        Command::Profile(args) => catalog::profile(&cli.connect, args, cli.output).await,
        Command::Migrate(args) => {
            migrate::run(&cli.connect, args, signal::cancel_on_signals(), cli.output).await
        }
        Command::Export(args) => {
            export::export(&cli.connect, args, signal::cancel_on_signals(), cli.output).await
        }
        Command::Restore(args) => {
            export::restore(&cli.connect, args, signal::cancel_on_signals(), cli.output).await
        }
        Command::Jobs(args) => {
            jobs::run(&cli.connect, args, signal::cancel_on_signals(), cli.output).await
        }
        Command::Cutover(args) => {
            jobs::cutover(&cli.connect, args, signal::cancel_on_signals(), cli.output).await
        }
        Command::RestorePoints(args) => {
            restore_points::restore_points(&cli.connect, args, cli.output).await
        }
        Command::Schedules(args) => schedules::run(&cli.connect, args, cli.output).await,
        Command::ImportPolicy(args) => {
            import_policy::run(&cli.connect, args, signal::cancel_on_signals(), cli.output).await
        }
        Command::ImportKey => catalog::import_key(&cli.connect, cli.output).await,
        Command::MigrationToken(args) => {
            token::migration_token(&cli.connect, args, cli.output).await
        }
        Command::Activate(args) => catalog::activate(&cli.connect, args, cli.output).await,
        Command::Certs(args) => certs::run(args),
        Command::Crds => output::print(
            &ferry_crd::all_yaml().map_err(|e| Error::Output(std::io::Error::other(e)))?,
        ),
        Command::Version => version::run(&cli.connect, cli.output).await,
        Command::Completion { shell } => completion(shell),
    }
}

/// Writes `shell`'s completion script for the whole command line to stdout.
fn completion(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "ferry", &mut script);
    output::print(&String::from_utf8_lossy(&script))
}
