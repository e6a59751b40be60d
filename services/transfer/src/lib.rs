//! Ferry's transfer service: jobs that move applications between clusters.
//!
//! A migration is a job with steps (see [`job::steps`]): capture on the source,
//! pre-flight on the destination (nothing is written when it fails), an optional
//! quiesce pre-hook, a backup of every claim's volume by the source's agents, the
//! restore point committed last, the destination's agents restoring each snapshot into
//! a new volume's directory, apply, and start. An export is the source half of that
//! (`source`) into a repository, plus a migration token; a restore (or an import) is
//! the destination half (`destination`) from a restore point; the pre-flight is one
//! step shared by all three (`preflight`). Jobs, their steps, progress and reports
//! live in `<data-dir>/transfer.db`; a restarted service resumes a job from its last
//! finished step when the interrupted step may run again, and fails it clearly
//! otherwise.
//!
//! The service reaches clusters, agents and repositories through the traits in
//! [`deps`]; [`remote`] implements them over gRPC (the pairing service for pairs, the
//! catalog for profiles and migration tokens, agents as pods of their DaemonSet), the
//! same in the standalone service, the Helm chart's Deployment and `ferry serve`.

pub mod access;
mod agent_ops;
pub mod config;
pub mod deps;
mod destination;
pub mod error;
mod export;
pub mod job;
mod migrate;
pub mod mover;
mod preflight;
mod quiesce;
pub mod relay;
pub mod remote;
mod restore;
mod runtime;
mod service;
pub mod snapshot;
mod source;
pub mod store;
mod warm;

pub use access::AccessPolicy;
pub use config::Args;
pub use deps::{
    AgentClient, Agents, Clusters, Handover, ProfileRepositories, Repositories, StaticAgents,
    StaticClusters, TokenRequest, cluster_key,
};
pub use error::TransferError;
pub use quiesce::QUIESCE_ANNOTATION;
pub use relay::{AgentRelay, NODE_METADATA};
pub use remote::{CatalogHandover, ClusterAgents, LocalAgents, PairingClusters, PairingLink};
pub use runtime::{Deps, Transfer, TransferConfig};

use ferry_proto::v1::transfer_service_server::TransferServiceServer;
use tokio_util::sync::CancellationToken;

/// Why the service stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting the transfer service: {0}")]
    Start(#[from] TransferError),
    #[error(transparent)]
    Serve(#[from] ferry_rpc::ServeError),
}

/// Serves the transfer service on `listener` until `shutdown` fires; then gives
/// running jobs `grace` to finish and leaves the rest to be resumed by the next start.
pub async fn serve(
    config: TransferConfig,
    deps: Deps,
    listener: impl Into<ferry_rpc::Listener>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> Result<(), RunError> {
    let transfer = Transfer::open(config, deps).await?;
    serve_with(transfer, listener, shutdown, grace).await
}

/// [`serve`] with an engine already opened (tests keep a handle to it).
pub async fn serve_with(
    transfer: Transfer,
    listener: impl Into<ferry_rpc::Listener>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> Result<(), RunError> {
    let engine = transfer.clone();
    let stopped = async move {
        shutdown.cancelled().await;
        engine.shutdown(grace).await;
    };
    ferry_rpc::Server::named("transfer")?
        .with_service(transfer.agent_relay())
        .with_service(TransferServiceServer::new(transfer))
        .serve(listener, stopped)
        .await?;
    Ok(())
}

/// The transfer service's body, shared by `ferry-transfer` and `ferry service
/// transfer`: TLS, collaborators, the listener; serves until SIGTERM or SIGINT, then
/// gives running jobs the grace period (a second signal exits at once; unfinished jobs
/// resume on the next start).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let probes = args.probes.clone();
    use anyhow::Context;
    let tls = args.tls.load(None).await?;
    tls.server.check(args.listen)?;
    let (config, deps) = args
        .build(&tls.client)
        .await
        .context("configuring the transfer service")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let listener = ferry_rpc::Listener::new(listener, tls.server);
    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;
    probes.spawn(&shutdown).await?;
    serve(config, deps, listener, shutdown, args.grace()).await?;
    Ok(())
}
