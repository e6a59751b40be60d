//! Passing one service's calls on to the component that serves it, bodies streamed both
//! ways, headers (the caller's token, trace context) untouched.

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use ferry_proto::v1::ErrorCode;
use ferry_rpc::ClientTls;
use ferry_rpc::tls::TlsChannel;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::{Service, ServiceExt};

/// One component, reached over a channel made on first use and kept.
#[derive(Clone)]
pub struct Upstream {
    name: String,
    endpoint: String,
    channel: TlsChannel,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The component `name` at `endpoint`, called with `tls`; connected on first use.
    /// `tls` must carry no bearer: the caller's own token is what the component reviews.
    pub fn lazy(
        name: &str,
        endpoint: &str,
        tls: &ClientTls,
    ) -> Result<Upstream, tonic::transport::Error> {
        let channel = tls.endpoint(endpoint)?.connect_lazy();
        Ok(Upstream {
            name: name.to_owned(),
            endpoint: endpoint.to_owned(),
            channel: TlsChannel::new(channel, tls, endpoint),
        })
    }
}

/// Serves the gRPC service `N` names by forwarding every call to an [`Upstream`].
pub struct Forward<N> {
    upstream: Upstream,
    service: PhantomData<fn() -> N>,
}

impl<N> Forward<N> {
    pub fn new(upstream: Upstream) -> Self {
        Forward {
            upstream,
            service: PhantomData,
        }
    }
}

impl<N> fmt::Debug for Forward<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Forward").field(&self.upstream).finish()
    }
}

impl<N> Clone for Forward<N> {
    fn clone(&self) -> Self {
        Forward::new(self.upstream.clone())
    }
}

impl<N: NamedService> NamedService for Forward<N> {
    const NAME: &'static str = N::NAME;
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<N> Service<http::Request<Body>> for Forward<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the upstream's, awaited per call below, so one slow component
        // never holds up the others.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let channel = self.upstream.channel.clone();
        let name = self.upstream.name.clone();
        let endpoint = self.upstream.endpoint.clone();
        Box::pin(async move {
            match channel.oneshot(request).await {
                Ok(response) => Ok(response),
                Err(e) => {
                    let detail = ferry_rpc::error_detail(
                        ErrorCode::Unreachable,
                        format!("the gateway could not reach the {name} at {endpoint}: {e}"),
                        format!(
                            "check that Ferry's {name} component runs and is Ready \
                             (`kubectl get pods -l app.kubernetes.io/component={}`)",
                            name.split(' ').next().unwrap_or(&name)
                        ),
                    );
                    tracing::warn!(component = %name, %endpoint, error = %e, "upstream unreachable");
                    Ok(ferry_rpc::status(tonic::Code::Unavailable, detail).into_http())
                }
            }
        })
    }
}
