//! Serving the catalog: gRPC with health and reflection, a span per request, graceful
//! shutdown.

use tokio_util::sync::CancellationToken;

pub use ferry_rpc::ServeError;

use crate::service::CatalogService;

/// Serves `service` on `listener` until `shutdown` fires, then lets open calls finish.
pub async fn serve(
    service: CatalogService,
    listener: impl Into<ferry_rpc::Listener>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    tracing::info!(?service, "catalog starting");
    ferry_rpc::Server::named("catalog")?
        .with_service(service.internal_server())
        .with_service(service.into_server())
        .serve(listener, async move { shutdown.cancelled().await })
        .await
}
