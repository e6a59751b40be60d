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
    ferry_rpc::Server::named("scheduler")?
        .with_service(scheduler.into_server())
        .serve(listener, stopped)
        .await?;
    Ok(())
}

/// The scheduler's body, shared by `ferry-scheduler` and `ferry service scheduler`:
/// TLS, its transfer and catalog clients, state, the listener; serves until SIGTERM or
/// SIGINT (runs in progress resume on the next start).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let probes = args.probes.clone();
    use anyhow::Context;
    let tls = args.tls.load(None).await?;
    tls.server.check(args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let listener = ferry_rpc::Listener::new(listener, tls.server);
    let internal = match &args.internal_token_file {
        Some(path) => Some(ferry_authz::read_internal_token(path)?),
        None => None,
    };
    let client = match &internal {
        Some(token) => tls.client.clone().with_bearer(token)?,
        None => tls.client.clone(),
    };
    let jobs = TransferJobs::lazy_with(&args.transfer_endpoint, &client)
        .with_context(|| format!("transfer endpoint {:?}", args.transfer_endpoint))?
        .with_catalog(&args.catalog_endpoint, &client)
        .with_context(|| format!("catalog endpoint {:?}", args.catalog_endpoint))?;
    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;
    probes.spawn(&shutdown).await?;
    let kube = kube::Client::try_default()
        .await
        .context("a Kubernetes client to review callers with (run in a pod, or set KUBECONFIG)")?;
    let mut config = args.config();
    config.access = Some(ferry_authz::Authorizer::new(kube, &args.cluster_name));
    config.internal = internal;
    let scheduler = Scheduler::open(config, std::sync::Arc::new(jobs)).await?;
    serve(scheduler, listener, shutdown).await?;
    Ok(())
}
