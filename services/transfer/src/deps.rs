//! What a job needs from the rest of Ferry, behind small traits so the service runs
//! with real parts in tests and is wired by `ferry serve` later (clusters through the
//! pairing service, agents through their DaemonSet's endpoints, repositories through
//! the catalog's profiles, migration tokens through the catalog's keys).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ferry_kube::Cluster;
use ferry_proto::v1::agent_service_client::AgentServiceClient;
use ferry_proto::v1::{ClusterRef, RepositoryRef, cluster_ref};
use ferry_repo::Repository;

use crate::error::{Result, TransferError};

/// The name a cluster reference is known by in messages, agent maps and reports:
/// the context name, `pair/<id>`, or `local`.
pub fn cluster_key(r: Option<&ClusterRef>) -> String {
    match r.and_then(|r| r.target.as_ref()) {
        Some(cluster_ref::Target::Context(c)) => c.clone(),
        Some(cluster_ref::Target::PairId(p)) => format!("pair/{p}"),
        Some(cluster_ref::Target::Local(_)) | None => "local".into(),
    }
}

/// Kubernetes clients by cluster reference.
#[async_trait]
pub trait Clusters: Send + Sync + fmt::Debug {
    /// A client for the cluster `r` names; absent means this cluster. The returned
    /// [`Cluster`]'s name is [`cluster_key`] of `r`.
    async fn cluster(&self, r: Option<&ClusterRef>) -> Result<Cluster>;
}

/// A client of one agent; its calls carry the job's trace context, so an agent's
/// spans join the job's trace.
pub type AgentClient = AgentServiceClient<ferry_rpc::TracedChannel>;

/// Clients for agents, the per-node data movers.
#[async_trait]
pub trait Agents: Send + Sync + fmt::Debug {
    /// A client for the agent on `node` of `cluster` (a [`cluster_key`]). `node` is
    /// empty when the volume is not pinned to a node.
    async fn agent(&self, cluster: &str, node: &str) -> Result<AgentClient>;
}

/// What a profile limits the use of its repository to.
#[derive(Debug, Clone, Default)]
pub struct ProfileLimits {
    /// What may be read (an import profile made from a migration token: what it named).
    pub reads_only: ferry_profile::ReadScope,
    /// An export profile bound to one namespace: the only one written through it.
    pub namespace: Option<String>,
}

impl ProfileLimits {
    /// Fails unless restore points of `namespace` may be written through profile
    /// `profile`: checked before any of its data moves.
    pub fn check_writes(&self, profile: &str, namespace: &str) -> Result<()> {
        match &self.namespace {
            Some(bound) if bound != namespace => {
                Err(crate::error::TransferError::InvalidArgument {
                    field: "repository",
                    message: format!(
                        "profile {profile:?} is bound to namespace {bound}, and its repository \
                     holds that namespace alone; export {namespace} through a profile of its \
                     own (ferry profile create NAME --kind export -n {namespace} --s3 \
                     URL/PREFIX ...)"
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Repositories by profile.
#[async_trait]
pub trait Repositories: Send + Sync + fmt::Debug {
    /// Opens the repository `r` names, for reading restore points and writing one, with
    /// what of it the profile may read (an import profile made from a migration token
    /// reads only what the token named).
    async fn open(&self, r: &RepositoryRef) -> Result<(Repository, ProfileLimits)>;

    /// The reference the agents of `cluster` get for the same repository: the same
    /// profile name by default (each cluster's agents hold their own profile of that
    /// name: write on the source, read-only on the destination).
    fn for_agents(&self, r: &RepositoryRef, _cluster: &str) -> RepositoryRef {
        r.clone()
    }
}

/// What an export's migration token is made from: where the restore point is and who
/// may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The export profile the restore point was written through, its `repository_id`
    /// set to the repository's id.
    pub repository: RepositoryRef,
    /// The application's namespace: the restore point is `restorepoints/<namespace>/<id>`.
    pub namespace: String,
    pub restore_point_id: String,
    /// The destination's public import key (from its catalog), as the request gave it:
    /// the token's repository key is wrapped for it.
    pub recipient_key: String,
}

/// Issues migration tokens, the hand-over from an export to an import profile on the
/// destination (`ferry serve` wires it to the catalog).
#[async_trait]
pub trait Handover: Send + Sync + fmt::Debug {
    /// The token for `req`; it carries no credentials of the export profile.
    async fn migration_token(&self, req: &TokenRequest) -> Result<String>;
}

/// Clusters from a fixed map of name -> client (kubeconfig contexts, or the test
/// environment's clusters). A pair id resolves to the entry named `pair/<id>`.
#[derive(Clone, Default)]
pub struct StaticClusters {
    clients: HashMap<String, kube::Client>,
    configs: HashMap<String, kube::Config>,
}

impl fmt::Debug for StaticClusters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.clients.keys().collect();
        names.sort();
        f.debug_struct("StaticClusters")
            .field("clusters", &names)
            .finish()
    }
}

impl StaticClusters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a cluster under `name` (a context name, `pair/<id>` or `local`).
    pub fn with(mut self, name: impl Into<String>, client: kube::Client) -> Self {
        self.clients.insert(name.into(), client);
        self
    }

    /// Adds a cluster under `name` reached through `config`, which jobs that write as
    /// their caller need (a client alone cannot be made to act as a user).
    pub fn with_config(
        mut self,
        name: impl Into<String>,
        config: kube::Config,
    ) -> std::result::Result<Self, kube::Error> {
        let name = name.into();
        self.clients
            .insert(name.clone(), kube::Client::try_from(config.clone())?);
        self.configs.insert(name, config);
        Ok(self)
    }
}

#[async_trait]
impl Clusters for StaticClusters {
    async fn cluster(&self, r: Option<&ClusterRef>) -> Result<Cluster> {
        let key = cluster_key(r);
        let client =
            self.clients
                .get(&key)
                .cloned()
                .ok_or_else(|| TransferError::UnknownCluster {
                    cluster: key.clone(),
                    message: "not known to this transfer service".into(),
                    hint: "name a kubeconfig context the service was started with, or pair the \
                       cluster first"
                        .into(),
                })?;
        let mut cluster = Cluster::new(key.clone(), client);
        cluster.config = self.configs.get(&key).cloned();
        Ok(cluster)
    }
}

/// Agents from a fixed map: cluster -> endpoint (one agent per cluster, whatever the
/// node), optionally `cluster/node` -> endpoint for a node's own agent.
#[derive(Debug, Clone, Default)]
pub struct StaticAgents {
    endpoints: HashMap<String, String>,
    tls: ferry_rpc::ClientTls,
}

impl StaticAgents {
    pub fn new() -> Self {
        Self::default()
    }

    /// Agents at `https://` endpoints (or bare `host:port` ones, once `tls` has a CA or
    /// a certificate) are verified with `tls`, which also holds the certificate
    /// presented to agents requiring mutual TLS.
    pub fn with_tls(mut self, tls: ferry_rpc::ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// The agent for every node of `cluster`, at `endpoint` (`http://host:port`).
    pub fn with(mut self, cluster: impl Into<String>, endpoint: impl Into<String>) -> Self {
        self.endpoints.insert(cluster.into(), endpoint.into());
        self
    }

    /// The agent of one node.
    pub fn with_node(mut self, cluster: &str, node: &str, endpoint: impl Into<String>) -> Self {
        self.endpoints
            .insert(format!("{cluster}/{node}"), endpoint.into());
        self
    }
}

#[async_trait]
impl Agents for StaticAgents {
    async fn agent(&self, cluster: &str, node: &str) -> Result<AgentClient> {
        let endpoint = self
            .endpoints
            .get(&format!("{cluster}/{node}"))
            .or_else(|| self.endpoints.get(cluster))
            .ok_or_else(|| TransferError::Cluster {
                cluster: cluster.to_owned(),
                message: format!(
                    "no agent known for node {}",
                    if node.is_empty() { "(any)" } else { node }
                ),
                hint: "deploy the agent DaemonSet there and give its endpoint to the transfer \
                       service (--agent cluster=http://host:port)"
                    .into(),
            })?;
        let unreachable = |e: tonic::transport::Error| TransferError::Cluster {
            cluster: cluster.to_owned(),
            message: format!("agent at {endpoint} is unreachable: {e}"),
            hint: "check that the agent runs and its port is reachable from the transfer service"
                .into(),
        };
        // Lazy: the connection is made on the first call, whose error names the volume;
        // a TLS mismatch then says what did not match.
        let channel = self
            .tls
            .endpoint(endpoint)
            .map_err(unreachable)?
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect_lazy();
        Ok(AgentServiceClient::new(self.tls.traced(endpoint, channel)))
    }
}

/// Repositories from agent-style profiles (`<dir>/<name>.yaml`, or in memory).
#[derive(Debug, Clone)]
pub struct ProfileRepositories {
    profiles: ferry_profile::ProfileSource,
}

impl ProfileRepositories {
    pub fn new(profiles: ferry_profile::ProfileSource) -> Self {
        ProfileRepositories { profiles }
    }

    /// Profiles read from `<dir>/<name>.yaml` on every job, like an agent reads them.
    pub fn dir(dir: impl Into<std::path::PathBuf>) -> Self {
        Self::new(ferry_profile::ProfileSource::Dir(dir.into()))
    }

    /// Profiles given in memory.
    pub fn fixed(profiles: impl IntoIterator<Item = ferry_profile::Profile>) -> Self {
        let map: HashMap<String, ferry_profile::Profile> =
            profiles.into_iter().map(|p| (p.name.clone(), p)).collect();
        Self::new(ferry_profile::ProfileSource::Static(Arc::new(map)))
    }
}

#[async_trait]
impl Repositories for ProfileRepositories {
    async fn open(&self, r: &RepositoryRef) -> Result<(Repository, ProfileLimits)> {
        let unusable = |e: ferry_profile::ProfileError| TransferError::Cluster {
            cluster: "transfer service".into(),
            message: format!("repository profile {:?}: {e}", r.profile),
            hint: "check the profile's file, credentials and key".into(),
        };
        let profile = self.profiles.get(&r.profile).await.map_err(unusable)?;
        let repo = profile.open(&r.repository_id).await.map_err(unusable)?;
        let limits = ProfileLimits {
            reads_only: profile.reads_only.clone(),
            namespace: profile.namespace.clone(),
        };
        Ok((repo, limits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_profile_writes_its_namespace_only() {
        let open = ProfileLimits::default();
        assert!(open.check_writes("out", "shop").is_ok());
        let bound = ProfileLimits {
            namespace: Some("shop".into()),
            ..ProfileLimits::default()
        };
        assert!(bound.check_writes("out", "shop").is_ok());
        let err = bound
            .check_writes("out", "books")
            .expect_err("another namespace");
        let text = err.to_string();
        assert!(
            text.contains("bound to namespace shop") && text.contains("-n books"),
            "{text}"
        );
    }
}
