//! The health port the kubelet probes: its native `grpc` probe speaks plaintext only, so
//! a server on TLS also answers `grpc.health.v1` alone, in plaintext, on a port of its
//! own (it reveals nothing but "serving"). Prometheus scrapes another plaintext port,
//! `/metrics` (crates/metrics).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::ServeError;

/// The health and metrics ports' flags, every server binary takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProbeArgs {
    /// Also answer grpc.health.v1 (and nothing else) in plaintext on this address, for
    /// the kubelet's grpc probes, which cannot speak TLS.
    #[arg(long, env = "FERRY_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics as plain HTTP on this address, at `/metrics`.
    #[arg(long, env = "FERRY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

impl ProbeArgs {
    /// Binds the health port, if asked for, and answers SERVING there until `shutdown`
    /// fires (then NOT_SERVING, while the server drains); and the metrics port, if
    /// asked for.
    pub async fn spawn(&self, shutdown: &CancellationToken) -> Result<(), ServeError> {
        if let Some(addr) = self.metrics_listen {
            ferry_metrics::spawn(addr, shutdown).await?;
        }
        let Some(addr) = self.health_listen else {
            return Ok(());
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(ServeError::Listener)?;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let stop = shutdown.clone();
        let draining = shutdown.clone();
        tokio::spawn(async move {
            draining.cancelled().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        });
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    stop.cancelled().await
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(%addr, error = %e, "the health port stopped");
            }
        });
        tracing::info!(%addr, "answering health checks in plaintext");
        Ok(())
    }
}
