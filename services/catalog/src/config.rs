//! The catalog's settings, from flags and environment.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use ferry_repo::InitOptions;

/// The namespace Ferry runs in, where profile Secrets live unless a request names another.
pub const DEFAULT_NAMESPACE: &str = "ferry-system";

/// Everything [`crate::CatalogService::new`] needs.
#[derive(Clone)]
pub struct CatalogConfig {
    /// Client of the cluster this catalog belongs to (applications, Secrets).
    pub client: kube::Client,
    /// That cluster's name, used in messages and stamped nowhere else.
    pub cluster_name: String,
    /// Namespace of credential and key Secrets when a `SecretRef` leaves it empty.
    pub secrets_namespace: String,
    /// State lives in `<data_dir>/catalog.db`.
    pub data_dir: PathBuf,
    /// When set, every profile is also written as `<dir>/<name>.yaml` for the agent
    /// (the in-process agent of `ferry serve` reads profiles from there).
    pub agent_profiles_dir: Option<PathBuf>,
    /// How new repositories are initialised (chunker, pack size, KDF cost).
    pub init_options: InitOptions,
    /// Reviews callers with this cluster: only administrators change profiles, keys,
    /// labels and repositories (create, delete, import key, migration token, prune,
    /// rebuild) and check profiles (CheckProfile derives the key and may write a probe
    /// object; the pairing service calls it with the internal credential); anyone
    /// signed in may read, and sees the restore points and applications of the
    /// namespaces they may see. None checks no callers.
    pub access: Option<ferry_authz::Authorizer>,
    /// Secret of this process's own scheduler, whose calls are trusted.
    pub internal_token: Option<String>,
}

impl fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogConfig")
            .field("cluster_name", &self.cluster_name)
            .field("secrets_namespace", &self.secrets_namespace)
            .field("data_dir", &self.data_dir)
            .field("agent_profiles_dir", &self.agent_profiles_dir)
            .finish_non_exhaustive()
    }
}

impl CatalogConfig {
    /// Settings with the defaults: Secrets in `ferry-system`, no agent profile files.
    pub fn new(client: kube::Client, cluster_name: impl Into<String>, data_dir: PathBuf) -> Self {
        CatalogConfig {
            client,
            cluster_name: cluster_name.into(),
            secrets_namespace: DEFAULT_NAMESPACE.to_string(),
            data_dir,
            agent_profiles_dir: None,
            init_options: InitOptions::default(),
            access: None,
            internal_token: None,
        }
    }
}

/// Command-line flags of `ferry-catalog`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ferry-catalog",
    version,
    about = "Ferry's catalog: profiles, applications and restore points (gRPC)"
)]
pub struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "FERRY_CATALOG_LISTEN", default_value = "0.0.0.0:7445")]
    pub listen: SocketAddr,
    /// Directory of the service's state (`catalog.db`).
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "/var/lib/ferry")]
    pub data_dir: PathBuf,
    /// Kubeconfig context of the local cluster; none: in-cluster config or the current context.
    #[arg(long, env = "FERRY_CONTEXT")]
    pub context: Option<String>,
    /// Name of the local cluster in messages; default: the context, else "local".
    #[arg(long, env = "FERRY_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Namespace of profile Secrets when a request leaves the namespace empty.
    #[arg(long, env = "FERRY_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub secrets_namespace: String,
    /// Also write each profile as `<dir>/<name>.yaml` for an agent reading that directory.
    #[arg(long, env = "FERRY_AGENT_PROFILES_DIR")]
    pub agent_profiles_dir: Option<PathBuf>,
    /// TLS of this server. Other than loopback, it takes --tls-cert and --tls-key (or
    /// --tls-secret), or --insecure-plaintext.
    #[command(flatten)]
    pub tls: ferry_rpc::TlsArgs,
    #[command(flatten)]
    pub probes: ferry_rpc::ProbeArgs,
    /// Who administers Ferry, the internal credential the other components' calls bear
    /// (the scheduler's act for the users they name), and the loopback-only switch
    /// that checks no callers.
    #[command(flatten)]
    pub access: ferry_authz::AccessArgs,
}

/// Why the flags do not give a usable configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "no Kubernetes configuration for the local cluster{context}: {detail}; run in a pod, \
         set KUBECONFIG, or pass --context"
    )]
    Kube { context: String, detail: String },
    #[error(transparent)]
    Access(#[from] ferry_authz::AccessConfigError),
}

impl Args {
    /// Resolves the cluster connection and builds the configuration.
    pub async fn into_config(self) -> Result<CatalogConfig, ConfigError> {
        self.access.check(self.listen)?;
        let err = |detail: String| ConfigError::Kube {
            context: self
                .context
                .as_ref()
                .map(|c| format!(" (context {c})"))
                .unwrap_or_default(),
            detail,
        };
        let kube_config = match &self.context {
            Some(context) => {
                let options = kube::config::KubeConfigOptions {
                    context: Some(context.clone()),
                    ..Default::default()
                };
                kube::Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| err(e.to_string()))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| err(e.to_string()))?,
        };
        let client = kube::Client::try_from(kube_config).map_err(|e| err(e.to_string()))?;
        let cluster_name = self
            .cluster_name
            .clone()
            .or_else(|| self.context.clone())
            .unwrap_or_else(|| "local".to_string());
        // The standalone catalog reviews every caller with its cluster.
        let access = self.access.authorizer(&client, &cluster_name);
        let internal_token = self
            .access
            .internal_token()
            .map_err(ferry_authz::AccessConfigError::from)?;
        Ok(CatalogConfig {
            client,
            cluster_name,
            secrets_namespace: self.secrets_namespace,
            data_dir: self.data_dir,
            agent_profiles_dir: self.agent_profiles_dir,
            init_options: InitOptions::default(),
            access,
            internal_token,
        })
    }
}
