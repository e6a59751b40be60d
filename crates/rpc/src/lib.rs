//! gRPC plumbing every Ferry service shares.
//!
//! - [`status`] / [`detail`]: a `tonic::Status` carries a `ferry.v1.ErrorDetail` in its
//!   details, so clients branch on an [`ErrorCode`] and show the hint, never parse text.
//! - [`Server`]: health checking and reflection (grpcurl works) on every server, one
//!   span per request named by its method and carrying the caller's `traceparent`, and
//!   graceful shutdown; on a [`Listener`], TLS or mutual TLS, or plaintext on loopback
//!   only unless asked for.
//! - [`tls`]: server and client TLS, the flags every server binary takes, and errors
//!   that name the mismatch (unknown CA, wrong name, expired).
//! - [`init_tracing`], [`traced_channel`], [`propagate`]: logging, optional OTLP span
//!   export, and trace context carried from caller to callee (see [`trace`] for the
//!   environment variables).

pub mod tls;
pub mod trace;

use std::future::Future;
use std::net::SocketAddr;

use ferry_proto::v1::{ErrorCode, ErrorDetail};
use prost::Message;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::{Routes, RoutesBuilder};
use tonic::{Code, Status};

/// `google.rpc.Status`, the standard container of a status's details: what grpcurl
/// and other gRPC tools expect in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

const ERROR_DETAIL_TYPE: &str = "type.googleapis.com/ferry.v1.ErrorDetail";

/// A status whose details carry `detail` (inside a `google.rpc.Status`); its message
/// is the detail's message.
pub fn status(code: Code, detail: ErrorDetail) -> Status {
    let rpc = RpcStatus {
        code: code as i32,
        message: detail.message.clone(),
        details: vec![prost_types::Any {
            type_url: ERROR_DETAIL_TYPE.to_string(),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(code, detail.message, rpc.encode_to_vec().into())
}

/// Shorthand for a detail without an object or cluster.
pub fn error_detail(
    code: ErrorCode,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> ErrorDetail {
    ErrorDetail {
        code: code as i32,
        message: message.into(),
        object: None,
        cluster: String::new(),
        hint: hint.into(),
    }
}

/// The `ErrorDetail` a status from a Ferry service carries, if any.
pub fn detail(status: &Status) -> Option<ErrorDetail> {
    if status.details().is_empty() {
        return None;
    }
    let rpc = RpcStatus::decode(status.details()).ok()?;
    rpc.details
        .iter()
        .find(|a| a.type_url == ERROR_DETAIL_TYPE)
        .and_then(|a| ErrorDetail::decode(a.value.as_slice()).ok())
}

/// How a repository-engine error reads on the wire: the gRPC code, the detail code and
/// the next step. One mapping for every service that touches repositories; a service
/// may still word a hint its own way (the catalog names the key Secret, say).
pub fn repo_error_parts(e: &ferry_repo::Error) -> (Code, ErrorCode, &'static str) {
    use ferry_repo::Error as R;
    match e {
        R::WrongKey { .. } => (
            Code::FailedPrecondition,
            ErrorCode::WrongKey,
            "use one of the keys the message lists, or add this key with `ferry repo key add` \
             using a key that works",
        ),
        R::Corrupt { .. } | R::UnsafeName { .. } => (
            Code::DataLoss,
            ErrorCode::Integrity,
            "run a check with read_data to list every damaged object",
        ),
        R::UnsupportedVersion { .. } => (
            Code::FailedPrecondition,
            ErrorCode::Internal,
            "upgrade ferry to read this repository",
        ),
        R::Cancelled => (Code::Cancelled, ErrorCode::Cancelled, ""),
        R::Locked { .. } | R::LockLost { .. } => (
            Code::Aborted,
            ErrorCode::RepositoryLocked,
            "another writer or a prune holds the repository; retry when it is done (stale \
             locks lapse at their expiry, or remove them with `ferry repo unlock`)",
        ),
        R::ClockSkew { .. } => (
            Code::FailedPrecondition,
            ErrorCode::Internal,
            "set this host's clock right (NTP) and run it again",
        ),
        R::Refused { .. } => (
            Code::FailedPrecondition,
            ErrorCode::Integrity,
            "nothing was deleted; run a check, fix what it names, then prune again",
        ),
        R::Invalid { .. } => (
            Code::InvalidArgument,
            ErrorCode::InvalidArgument,
            "fix the request or the profile",
        ),
        R::AlreadyExists { .. } => (
            Code::AlreadyExists,
            ErrorCode::AlreadyExists,
            "use the existing repository",
        ),
        R::Io { .. } => (
            Code::FailedPrecondition,
            ErrorCode::Volume,
            "check the volume path, its permissions and free space on this node",
        ),
        e if e.is_not_found() => (
            Code::NotFound,
            ErrorCode::NotFound,
            "check the id and that the profile points at the right repository",
        ),
        e if e.is_transient() => (
            Code::Unavailable,
            ErrorCode::Unreachable,
            "the object store is unreachable or overloaded; retry later",
        ),
        R::Backend(_) => (
            Code::FailedPrecondition,
            ErrorCode::PermissionDenied,
            "check the profile's endpoint, bucket and credentials",
        ),
        _ => (Code::Internal, ErrorCode::Internal, "report this as a bug"),
    }
}

pub use tls::{ClientTls, Pem, ServerSecurity, ServerTls, TlsArgs, TlsError, TlsFlags, TlsSetup};
pub use trace::{
    OtlpConfig, Propagate, TRACEPARENT, TracedChannel, TracingConfig, TracingGuard, init_tracing,
    init_tracing_with, propagate, traced_channel,
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
    /// Health (`grpc.health.v1`) and reflection (v1 and v1alpha) are always present.
    pub fn new() -> Result<Server, ServeError> {
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
            .add_service(reflection_alpha);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_survive_the_status() {
        let s = status(
            Code::NotFound,
            error_detail(
                ErrorCode::NotFound,
                "pair p1 not found",
                "list pairs with `ferry pair list`",
            ),
        );
        assert_eq!(s.message(), "pair p1 not found");
        let d = detail(&s).expect("detail");
        assert_eq!(d.code, ErrorCode::NotFound as i32);
        assert_eq!(d.hint, "list pairs with `ferry pair list`");
        assert!(detail(&Status::internal("plain")).is_none());
    }
}
