//! `ferry serve`: the agent, pairing, catalog, transfer and scheduler services in one
//! process, on one port, behind one gRPC server (health and reflection included).
//!
//! The transfer service's collaborators are wired in-process: the local cluster's
//! client, pairs' destinations through the pairing service, this process's own agent
//! for the local cluster and the agent of a pair's other side at that side's Ferry
//! endpoint (its `ferry serve` hosts the agent on the same port), and repositories
//! opened through the catalog's profiles. The scheduler starts its jobs through the
//! transfer service's gRPC API on this same port, as it would across processes.
//! CheckPair's repository checks ask the in-process catalog about this cluster's
//! profiles (ferry_pairing::CatalogProbe) and the peer's catalog over gRPC.

mod config;
mod deps;
mod handover;
mod publish;

use std::sync::Arc;

use ferry_proto::v1::agent_service_server::AgentServiceServer;
use ferry_proto::v1::pairing_service_server::PairingServiceServer;
use ferry_proto::v1::transfer_service_server::TransferServiceServer;
use tokio::net::TcpListener;

pub use config::{ServeArgs, ServeConfig};
pub use deps::{CatalogRepositories, ServeAgents, ServeClusters};

/// Why `ferry serve` could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("creating the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {addr}: {source}; pick a free port with --listen")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("starting the pairing service: {0}")]
    Pairing(#[source] ferry_pairing::PairingError),
    #[error("starting the catalog service: {0}")]
    Catalog(#[source] ferry_catalog::CatalogError),
    #[error("starting the transfer service: {0}")]
    Transfer(#[source] ferry_transfer::TransferError),
    #[error("starting the scheduler: {0}")]
    Scheduler(#[source] ferry_scheduler::SchedulerError),
    #[error(transparent)]
    Rpc(#[from] ferry_rpc::ServeError),
}

/// Runs `ferry serve` until SIGTERM or SIGINT, then drains agent operations and
/// running jobs for the grace period and stops.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let shutdown = ferry_rpc::shutdown_on_signals().map_err(ServeError::Signals)?;
    let config = args.into_config().await?;
    serve(config, shutdown).await
}

/// Builds every service from `config`, binds its listen address and serves until
/// `shutdown` fires.
pub async fn serve(
    config: ServeConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(config.agent_profiles_dir()).map_err(|source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;

    let catalog = ferry_catalog::CatalogService::new(config.catalog_config())
        .await
        .map_err(ServeError::Catalog)?;
    // CheckPair's repository checks ask this catalog about this cluster's profiles.
    let mut pairing_config = config.pairing_config();
    pairing_config.profile_probe = Some(Arc::new(ferry_pairing::CatalogProbe::new(
        catalog.clone(),
        config.cluster_name.clone(),
    )));
    let pairing = ferry_pairing::PairingService::new(pairing_config)
        .await
        .map_err(ServeError::Pairing)?;
    let agent_config = config.agent_config();
    let agent = ferry_agent::Agent::new(&agent_config);
    let operations = agent.operations();

    let deps = ferry_transfer::Deps {
        clusters: Arc::new(ServeClusters::new(
            config.kube.clone(),
            config.context.clone(),
            config.kubeconfig.clone(),
            pairing.pairs(),
        )),
        agents: Arc::new(
            ServeAgents::new(
                self_endpoint(bound, &config),
                config.context.clone(),
                pairing.pairs(),
            )
            .with_tls(config.self_tls(), config.tls.client.clone()),
        ),
        repositories: Arc::new(CatalogRepositories::new(catalog.clone())),
        // Export jobs' migration tokens come from this process's catalog.
        handover: Some(Arc::new(handover::CatalogHandover::new(
            catalog.clone(),
            config.internal_token.clone(),
        ))),
    };
    let transfer = ferry_transfer::Transfer::open(config.transfer_config(), deps)
        .await
        .map_err(ServeError::Transfer)?;
    // Connects on first use: this server is not listening until every service is built.
    // Its calls bear this process's own secret, which the transfer service takes as the
    // scheduler acting for a schedule's creator.
    let jobs = {
        let endpoint = self_endpoint(bound, &config);
        let tls = config.self_tls();
        let bad = |e: String| ServeError::Config(format!("the scheduler's transfer endpoint: {e}"));
        let channel = tls
            .endpoint(&endpoint)
            .map_err(|e| bad(e.to_string()))?
            .connect_lazy();
        let channel = ferry_rpc::tls::TlsChannel::new(channel, &tls, &endpoint)
            .with_bearer(&config.internal_token)
            .map_err(|e| bad(e.to_string()))?;
        ferry_scheduler::TransferJobs::traced(tonic::service::interceptor::InterceptedService::new(
            channel,
            ferry_rpc::Propagate::default(),
        ))
    };
    let scheduler = ferry_scheduler::Scheduler::open(config.scheduler_config(), Arc::new(jobs))
        .await
        .map_err(ServeError::Scheduler)?;

    publish::publish_endpoint(
        &config.kube,
        &format!("{}://{}", config.tls.server.scheme(), config.ferry_endpoint),
        &config.cluster_name,
    )
    .await;

    let grace = config.shutdown_grace;
    let engine = transfer.clone();
    let timing = scheduler.clone();
    // The server keeps answering while operations and jobs drain: a job's agent calls
    // go to this same server.
    let drained = async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down: draining agent operations and jobs");
        // No new runs; runs in progress resume with the next start.
        timing.shutdown().await;
        tokio::join!(operations.drain(grace), engine.shutdown(grace));
    };
    tracing::info!(
        listen = %bound,
        cluster = %config.cluster_name,
        ferry_endpoint = %config.ferry_endpoint,
        node = %agent_config.node_name,
        "ferry serve starting"
    );
    ferry_rpc::Server::new()?
        .with_service(AgentServiceServer::new(agent))
        .with_service(PairingServiceServer::new(pairing))
        .with_service(catalog.into_server())
        .with_service(TransferServiceServer::new(transfer))
        .with_service(scheduler.into_server())
        .serve(
            ferry_rpc::Listener::new(listener, config.tls.server.clone()),
            drained,
        )
        .await?;
    Ok(())
}

/// How this process reaches its own server: the bound port on loopback when listening
/// on every address, over TLS when it serves TLS.
fn self_endpoint(bound: std::net::SocketAddr, config: &ServeConfig) -> String {
    format!("{}://{}", config.tls.server.scheme(), self_address(bound))
}

fn self_address(bound: std::net::SocketAddr) -> std::net::SocketAddr {
    let ip = match bound.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    std::net::SocketAddr::new(ip, bound.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_endpoint_uses_loopback_for_any_address() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
        assert_eq!(self_address(addr("0.0.0.0:7443")), addr("127.0.0.1:7443"));
        assert_eq!(self_address(addr("[::]:7443")), addr("[::1]:7443"));
        assert_eq!(self_address(addr("10.0.0.5:9000")), addr("10.0.0.5:9000"));
    }
}
