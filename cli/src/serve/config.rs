//! `ferry serve`'s flags and the settings of each service derived from them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ServeError;

/// Flags of `ferry serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to serve every service's gRPC API on. Other than loopback, it takes
    /// --tls-cert and --tls-key (or --tls-secret), or --insecure-plaintext.
    #[arg(long, env = "FERRY_LISTEN", default_value = "0.0.0.0:7443")]
    pub listen: SocketAddr,
    /// TLS of the port, and of this Ferry's calls to itself and to the other cluster's
    /// Ferry (whose certificate --tls-ca, default --tls-client-ca, must have signed).
    #[command(flatten)]
    pub tls: ferry_rpc::TlsArgs,
    /// Directory of every service's state: pairing.db, catalog.db, transfer.db,
    /// scheduler.db, secret.key, and agent-profiles/ (written by the catalog, read by
    /// the agent).
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "/var/lib/ferry")]
    pub data_dir: PathBuf,
    /// Kubeconfig file of the local cluster; default: KUBECONFIG, ~/.kube/config, or
    /// the in-cluster configuration.
    #[arg(long, env = "FERRY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context of the local cluster; default: the current context.
    #[arg(long, env = "FERRY_CONTEXT")]
    pub context: Option<String>,
    /// This cluster's name; default: the context name, or "local".
    #[arg(long, env = "FERRY_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// This cluster's API server URL as other clusters reach it; default: the one Ferry uses.
    #[arg(long, env = "FERRY_API_SERVER_URL")]
    pub api_server_url: Option<String>,
    /// This Ferry's address (host:port) as the other cluster's Ferry reaches it;
    /// default: this host's name and the listen port.
    #[arg(long, env = "FERRY_ENDPOINT")]
    pub ferry_endpoint: Option<String>,
    /// Name the in-process agent reports for this node; default: the host name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// A directory the agent may read and write under (where this cluster's volumes
    /// are); repeat for more. The agent reaches nothing else but --volume-root.
    #[arg(
        long = "allow-root",
        env = "FERRY_AGENT_ALLOW_ROOTS",
        value_delimiter = ','
    )]
    pub allow_roots: Vec<PathBuf>,
    /// Restore into hostPath volumes under this directory (`<root>/<namespace>/<claim>`),
    /// for clusters without a volume provisioner. Without it, each claim is provisioned
    /// through its (mapped) StorageClass and restored through a mover pod.
    #[arg(long, env = "FERRY_VOLUME_ROOT")]
    pub volume_root: Option<PathBuf>,
    #[command(flatten)]
    pub mover: ferry_transfer::config::MoverArgs,
    /// The kubelet's root directory on the nodes, where the agent reaches pods' CSI
    /// volumes (`/var/lib/kubelet`); `NODE=DIR` for one node of several. Repeatable.
    #[arg(
        long = "kubelet-root",
        env = "FERRY_KUBELET_ROOT",
        value_delimiter = ','
    )]
    pub kubelet_roots: Vec<String>,
    /// Namespace of profile Secrets when a request leaves it empty.
    #[arg(long, env = "FERRY_NAMESPACE", default_value = ferry_catalog::DEFAULT_NAMESPACE)]
    pub secrets_namespace: String,
    /// Profile used by jobs whose request names no repository.
    #[arg(long)]
    pub default_profile: Option<String>,
    /// Seconds agent operations and running jobs get to finish on SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Kubernetes groups whose members administer Ferry: they may migrate any
    /// namespace and all of them at once, and see every job. Anyone the cluster lets do
    /// everything everywhere (cluster-admin) is an administrator too.
    #[arg(
        long = "admin-group",
        env = "FERRY_ADMIN_GROUPS",
        value_delimiter = ',',
        default_value = "system:masters"
    )]
    pub admin_groups: Vec<String>,
    /// A plaintext health port and a Prometheus `/metrics` port.
    #[command(flatten)]
    pub probes: ferry_rpc::ProbeArgs,
    /// File holding the internal credential (the components' secret for calls to each
    /// other); default: a random one for this process. Give it to share the credential
    /// with a `ferry service controller` beside this server.
    #[arg(long, env = "FERRY_INTERNAL_TOKEN_FILE")]
    pub internal_token_file: Option<PathBuf>,
    /// Shortest interval a schedule may have, in seconds: each run is a whole
    /// migration, and a typo such as `60ms` must not flood the cluster.
    #[arg(long, default_value_t = 60)]
    pub schedule_min_interval_seconds: u64,
    /// Let clusters paired to this one write here as the users they name (pairs'
    /// credentials may impersonate): for clusters sharing one identity provider, and
    /// for schedules and CRD-driven jobs to this cluster. Without it a job writes here
    /// only with its user's own credential for this cluster (`ferry migrate
    /// --to-context`), which this cluster verifies.
    #[arg(long, env = "FERRY_TRUST_SOURCE_IDENTITIES")]
    pub trust_source_identities: bool,
}

/// Everything [`super::serve`] needs, resolved.
#[derive(Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Client of the local cluster.
    pub kube: kube::Client,
    /// What `kube` was made from: jobs write as their caller over it.
    pub kube_config: kube::Config,
    pub cluster_name: String,
    pub api_server_url: String,
    /// PEM of the CA of the local API server; empty for a public CA.
    pub api_ca_pem: String,
    pub ferry_endpoint: String,
    pub node_name: String,
    pub allowed_roots: Vec<PathBuf>,
    pub volume_root: Option<PathBuf>,
    pub mover: ferry_transfer::mover::MoverConfig,
    pub kubelet: ferry_agent::KubeletRoots,
    pub secrets_namespace: String,
    pub default_profile: Option<String>,
    pub shutdown_grace: Duration,
    /// How the port is secured and how this Ferry's own calls speak TLS.
    pub tls: ferry_rpc::TlsSetup,
    pub admin_groups: Vec<String>,
    /// The in-process scheduler's secret for its calls to the transfer service; random
    /// per process, never stored.
    pub internal_token: String,
    pub schedule_min_interval: Duration,
    pub probes: ferry_rpc::ProbeArgs,
    /// Pairs' credentials here may impersonate (`--trust-source-identities`).
    pub trust_source_identities: bool,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("context", &self.context)
            .field("cluster_name", &self.cluster_name)
            .field("api_server_url", &self.api_server_url)
            .field("ferry_endpoint", &self.ferry_endpoint)
            .field("volume_root", &self.volume_root)
            .field("transport", &self.tls.server.describe())
            .finish_non_exhaustive()
    }
}

/// The local cluster's client configuration: `--kubeconfig`/`--context`, else the usual
/// resolution of kube (KUBECONFIG, ~/.kube/config, in-cluster).
pub(crate) async fn kube_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, String> {
    ferry_kube::kube_config(kubeconfig, context)
        .await
        .map_err(|e| e.to_string())
}

/// The host of `[scheme://]host[:port][/...]`, an IPv6 address without its brackets.
fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    }
}

impl ServeArgs {
    /// Resolves the local cluster and fills in the defaults.
    pub async fn into_config(self) -> Result<ServeConfig, ServeError> {
        let kube_err = |detail: String| {
            ServeError::Config(format!(
                "loading the Kubernetes configuration of the local cluster{}: {detail}; pass \
                 --kubeconfig/--context or run in a cluster",
                self.context
                    .as_deref()
                    .map(|c| format!(" (context {c})"))
                    .unwrap_or_default()
            ))
        };
        let kc = kube_config(self.kubeconfig.as_deref(), self.context.as_deref())
            .await
            .map_err(kube_err)?;
        let current_context = || {
            match &self.kubeconfig {
                Some(p) => kube::config::Kubeconfig::read_from(p).ok(),
                None => kube::config::Kubeconfig::read().ok(),
            }
            .and_then(|k| k.current_context)
        };
        let context = self.context.clone().or_else(current_context);
        let cluster_name = self
            .cluster_name
            .clone()
            .or_else(|| context.clone())
            .unwrap_or_else(|| "local".into());
        let api_server_url = self
            .api_server_url
            .clone()
            .unwrap_or_else(|| kc.cluster_url.to_string().trim_end_matches('/').to_string());
        // The file wins when both are set, as it does inside kube itself.
        let api_ca_pem = match (&kc.root_cert_file, &kc.root_cert) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                ServeError::Config(format!("reading the API server CA {}: {e}", path.display()))
            })?,
            (None, Some(ders)) => ders
                .iter()
                .map(|d| ferry_pairing::config::der_to_pem(d))
                .collect(),
            (None, None) => String::new(),
        };
        let kube_config = kc.clone();
        let kube = kube::Client::try_from(kc).map_err(|e| kube_err(e.to_string()))?;
        // A --tls-secret lives in the local cluster.
        let tls = self
            .tls
            .load(Some(&kube))
            .await
            .map_err(|e| ServeError::Config(e.to_string()))?;
        tls.server.check(self.listen)?;
        let host = || {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        };
        let ferry_endpoint = self
            .ferry_endpoint
            .clone()
            .unwrap_or_else(|| format!("{}:{}", host(), self.listen.port()));
        let node_name = self.node_name.clone().unwrap_or_else(host);
        let mut allowed_roots = self.allow_roots;
        if let Some(root) = &self.volume_root
            && !allowed_roots.contains(root)
        {
            allowed_roots.push(root.clone());
        }
        let mover = self.mover.config();
        Ok(ServeConfig {
            listen: self.listen,
            data_dir: self.data_dir,
            kubeconfig: self.kubeconfig,
            context,
            kube,
            kube_config,
            cluster_name,
            api_server_url,
            api_ca_pem,
            ferry_endpoint,
            node_name,
            allowed_roots,
            volume_root: self.volume_root,
            mover,
            kubelet: ferry_agent::KubeletRoots::parse(&self.kubelet_roots),
            secrets_namespace: self.secrets_namespace,
            default_profile: self.default_profile,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            admin_groups: self.admin_groups,
            internal_token: match &self.internal_token_file {
                Some(path) => ferry_authz::read_internal_token(path)
                    .map_err(|e| ServeError::Config(e.to_string()))?,
                None => internal_token(),
            },
            tls,
            schedule_min_interval: Duration::from_secs(self.schedule_min_interval_seconds.max(1)),
            probes: self.probes,
            trust_source_identities: self.trust_source_identities,
        })
    }
}

impl ServeConfig {
    /// Where the catalog writes profiles for the in-process agent.
    pub fn agent_profiles_dir(&self) -> PathBuf {
        self.data_dir.join("agent-profiles")
    }

    /// Calls to the other cluster's Ferry speak TLS as this one's own calls do.
    pub fn pairing_config(&self) -> ferry_pairing::PairingConfig {
        let mut c = ferry_pairing::PairingConfig::new(
            self.cluster_name.clone(),
            self.kube.clone(),
            self.api_server_url.clone(),
            self.api_ca_pem.clone(),
            self.ferry_endpoint.clone(),
            self.data_dir.clone(),
        );
        c.peer_tls = self.tls.client.clone();
        c.access = Some(self.authorizer());
        c.internal_token = Some(self.internal_token.clone());
        c.trust_source_identities = self.trust_source_identities;
        c
    }

    /// Reviews callers with this cluster.
    fn authorizer(&self) -> ferry_authz::Authorizer {
        ferry_authz::Authorizer::new(self.kube.clone(), &self.cluster_name)
            .with_admin_groups(self.admin_groups.clone())
    }

    /// How this process's calls to its own server speak TLS: they go to loopback,
    /// so they expect the certificate to hold the --ferry-endpoint host, the name
    /// every other party reaches this Ferry by.
    pub fn self_tls(&self) -> ferry_rpc::ClientTls {
        let client = self.tls.client.clone();
        if self.tls.server.is_tls() {
            client.with_server_name(endpoint_host(&self.ferry_endpoint))
        } else {
            client
        }
    }

    /// [`ServeConfig::self_tls`] bearing this process's own secret: how one component
    /// calls another's internal API on this server.
    pub fn internal_tls(&self) -> Result<ferry_rpc::ClientTls, ferry_rpc::tls::BadToken> {
        self.self_tls().with_bearer(&self.internal_token)
    }

    pub fn catalog_config(&self) -> ferry_catalog::CatalogConfig {
        let mut c = ferry_catalog::CatalogConfig::new(
            self.kube.clone(),
            self.cluster_name.clone(),
            self.data_dir.clone(),
        );
        c.secrets_namespace = self.secrets_namespace.clone();
        c.agent_profiles_dir = Some(self.agent_profiles_dir());
        c.access = Some(self.authorizer());
        c.internal_token = Some(self.internal_token.clone());
        c
    }

    pub fn agent_config(&self) -> ferry_agent::AgentConfig {
        ferry_agent::AgentConfig {
            node_name: self.node_name.clone(),
            profiles: ferry_agent::ProfileSource::Dir(self.agent_profiles_dir()),
            allowed_roots: self.allowed_roots.clone(),
            max_concurrent_operations: 2,
            shutdown_grace: self.shutdown_grace,
            volume_root: self.volume_root.clone(),
            kubelet: self.kubelet.clone(),
            // Only this process's own components, on its internal loopback port.
            access: ferry_agent::AgentAccess::Internal(self.internal_token.clone()),
        }
    }

    pub fn transfer_config(&self) -> ferry_transfer::TransferConfig {
        let mut c = ferry_transfer::TransferConfig::new(&self.data_dir, PathBuf::new());
        c.volume_root = self.volume_root.clone();
        c.mover = self.mover.clone();
        c.default_profile = self.default_profile.clone();
        c.access = Some(ferry_transfer::AccessPolicy {
            cluster_name: self.cluster_name.clone(),
            admin_groups: self.admin_groups.clone(),
            internal_token: Some(self.internal_token.clone()),
        });
        c
    }

    /// State in `<data-dir>/scheduler.db`; the service's defaults otherwise.
    /// Callers reviewed with this cluster: schedules record their creators.
    pub fn scheduler_config(&self) -> ferry_scheduler::SchedulerConfig {
        let mut c = ferry_scheduler::SchedulerConfig::new(&self.data_dir);
        c.access = Some(self.authorizer());
        c.internal = Some(self.internal_token.clone());
        c.min_interval = self.schedule_min_interval;
        c
    }
}

/// 256 random bits, hex.
fn internal_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_endpoint() {
        assert_eq!(endpoint_host("ferry-a.example:7443"), "ferry-a.example");
        assert_eq!(endpoint_host("https://10.0.0.5:7443/"), "10.0.0.5");
        assert_eq!(endpoint_host("[::1]:7443"), "::1");
        assert_eq!(endpoint_host("ferry-a"), "ferry-a");
    }
}
