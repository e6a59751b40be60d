//! Channels whose TLS failures say what did not match. A lazy channel connects on its
//! first call, and with mutual TLS a server refuses a client's certificate only after
//! the handshake, so either failure comes back from a call, as a status reading
//! "transport error" or "operation was canceled". Through a [`TlsChannel`] it reads
//! like [`super::ClientTls::explain`], carries an `ErrorDetail` (UNREACHABLE) and has
//! the [`super::TlsMismatch`] as its source.

use std::sync::Arc;
use std::task::{Context, Poll};

use ferry_proto::v1::ErrorCode;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, StdError};
use tonic::transport::Channel;

use super::{ClientTls, TlsMismatch};

/// A [`Channel`] that turns its TLS failures into explained statuses.
#[derive(Clone, Debug)]
pub struct TlsChannel {
    inner: Channel,
    /// How the channel was made, and to where: None explains nothing.
    explain: Option<Arc<(ClientTls, String)>>,
    /// `authorization` header every call carries, unless the call sets its own.
    bearer: Option<http::HeaderValue>,
    /// Further headers every call carries, unless the call sets its own.
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Whether a failed call that shows no TLS failure is followed by a handshake of
    /// its own to the endpoint, to hear what the server says.
    probe: bool,
}

impl TlsChannel {
    /// `inner`, its errors passed on as they are.
    pub fn plain(inner: Channel) -> TlsChannel {
        TlsChannel {
            inner,
            explain: None,
            bearer: None,
            headers: Vec::new(),
            probe: false,
        }
    }

    /// `inner`, made with `tls` for `endpoint`.
    pub fn new(inner: Channel, tls: &ClientTls, endpoint: &str) -> TlsChannel {
        TlsChannel {
            inner,
            explain: Some(Arc::new((tls.clone(), endpoint.to_string()))),
            bearer: None,
            headers: tls.headers.clone(),
            probe: true,
        }
    }

    /// No handshake of its own after a failed call: for a channel whose endpoint is not
    /// reached directly (a port-forward through the Kubernetes API server).
    pub fn without_probe(mut self) -> TlsChannel {
        self.probe = false;
        self
    }

    /// Whether `token` can travel as a bearer token.
    pub(crate) fn check_bearer(token: &str) -> Result<(), BadToken> {
        http::HeaderValue::try_from(format!("Bearer {}", token.trim()))
            .map(|_| ())
            .map_err(|_| BadToken)
    }

    /// Every call through this channel carries `token` as its caller's Kubernetes
    /// bearer token (`authorization: Bearer …`), which the services review.
    pub fn with_bearer(mut self, token: &str) -> Result<TlsChannel, BadToken> {
        let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| BadToken)?;
        // Never put into HPACK's dynamic table, where it could be learnt by compression
        // side channels.
        value.set_sensitive(true);
        self.bearer = Some(value);
        Ok(self)
    }
}

/// A bearer token that cannot travel in a header (control characters or non-ASCII).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the bearer token holds characters a header cannot carry; check the kubeconfig's \
     token or --token"
)]
pub struct BadToken;

/// `e` as a status saying what did not match, when it is a TLS failure.
fn explained(tls: &ClientTls, endpoint: &str, mismatch: TlsMismatch) -> StdError {
    let mut status = crate::status(
        tonic::Code::Unavailable,
        crate::error_detail(
            ErrorCode::Unreachable,
            tls.describe(endpoint, &mismatch),
            "",
        ),
    );
    status.set_source(Arc::new(mismatch));
    Box::new(status)
}

impl Service<http::Request<Body>> for TlsChannel {
    type Response = http::Response<Body>;
    type Error = StdError;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let explain = self.explain.clone();
        self.inner
            .poll_ready(cx)
            .map_err(|e| match explain.as_deref().zip(TlsMismatch::find(&e)) {
                Some(((tls, endpoint), mismatch)) => explained(tls, endpoint, mismatch),
                None => Box::new(e),
            })
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(bearer) = &self.bearer
            && !request.headers().contains_key(http::header::AUTHORIZATION)
        {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, bearer.clone());
        }
        for (name, value) in &self.headers {
            if !request.headers().contains_key(name) {
                request.headers_mut().insert(name.clone(), value.clone());
            }
        }
        let call = self.inner.call(request);
        let explain = self.explain.clone();
        let probe = self.probe;
        Box::pin(async move {
            let e = match call.await {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            let Some((tls, endpoint)) = explain.as_deref() else {
                return Err(Box::new(e) as StdError);
            };
            // The failure itself, or else what a handshake of its own hears from the
            // server (the refusal of a client certificate races the request).
            let mismatch = match TlsMismatch::find(&e) {
                Some(mismatch) => Some(mismatch),
                None if probe => tls.diagnose(endpoint).await,
                None => None,
            };
            Err(match mismatch {
                Some(mismatch) => explained(tls, endpoint, mismatch),
                None => Box::new(e),
            })
        })
    }
}
