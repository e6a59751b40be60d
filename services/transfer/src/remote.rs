//! The transfer service's collaborators over gRPC: pairs' destinations through the
//! pairing service, repositories and migration tokens through the catalog, agents found
//! as pods of their DaemonSet or named by endpoint. The standalone service, each
//! Deployment of the Helm chart and `ferry serve` (whose components call each other on
//! its own port) all use these, so every form runs the same code.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_kube::Cluster;
use ferry_proto::v1::agent_service_client::AgentServiceClient;
use ferry_proto::v1::catalog_service_client::CatalogServiceClient;
use ferry_proto::v1::pairing_internal_service_client::PairingInternalServiceClient;
use ferry_proto::v1::{
    ClusterRef, ErrorCode, IssueMigrationTokenRequest, PairRole, ResolvePairRequest,
    ResolvePairResponse, cluster_ref,
};
use ferry_rpc::{ClientTls, TracedChannel};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use parking_lot::Mutex;

use crate::deps::{AgentClient, Agents, Clusters, Handover, TokenRequest, cluster_key};
use crate::error::{Result, TransferError};

/// How long connecting to a pair's destination API may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pairing service's internal API, reached with the internal credential.
#[derive(Clone)]
pub struct PairingLink {
    endpoint: String,
    client: PairingInternalServiceClient<TracedChannel>,
}

impl fmt::Debug for PairingLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingLink")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl PairingLink {
    /// The pairing service at `endpoint`, called with `tls` (carrying the internal
    /// credential as its bearer); connected on first use.
    pub fn lazy(
        endpoint: &str,
        tls: &ClientTls,
    ) -> std::result::Result<Self, tonic::transport::Error> {
        let channel = tls.endpoint(endpoint)?.connect_lazy();
        Ok(PairingLink {
            endpoint: endpoint.to_owned(),
            client: PairingInternalServiceClient::new(tls.traced(endpoint, channel)),
        })
    }

    async fn resolve(&self, cluster: &str, pair: &str) -> Result<ResolvePairResponse> {
        let answer = self
            .client
            .clone()
            .resolve_pair(ResolvePairRequest {
                pair: pair.to_owned(),
            })
            .await;
        answer.map(|r| r.into_inner()).map_err(|status| {
            let detail = ferry_rpc::detail(&status);
            let code = detail
                .as_ref()
                .and_then(|d| ErrorCode::try_from(d.code).ok())
                .unwrap_or(ErrorCode::Unreachable);
            let message = match &detail {
                Some(d) => d.message.clone(),
                None => format!(
                    "the pairing service at {} did not answer: {}",
                    self.endpoint,
                    status.message()
                ),
            };
            let hint = detail
                .map(|d| d.hint)
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| {
                    "check that the pairing service runs and that this service bears the \
                     deployment's internal credential"
                        .into()
                });
            // No such pair is the caller's mistake, not an outage.
            if code == ErrorCode::NotFound {
                TransferError::UnknownCluster {
                    cluster: cluster.to_owned(),
                    message,
                    hint,
                }
            } else {
                TransferError::Cluster {
                    cluster: cluster.to_owned(),
                    message,
                    hint,
                }
            }
        })
    }

    /// The Ferry endpoint of the cluster on the other side of `pair` from this one, and
    /// on the pair's source the credential the destination issued for it, which its
    /// agent relay admits.
    async fn peer(&self, cluster: &str, pair: &str) -> Result<(String, Option<String>)> {
        let resolved = self.resolve(cluster, pair).await?;
        let p = resolved.pair.unwrap_or_default();
        let source = p.role == PairRole::Source as i32;
        let other = if source { p.destination } else { p.source };
        let endpoint = other.map(|c| c.ferry_endpoint).unwrap_or_default();
        if endpoint.trim().is_empty() {
            return Err(TransferError::Cluster {
                cluster: cluster.to_owned(),
                message: format!("pair {pair} records no Ferry endpoint for the other cluster"),
                hint: "pair the clusters again with the other side's Ferry endpoint set".into(),
            });
        }
        let bearer = Some(resolved.destination_bearer_token).filter(|t| source && !t.is_empty());
        Ok((endpoint, bearer))
    }
}

/// This cluster, other contexts of a kubeconfig on demand, and pairs' destinations with
/// the credential the pairing service holds for them.
#[derive(Clone)]
pub struct PairingClusters {
    local: kube::Client,
    /// How `local` was made: kept so jobs can write as their caller over it.
    local_config: Option<kube::Config>,
    /// This cluster's name in messages; `local` when none was given.
    local_name: Option<String>,
    local_context: Option<String>,
    kubeconfig: Option<PathBuf>,
    pairing: Option<PairingLink>,
}

impl fmt::Debug for PairingClusters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingClusters")
            .field("local_context", &self.local_context)
            .field("pairing", &self.pairing)
            .finish_non_exhaustive()
    }
}

impl PairingClusters {
    /// `local` is this cluster (the context `local_context` names it too); other
    /// contexts come from `kubeconfig` (or the usual kubeconfig); pairs from `pairing`.
    pub fn new(
        local: kube::Client,
        local_context: Option<String>,
        kubeconfig: Option<PathBuf>,
        pairing: Option<PairingLink>,
    ) -> Self {
        PairingClusters {
            local,
            local_config: None,
            local_name: None,
            local_context,
            kubeconfig,
            pairing,
        }
    }

    /// The configuration `local` was made from, so jobs can write as their caller
    /// (impersonation) over the same credential; without it they cannot, and are
    /// refused rather than written with the service's own rights.
    pub fn with_local_config(mut self, config: kube::Config) -> Self {
        self.local_config = Some(config);
        self
    }

    /// Names this cluster `name` in messages (the service's --cluster-name); ids,
    /// agents and restore points keep knowing it as `local`.
    pub fn with_local_name(mut self, name: impl Into<String>) -> Self {
        self.local_name = Some(name.into()).filter(|n| !n.is_empty());
        self
    }

    fn local(&self, key: String) -> Cluster {
        let name = self.local_name.clone().unwrap_or(key);
        let mut cluster = Cluster::new(name, self.local.clone());
        cluster.config = self.local_config.clone();
        cluster
    }
}

#[async_trait]
impl Clusters for PairingClusters {
    async fn cluster(&self, r: Option<&ClusterRef>) -> Result<Cluster> {
        let key = cluster_key(r);
        match r.and_then(|r| r.target.as_ref()) {
            None | Some(cluster_ref::Target::Local(_)) => Ok(self.local(key)),
            Some(cluster_ref::Target::Context(c)) if Some(c) == self.local_context.as_ref() => {
                Ok(self.local(key))
            }
            Some(cluster_ref::Target::Context(c)) => {
                let unusable = |detail: String| TransferError::UnknownCluster {
                    cluster: key.clone(),
                    message: format!("context {c}: {detail}"),
                    hint: "name a context of the kubeconfig the transfer service was started \
                           with, or pair the cluster and name the pair"
                        .into(),
                };
                let config = ferry_kube::kube_config(self.kubeconfig.as_deref(), Some(c.as_str()))
                    .await
                    .map_err(|e| unusable(e.to_string()))?;
                Cluster::from_config(key.clone(), config).map_err(|e| unusable(e.to_string()))
            }
            Some(cluster_ref::Target::PairId(p)) => {
                let Some(pairing) = &self.pairing else {
                    return Err(TransferError::UnknownCluster {
                        cluster: key,
                        message: "this transfer service knows no pairing service".into(),
                        hint: "start it with --pairing-endpoint, or name a kubeconfig context"
                            .into(),
                    });
                };
                let resolved = pairing.resolve(&key, p).await?;
                let pair = resolved.pair.unwrap_or_default();
                if pair.role != PairRole::Source as i32 {
                    return Err(TransferError::Cluster {
                        cluster: key,
                        message: format!(
                            "this cluster is the destination of pair {}, which holds no \
                             credential for its source (pairs are one-way)",
                            pair.name
                        ),
                        hint: "start the job on the pair's source cluster".into(),
                    });
                }
                let destination = pair.destination.unwrap_or_default();
                let url = destination.api_server_url;
                // Reads are not bounded: a migration lists and watches for as long as it needs.
                let unusable = |e: &dyn fmt::Display| TransferError::Cluster {
                    cluster: key.clone(),
                    message: format!("the destination's API at {url}: {e}"),
                    hint: "check the pair with `ferry pair check`".into(),
                };
                let config = ferry_kube::bearer_config(
                    &url,
                    &resolved.destination_ca_pem,
                    &resolved.destination_bearer_token,
                    CONNECT_TIMEOUT,
                    false,
                )
                .await
                .map_err(|e| unusable(&e))?;
                let name = pair_cluster_name(&destination.name, &pair.name);
                Ok(Cluster::from_config(name, config)
                    .map_err(|e| unusable(&e))?
                    .with_credential(pair_credential(&destination.name, &pair.name)))
            }
        }
    }
}

/// The ClusterRole every pair's credential is bound to on its destination (the pairing
/// service makes it).
const PAIR_CLUSTER_ROLE: &str = "ferry-migrator";

/// A pair's destination as users name it: the name its Ferry was given and the pair's.
fn pair_cluster_name(destination: &str, pair: &str) -> String {
    if destination.is_empty() {
        format!("of pair {pair}")
    } else {
        format!("{destination} (pair {pair})")
    }
}

/// Whose rights a job writes with on a pair's destination: Ferry's, granted by the pair's
/// ClusterRole, which covers the custom resource groups present when it was last made.
fn pair_credential(destination: &str, pair: &str) -> ferry_kube::Credential {
    let on = if destination.is_empty() {
        "the destination".to_owned()
    } else {
        format!("cluster {destination}")
    };
    ferry_kube::Credential {
        who: format!("Ferry's credential for pair {pair} (ClusterRole {PAIR_CLUSTER_ROLE})"),
        grant: format!(
            "that ClusterRole covers the custom resource types installed when a pairing \
             token was last made on {on}: pair again (`ferry pair create`) to update it, or \
             add a rule for the type to it"
        ),
    }
}

/// Where this cluster's agents are.
#[derive(Clone)]
pub enum LocalAgents {
    /// One agent for every node at this endpoint (`ferry serve`'s own), or per node.
    Fixed(crate::deps::StaticAgents),
    /// The pods of the agent DaemonSet: in `namespace`, matching `selector`, serving on
    /// `port`; the one on a volume's node is called at its pod IP. Their certificate is
    /// checked against `server_name` (pod IPs are in no certificate).
    Pods {
        client: kube::Client,
        namespace: String,
        selector: String,
        port: u16,
        server_name: Option<String>,
    },
}

impl fmt::Debug for LocalAgents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalAgents::Fixed(fixed) => f.debug_tuple("Fixed").field(fixed).finish(),
            LocalAgents::Pods {
                namespace,
                selector,
                port,
                ..
            } => f
                .debug_struct("Pods")
                .field("namespace", namespace)
                .field("selector", selector)
                .field("port", port)
                .finish_non_exhaustive(),
        }
    }
}

/// Agents of this cluster, and for a pair's other cluster the agents its Ferry serves
/// at the endpoint the pair records.
#[derive(Clone)]
pub struct ClusterAgents {
    local: LocalAgents,
    local_context: Option<String>,
    tls: ClientTls,
    pairing: Option<PairingLink>,
    peer_tls: ClientTls,
    /// Channels by endpoint, so repeated calls reuse connections.
    channels: Arc<Mutex<HashMap<String, AgentClient>>>,
}

impl fmt::Debug for ClusterAgents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterAgents")
            .field("local", &self.local)
            .field("local_context", &self.local_context)
            .finish_non_exhaustive()
    }
}

impl ClusterAgents {
    /// Agents of this cluster called with `tls` (carrying the internal credential).
    pub fn new(local: LocalAgents, local_context: Option<String>, tls: ClientTls) -> Self {
        ClusterAgents {
            local,
            local_context,
            tls,
            pairing: None,
            peer_tls: ClientTls::new(),
            channels: Arc::default(),
        }
    }

    /// Pairs' other clusters through `pairing`, their Ferry called with `peer_tls`.
    pub fn with_pairs(mut self, pairing: PairingLink, peer_tls: ClientTls) -> Self {
        self.pairing = Some(pairing);
        self.peer_tls = peer_tls;
        self
    }

    fn client(&self, cluster: &str, endpoint: &str, tls: &ClientTls) -> Result<AgentClient> {
        self.client_keyed(cluster, endpoint, endpoint, tls)
    }

    /// [`ClusterAgents::client`], cached under `key`.
    fn client_keyed(
        &self,
        cluster: &str,
        key: &str,
        endpoint: &str,
        tls: &ClientTls,
    ) -> Result<AgentClient> {
        if let Some(c) = self.channels.lock().get(key) {
            return Ok(c.clone());
        }
        let channel = tls
            .endpoint(endpoint)
            .map_err(|e| TransferError::Cluster {
                cluster: cluster.to_owned(),
                message: format!("agent at {endpoint} is not an address: {e}"),
                hint: "check the agent's endpoint".into(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            // Lazy: the connection is made on the first call, whose error names the volume.
            .connect_lazy();
        let client = AgentServiceClient::new(tls.traced(endpoint, channel));
        self.channels.lock().insert(key.to_owned(), client.clone());
        Ok(client)
    }

    /// The agent pod on `node` (any ready one when `node` is empty).
    async fn pod_endpoint(
        &self,
        cluster: &str,
        node: &str,
        client: &kube::Client,
        namespace: &str,
        selector: &str,
        port: u16,
    ) -> Result<String> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let mut params = ListParams::default().labels(selector);
        if !node.is_empty() {
            params = params.fields(&format!("spec.nodeName={node}"));
        }
        let listed = pods
            .list(&params)
            .await
            .map_err(|e| TransferError::Cluster {
                cluster: cluster.to_owned(),
                message: format!("listing agent pods ({selector}) in namespace {namespace}: {e}"),
                hint: "check that the transfer service may list pods in the agents' namespace"
                    .into(),
            })?;
        let ready = listed.items.into_iter().find_map(|p| {
            let status = p.status?;
            let is_ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            status.pod_ip.filter(|ip| is_ready && !ip.is_empty())
        });
        // An agent kind of error: one restarting is worth waiting for (until_agent_answers).
        let ip = ready.ok_or_else(|| TransferError::Agent {
            cluster: cluster.to_owned(),
            node: if node.is_empty() {
                "any".into()
            } else {
                node.to_owned()
            },
            what: "is not ready".into(),
            code: ferry_proto::v1::ErrorCode::Unreachable,
            message: format!("no ready agent pod ({selector}) in namespace {namespace}"),
            hint: "check the agent DaemonSet: `kubectl -n <namespace> get pods -l <selector> \
                   -o wide`; a node it does not run on (taints, nodeSelector) cannot move data"
                .into(),
        })?;
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        Ok(self.tls.uri(&format!("{host}:{port}")))
    }
}

#[async_trait]
impl Agents for ClusterAgents {
    async fn agent(&self, cluster: &str, node: &str) -> Result<AgentClient> {
        if cluster == "local" || Some(cluster) == self.local_context.as_deref() {
            return match &self.local {
                // Named by the context, or as this cluster.
                LocalAgents::Fixed(fixed) => match fixed.agent(cluster, node).await {
                    Err(e) => fixed.agent("local", node).await.map_err(|_| e),
                    found => found,
                },
                LocalAgents::Pods {
                    client,
                    namespace,
                    selector,
                    port,
                    server_name,
                } => {
                    let endpoint = self
                        .pod_endpoint(cluster, node, client, namespace, selector, *port)
                        .await?;
                    let tls = match server_name {
                        Some(name) => self.tls.clone().with_server_name(name.clone()),
                        None => self.tls.clone(),
                    };
                    self.client(cluster, &endpoint, &tls)
                }
            };
        }
        if let (Some(pair), Some(pairing)) = (cluster.strip_prefix("pair/"), &self.pairing) {
            // The other side's agent relay: it admits the pair's credential and passes
            // the call to the agent of the node the metadata names.
            let (endpoint, bearer) = pairing.peer(cluster, pair).await?;
            let endpoint = self.peer_tls.uri(&endpoint);
            let unusable = |what: &str| TransferError::Cluster {
                cluster: cluster.to_owned(),
                message: format!("the {what} cannot travel as gRPC metadata"),
                hint: "check the pair (`ferry pair check`)".into(),
            };
            let mut tls = self
                .peer_tls
                .clone()
                .with_metadata(crate::relay::NODE_METADATA, node)
                .ok_or_else(|| unusable("node name"))?;
            if let Some(token) = &bearer {
                tls = tls
                    .with_bearer(token)
                    .map_err(|_| unusable("pair's credential"))?;
            }
            let key = format!("{endpoint}#{node}");
            return self.client_keyed(cluster, &key, &endpoint, &tls);
        }
        match &self.local {
            // A fixed map may name other clusters' agents too.
            LocalAgents::Fixed(fixed) => fixed.agent(cluster, node).await,
            LocalAgents::Pods { .. } => Err(TransferError::Cluster {
                cluster: cluster.to_owned(),
                message: "no agent known for this cluster".into(),
                hint: "the transfer service reaches the agents of its own cluster and of pairs' \
                       other clusters; pair the cluster and name the pair"
                    .into(),
            }),
        }
    }
}

/// Migration tokens issued by the catalog over gRPC. The export job was authorized when
/// it started; the catalog takes the internal credential as that job asking.
#[derive(Clone)]
pub struct CatalogHandover {
    endpoint: String,
    client: CatalogServiceClient<TracedChannel>,
}

impl fmt::Debug for CatalogHandover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogHandover")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl CatalogHandover {
    /// The catalog at `endpoint`, called with `tls` (carrying the internal credential as
    /// its bearer); connected on first use.
    pub fn lazy(
        endpoint: &str,
        tls: &ClientTls,
    ) -> std::result::Result<Self, tonic::transport::Error> {
        let channel = tls.endpoint(endpoint)?.connect_lazy();
        Ok(CatalogHandover {
            endpoint: endpoint.to_owned(),
            client: CatalogServiceClient::new(tls.traced(endpoint, channel)),
        })
    }
}

#[async_trait]
impl Handover for CatalogHandover {
    async fn migration_token(&self, req: &TokenRequest) -> Result<String> {
        let answer = self
            .client
            .clone()
            .issue_migration_token(IssueMigrationTokenRequest {
                profile: req.repository.profile.clone(),
                restore_point_id: req.restore_point_id.clone(),
                namespace: req.namespace.clone(),
                recipient_key: req.recipient_key.clone(),
                ttl: None,
            })
            .await;
        match answer {
            Ok(answer) => Ok(answer.into_inner().token),
            Err(status) => {
                let detail = ferry_rpc::detail(&status).unwrap_or_default();
                Err(TransferError::Handover {
                    profile: req.repository.profile.clone(),
                    code: ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Unreachable),
                    message: if detail.message.is_empty() {
                        format!("the catalog at {}: {}", self.endpoint, status.message())
                    } else {
                        detail.message
                    },
                    hint: if detail.hint.is_empty() {
                        "check the recipient key (the destination's `GetImportKey`) and the \
                         export profile"
                            .into()
                    } else {
                        detail.hint
                    },
                })
            }
        }
    }
}
