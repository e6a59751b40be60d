//! Every failed call is logged once, here, by a layer around every server: handlers
//! return errors and never log them themselves (docs/errors.md, "Logging"). The same
//! layer counts every finished call, by method and code, in `ferry_metrics`.
//!
//! The level follows the gRPC code: a caller's mistake or a state the caller must fix
//! is INFO, a dependency that is down or slow is WARN, Ferry's own fault or lost data
//! is ERROR, a cancellation is DEBUG. A failure is seen in the response headers (a
//! unary call's error) or in the trailers (a stream that ends with an error).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::Frame;
use tonic::{Code, Status};

/// The layer [`crate::Server`] puts around every service.
#[derive(Clone, Copy, Debug, Default)]
pub struct FailureLogLayer;

impl<S> tower::Layer<S> for FailureLogLayer {
    type Service = FailureLog<S>;

    fn layer(&self, inner: S) -> FailureLog<S> {
        FailureLog { inner }
    }
}

/// See [`FailureLogLayer`].
#[derive(Clone, Debug)]
pub struct FailureLog<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for FailureLog<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let method = req.uri().path().to_string();
        let span = tracing::Span::current();
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await?;
            if let Some(status) = Status::from_header_map(response.headers()) {
                // Trailers-only: the call failed before any message.
                span.in_scope(|| finished(&method, &status, started));
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let body = tonic::body::Body::new(WatchTrailers {
                inner: body,
                method,
                span,
                started,
                done: false,
            });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// A response body that logs the status its trailers carry, if it is a failure, and
/// counts the call when they arrive (or as cancelled if the body is dropped before).
struct WatchTrailers {
    inner: tonic::body::Body,
    method: String,
    span: tracing::Span,
    started: Instant,
    done: bool,
}

impl Drop for WatchTrailers {
    fn drop(&mut self) {
        if !self.done {
            // The client went away (or the server shut down) mid-stream.
            ferry_metrics::metrics().grpc.handled(
                &self.method,
                code_name(Code::Cancelled),
                self.started.elapsed(),
            );
        }
    }
}

impl http_body::Body for WatchTrailers {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(status) = Status::from_header_map(trailers)
        {
            self.span
                .in_scope(|| finished(&self.method, &status, self.started));
            self.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How loudly a failure with this code is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loudness {
    /// Success: nothing is logged.
    Quiet,
    /// The caller gave up.
    Debug,
    /// The caller's mistake, or a state the caller must fix.
    Info,
    /// A dependency is down, slow or overloaded.
    Warn,
    /// Ferry's own fault, or data lost.
    Error,
}

/// The level policy of docs/errors.md.
pub const fn loudness(code: Code) -> Loudness {
    match code {
        Code::Ok => Loudness::Quiet,
        Code::Cancelled => Loudness::Debug,
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented => Loudness::Info,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => Loudness::Warn,
        Code::Internal | Code::Unknown | Code::DataLoss => Loudness::Error,
    }
}

fn finished(method: &str, status: &Status, started: Instant) {
    ferry_metrics::metrics()
        .grpc
        .handled(method, code_name(status.code()), started.elapsed());
    log_failure(method, status);
}

/// A code as gRPC's own libraries name it in metrics ("OK", "PermissionDenied").
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn log_failure(method: &str, status: &Status) {
    let detail = crate::detail(status);
    let error_code = detail
        .as_ref()
        .and_then(|d| ferry_proto::v1::ErrorCode::try_from(d.code).ok())
        .map(crate::reason)
        .unwrap_or_default();
    let cluster = detail.as_ref().map(|d| d.cluster.as_str()).unwrap_or("");
    let code = status.code();
    let message = status.message();
    match loudness(code) {
        Loudness::Quiet => {}
        Loudness::Debug => {
            tracing::debug!(
                method,
                ?code,
                error_code,
                cluster,
                message,
                "call cancelled"
            )
        }
        Loudness::Info => {
            tracing::info!(method, ?code, error_code, cluster, message, "call refused")
        }
        Loudness::Warn => {
            tracing::warn!(method, ?code, error_code, cluster, message, "call failed")
        }
        Loudness::Error => {
            tracing::error!(method, ?code, error_code, cluster, message, "call failed")
        }
    }
}
