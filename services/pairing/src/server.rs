//! Serving the pairing service: gRPC with health and reflection, a span per request,
//! graceful shutdown.

use tokio_util::sync::CancellationToken;

use ferry_proto::v1::pairing_service_server::PairingServiceServer;
pub use ferry_rpc::ServeError;

use crate::service::PairingService;

/// Serves `service` on `listener` (a `TcpListener` is plaintext on loopback only; a
/// [`ferry_rpc::Listener`] says how it is secured) until `shutdown` fires, then lets
/// open calls finish.
pub async fn serve(
    service: PairingService,
    listener: impl Into<ferry_rpc::Listener>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    ferry_rpc::Server::named("pairing")?
        .with_service(service.internal_server())
        .with_service(PairingServiceServer::new(service))
        .serve(listener, async move {
            shutdown.cancelled().await;
            tracing::info!("shutting down: finishing open calls");
        })
        .await
}
