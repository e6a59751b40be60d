//! Flags of `ferry-transfer`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::deps::{ProfileRepositories, StaticAgents, StaticClusters};
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
    /// Directory on destination nodes under which restored volumes are created, when the
    /// destination's agent names none of its own (GetInfo's volume_root).
    #[arg(long, default_value = "/var/lib/ferry/volumes")]
    pub volume_root: PathBuf,
    /// Jobs running at once; more wait queued.
    #[arg(long, default_value_t = 4)]
    pub max_concurrent_jobs: usize,
    /// Seconds running jobs get to finish on SIGTERM; the rest resume on the next start.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Name of the cluster this service runs in (the kubeconfig's current context), as
    /// refusals name it.
    #[arg(long, env = "FERRY_CLUSTER_NAME", default_value = "local")]
    pub cluster_name: String,
    /// Kubernetes groups whose members administer Ferry (all namespaces, every job).
    #[arg(
        long = "admin-group",
        env = "FERRY_ADMIN_GROUPS",
        value_delimiter = ',',
        default_value = "system:masters"
    )]
    pub admin_groups: Vec<String>,
    /// Serve every caller without checking who they are or what they may do. Only for a
    /// service no one else can reach.
    #[arg(long)]
    pub insecure_no_access_checks: bool,
    /// File holding the secret the scheduler's calls bear (the same file, from one
    /// Kubernetes Secret, mounted into both); its calls are trusted to act for the users
    /// they name. Without it, only callers with their own Kubernetes token are served.
    #[arg(long, env = "FERRY_INTERNAL_TOKEN_FILE", value_name = "FILE")]
    pub internal_token_file: Option<PathBuf>,
}

fn parse_agent(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: want <cluster>=<endpoint>"))?;
    Ok((k.to_owned(), v.to_owned()))
}

impl Args {
    /// The service's settings and collaborators; agents are called with `agent_tls`.
    pub async fn build(
        &self,
        agent_tls: &ferry_rpc::ClientTls,
    ) -> anyhow::Result<(TransferConfig, Deps)> {
        let mut config = TransferConfig::new(&self.data_dir, &self.volume_root);
        config.default_profile = self.default_profile.clone();
        config.max_concurrent_jobs = self.max_concurrent_jobs;
        if self.insecure_no_access_checks {
            tracing::warn!(
                "--insecure-no-access-checks: every caller may migrate any namespace; never \
                 expose this service"
            );
        } else {
            let internal_token = match &self.internal_token_file {
                Some(path) => Some(ferry_authz::read_internal_token(path)?),
                None => None,
            };
            config.access = Some(crate::access::AccessPolicy {
                cluster_name: self.cluster_name.clone(),
                admin_groups: self.admin_groups.clone(),
                internal_token,
            });
        }
        let clusters = StaticClusters::from_kubeconfig(self.kubeconfig.as_deref()).await?;
        let mut agents = StaticAgents::new().with_tls(agent_tls.clone());
        for (key, endpoint) in &self.agents {
            agents = match key.split_once('/') {
                Some((cluster, node)) => agents.with_node(cluster, node, endpoint),
                None => agents.with(key, endpoint),
            };
        }
        let deps = Deps {
            clusters: Arc::new(clusters),
            agents: Arc::new(agents),
            repositories: Arc::new(ProfileRepositories::dir(&self.profiles_dir)),
            // The standalone service has no catalog to wrap repository keys with.
            handover: None,
        };
        Ok((config, deps))
    }

    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}
