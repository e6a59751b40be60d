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
//! [`deps`], so `ferry serve` can wire them to the pairing and catalog services.

pub mod access;
mod agent_ops;
pub mod config;
pub mod deps;
mod destination;
pub mod error;
mod export;
pub mod job;
mod migrate;
mod preflight;
mod quiesce;
mod restore;
mod runtime;
mod service;
mod source;
pub mod store;

pub use access::AccessPolicy;
pub use config::Args;
pub use deps::{
    AgentClient, Agents, Clusters, Handover, ProfileRepositories, Repositories, StaticAgents,
    StaticClusters, TokenRequest, cluster_key,
};
pub use error::TransferError;
pub use quiesce::QUIESCE_ANNOTATION;
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
    ferry_rpc::Server::new()?
        .with_service(TransferServiceServer::new(transfer))
        .serve(listener, stopped)
        .await?;
    Ok(())
}
