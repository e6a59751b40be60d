//! gRPC plumbing every Ferry service shares.
//!
//! - [`error`]: the error contract. A `tonic::Status` carries a `ferry.v1.ErrorDetail`
//!   and the standard `google.rpc` details, so clients in any language branch on a code
//!   and show the hint, never parse text; one table maps error kinds to gRPC codes.
//! - [`log`]: every server logs each failed call once, at a level set by its code.
//! - [`Server`]: health checking, reflection (grpcurl works) and
//!   `ferry.v1.VersionService` ([`version`]) on every server, one span per request
//!   named by its method and carrying the caller's `traceparent`, and graceful
//!   shutdown; on a [`Listener`], TLS or mutual TLS, or plaintext on loopback only
//!   unless asked for.
//! - [`tls`]: server and client TLS, the flags every server binary takes, and errors
//!   that name the mismatch (unknown CA, wrong name, expired).
//! - [`init_tracing`], [`traced_channel`], [`propagate`]: logging, optional OTLP span
//!   export, and trace context carried from caller to callee (see [`trace`] for the
//!   environment variables).

pub mod contract;
pub mod error;
pub mod log;
pub mod probe;
pub mod tls;
pub mod trace;
pub mod version;

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::{Routes, RoutesBuilder};

pub use error::{
    ERROR_DOMAIN, Kind, Remedy, ServiceError, detail, detail_in, error_detail, grpc_code,
    kube_http_status, kube_is_network, kube_kind, reason, status, status_with,
};
pub use probe::ProbeArgs;
pub use tls::{ClientTls, Pem, ServerSecurity, ServerTls, TlsArgs, TlsError, TlsFlags, TlsSetup};
pub use trace::{
    LogArgs, LogFormat, OtlpConfig, Propagate, TRACEPARENT, TracedChannel, TracingConfig,
    TracingGuard, init_tracing, init_tracing_with, parse_with_logging, propagate, traced_channel,
    try_parse_with_log_args,
};

/// Why serving stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("gRPC server on {addr}: {source}")]
    Transport {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("building gRPC reflection: {0}")]
    Reflection(String),
    /// Plaintext on an address other hosts reach, without `--insecure-plaintext`.
    #[error(
        "refusing to serve plaintext gRPC on {addr}, which other hosts can reach: pass \
         --tls-cert and --tls-key (or --tls-secret) to serve TLS, or --insecure-plaintext to \
         serve without encryption or authentication"
    )]
    PlaintextRefused { addr: SocketAddr },
    #[error("gRPC server: reading the listening address: {0}")]
    Listener(#[source] std::io::Error),
    #[error(transparent)]
    Metrics(#[from] ferry_metrics::MetricsError),
}

/// A bound socket and how it is secured. A bare `TcpListener` converts into plaintext
/// that [`Server::serve`] accepts on loopback addresses only.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    security: ServerSecurity,
}

impl Listener {
    pub fn new(tcp: TcpListener, security: ServerSecurity) -> Listener {
        Listener { tcp, security }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub fn security(&self) -> &ServerSecurity {
        &self.security
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Listener {
        Listener::new(tcp, ServerSecurity::LoopbackPlaintext)
    }
}

/// A server under construction: add services, then [`Server::serve`].
#[derive(Debug)]
pub struct Server {
    routes: RoutesBuilder,
    health: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
}

impl Server {
    /// [`Server::named`] without a component name: `GetVersion` answers an empty
    /// component.
    pub fn new() -> Result<Server, ServeError> {
        Server::named("")
    }

    /// Health (`grpc.health.v1`), reflection (v1 and v1alpha) and `GetVersion`
    /// (`ferry.v1.VersionService`, answering `component`: "serve", "gateway",
    /// "pairing", ...) are always present. `GetVersion` needs no sign-in.
    pub fn named(component: &'static str) -> Result<Server, ServeError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(version::Version::new(component).into_server());
        Ok(Server {
            routes,
            health,
            names: Vec::new(),
        })
    }

    /// Adds a service; it is reported SERVING by the health service while the server runs.
    pub fn with_service<S>(mut self, service: S) -> Self
    where
        S: tonic::codegen::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// The health reporter, for services that want to report themselves not serving.
    pub fn health(&self) -> tonic_health::server::HealthReporter {
        self.health.clone()
    }

    /// Serves until `shutdown` completes; health turns NOT_SERVING first, then the
    /// server stops accepting and waits for open calls to finish. Plaintext on an
    /// address that is not loopback is refused unless the listener was made with
    /// [`ServerSecurity::InsecurePlaintext`].
    pub async fn serve(
        self,
        listener: impl Into<Listener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let Listener { tcp, security } = listener.into();
        let bound = tcp.local_addr().map_err(ServeError::Listener)?;
        security.check(bound)?;
        if matches!(security, ServerSecurity::InsecurePlaintext) && !bound.ip().is_loopback() {
            tracing::warn!(%bound, "serving plaintext gRPC: no encryption, no authentication");
        }
        let addr = bound.to_string();
        for name in &self.names {
            self.health
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let health = self.health.clone();
        let names = self.names.clone();
        let shutdown = async move {
            shutdown.await;
            for name in names {
                health
                    .set_service_status(name, tonic_health::ServingStatus::NotServing)
                    .await;
            }
        };
        let routes: Routes = self.routes.routes();
        tracing::info!(%addr, services = ?self.names, transport = security.describe(), "serving gRPC");
        let router = tonic::transport::Server::builder()
            .trace_fn(trace::request_span)
            .layer(log::FailureLogLayer)
            .add_routes(routes);
        let served = match &security {
            ServerSecurity::Tls(tls) => {
                router
                    .serve_with_incoming_shutdown(tls::incoming(tcp, tls), shutdown)
                    .await
            }
            _ => {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(tcp), shutdown)
                    .await
            }
        };
        served.map_err(|source| ServeError::Transport { addr, source })
    }
}

/// A duration as protobuf carries it (a duration too long for it saturates).
pub fn proto_duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// Seconds of a protobuf duration, for figures and messages.
pub fn duration_secs(d: &prost_types::Duration) -> f64 {
    d.seconds as f64 + f64::from(d.nanos) / 1e9
}

/// Seconds from one protobuf time to a later one (negative when it is earlier).
pub fn seconds_between(from: &prost_types::Timestamp, to: &prost_types::Timestamp) -> f64 {
    (to.seconds - from.seconds) as f64 + f64::from(to.nanos - from.nanos) / 1e9
}

/// A token cancelled by the first SIGTERM or SIGINT (graceful shutdown: drain, then
/// exit); a second signal exits the process at once with status 130.
pub fn shutdown_on_signals() -> std::io::Result<tokio_util::sync::CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = tokio_util::sync::CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let trigger = token.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        trigger.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });
    Ok(token)
}
