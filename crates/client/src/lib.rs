//! Ferry's Rust SDK: reach a Ferry, pair clusters, start migrations and follow jobs.
//!
//! A [`Ferry`] is one connection to one Ferry server (`ferry serve`, or the services of
//! a Helm install behind one address). It is found either by its endpoint or through a
//! kubeconfig context: every Ferry publishes its endpoint in the ConfigMap
//! `ferry-system/ferry` of its cluster ([`ENDPOINT_CONFIGMAP`]), so naming the cluster
//! is enough.
//!
//! A Ferry installed in the cluster (the Helm chart) also names its gateway's Service
//! and port there ([`SERVICE_KEY`], [`PORT_KEY`]): [`Ferry::for_context`] then reaches
//! it through the cluster's API server, as `kubectl port-forward` does, so no port of
//! the cluster needs to be reachable from the caller's machine. Each connection goes to
//! a Ready pod behind that Service (picked again when one goes away), and over TLS the
//! gateway's certificate is checked for `<service>.<namespace>.svc` unless
//! [`ClientTls::with_server_name`] names another. The user needs `get` on that Service,
//! `list` on pods and `create` on `pods/portforward` in its namespace, which the chart
//! grants every signed-in user ([`PortForwardError`] names what is missing).
//!
//! Every call carries the caller's Kubernetes bearer token, which the Ferry reviews with
//! its cluster (TokenReview, then SubjectAccessReviews for what the call would do):
//! [`Ferry::for_context`] takes it from the context's user, [`Ferry::with_token`] sets
//! it explicitly.
//!
//! A Ferry serving TLS has an `https://` endpoint; [`Ferry::connect_with`] takes the CA
//! to verify it with and, for mutual TLS, a client certificate ([`ClientTls`]). A
//! handshake that fails says what did not match ([`ClientError::Tls`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::ClientError> {
//! use ferry_client::{Ferry, proto};
//!
//! let source = Ferry::for_context(None, Some("a")).await?;
//! let pair = source.find_pair("b").await?;
//! let job = source
//!     .migrate(proto::StartMigrationRequest {
//!         destination: Some(ferry_client::pair_ref(&pair.id)),
//!         application: Some(proto::ApplicationSelector {
//!             namespace: "shop".into(),
//!             ..Default::default()
//!         }),
//!         apply: Some(proto::ApplyOptions {
//!             start_applications: true,
//!             ..Default::default()
//!         }),
//!         ..Default::default()
//!     })
//!     .await?;
//! let report = job.wait(|_event| {}).await?;
//! println!("job {} ended {:?}", report.job_id, report.state());
//! # Ok(()) }
//! ```

mod discover;
mod error;
mod jobs;
mod portforward;

use std::time::Duration;

use ferry_proto::v1::catalog_service_client::CatalogServiceClient;
use ferry_proto::v1::pairing_service_client::PairingServiceClient;
use ferry_proto::v1::scheduler_service_client::SchedulerServiceClient;
use ferry_proto::v1::transfer_service_client::TransferServiceClient;
use ferry_proto::v1::version_service_client::VersionServiceClient;
use ferry_proto::v1::{
    ClusterRef, GetPairRequest, GetVersionRequest, GetVersionResponse, ListPairsRequest, Pair,
    StartMigrationRequest, cluster_ref,
};
use ferry_rpc::tls::TlsChannel;

pub use discover::{
    ENDPOINT_CONFIGMAP, ENDPOINT_KEY, FERRY_NAMESPACE, PORT_KEY, SERVICE_KEY, context_api_server,
    context_token,
};
pub use error::{ClientError, Result};
pub use ferry_proto::v1 as proto;
pub use ferry_rpc::tls::{ClientTls, Pem, TlsError};
pub use jobs::{Job, is_final};
pub use portforward::{Forwarded, Picked, PortForward, PortForwardError};

/// A connection to one Ferry server. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Ferry {
    /// Its failed calls say what did not match when TLS is the reason.
    channel: TlsChannel,
    /// What errors name the Ferry by: its URL, and the route when it is reached
    /// through the API server.
    endpoint: String,
    /// The URL the channel speaks to; TLS checks the certificate for its host.
    uri: String,
    tls: ClientTls,
    /// The caller's own bearer token for a migration's destination cluster, sent with
    /// the jobs it starts ([`Ferry::with_destination_token`]).
    destination_token: Option<String>,
}

/// The settings every channel to a Ferry shares.
fn tuned(endpoint: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(30))
}

impl Ferry {
    /// Connects to a Ferry at `endpoint` (`http://host:port`; a bare `host:port` means
    /// plaintext HTTP/2) without TLS settings: see [`Ferry::connect_with`].
    pub async fn connect(endpoint: &str) -> Result<Ferry> {
        Ferry::connect_with(endpoint, &ClientTls::new()).await
    }

    /// Connects to a Ferry at `endpoint`; `https://` speaks TLS verified with `tls`,
    /// whose CA must have signed the Ferry's certificate. A bare `host:port` means
    /// `https://` when `tls` has a CA or a client certificate, `http://` otherwise.
    pub async fn connect_with(endpoint: &str, tls: &ClientTls) -> Result<Ferry> {
        let endpoint = tls.uri(endpoint);
        let channel = tuned(
            tls.endpoint(&endpoint)
                .map_err(|e| ClientError::BadEndpoint {
                    endpoint: endpoint.clone(),
                    problem: e.to_string(),
                })?,
        )
        .connect()
        .await
        .map_err(|e| match tls.explain(&endpoint, &e) {
            Some(message) => ClientError::Tls {
                endpoint: endpoint.clone(),
                message,
            },
            None => ClientError::Connect {
                endpoint: endpoint.clone(),
                source: e,
            },
        })?;
        Ok(Ferry {
            channel: TlsChannel::new(channel, tls, &endpoint),
            uri: endpoint.clone(),
            endpoint,
            tls: tls.clone(),
            destination_token: None,
        })
    }

    /// Connects through the API server of `client`'s cluster to the Ferry behind
    /// Service `target.service`; `scheme` is the published endpoint's.
    async fn connect_forwarded(
        client: kube::Client,
        target: portforward::Target,
        https: bool,
        tls: &ClientTls,
    ) -> Result<Ferry> {
        let connector = portforward::PortForward::to(client, target.clone());
        // The URL only names the certificate's host and the HTTP authority; no
        // connection goes to it.
        let scheme = if https { "https" } else { "http" };
        let uri = match target.port {
            Some(port) => format!(
                "{scheme}://{}.{}.svc:{port}",
                target.service, target.namespace
            ),
            None => format!("{scheme}://{}.{}.svc", target.service, target.namespace),
        };
        let endpoint = format!(
            "{uri} (Service {}/{} through the API server of {})",
            target.namespace, target.service, target.context
        );
        let channel = tuned(tls.endpoint(&uri).map_err(|e| ClientError::BadEndpoint {
            endpoint: endpoint.clone(),
            problem: e.to_string(),
        })?)
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            if let Some(forward) = PortForwardError::find(&e) {
                return ClientError::from(forward);
            }
            match tls.explain(&uri, &e) {
                Some(message) => ClientError::Tls {
                    endpoint: endpoint.clone(),
                    message,
                },
                None => ClientError::Connect {
                    endpoint: endpoint.clone(),
                    source: e,
                },
            }
        })?;
        Ok(Ferry {
            // No probe of its own on failure: the URL's host is only reached through
            // the API server.
            channel: TlsChannel::new(channel, tls, &uri).without_probe(),
            uri,
            endpoint,
            tls: tls.clone(),
            destination_token: None,
        })
    }

    /// Connects to the Ferry of a kubeconfig context's cluster, found through the
    /// ConfigMap it publishes. `kubeconfig` None means KUBECONFIG or ~/.kube/config;
    /// `context` None means the current context.
    pub async fn for_context(
        kubeconfig: Option<&std::path::Path>,
        context: Option<&str>,
    ) -> Result<Ferry> {
        Ferry::for_context_with(kubeconfig, context, &ClientTls::new()).await
    }

    /// [`Ferry::for_context`] with TLS settings for a Ferry that publishes `https://`.
    /// Calls carry the bearer token of the context's user, when it has one.
    ///
    /// When the cluster's ConfigMap names the gateway's Service (a Ferry installed in
    /// the cluster), the connection goes through the API server to a Ready pod behind
    /// it; otherwise (`ferry serve`) straight to the published endpoint.
    pub async fn for_context_with(
        kubeconfig: Option<&std::path::Path>,
        context: Option<&str>,
        tls: &ClientTls,
    ) -> Result<Ferry> {
        let client = discover::kube_client(kubeconfig, context).await?;
        let published = discover::published(client.clone(), context).await?;
        let ferry = match gateway_target(&published, context) {
            Some(target) => {
                let https = tls.uri(&published.endpoint).starts_with("https://");
                Ferry::connect_forwarded(client, target, https, tls).await?
            }
            None => Ferry::connect_with(&published.endpoint, tls).await?,
        };
        match discover::context_token(kubeconfig, context).await? {
            Some(token) => ferry.with_token(&token),
            None => Ok(ferry),
        }
    }

    /// This connection, its calls carrying `token` (a Kubernetes bearer token of the
    /// Ferry's cluster) as the caller's identity.
    pub fn with_token(mut self, token: &str) -> Result<Ferry> {
        self.channel = self
            .channel
            .with_bearer(token)
            .map_err(|e| ClientError::Discovery {
                what: "the caller's token".into(),
                problem: e.to_string(),
            })?;
        Ok(self)
    }

    /// This connection, the migrations it starts carrying `token` (the caller's own
    /// Kubernetes bearer token of the destination cluster): the destination verifies it
    /// and the job writes there with it, rather than as a name this cluster asserts.
    pub fn with_destination_token(mut self, token: &str) -> Result<Ferry> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ClientError::Discovery {
                what: "the destination token".into(),
                problem: "empty; give the caller's bearer token of the destination".into(),
            });
        }
        self.destination_token = Some(token.to_owned());
        Ok(self)
    }

    /// `message` as a request, carrying the destination token when there is one.
    fn with_destination<T>(&self, message: T) -> Result<tonic::Request<T>> {
        let mut req = tonic::Request::new(message);
        if let Some(token) = &self.destination_token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::Discovery {
                    what: "the destination token".into(),
                    problem: "it holds characters a header cannot carry".into(),
                })?;
            req.metadata_mut()
                .insert(ferry_proto::DESTINATION_AUTHORIZATION, value);
        }
        Ok(req)
    }

    /// The endpoint this connection goes to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn pairing(&self) -> PairingServiceClient<TlsChannel> {
        PairingServiceClient::new(self.channel.clone())
    }

    pub fn catalog(&self) -> CatalogServiceClient<TlsChannel> {
        CatalogServiceClient::new(self.channel.clone())
    }

    pub fn transfer(&self) -> TransferServiceClient<TlsChannel> {
        TransferServiceClient::new(self.channel.clone())
    }

    pub fn scheduler(&self) -> SchedulerServiceClient<TlsChannel> {
        SchedulerServiceClient::new(self.channel.clone())
    }

    pub fn version_service(&self) -> VersionServiceClient<TlsChannel> {
        VersionServiceClient::new(self.channel.clone())
    }

    /// The version, component and commit of the server that answers (no sign-in
    /// needed).
    pub async fn server_version(&self) -> Result<GetVersionResponse> {
        Ok(self
            .version_service()
            .get_version(GetVersionRequest {})
            .await
            .map_err(|s| self.rpc_error("GetVersion", s))?
            .into_inner())
    }

    /// Turns a failed call into an error naming the call and this Ferry; a TLS failure
    /// (with mutual TLS, the server refuses a client certificate only after the
    /// connection is up) into [`ClientError::Tls`].
    pub fn rpc_error(&self, call: &'static str, status: tonic::Status) -> ClientError {
        if let Some(forward) = PortForwardError::find(&status) {
            return ClientError::from(forward);
        }
        match self.tls.explain(&self.uri, &status) {
            Some(message) => ClientError::Tls {
                endpoint: self.endpoint.clone(),
                message,
            },
            None => ClientError::rpc(call, &self.endpoint, status),
        }
    }

    /// Finds the pair whose other side is `name`: a pair id, a pair name, the other
    /// cluster's name, or its API server URL (what a kubeconfig context points at).
    pub async fn find_pair(&self, name: &str) -> Result<Pair> {
        let mut pairing = self.pairing();
        // An exact id or name is one call.
        if let Ok(resp) = pairing.get_pair(GetPairRequest { pair: name.into() }).await
            && let Some(pair) = resp.into_inner().pair
        {
            return Ok(pair);
        }
        let mut pairs = Vec::new();
        let mut page_token = String::new();
        loop {
            let resp = pairing
                .list_pairs(ListPairsRequest {
                    page_size: 0,
                    page_token,
                })
                .await
                .map_err(|s| self.rpc_error("ListPairs", s))?
                .into_inner();
            pairs.extend(resp.pairs);
            if resp.next_page_token.is_empty() {
                break;
            }
            page_token = resp.next_page_token;
        }
        let wanted = name.trim_end_matches('/');
        let matching: Vec<Pair> = pairs
            .iter()
            .filter(|p| {
                [p.source.as_ref(), p.destination.as_ref()]
                    .into_iter()
                    .flatten()
                    .any(|c| c.name == wanted || c.api_server_url.trim_end_matches('/') == wanted)
            })
            .cloned()
            .collect();
        match matching.len() {
            1 => Ok(matching.into_iter().next().unwrap_or_default()),
            0 => Err(ClientError::NoPair {
                endpoint: self.endpoint.clone(),
                name: name.into(),
                known: pairs.iter().map(|p| p.name.clone()).collect(),
            }),
            _ => Err(ClientError::AmbiguousPair {
                name: name.into(),
                pairs: matching.iter().map(|p| p.name.clone()).collect(),
            }),
        }
    }

    /// Starts a migration and returns its job; follow it with [`Job::wait`] or
    /// [`Job::events`].
    pub async fn migrate(&self, req: StartMigrationRequest) -> Result<Job> {
        let job = self
            .transfer()
            .start_migration(self.with_destination(req)?)
            .await
            .map_err(|s| self.rpc_error("StartMigration", s))?
            .into_inner()
            .job
            .ok_or_else(|| ClientError::Protocol {
                endpoint: self.endpoint.clone(),
                problem: "StartMigration answered without a job".into(),
            })?;
        Ok(self.job(&job.id))
    }

    /// Starts a migration of one or more namespaces (`namespaces`, `all_namespaces`) and
    /// returns a handle on every job it started, one per namespace.
    pub async fn migrate_all(&self, req: StartMigrationRequest) -> Result<Vec<Job>> {
        let resp = self
            .transfer()
            .start_migration(self.with_destination(req)?)
            .await
            .map_err(|s| self.rpc_error("StartMigration", s))?
            .into_inner();
        let mut ids: Vec<String> = resp.jobs.into_iter().map(|j| j.id).collect();
        if ids.is_empty()
            && let Some(job) = resp.job
        {
            ids.push(job.id);
        }
        if ids.is_empty() {
            return Err(ClientError::Protocol {
                endpoint: self.endpoint.clone(),
                problem: "StartMigration answered without a job".into(),
            });
        }
        Ok(ids.iter().map(|id| self.job(id)).collect())
    }

    /// A handle on an existing job.
    pub fn job(&self, id: &str) -> Job {
        Job::new(self.clone(), id)
    }
}

/// How the Ferry of a kubeconfig context is reached through the API server, as
/// [`Ferry::for_context`] finds it: the port-forward to the gateway Service named in
/// the cluster's ConfigMap `ferry-system/ferry`; None when it names none (`ferry
/// serve`, reached at its endpoint).
pub async fn gateway_of(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<Option<PortForward>> {
    let client = discover::kube_client(kubeconfig, context).await?;
    let published = discover::published(client.clone(), context).await?;
    Ok(gateway_target(&published, context).map(|target| PortForward::to(client, target)))
}

/// The gateway Service the ConfigMap names, if any.
fn gateway_target(
    published: &discover::Published,
    context: Option<&str>,
) -> Option<portforward::Target> {
    let service = published.service.as_ref()?;
    Some(portforward::Target {
        context: discover::describe(context),
        context_name: context.map(str::to_owned),
        namespace: FERRY_NAMESPACE.to_owned(),
        service: service.clone(),
        port: published.port,
        configmap: ENDPOINT_CONFIGMAP.to_owned(),
    })
}

/// A reference to the cluster on the other side of pair `id`.
pub fn pair_ref(id: &str) -> ClusterRef {
    ClusterRef {
        target: Some(cluster_ref::Target::PairId(id.into())),
    }
}

/// A reference to the cluster the Ferry runs in.
pub fn local_ref() -> ClusterRef {
    ClusterRef {
        target: Some(cluster_ref::Target::Local(true)),
    }
}
