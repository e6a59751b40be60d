//! Ferry's scheduler: the service behind `ferry.v1.SchedulerService`.
//!
//! It owns schedules and their runs. A schedule repeats a migration, an export or an
//! import policy on a fixed interval or a five-field cron expression in an IANA time zone
//! ([`cron`]); each run starts a transfer job through [`Jobs`] (over gRPC:
//! [`TransferJobs`]), waits for it, and retries a failed job with doubling backoff. An
//! import policy's run lists a repository through the catalog and imports (and
//! restores) each restore point it has not imported before, exactly once. Runs of one
//! schedule never overlap: a due time that finds the previous run going records a
//! SKIPPED run. Schedules, runs and what each import policy imported live in
//! `<data-dir>/scheduler.db`; a restarted scheduler resumes the runs it left going.

pub mod config;
pub mod cron;
pub mod error;
pub mod jobs;
mod scheduler;
mod service;
mod store;
mod trigger;
mod validate;

pub use config::{Args, RetryDefaults, SchedulerConfig};
pub use error::SchedulerError;
pub use jobs::{JobError, JobOutcome, Jobs, TransferJobs};
pub use scheduler::Scheduler;

use tokio_util::sync::CancellationToken;

/// Why the service stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting the scheduler: {0}")]
    Start(#[from] SchedulerError),
    #[error(transparent)]
    Serve(#[from] ferry_rpc::ServeError),
}

/// Serves `scheduler` on `listener` (a `TcpListener` is plaintext on loopback only; a
/// [`ferry_rpc::Listener`] says how it is secured) until `shutdown` fires, then stops
/// its timing loop and runs (they resume on the next start) and lets open calls finish.
pub async fn serve(
    scheduler: Scheduler,
    listener: impl Into<ferry_rpc::Listener>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let engine = scheduler.clone();
    let stopped = async move {
        shutdown.cancelled().await;
        engine.shutdown().await;
    };
    ferry_rpc::Server::new()?
        .with_service(scheduler.into_server())
        .serve(listener, stopped)
        .await?;
    Ok(())
}
