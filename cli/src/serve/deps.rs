//! The transfer service's collaborators inside `ferry serve`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use ferry_kube::Cluster;
use ferry_proto::v1::agent_service_client::AgentServiceClient;
use ferry_proto::v1::{ClusterRef, PairRole, RepositoryRef, cluster_ref};
use ferry_repo::Repository;
use ferry_rpc::ClientTls;
use ferry_transfer::{AgentClient, Agents, Clusters, Repositories, TransferError, cluster_key};

type Result<T> = std::result::Result<T, TransferError>;

/// The local cluster, pairs' destinations through the pairing service, and other
/// kubeconfig contexts on demand.
#[derive(Clone)]
pub struct ServeClusters {
    local: kube::Client,
    local_context: Option<String>,
    kubeconfig: Option<PathBuf>,
    pairs: ferry_pairing::Pairs,
}

impl fmt::Debug for ServeClusters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeClusters")
            .field("local_context", &self.local_context)
            .finish_non_exhaustive()
    }
}

impl ServeClusters {
    pub fn new(
        local: kube::Client,
        local_context: Option<String>,
        kubeconfig: Option<PathBuf>,
        pairs: ferry_pairing::Pairs,
    ) -> Self {
        ServeClusters {
            local,
            local_context,
            kubeconfig,
            pairs,
        }
    }
}

#[async_trait]
impl Clusters for ServeClusters {
    async fn cluster(&self, r: Option<&ClusterRef>) -> Result<Cluster> {
        let key = cluster_key(r);
        match r.and_then(|r| r.target.as_ref()) {
            None | Some(cluster_ref::Target::Local(_)) => Ok(Cluster::new(key, self.local.clone())),
            Some(cluster_ref::Target::Context(c)) if Some(c) == self.local_context.as_ref() => {
                Ok(Cluster::new(key, self.local.clone()))
            }
            Some(cluster_ref::Target::Context(c)) => {
                let unusable = |detail: String| TransferError::Cluster {
                    cluster: key.clone(),
                    message: format!("context {c}: {detail}"),
                    hint: "name a context of the kubeconfig `ferry serve` was started with, or \
                           pair the cluster and name the pair"
                        .into(),
                };
                let config =
                    super::config::kube_config(self.kubeconfig.as_deref(), Some(c.as_str()))
                        .await
                        .map_err(unusable)?;
                let client = kube::Client::try_from(config).map_err(|e| unusable(e.to_string()))?;
                Ok(Cluster::new(key, client))
            }
            Some(cluster_ref::Target::PairId(p)) => {
                let client = self.pairs.destination_client(p).await.map_err(|e| {
                    let message = e.to_string();
                    let hint = "list pairs with `grpcurl ... \
                                        ferry.v1.PairingService/ListPairs` and check the pair"
                        .to_string();
                    let cluster = key.clone();
                    // No such pair is the caller's mistake, not an outage.
                    if matches!(e, ferry_pairing::PairingError::PairNotFound { .. }) {
                        TransferError::UnknownCluster {
                            cluster,
                            message,
                            hint,
                        }
                    } else {
                        TransferError::Cluster {
                            cluster,
                            message,
                            hint,
                        }
                    }
                })?;
                Ok(Cluster::new(key, client))
            }
        }
    }
}

/// This process's own agent for the local cluster (any node); for `pair/<id>`, the
/// agent served by the Ferry on the pair's other side. Each over TLS when its endpoint
/// is `https://` (a pair's bare `host:port` is, while TLS is configured).
#[derive(Clone)]
pub struct ServeAgents {
    self_endpoint: String,
    local_context: Option<String>,
    pairs: ferry_pairing::Pairs,
    self_tls: ClientTls,
    peer_tls: ClientTls,
}

impl fmt::Debug for ServeAgents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeAgents")
            .field("self_endpoint", &self.self_endpoint)
            .finish_non_exhaustive()
    }
}

impl ServeAgents {
    pub fn new(
        self_endpoint: String,
        local_context: Option<String>,
        pairs: ferry_pairing::Pairs,
    ) -> Self {
        ServeAgents {
            self_endpoint,
            local_context,
            pairs,
            self_tls: ClientTls::new(),
            peer_tls: ClientTls::new(),
        }
    }

    /// TLS of the calls to this process's own agent and to the agents of pairs' other
    /// sides.
    pub fn with_tls(mut self, self_tls: ClientTls, peer_tls: ClientTls) -> Self {
        self.self_tls = self_tls;
        self.peer_tls = peer_tls;
        self
    }

    /// The Ferry endpoint of the cluster on the other side of `pair` from this one.
    async fn peer_endpoint(&self, cluster: &str, pair: &str) -> Result<String> {
        let p = self
            .pairs
            .get(pair)
            .await
            .map_err(|e| TransferError::Cluster {
                cluster: cluster.to_owned(),
                message: e.to_string(),
                hint: "check the pair id".into(),
            })?;
        let other = if p.role == PairRole::Destination as i32 {
            p.source
        } else {
            p.destination
        };
        let endpoint = other.map(|c| c.ferry_endpoint).unwrap_or_default();
        if endpoint.trim().is_empty() {
            return Err(TransferError::Cluster {
                cluster: cluster.to_owned(),
                message: format!("pair {pair} records no Ferry endpoint for the other cluster"),
                hint: "pair the clusters again with --ferry-endpoint set on the other side".into(),
            });
        }
        Ok(self.peer_tls.uri(&endpoint))
    }
}

#[async_trait]
impl Agents for ServeAgents {
    async fn agent(&self, cluster: &str, _node: &str) -> Result<AgentClient> {
        let (endpoint, tls) = if cluster == "local"
            || Some(cluster) == self.local_context.as_deref()
        {
            (self.self_endpoint.clone(), &self.self_tls)
        } else if let Some(pair) = cluster.strip_prefix("pair/") {
            (self.peer_endpoint(cluster, pair).await?, &self.peer_tls)
        } else {
            return Err(TransferError::Cluster {
                cluster: cluster.to_owned(),
                message: "no agent known for this cluster".into(),
                hint: "`ferry serve` reaches agents of the local cluster and of pairs; pair the \
                       cluster and name the pair instead of a context"
                    .into(),
            });
        };
        let channel = tls
            .endpoint(&endpoint)
            .map_err(|e| TransferError::Cluster {
                cluster: cluster.to_owned(),
                message: format!("agent at {endpoint} is not an address: {e}"),
                hint: "check the Ferry endpoint recorded for the pair".into(),
            })?
            .connect_timeout(Duration::from_secs(10))
            // Lazy: the connection is made on the first call, whose error names the volume.
            .connect_lazy();
        Ok(AgentServiceClient::new(tls.traced(&endpoint, channel)))
    }
}

/// Repositories opened through the catalog's profiles.
#[derive(Clone)]
pub struct CatalogRepositories {
    catalog: ferry_catalog::CatalogService,
}

impl fmt::Debug for CatalogRepositories {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogRepositories")
            .finish_non_exhaustive()
    }
}

impl CatalogRepositories {
    pub fn new(catalog: ferry_catalog::CatalogService) -> Self {
        CatalogRepositories { catalog }
    }
}

#[async_trait]
impl Repositories for CatalogRepositories {
    async fn open(&self, r: &RepositoryRef) -> Result<Repository> {
        let repo = self
            .catalog
            .open_repository(&r.profile)
            .await
            .map_err(|e| TransferError::Cluster {
                cluster: "catalog".into(),
                message: format!("repository profile {:?}: {e}", r.profile),
                hint: "check the profile with `grpcurl ... ferry.v1.CatalogService/GetProfile`, \
                       its Secrets and key"
                    .into(),
            })?;
        let found = repo.config().id.to_string();
        if !r.repository_id.is_empty() && found != r.repository_id {
            return Err(TransferError::Cluster {
                cluster: "catalog".into(),
                message: format!(
                    "repository profile {:?} now points at repository {found}, not {}",
                    r.profile, r.repository_id
                ),
                hint: "name the profile of the repository the request means, or drop its \
                       repository id"
                    .into(),
            });
        }
        Ok(repo)
    }
}
