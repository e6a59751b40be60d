//! Ferry's transfer service: jobs that move applications between clusters.
//!
//! A migration is a job with steps (see [`job::steps`]): capture on the source,
//! pre-flight on the destination (nothing is written when it fails), an optional
//! quiesce pre-hook, a backup of every claim's volume by the source's agents, the
//! restore point committed last, the destination's agents restoring each snapshot into
//! a new volume's directory, apply, and start. Jobs, their steps, progress and reports
//! live in `<data-dir>/transfer.db`; a restarted service resumes a job from its last
//! finished step when the interrupted step may run again, and fails it clearly
//! otherwise.
//!
//! The service reaches clusters, agents and repositories through the traits in
//! [`deps`], so `ferry serve` can wire them to the pairing and catalog services.

pub mod config;
pub mod deps;
pub mod error;
pub mod job;
mod migrate;
mod runtime;
mod service;
pub mod store;

pub use config::Args;
pub use deps::{
    AgentClient, Agents, Clusters, ProfileRepositories, Repositories, StaticAgents, StaticClusters,
    cluster_key,
};
pub use error::TransferError;
pub use migrate::QUIESCE_ANNOTATION;
pub use runtime::{Deps, Transfer, TransferConfig};

use ferry_proto::v1::transfer_service_server::TransferServiceServer;
use tokio::net::TcpListener;
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
    listener: TcpListener,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> Result<(), RunError> {
    let transfer = Transfer::open(config, deps).await?;
    serve_with(transfer, listener, shutdown, grace).await
}

/// [`serve`] with an engine already opened (tests keep a handle to it).
pub async fn serve_with(
    transfer: Transfer,
    listener: TcpListener,
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
