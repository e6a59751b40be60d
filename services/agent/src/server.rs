//! Serving the agent: gRPC with health and reflection, a span per request, graceful
//! shutdown that drains operations.

use tokio_util::sync::CancellationToken;

use ferry_proto::v1::agent_service_server::AgentServiceServer;
pub use ferry_rpc::ServeError;

use crate::config::AgentConfig;
use crate::service::Agent;

/// Serves the agent on `listener` (a `TcpListener` is plaintext on loopback only; a
/// [`ferry_rpc::Listener`] says how it is secured) until `shutdown` fires; then takes no
/// new operations, gives running ones `shutdown_grace` to finish, cancels the rest and
/// returns once their streams have ended.
pub async fn serve(
    config: AgentConfig,
    listener: impl Into<ferry_rpc::Listener>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let agent = Agent::new(&config);
    let ops = agent.operations();
    let drained = async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down: draining operations");
        ops.drain(config.shutdown_grace).await;
    };
    tracing::info!(node = %config.node_name, "agent starting");
    ferry_rpc::Server::named("agent")?
        .with_service(AgentServiceServer::new(agent))
        .serve(listener, drained)
        .await
}
