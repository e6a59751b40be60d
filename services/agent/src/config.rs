//! The agent's settings, from flags and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferry_profile::ProfileSource;

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Kubernetes node name (or host name), reported by GetInfo and stamped on snapshots.
    pub node_name: String,
    pub profiles: ProfileSource,
    /// Directories requests may read and write under (besides `volume_root`); none and no
    /// volume root allow nothing.
    pub allowed_roots: Vec<PathBuf>,
    /// Operations run at once; more wait for a slot.
    pub max_concurrent_operations: usize,
    /// On shutdown, how long running operations may finish before they are cancelled.
    pub shutdown_grace: Duration,
    /// Directory under which restored volumes are created on this node
    /// (`<root>/<namespace>/<claim>`), reported by GetInfo so the transfer service puts
    /// them there; None lets the transfer service use its own setting.
    pub volume_root: Option<PathBuf>,
    /// Where the kubelet mounts pods' CSI volumes: requests naming a pod's volume
    /// (PodVolume) reach only `<root>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount`.
    pub kubelet: KubeletRoots,
    /// Who may call.
    pub access: AgentAccess,
}

/// The kubelet's root directory, per node for an agent that serves several nodes whose
/// directories differ (`ferry serve` beside test clusters whose nodes share one host).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeletRoots {
    /// Every node's, unless named below; None: no pod volumes are reachable.
    pub default: Option<PathBuf>,
    pub nodes: std::collections::BTreeMap<String, PathBuf>,
}

impl KubeletRoots {
    /// From `--kubelet-root` values, `DIR` or `NODE=DIR`.
    pub fn parse(values: &[String]) -> Self {
        let mut roots = KubeletRoots::default();
        for v in values.iter().filter(|v| !v.is_empty()) {
            match v.split_once('=') {
                Some((node, dir)) => {
                    roots.nodes.insert(node.to_owned(), PathBuf::from(dir));
                }
                None => roots.default = Some(PathBuf::from(v)),
            }
        }
        roots
    }

    /// The kubelet directory of `node`.
    pub fn of(&self, node: &str) -> Option<&std::path::Path> {
        self.nodes
            .get(node)
            .or(self.default.as_ref())
            .map(PathBuf::as_path)
    }
}

/// Who may call an agent: only Ferry's own components, which bear the deployment's
/// internal credential. Users never call agents; another cluster reaches them only
/// through the transfer service's agent relay.
#[derive(Clone)]
pub enum AgentAccess {
    /// Calls must bear this secret.
    Internal(String),
    /// Every call is served (tests on loopback: --insecure-no-access-checks).
    Unchecked,
}

impl std::fmt::Debug for AgentAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AgentAccess::Internal(_) => "Internal(…)",
            AgentAccess::Unchecked => "Unchecked",
        })
    }
}

/// Command-line flags of `ferry-agent`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ferry-agent",
    version,
    about = "Ferry's per-node data mover (gRPC)"
)]
pub struct Args {
    /// Address to serve gRPC on; other than loopback, it takes TLS flags or
    /// --insecure-plaintext.
    #[arg(long, env = "FERRY_AGENT_LISTEN", default_value = "0.0.0.0:7448")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: ferry_rpc::TlsArgs,
    #[command(flatten)]
    pub probes: ferry_rpc::ProbeArgs,
    /// Name reported for this node; in a DaemonSet, set NODE_NAME from spec.nodeName.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Directory of profiles, one `<name>.yaml` each (mounted Secrets in a cluster).
    #[arg(
        long,
        env = "FERRY_PROFILES_DIR",
        default_value = "/etc/ferry/profiles"
    )]
    pub profiles_dir: PathBuf,
    /// A directory requests may read and write under; repeat for more. The agent reaches
    /// nothing else (--volume-root is allowed too).
    #[arg(
        long = "allow-root",
        env = "FERRY_AGENT_ALLOW_ROOTS",
        value_delimiter = ','
    )]
    pub allow_roots: Vec<PathBuf>,
    /// Backups, restores and verifies run at once; more wait.
    #[arg(long, default_value_t = 2)]
    pub max_concurrent: usize,
    /// Seconds running operations get to finish on SIGTERM before they are cancelled.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Directory under which restored volumes are created on this node, reported by
    /// GetInfo; it should be under an allowed root. None: the transfer service decides.
    #[arg(long, env = "FERRY_VOLUME_ROOT", value_parser = absolute_path)]
    pub volume_root: Option<PathBuf>,
    /// The catalog, which resolves repository profiles (https:// when it serves TLS);
    /// instead of --profiles-dir. Calls bear the internal credential.
    #[arg(long, env = "FERRY_CATALOG_ENDPOINT")]
    pub catalog_endpoint: Option<String>,
    /// File holding the deployment's internal credential: the only thing the agent
    /// answers. Required unless --insecure-no-access-checks.
    #[arg(long, env = "FERRY_INTERNAL_TOKEN_FILE", value_name = "FILE")]
    pub internal_token_file: Option<PathBuf>,
    /// Serve every caller. Only on a loopback address, for tests.
    #[arg(long)]
    pub insecure_no_access_checks: bool,
    /// The kubelet's root directory on this node, where pods' CSI volumes are mounted
    /// (`/var/lib/kubelet`); `NODE=DIR` for one node of several. Repeatable. None: CSI
    /// volumes are not reachable.
    #[arg(
        long = "kubelet-root",
        env = "FERRY_KUBELET_ROOT",
        value_delimiter = ','
    )]
    pub kubelet_roots: Vec<String>,
}

/// The flags do not make a safe agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "the agent answers only Ferry's own components and has no internal credential to \
         know them by: pass --internal-token-file (the Helm chart mounts it), or \
         --insecure-no-access-checks on a loopback address for a test"
    )]
    NoInternalCredential,
    #[error(
        "--insecure-no-access-checks with --listen {0}: an agent that checks no callers \
         serves only loopback; listen on 127.0.0.1, or drop the flag"
    )]
    UncheckedOffLoopback(SocketAddr),
    #[error(transparent)]
    InternalToken(#[from] ferry_authz::InternalTokenError),
    #[error("--catalog-endpoint {endpoint:?}: {source}")]
    Catalog {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the internal credential cannot travel as a header")]
    BadToken,
}

fn absolute_path(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(format!(
            "{s:?} is relative; give an absolute path on the node"
        ))
    }
}

impl Args {
    /// The configuration, with its callers' check; calls to the catalog speak TLS as
    /// `tls` says.
    pub fn into_checked_config(
        self,
        tls: &ferry_rpc::ClientTls,
    ) -> Result<AgentConfig, ConfigError> {
        let access = match (&self.internal_token_file, self.insecure_no_access_checks) {
            (Some(path), _) => AgentAccess::Internal(ferry_authz::read_internal_token(path)?),
            (None, true) if self.listen.ip().is_loopback() => AgentAccess::Unchecked,
            (None, true) => return Err(ConfigError::UncheckedOffLoopback(self.listen)),
            (None, false) => return Err(ConfigError::NoInternalCredential),
        };
        let profiles = match (&self.catalog_endpoint, &access) {
            (Some(endpoint), access) => {
                let tls = match access {
                    AgentAccess::Internal(token) => tls
                        .clone()
                        .with_bearer(token)
                        .map_err(|_| ConfigError::BadToken)?,
                    AgentAccess::Unchecked => tls.clone(),
                };
                let catalog =
                    ferry_profile::CatalogProfiles::lazy(endpoint, &tls).map_err(|source| {
                        ConfigError::Catalog {
                            endpoint: endpoint.clone(),
                            source,
                        }
                    })?;
                Some(ProfileSource::Catalog(Box::new(catalog)))
            }
            (None, _) => None,
        };
        let mut config = self.into_config();
        config.access = access;
        if let Some(profiles) = profiles {
            config.profiles = profiles;
        }
        Ok(config)
    }

    /// The configuration, serving every caller (tests).
    pub fn into_config(self) -> AgentConfig {
        let node_name = self.node_name.unwrap_or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        });
        AgentConfig {
            node_name,
            profiles: ProfileSource::Dir(self.profiles_dir),
            allowed_roots: self.allow_roots,
            max_concurrent_operations: self.max_concurrent,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            volume_root: self.volume_root,
            kubelet: KubeletRoots::parse(&self.kubelet_roots),
            access: AgentAccess::Unchecked,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_volume_root_is_optional_and_must_be_absolute() {
        let args = Args::try_parse_from(["ferry-agent", "--node-name", "n"]).expect("parse");
        assert_eq!(args.into_config().volume_root, None);
        let args =
            Args::try_parse_from(["ferry-agent", "--volume-root", "/data/ferry"]).expect("parse");
        assert_eq!(
            args.into_config().volume_root,
            Some(PathBuf::from("/data/ferry"))
        );
        let err = Args::try_parse_from(["ferry-agent", "--volume-root", "data"])
            .expect_err("a relative root");
        assert!(err.to_string().contains("relative"), "{err}");
    }
}
