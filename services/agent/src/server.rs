//! Serving the agent: gRPC with health, a span per request, graceful shutdown.

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use ferry_proto::v1::agent_service_server::AgentServiceServer;

use crate::config::AgentConfig;
use crate::service::Agent;

/// Why the server stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server on {addr} failed: {source}")]
    Transport {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Serves the agent on `listener` until `shutdown` fires; then takes no new operations,
/// gives running ones `shutdown_grace` to finish, cancels the rest and returns once
/// their streams have ended.
pub async fn serve(
    config: AgentConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let agent = Agent::new(&config);
    let ops = agent.operations();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServiceServer<Agent>>().await;
    let drained = async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down: draining operations");
        health.set_not_serving::<AgentServiceServer<Agent>>().await;
        ops.drain(config.shutdown_grace).await;
    };
    tracing::info!(%addr, node = %config.node_name, "agent serving");
    tonic::transport::Server::builder()
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .add_service(health_service)
        .add_service(AgentServiceServer::new(agent))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drained)
        .await
        .map_err(|source| ServeError::Transport { addr, source })
}
