//! Ferry's gateway: the one address users and the other cluster's Ferry reach. Each
//! public gRPC service's calls go, unchanged and streamed both ways, to the component
//! that serves it: PairingService to pairing, CatalogService to the catalog,
//! TransferService to transfer, SchedulerService to the scheduler, AgentService to the
//! transfer service's agent relay. The gateway checks no caller itself (each component
//! reviews the token the call carries, which passes through untouched) and never routes
//! the internal APIs (CatalogInternalService, PairingInternalService), which answer only
//! the internal credential: from outside they do not exist. It answers health,
//! reflection and VersionService (component "gateway") itself.
//!
//! ```text
//! ferry-gateway --listen 127.0.0.1:7443 \
//!   --pairing-endpoint http://127.0.0.1:7447 --catalog-endpoint http://127.0.0.1:7445 \
//!   --transfer-endpoint http://127.0.0.1:7444 --scheduler-endpoint http://127.0.0.1:7446
//! ```

mod forward;

use std::net::SocketAddr;

use anyhow::Context;
use ferry_proto::v1::agent_service_server::AgentServiceServer;
use ferry_proto::v1::catalog_service_server::CatalogServiceServer;
use ferry_proto::v1::pairing_service_server::PairingServiceServer;
use ferry_proto::v1::scheduler_service_server::SchedulerServiceServer;
use ferry_proto::v1::transfer_service_server::TransferServiceServer;
use tokio_util::sync::CancellationToken;

pub use forward::{Forward, Upstream};

/// Command-line flags of `ferry-gateway`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ferry-gateway",
    version,
    about = "Ferry's gateway: one gRPC port routing each public service to its component"
)]
pub struct Args {
    /// Address to serve gRPC on; other than loopback, it takes TLS flags or
    /// --insecure-plaintext.
    #[arg(long, env = "FERRY_GATEWAY_LISTEN", default_value = "0.0.0.0:7443")]
    pub listen: SocketAddr,
    /// TLS of this port and of the calls to the components (https:// endpoints are
    /// verified with --tls-ca or --tls-client-ca and presented --tls-cert).
    #[command(flatten)]
    pub tls: ferry_rpc::TlsArgs,
    #[command(flatten)]
    pub probes: ferry_rpc::ProbeArgs,
    /// The pairing service.
    #[arg(long, env = "FERRY_PAIRING_ENDPOINT")]
    pub pairing_endpoint: String,
    /// The catalog.
    #[arg(long, env = "FERRY_CATALOG_ENDPOINT")]
    pub catalog_endpoint: String,
    /// The transfer service; it also relays the other cluster's calls to this cluster's
    /// agents (AgentService), unless --agent-endpoint names another.
    #[arg(long, env = "FERRY_TRANSFER_ENDPOINT")]
    pub transfer_endpoint: String,
    /// The scheduler.
    #[arg(long, env = "FERRY_SCHEDULER_ENDPOINT")]
    pub scheduler_endpoint: String,
    /// Where AgentService calls go; default: --transfer-endpoint.
    #[arg(long, env = "FERRY_AGENT_ENDPOINT")]
    pub agent_endpoint: Option<String>,
}

/// The gateway's body: TLS, upstreams, the listener; serves until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let probes = args.probes.clone();
    let tls = args.tls.load(None).await?;
    tls.server.check(args.listen)?;
    let upstream = |name: &str, endpoint: &str| {
        Upstream::lazy(name, endpoint, &tls.client)
            .with_context(|| format!("the {name} endpoint {endpoint:?}"))
    };
    let routes = Routes {
        pairing: upstream("pairing", &args.pairing_endpoint)?,
        catalog: upstream("catalog", &args.catalog_endpoint)?,
        transfer: upstream("transfer", &args.transfer_endpoint)?,
        scheduler: upstream("scheduler", &args.scheduler_endpoint)?,
        agent: upstream(
            "agent relay",
            args.agent_endpoint
                .as_deref()
                .unwrap_or(&args.transfer_endpoint),
        )?,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let listener = ferry_rpc::Listener::new(listener, tls.server);
    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;
    probes.spawn(&shutdown).await?;
    tracing::info!(listen = %args.listen, "gateway starting");
    serve(routes, listener, shutdown).await?;
    Ok(())
}

/// Where each public service's calls go.
#[derive(Clone, Debug)]
pub struct Routes {
    pub pairing: Upstream,
    pub catalog: Upstream,
    pub transfer: Upstream,
    pub scheduler: Upstream,
    pub agent: Upstream,
}

/// Serves `routes` on `listener` until `shutdown` fires, then lets open calls finish.
pub async fn serve(
    routes: Routes,
    listener: impl Into<ferry_rpc::Listener>,
    shutdown: CancellationToken,
) -> Result<(), ferry_rpc::ServeError> {
    ferry_rpc::Server::named("gateway")?
        .with_service(Forward::<PairingServiceServer<()>>::new(routes.pairing))
        .with_service(Forward::<CatalogServiceServer<()>>::new(routes.catalog))
        .with_service(Forward::<TransferServiceServer<()>>::new(routes.transfer))
        .with_service(Forward::<SchedulerServiceServer<()>>::new(routes.scheduler))
        .with_service(Forward::<AgentServiceServer<()>>::new(routes.agent))
        .serve(listener, async move {
            shutdown.cancelled().await;
            tracing::info!("shutting down: finishing open calls");
        })
        .await
}
