//! Reaching an in-cluster Ferry through the Kubernetes API server, as `kubectl
//! port-forward` does: no port of the cluster needs to be exposed to the user's machine.
//!
//! The cluster's ConfigMap `ferry-system/ferry` names the gateway's Service (`service`)
//! and its port (`port`). Each new connection of the gRPC channel reads that Service,
//! picks a Ready pod behind it and opens a fresh port-forward stream to the pod's port
//! (the Service port's `targetPort`), so when the pod goes away the next connection
//! finds another. TLS, when the Ferry speaks it, runs over that stream as over TCP.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Why a connection through the API server could not be made or broke. Each names the
/// kubeconfig context, the namespace and the Service, and says what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PortForwardError {
    /// The Service the ConfigMap names does not exist.
    #[error(
        "{context}: Service {namespace}/{service}, which ConfigMap {namespace}/{configmap} \
         names as Ferry's gateway, does not exist; check that Ferry is installed there \
         (`{kubectl} get service {service}`), or pass --server with the Ferry's address"
    )]
    NoService {
        context: String,
        namespace: String,
        service: String,
        configmap: String,
        kubectl: String,
    },

    /// The Service has no selector, or no port the ConfigMap names.
    #[error(
        "{context}: Service {namespace}/{service} cannot be port-forwarded: {problem}; \
         check it with `{kubectl} get service {service} -o yaml` and the `service` and \
         `port` keys of ConfigMap {namespace}/{configmap}"
    )]
    BadService {
        context: String,
        namespace: String,
        service: String,
        configmap: String,
        kubectl: String,
        problem: String,
    },

    /// No pod behind the Service is Ready.
    #[error(
        "{context}: no Ready pod behind Service {namespace}/{service} ({found}); check \
         `{kubectl} get pods -l {selector}`"
    )]
    NoReadyPod {
        context: String,
        namespace: String,
        service: String,
        selector: String,
        kubectl: String,
        found: String,
    },

    /// The user of the context may not do what port-forwarding needs.
    #[error(
        "{context}: the user may not {verb} {resource} in namespace {namespace} (needed to \
         reach Ferry's gateway, Service {namespace}/{service}, through the API server): \
         {message}; ask a cluster administrator for `{verb}` on `{resource}` there (the \
         Helm chart's Role ferry-endpoint-reader grants it to every signed-in user), or \
         pass --server with an address of the Ferry you can reach"
    )]
    Forbidden {
        context: String,
        namespace: String,
        service: String,
        verb: String,
        resource: String,
        message: String,
    },

    /// The API server refused or failed a request other than for rights.
    #[error(
        "{context}: {action} in namespace {namespace} (for Service {namespace}/{service}): \
         {problem}; check the cluster with `{kubectl} get service,pods`"
    )]
    Api {
        context: String,
        namespace: String,
        service: String,
        kubectl: String,
        action: String,
        problem: String,
    },

    /// The port-forward stream to the chosen pod failed.
    #[error(
        "{context}: port-forward to pod {namespace}/{pod} port {port} (behind Service \
         {namespace}/{service}) failed: {problem}; check the pod with `{kubectl} describe \
         pod {pod}` and its logs with `{kubectl} logs {pod}`"
    )]
    Forward {
        context: String,
        namespace: String,
        service: String,
        pod: String,
        port: u16,
        kubectl: String,
        problem: String,
    },
}

impl PortForwardError {
    /// The port-forward error somewhere in `err`'s chain of sources (through
    /// `io::Error`s, which hide their inner error from `source()`).
    pub(crate) fn find(err: &(dyn std::error::Error + 'static)) -> Option<PortForwardError> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<PortForwardError>() {
                return Some(found.clone());
            }
            if let Some(found) = e
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<PortForwardError>())
            {
                return Some(found.clone());
            }
            next = e.source();
        }
        None
    }
}

/// Where a port-forward goes: a Service of a cluster, and its port.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// How errors name the kubeconfig context (`kubeconfig context "a"`).
    pub context: String,
    /// The context's name, for the kubectl commands errors suggest.
    pub context_name: Option<String>,
    pub namespace: String,
    pub service: String,
    /// The Service's port; None: its port named `grpc`, or its only port.
    pub port: Option<u16>,
    /// The ConfigMap that named the Service.
    pub configmap: String,
}

impl Target {
    /// `kubectl [--context C] -n NS`, for the commands errors suggest.
    fn kubectl(&self) -> String {
        match &self.context_name {
            Some(c) => format!("kubectl --context {c} -n {}", self.namespace),
            None => format!("kubectl -n {}", self.namespace),
        }
    }

    /// The error for a failed API request: forbidden names the verb and resource.
    fn api_error(&self, verb: &str, resource: &str, e: kube::Error) -> PortForwardError {
        match &e {
            kube::Error::Api(status) if status.code == 403 => PortForwardError::Forbidden {
                context: self.context.clone(),
                namespace: self.namespace.clone(),
                service: self.service.clone(),
                verb: verb.into(),
                resource: resource.into(),
                message: status.message.clone(),
            },
            _ => PortForwardError::Api {
                context: self.context.clone(),
                namespace: self.namespace.clone(),
                service: self.service.clone(),
                kubectl: self.kubectl(),
                action: format!("{verb} {resource}"),
                problem: e.to_string(),
            },
        }
    }

    fn bad_service(&self, problem: String) -> PortForwardError {
        PortForwardError::BadService {
            context: self.context.clone(),
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            configmap: self.configmap.clone(),
            kubectl: self.kubectl(),
            problem,
        }
    }

    fn forward_error(&self, pod: &str, port: u16, problem: String) -> PortForwardError {
        PortForwardError::Forward {
            context: self.context.clone(),
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            pod: pod.into(),
            port,
            kubectl: self.kubectl(),
            problem,
        }
    }
}

/// A Ready pod behind a Service, and the pod's port its Service port goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    /// The pod's name.
    pub pod: String,
    /// The pod's port (the Service port's `targetPort`).
    pub port: u16,
}

/// Streams to a Service of a cluster through its API server, as `kubectl port-forward
/// svc/NAME` opens them: each one to a Ready pod behind the Service, picked anew, so a
/// pod that went away is replaced by another. As a `tower::Service<Uri>` it is the
/// connector of a tonic channel ([`tonic::transport::Endpoint::connect_with_connector`]):
/// every connection of the channel is a new stream (the URI is not used).
///
/// The user of the client needs `get` on the Service, `list` on pods and `create` on
/// `pods/portforward` in its namespace.
#[derive(Clone)]
pub struct PortForward {
    client: kube::Client,
    target: Arc<Target>,
}

impl std::fmt::Debug for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForward")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PortForward {
    /// To port `port` of Service `namespace/service` (None: its port named `grpc`, or
    /// its only port) of `client`'s cluster; errors name the kubeconfig `context`
    /// (None: the current one).
    pub fn new(
        client: kube::Client,
        context: Option<&str>,
        namespace: &str,
        service: &str,
        port: Option<u16>,
    ) -> PortForward {
        PortForward::to(
            client,
            Target {
                context: crate::discover::describe(context),
                context_name: context.map(str::to_owned),
                namespace: namespace.to_owned(),
                service: service.to_owned(),
                port,
                configmap: crate::ENDPOINT_CONFIGMAP.to_owned(),
            },
        )
    }

    pub(crate) fn to(client: kube::Client, target: Target) -> PortForward {
        PortForward {
            client,
            target: Arc::new(target),
        }
    }

    /// Reads the Service, and picks a Ready pod behind it and the pod's port.
    pub async fn pick(&self) -> Result<Picked, PortForwardError> {
        let t = &self.target;
        let services: Api<Service> = Api::namespaced(self.client.clone(), &t.namespace);
        let service = services
            .get_opt(&t.service)
            .await
            .map_err(|e| t.api_error("get", &format!("services/{}", t.service), e))?
            .ok_or_else(|| PortForwardError::NoService {
                context: t.context.clone(),
                namespace: t.namespace.clone(),
                service: t.service.clone(),
                configmap: t.configmap.clone(),
                kubectl: t.kubectl(),
            })?;
        let spec = service.spec.unwrap_or_default();
        let selector: BTreeMap<String, String> = spec.selector.unwrap_or_default();
        if selector.is_empty() {
            return Err(t.bad_service("it has no selector, so no pods are behind it".into()));
        }
        let ports = spec.ports.unwrap_or_default();
        let port = match t.port {
            Some(p) => ports.iter().find(|sp| i64::from(sp.port) == i64::from(p)),
            None if ports.len() == 1 => ports.first(),
            None => ports.iter().find(|sp| sp.name.as_deref() == Some("grpc")),
        }
        .ok_or_else(|| {
            let listed: Vec<String> = ports.iter().map(|p| p.port.to_string()).collect();
            t.bad_service(match t.port {
                Some(p) => format!("it has no port {p} (its ports: {})", listed.join(", ")),
                None => "it has several ports and none named grpc".into(),
            })
        })?
        .clone();

        let selector_text = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &t.namespace);
        let listed = pods
            .list(&ListParams::default().labels(&selector_text))
            .await
            .map_err(|e| t.api_error("list", "pods", e))?;
        let total = listed.items.len();
        let mut ready: Vec<Pod> = listed.items.into_iter().filter(is_ready).collect();
        // Several gateway replicas: any will do; the name order keeps it predictable.
        ready.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let Some(pod) = ready.into_iter().next() else {
            return Err(PortForwardError::NoReadyPod {
                context: t.context.clone(),
                namespace: t.namespace.clone(),
                service: t.service.clone(),
                selector: selector_text,
                kubectl: t.kubectl(),
                found: match total {
                    0 => "no pod matches its selector".into(),
                    1 => "its one pod is not Ready".into(),
                    n => format!("none of its {n} pods is Ready"),
                },
            });
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pod_port = match &port.target_port {
            None => Some(port.port),
            Some(IntOrString::Int(n)) => Some(*n),
            Some(IntOrString::String(named)) => pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(named.as_str()))
                .map(|p| p.container_port),
        };
        let pod_port = pod_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                t.bad_service(format!(
                    "its port {} goes to target port {:?}, which pod {name} does not have",
                    port.port,
                    port.target_port
                        .as_ref()
                        .map(|p| match p {
                            IntOrString::Int(n) => n.to_string(),
                            IntOrString::String(s) => s.clone(),
                        })
                        .unwrap_or_default()
                ))
            })?;
        Ok(Picked {
            pod: name,
            port: pod_port,
        })
    }

    /// A new stream to a Ready pod's port, through the API server.
    pub async fn open(&self) -> Result<Forwarded, PortForwardError> {
        let picked = self.pick().await?;
        self.open_to(&picked).await
    }

    /// A new stream to `picked`, through the API server.
    pub async fn open_to(&self, picked: &Picked) -> Result<Forwarded, PortForwardError> {
        let t = &self.target;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &t.namespace);
        let mut forwarder = pods
            .portforward(&picked.pod, &[picked.port])
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => t.forward_error(
                    &picked.pod,
                    picked.port,
                    "the pod is gone; try again, another Ready pod will be picked".into(),
                ),
                kube::Error::Api(s) if s.code == 403 => {
                    t.api_error("create", "pods/portforward", e)
                }
                _ => t.forward_error(&picked.pod, picked.port, e.to_string()),
            })?;
        let missing = || {
            t.forward_error(
                &picked.pod,
                picked.port,
                "the port-forward has no stream for the port".into(),
            )
        };
        let stream = forwarder.take_stream(picked.port).ok_or_else(missing)?;
        let refused = forwarder.take_error(picked.port).ok_or_else(missing)?;
        tracing::debug!(
            namespace = %t.namespace, service = %t.service, pod = %picked.pod,
            port = picked.port, "port-forward stream open"
        );
        // The forwarder's task moves the bytes, and this one keeps the forwarder (and so
        // its task) alive until the forwarding ends: when the stream is closed or the API
        // server closes the connection. A failure the API server reports on the port's
        // error channel, or the task's own, comes back from the stream's reads and
        // writes; the task's own is also logged (at debug: a stream dropped while bytes
        // still arrive ends it with an error too, which is no news).
        let failure = Arc::new(std::sync::OnceLock::<String>::new());
        let failed = failure.clone();
        let (namespace, pod, port) = (t.namespace.clone(), picked.pod.clone(), picked.port);
        tokio::spawn(async move {
            if let Err(e) = forwarder.join().await {
                tracing::debug!(%namespace, %pod, port, error = %e, "port-forward ended with an error");
                let _ = failed.set(e.to_string());
            }
        });
        Ok(Forwarded {
            stream,
            refused: Some(refused.boxed()),
            failure,
            error: Arc::new(t.forward_error(&picked.pod, picked.port, String::new())),
        })
    }
}

/// Ready and not being deleted.
fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

impl tower::Service<http::Uri> for PortForward {
    type Response = TokioIo<Forwarded>;
    type Error = PortForwardError;
    type Future =
        Pin<Box<dyn Future<Output = Result<TokioIo<Forwarded>, PortForwardError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move { me.open().await.map(TokioIo::new) })
    }
}

/// One port-forward stream: bytes to and from the pod's port. When it ends because the
/// API server reported a failure (nothing listens on the port, the pod stopped), reads
/// and writes fail with that failure (an `io::Error` whose inner error is the
/// [`PortForwardError`]).
pub struct Forwarded {
    stream: DuplexStream,
    /// Resolves with the message the API server sends when the port cannot be used.
    refused: Option<futures::future::BoxFuture<'static, Option<String>>>,
    /// The forwarder task's own failure, once it ended with one.
    failure: Arc<std::sync::OnceLock<String>>,
    /// This stream's error with the problem left empty: names the pod and port.
    error: Arc<PortForwardError>,
}

impl std::fmt::Debug for Forwarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarded")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Forwarded {
    /// The failure that ended the stream, if one is known now.
    fn reason(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let mut problem = None;
        if let Some(refused) = self.refused.as_mut()
            && let Poll::Ready(message) = refused.poll_unpin(cx)
        {
            self.refused = None;
            problem = message;
        }
        if problem.is_none() {
            problem = self.failure.get().cloned();
        }
        let problem = problem?;
        let mut error = (*self.error).clone();
        if let PortForwardError::Forward { problem: p, .. } = &mut error {
            *p = problem.trim().to_owned();
        }
        Some(io::Error::new(io::ErrorKind::ConnectionAborted, error))
    }
}

impl AsyncRead for Forwarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            // The end, or a failure the API server reported.
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                match self.reason(cx) {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Ready(Ok(())),
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.reason(cx).unwrap_or(e))),
            other => other,
        }
    }
}

impl AsyncWrite for Forwarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.reason(cx).unwrap_or(e))),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
