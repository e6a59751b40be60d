//! The `/metrics` endpoint: plain HTTP/1.1, as Prometheus scrapes it. It holds no
//! secret and takes no input but the path, so it needs no TLS or sign-in; the chart's
//! NetworkPolicy says who reaches it.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "binding the metrics port {addr}: {source}; pick a free port with --metrics-listen, \
         or leave it out to serve no metrics"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Serves [`crate::metrics`] on `addr` until `shutdown`; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<SocketAddr, MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: the next accept may work.
                    tracing::warn!(%bound, error = %e, "metrics port: accepting a connection");
                    continue;
                }
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer));
                tokio::pin!(conn);
                tokio::select! {
                    served = conn.as_mut() => {
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "metrics connection ended");
                        }
                    }
                    () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
    });
    tracing::info!(addr = %bound, "serving Prometheus metrics on /metrics");
    Ok(bound)
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header(header::CONTENT_TYPE, crate::CONTENT_TYPE)
            .body(Full::new(Bytes::from(crate::metrics().encode()))),
        (&Method::GET, _) => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(
                b"only /metrics is served here\n",
            ))),
        _ => Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET")
            .body(Full::new(Bytes::new())),
    };
    // The builder only fails on invalid header values, and these are constants.
    Ok(response.unwrap_or_default())
}
