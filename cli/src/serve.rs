//! `ferry serve`: the agent, pairing, catalog, transfer and scheduler services in one
//! process, on one port, behind one gRPC server (health and reflection included).
//!
//! The components call each other over gRPC on this same port, with the clients the
//! separate Deployments of the Helm chart use, bearing this process's own secret as the
//! internal credential: the transfer service resolves pairs through the pairing
//! service, profiles and migration tokens through the catalog, and calls this
//! process's own agent for the local cluster and the agent of a pair's other side at
//! that side's Ferry endpoint; the scheduler starts its jobs through the transfer
//! service.
//! CheckPair's repository checks ask this process's catalog about this cluster's
//! profiles, over gRPC with the internal credential (CheckProfile answers only
//! administrators and Ferry's own components), and the peer's through its CheckPair.

mod config;
mod publish;

use std::sync::Arc;

use ferry_proto::v1::agent_service_server::AgentServiceServer;
use ferry_proto::v1::pairing_service_server::PairingServiceServer;
use ferry_proto::v1::transfer_service_server::TransferServiceServer;
use tokio::net::TcpListener;

pub use config::{ServeArgs, ServeConfig};

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
    config.probes.spawn(&shutdown).await?;
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
    // The transfer service reaches the other components through their gRPC APIs on
    // this same port, as the chart's separate Deployments do through their Services.
    let self_endpoint = self_endpoint(bound, &config);
    let internal = config
        .internal_tls()
        .map_err(|e| ServeError::Config(format!("the process secret: {e}")))?;
    let pairing = pairing_service(&config, &self_endpoint, &internal).await?;
    let agent_config = config.agent_config();
    let agent = ferry_agent::Agent::new(&agent_config);
    let operations = agent.operations();
    // The agent is internal: it listens on loopback only, answers only this process's
    // secret, and the other cluster reaches it through the transfer service's relay.
    let (agent_listener, agent_endpoint) = bind_agent(&config).await?;
    let deps = transfer_deps(&config, &self_endpoint, &internal, &agent_endpoint)
        .map_err(ServeError::Config)?;
    let transfer = ferry_transfer::Transfer::open(config.transfer_config(), deps)
        .await
        .map_err(ServeError::Transfer)?;
    let jobs = scheduler_jobs(&config, &self_endpoint).map_err(ServeError::Config)?;
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
    let agent_stop = tokio_util::sync::CancellationToken::new();
    let agent_stopped = agent_stop.clone();
    let drained = async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down: draining agent operations and jobs");
        // No new runs; runs in progress resume with the next start.
        timing.shutdown().await;
        tokio::join!(operations.drain(grace), engine.shutdown(grace));
        agent_stop.cancel();
    };
    tracing::info!(
        listen = %bound,
        cluster = %config.cluster_name,
        ferry_endpoint = %config.ferry_endpoint,
        node = %agent_config.node_name,
        "ferry serve starting"
    );
    let agent_server = tokio::spawn(
        ferry_rpc::Server::named("agent")?
            .with_service(AgentServiceServer::new(agent))
            .serve(
                agent_listener,
                async move { agent_stopped.cancelled().await },
            ),
    );
    ferry_rpc::Server::named("serve")?
        .with_service(transfer.agent_relay())
        .with_service(pairing.internal_server())
        .with_service(PairingServiceServer::new(pairing))
        .with_service(catalog.internal_server())
        .with_service(catalog.into_server())
        .with_service(TransferServiceServer::new(transfer))
        .with_service(scheduler.into_server())
        .serve(
            ferry_rpc::Listener::new(listener, config.tls.server.clone()),
            drained,
        )
        .await?;
    match agent_server.await {
        Ok(served) => served?,
        Err(e) => {
            return Err(ServeError::Config(format!(
                "the agent's server task failed: {e}"
            )));
        }
    }
    Ok(())
}

/// The pairing service, whose CheckPair asks this server's catalog (at its own
/// endpoint, with the process secret) about this cluster's profiles.
async fn pairing_service(
    config: &ServeConfig,
    self_endpoint: &str,
    internal: &ferry_rpc::ClientTls,
) -> Result<ferry_pairing::PairingService, ServeError> {
    let mut pairing_config = config.pairing_config();
    let probe = ferry_pairing::RemoteCatalogProbe::lazy(
        self_endpoint,
        internal,
        config.cluster_name.clone(),
    )
    .map_err(|e| ServeError::Config(format!("the catalog at this server's own endpoint: {e}")))?;
    pairing_config.profile_probe = Some(Arc::new(probe));
    ferry_pairing::PairingService::new(pairing_config)
        .await
        .map_err(ServeError::Pairing)
}

/// The scheduler's way to the transfer service at this server's own endpoint. It
/// connects on first use (this server is not listening until every service is built),
/// and its calls bear this process's own secret, which the transfer service takes as
/// the scheduler acting for a schedule's creator.
fn scheduler_jobs(
    config: &ServeConfig,
    self_endpoint: &str,
) -> Result<ferry_scheduler::TransferJobs, String> {
    let tls = config.self_tls();
    let bad = |e: String| format!("the scheduler's transfer endpoint: {e}");
    let channel = tls
        .endpoint(self_endpoint)
        .map_err(|e| bad(e.to_string()))?
        .connect_lazy();
    let channel = ferry_rpc::tls::TlsChannel::new(channel, &tls, self_endpoint)
        .with_bearer(&config.internal_token)
        .map_err(|e| bad(e.to_string()))?;
    Ok(ferry_scheduler::TransferJobs::traced(
        tonic::service::interceptor::InterceptedService::new(
            channel,
            ferry_rpc::Propagate::default(),
        ),
    ))
}

/// The agent's own listener, on loopback, and its endpoint.
async fn bind_agent(config: &ServeConfig) -> Result<(TcpListener, String), ServeError> {
    let agent_listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let agent_endpoint = format!(
        "http://{}",
        agent_listener
            .local_addr()
            .map_err(|source| ServeError::Listen {
                addr: config.listen,
                source,
            })?
    );
    Ok((agent_listener, agent_endpoint))
}

/// The transfer service's collaborators: this cluster and its pairs, its own agent and
/// the pairs' agents, repositories through this process's catalog, and the catalog's
/// migration tokens. An error is what could not be set up.
fn transfer_deps(
    config: &ServeConfig,
    self_endpoint: &str,
    internal: &ferry_rpc::ClientTls,
    agent_endpoint: &str,
) -> Result<ferry_transfer::Deps, String> {
    let bad = |what: &str, e: tonic::transport::Error| {
        format!("{what} at this server's own endpoint: {e}")
    };
    let agent_tls = ferry_rpc::ClientTls::new()
        .with_bearer(&config.internal_token)
        .map_err(|e| format!("the process secret: {e}"))?;

    let pairing_link = ferry_transfer::PairingLink::lazy(self_endpoint, internal)
        .map_err(|e| bad("the pairing service", e))?;
    let own_agent = ferry_transfer::StaticAgents::new()
        .with_tls(agent_tls)
        .with("local", agent_endpoint);
    let profiles = ferry_profile::CatalogProfiles::lazy(self_endpoint, internal)
        .map_err(|e| bad("the catalog", e))?;
    Ok(ferry_transfer::Deps {
        clusters: Arc::new(
            ferry_transfer::PairingClusters::new(
                config.kube.clone(),
                config.context.clone(),
                config.kubeconfig.clone(),
                Some(pairing_link.clone()),
            )
            .with_local_config(config.kube_config.clone())
            .with_local_name(&config.cluster_name),
        ),
        agents: Arc::new(
            ferry_transfer::ClusterAgents::new(
                ferry_transfer::LocalAgents::Fixed(own_agent),
                config.context.clone(),
                internal.clone(),
            )
            .with_pairs(pairing_link, config.tls.client.clone()),
        ),
        repositories: Arc::new(ferry_transfer::ProfileRepositories::new(
            ferry_profile::ProfileSource::Catalog(Box::new(profiles)),
        )),
        // Export jobs' migration tokens come from this process's catalog.
        handover: Some(Arc::new(
            ferry_transfer::CatalogHandover::lazy(self_endpoint, internal)
                .map_err(|e| bad("the catalog", e))?,
        )),
    })
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
