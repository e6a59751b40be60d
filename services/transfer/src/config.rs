//! Flags of `ferry-transfer`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::deps::{Handover, ProfileRepositories, Repositories, StaticAgents};
use crate::remote::{CatalogHandover, ClusterAgents, LocalAgents, PairingClusters, PairingLink};
use crate::runtime::{Deps, TransferConfig};

/// Command-line flags of `ferry-transfer`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ferry-transfer",
    version,
    about = "Ferry's transfer service: migration, export and restore jobs (gRPC)"
)]
pub struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "FERRY_TRANSFER_LISTEN", default_value = "0.0.0.0:7444")]
    pub listen: SocketAddr,
    /// TLS of this server and of its calls to agents (an `https://` --agent endpoint
    /// is verified with --tls-ca or --tls-client-ca and presented --tls-cert for mutual
    /// TLS). Other than loopback, it takes --tls-cert and --tls-key, or
    /// --insecure-plaintext.
    #[command(flatten)]
    pub tls: ferry_rpc::TlsArgs,
    #[command(flatten)]
    pub probes: ferry_rpc::ProbeArgs,
    /// Directory holding transfer.db.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "/var/lib/ferry")]
    pub data_dir: PathBuf,
    /// Kubeconfig whose contexts name the clusters; default: the usual kubeconfig.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// An agent: `<cluster>=<endpoint>` or `<cluster>/<node>=<endpoint>`; repeat.
    #[arg(long = "agent", value_parser = parse_agent)]
    pub agents: Vec<(String, String)>,
    /// Directory of repository profiles (`<name>.yaml`, the agents' format).
    #[arg(
        long,
        env = "FERRY_PROFILES_DIR",
        default_value = "/etc/ferry/profiles"
    )]
    pub profiles_dir: PathBuf,
    /// Profile used when a request names no repository.
    #[arg(long)]
    pub default_profile: Option<String>,
    /// Restore into hostPath volumes under this directory on destination nodes, when the
    /// destination's agent names none of its own (GetInfo's volume_root): for clusters
    /// without a volume provisioner. Without it, each claim is provisioned through its
    /// (mapped) StorageClass and its data restored through a mover pod.
    #[arg(long)]
    pub volume_root: Option<PathBuf>,
    #[command(flatten)]
    pub mover: MoverArgs,
    /// Jobs running at once; more wait queued.
    #[arg(long, default_value_t = 4)]
    pub max_concurrent_jobs: usize,
    /// Seconds running jobs get to finish on SIGTERM; the rest resume on the next start.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Name of the cluster this service runs in, as refusals name it.
    #[arg(long, env = "FERRY_CLUSTER_NAME", default_value = "local")]
    pub cluster_name: String,
    #[command(flatten)]
    pub access: ferry_authz::AccessArgs,
    /// The pairing service, which resolves pairs to their destination's API and Ferry
    /// (https:// when it serves TLS). Without it, only kubeconfig contexts name clusters.
    #[arg(long, env = "FERRY_PAIRING_ENDPOINT")]
    pub pairing_endpoint: Option<String>,
    /// The catalog, which resolves repository profiles and issues export jobs'
    /// migration tokens. Without it, profiles come from --profiles-dir and exports end
    /// without a token.
    #[arg(long, env = "FERRY_CATALOG_ENDPOINT")]
    pub catalog_endpoint: Option<String>,
    /// Label selector of the agent DaemonSet's pods: the agent of a volume's node is
    /// found among them and called at its pod IP. Instead of --agent.
    #[arg(long, env = "FERRY_AGENT_SELECTOR", conflicts_with = "agents")]
    pub agent_selector: Option<String>,
    /// Namespace of the agent pods; default: this pod's namespace (POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ferry-system")]
    pub agent_namespace: String,
    /// Port the agent pods serve on.
    #[arg(long, env = "FERRY_AGENT_PORT", default_value_t = 7448)]
    pub agent_port: u16,
    /// Name the agents' TLS certificate is checked against (they are called at pod IPs,
    /// which no certificate names).
    #[arg(long, env = "FERRY_AGENT_SERVER_NAME")]
    pub agent_server_name: Option<String>,
}

/// How mover pods are made: the pods that hold a claim mounted while a node's agent
/// reads or writes its volume.
#[derive(Debug, Clone, clap::Args)]
pub struct MoverArgs {
    /// Image of mover pods; the chart sets Ferry's own. Without it, only hostPath and
    /// local volumes mounted by no pod can be moved.
    #[arg(long, env = "FERRY_MOVER_IMAGE")]
    pub mover_image: Option<String>,
    /// Command of mover pods, words separated by spaces; it only has to keep running.
    #[arg(
        long,
        env = "FERRY_MOVER_COMMAND",
        default_value = "/usr/bin/ferry hold"
    )]
    pub mover_command: String,
    /// Seconds a mover pod may take to start (its claim provisioned, its volume attached).
    #[arg(long, default_value_t = 300)]
    pub mover_start_timeout_seconds: u64,
    /// Back up a CSI volume from a VolumeSnapshot when its driver has a
    /// VolumeSnapshotClass (crash-consistent, one point in time); false: from the live
    /// volume, through a pod that mounts it.
    #[arg(long, env = "FERRY_CSI_SNAPSHOTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub csi_snapshots: bool,
}

impl MoverArgs {
    pub fn config(&self) -> crate::mover::MoverConfig {
        crate::mover::MoverConfig {
            image: self.mover_image.clone().filter(|i| !i.is_empty()),
            command: self
                .mover_command
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            start_timeout: std::time::Duration::from_secs(self.mover_start_timeout_seconds),
            csi_snapshots: self.csi_snapshots,
            ..Default::default()
        }
    }
}

fn parse_agent(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: want <cluster>=<endpoint>"))?;
    Ok((k.to_owned(), v.to_owned()))
}

impl Args {
    /// The service's settings and collaborators. Calls to agents, the pairing service
    /// and the catalog speak TLS as `tls` says and bear the internal credential; calls to
    /// a pair's other Ferry speak TLS as `tls` says.
    pub async fn build(
        &self,
        tls: &ferry_rpc::ClientTls,
    ) -> anyhow::Result<(TransferConfig, Deps)> {
        self.access.check(self.listen)?;
        let mut config = TransferConfig::new(&self.data_dir, PathBuf::new());
        config.volume_root = self.volume_root.clone();
        config.mover = self.mover.config();
        config.default_profile = self.default_profile.clone();
        config.max_concurrent_jobs = self.max_concurrent_jobs;
        let internal_token = self.access.internal_token()?;
        if self.access.insecure_no_access_checks {
            tracing::warn!(
                "--insecure-no-access-checks: every caller may migrate any namespace; never \
                 expose this service"
            );
        } else {
            config.access = Some(crate::access::AccessPolicy {
                cluster_name: self.cluster_name.clone(),
                admin_groups: self.access.admin_groups.clone(),
                internal_token: internal_token.clone(),
            });
        }
        let internal = match &internal_token {
            Some(token) => tls.clone().with_bearer(token)?,
            None => tls.clone(),
        };
        let kube_config = ferry_kube::kube_config(self.kubeconfig.as_deref(), None)
            .await
            .map_err(|e| anyhow::anyhow!("the local cluster's Kubernetes configuration: {e}"))?;
        let local = kube::Client::try_from(kube_config.clone())?;
        let local_context = match &self.kubeconfig {
            Some(path) => kube::config::Kubeconfig::read_from(path)
                .ok()
                .and_then(|k| k.current_context),
            None => kube::config::Kubeconfig::read()
                .ok()
                .and_then(|k| k.current_context),
        };
        let pairing = match &self.pairing_endpoint {
            Some(endpoint) => Some(
                PairingLink::lazy(endpoint, &internal)
                    .map_err(|e| anyhow::anyhow!("--pairing-endpoint {endpoint:?}: {e}"))?,
            ),
            None => None,
        };
        let local_agents = match &self.agent_selector {
            Some(selector) => LocalAgents::Pods {
                client: local.clone(),
                namespace: self.agent_namespace.clone(),
                selector: selector.clone(),
                port: self.agent_port,
                server_name: self.agent_server_name.clone(),
            },
            None => {
                let mut agents = StaticAgents::new().with_tls(internal.clone());
                for (key, endpoint) in &self.agents {
                    agents = match key.split_once('/') {
                        Some((cluster, node)) => agents.with_node(cluster, node, endpoint),
                        None => agents.with(key, endpoint),
                    };
                }
                LocalAgents::Fixed(agents)
            }
        };
        let mut agents = ClusterAgents::new(local_agents, local_context.clone(), internal.clone());
        if let Some(pairing) = &pairing {
            agents = agents.with_pairs(pairing.clone(), tls.clone());
        }
        let (repositories, handover): (Arc<dyn Repositories>, Option<Arc<dyn Handover>>) =
            match &self.catalog_endpoint {
                Some(endpoint) => {
                    let bad = |e: tonic::transport::Error| {
                        anyhow::anyhow!("--catalog-endpoint {endpoint:?}: {e}")
                    };
                    let profiles =
                        ferry_profile::CatalogProfiles::lazy(endpoint, &internal).map_err(bad)?;
                    (
                        Arc::new(ProfileRepositories::new(
                            ferry_profile::ProfileSource::Catalog(Box::new(profiles)),
                        )),
                        Some(Arc::new(
                            CatalogHandover::lazy(endpoint, &internal).map_err(bad)?,
                        )),
                    )
                }
                // The standalone service without a catalog has no keys to wrap tokens with.
                None => (Arc::new(ProfileRepositories::dir(&self.profiles_dir)), None),
            };
        let deps = Deps {
            clusters: Arc::new(
                PairingClusters::new(local, local_context, self.kubeconfig.clone(), pairing)
                    .with_local_config(kube_config)
                    .with_local_name(&self.cluster_name),
            ),
            agents: Arc::new(agents),
            repositories,
            handover,
        };
        Ok((config, deps))
    }

    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}
