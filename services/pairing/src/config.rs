//! The pairing service's settings, from flags and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use crate::probe::ProfileProbe;

/// How the destination makes the credential it hands to a source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialKind {
    /// A `kubernetes.io/service-account-token` Secret, filled in by kube-controller-manager's
    /// serviceaccount-token controller: no expiry, revoked by deleting the ServiceAccount
    /// (what `argocd cluster add` does). A token that never expires: only for clusters
    /// whose sources cannot reach the destination's Ferry to renew one.
    Secret,
    /// A token from the TokenRequest API, valid for `credential_lifetime` (the API server
    /// may cap it with --service-account-max-token-expiration; the testenv clusters do not)
    /// and bound to its ServiceAccount. The source asks the destination for a fresh one
    /// when a third of its lifetime is left (RenewPairCredential), so a credential that
    /// leaks stops working within a lifetime.
    #[default]
    TokenRequest,
}

/// Everything the service needs.
#[derive(Clone)]
pub struct PairingConfig {
    /// This cluster's name, as pairs show it.
    pub cluster_name: String,
    /// A client for this cluster, with rights to manage ServiceAccounts, ClusterRoles and
    /// their bindings (the destination issues credentials with it).
    pub kube: kube::Client,
    /// This cluster's API server URL as other clusters reach it.
    pub api_server_url: String,
    /// PEM of the CA that signs that API server's certificate; empty for a public CA.
    pub api_ca_pem: String,
    /// This Ferry's address (host:port) as other clusters' Ferry reaches it.
    pub ferry_endpoint: String,
    /// State goes to `<data_dir>/pairing.db`, its secrets sealed with `<data_dir>/secret.key`.
    pub data_dir: PathBuf,
    /// How long a pairing token stays valid when the request does not say.
    pub token_ttl: Duration,
    /// Namespace of the ServiceAccounts issued to sources.
    pub namespace: String,
    pub credential_kind: CredentialKind,
    /// Lifetime asked for with [`CredentialKind::TokenRequest`].
    pub credential_lifetime: Duration,
    /// Whether paired sources may write here as the users they name, without the
    /// user's own credential for this cluster: pairs' credentials may then impersonate
    /// (ClusterRole `ferry-migrator` holds the impersonate verb). For clusters that
    /// share one identity provider, and what scheduled and CRD-driven jobs need. Off,
    /// a job writes here only with a credential its user gives for this cluster, which
    /// this cluster's API server verifies itself.
    pub trust_source_identities: bool,
    /// Bound on each call to the other Ferry and on each check.
    pub peer_timeout: Duration,
    /// Checks this cluster's profiles for CheckPair's repository checks (the catalog of
    /// the same process); `None` skips those checks.
    pub profile_probe: Option<Arc<dyn ProfileProbe>>,
    /// How calls to the other side's Ferry speak TLS (its endpoint is `https://`, or a
    /// bare `host:port` while this has a CA or certificate): the CA to verify it with,
    /// the certificate to present for mutual TLS.
    pub peer_tls: ferry_rpc::ClientTls,
    /// Reviews callers with this cluster: only administrators create tokens, accept
    /// them and delete pairs; anyone signed in may list pairs (to name a destination).
    /// What the other side's Ferry calls (redeem, forget, get, check) is not reviewed
    /// here: it holds no user token of this cluster, redeem and forget prove themselves
    /// with the pairing token or the pair's id, and get and check reveal no secret.
    /// None checks no callers.
    pub access: Option<ferry_authz::Authorizer>,
    /// The deployment's internal credential: the transfer service bears it to resolve
    /// pairs (PairingInternalService). None refuses every internal call.
    pub internal_token: Option<String>,
    /// Owner of what pairing makes in the cluster (ClusterRole `ferry-migrator`, pairs'
    /// ServiceAccounts and bindings), so removing Ferry removes them.
    pub owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
}

impl std::fmt::Debug for PairingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingConfig")
            .field("cluster_name", &self.cluster_name)
            .field("api_server_url", &self.api_server_url)
            .field("ferry_endpoint", &self.ferry_endpoint)
            .field("data_dir", &self.data_dir)
            .field("token_ttl", &self.token_ttl)
            .field("namespace", &self.namespace)
            .field("credential_kind", &self.credential_kind)
            .field("credential_lifetime", &self.credential_lifetime)
            .field("trust_source_identities", &self.trust_source_identities)
            .field("peer_timeout", &self.peer_timeout)
            .field("profile_probe", &self.profile_probe.is_some())
            .field("peer_tls", &self.peer_tls.is_configured())
            .finish_non_exhaustive()
    }
}

/// Default namespace of issued ServiceAccounts.
pub const DEFAULT_NAMESPACE: &str = "ferry-system";
/// Default pairing token TTL.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

impl PairingConfig {
    /// A configuration with the defaults: tokens valid for an hour, ServiceAccounts in
    /// `ferry-system`, Secret-based credentials, 10 s for calls to the other side.
    pub fn new(
        cluster_name: impl Into<String>,
        kube: kube::Client,
        api_server_url: impl Into<String>,
        api_ca_pem: impl Into<String>,
        ferry_endpoint: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> PairingConfig {
        PairingConfig {
            cluster_name: cluster_name.into(),
            kube,
            api_server_url: api_server_url.into(),
            api_ca_pem: api_ca_pem.into(),
            ferry_endpoint: ferry_endpoint.into(),
            data_dir: data_dir.into(),
            token_ttl: DEFAULT_TOKEN_TTL,
            namespace: DEFAULT_NAMESPACE.into(),
            credential_kind: CredentialKind::default(),
            credential_lifetime: Duration::from_secs(24 * 3600),
            trust_source_identities: false,
            peer_timeout: Duration::from_secs(10),
            profile_probe: None,
            peer_tls: ferry_rpc::ClientTls::new(),
            access: None,
            internal_token: None,
            owner: None,
        }
    }
}

/// Command-line flags of `ferry-pairing`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ferry-pairing",
    version,
    about = "Ferry's pairing service: pairing tokens and pairs between clusters (gRPC)"
)]
pub struct Args {
    /// Address to serve gRPC on; other than loopback, it takes TLS flags or
    /// --insecure-plaintext.
    #[arg(long, env = "FERRY_PAIRING_LISTEN", default_value = "0.0.0.0:7447")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: ferry_rpc::TlsArgs,
    #[command(flatten)]
    pub probes: ferry_rpc::ProbeArgs,
    #[command(flatten)]
    pub access: ferry_authz::AccessArgs,
    /// ClusterRole that owns what pairing makes in the cluster (ClusterRole
    /// `ferry-migrator`, pairs' ServiceAccounts and ClusterRoleBindings): when it is
    /// deleted (`helm uninstall`), the garbage collector removes them too.
    #[arg(long, env = "FERRY_OWNER_CLUSTER_ROLE")]
    pub owner_cluster_role: Option<String>,
    /// The catalog, which checks this cluster's profiles for CheckPair's repository
    /// checks (https:// when it serves TLS); calls bear the internal credential.
    #[arg(long, env = "FERRY_CATALOG_ENDPOINT")]
    pub catalog_endpoint: Option<String>,
    /// This Ferry's address (host:port) as the other cluster's Ferry reaches it.
    #[arg(long, env = "FERRY_ENDPOINT")]
    pub ferry_endpoint: String,
    /// Kubeconfig context of this cluster; default: in-cluster config or the current context.
    #[arg(long, env = "FERRY_CONTEXT")]
    pub context: Option<String>,
    /// This cluster's name; default: the context name, or "local".
    #[arg(long, env = "FERRY_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// This cluster's API server URL as other clusters reach it; default: the one Ferry uses.
    #[arg(long, env = "FERRY_API_SERVER_URL")]
    pub api_server_url: Option<String>,
    /// PEM file of the CA of that API server; default: the one Ferry trusts for it.
    #[arg(long, env = "FERRY_API_CA_FILE")]
    pub api_ca_file: Option<PathBuf>,
    /// Directory for pairing.db and secret.key.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "/var/lib/ferry")]
    pub data_dir: PathBuf,
    /// Seconds a pairing token stays valid unless the request says otherwise.
    #[arg(long, default_value_t = DEFAULT_TOKEN_TTL.as_secs())]
    pub token_ttl_seconds: u64,
    /// Namespace for the ServiceAccounts issued to source clusters.
    #[arg(long, env = "FERRY_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// How credentials for sources are made.
    #[arg(long, value_enum, default_value_t)]
    pub credential_kind: CredentialKind,
    /// Days a token-request credential lasts; the source renews it when a third is left.
    #[arg(long, default_value_t = 1)]
    pub credential_lifetime_days: u64,
    /// Seconds allowed for each call to the other cluster's Ferry or API.
    #[arg(long, default_value_t = 10)]
    pub peer_timeout_seconds: u64,
    /// Let paired sources write here as the users they name (their credentials may
    /// impersonate), for clusters sharing one identity provider and for scheduled and
    /// CRD-driven jobs. Without it, a job writes here only with its user's own
    /// credential for this cluster (`ferry migrate --to-context`), verified here.
    /// Takes effect for every pair when the next pairing token is made.
    #[arg(long, env = "FERRY_TRUST_SOURCE_IDENTITIES")]
    pub trust_source_identities: bool,
}

/// Why the flags do not make a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("loading the Kubernetes configuration{}: {detail}; pass --context or run in a cluster", context.as_deref().map(|c| format!(" of context {c}")).unwrap_or_default())]
    Kube {
        context: Option<String>,
        detail: String,
    },
    #[error("reading the API server CA {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] ferry_rpc::TlsError),
    #[error(transparent)]
    Serve(#[from] ferry_rpc::ServeError),
    #[error(transparent)]
    Access(#[from] ferry_authz::AccessConfigError),
    #[error("--catalog-endpoint {endpoint:?}: {detail}")]
    Catalog { endpoint: String, detail: String },
    #[error(transparent)]
    Owner(Box<crate::error::PairingError>),
}

impl Args {
    /// Builds the configuration, loading the Kubernetes client for this cluster, and
    /// how the server's port is secured (a `--tls-secret` is read with that client).
    pub async fn into_config(
        self,
    ) -> Result<(PairingConfig, ferry_rpc::ServerSecurity), ConfigError> {
        self.access.check(self.listen)?;
        let kube_err = |detail: String| ConfigError::Kube {
            context: self.context.clone(),
            detail,
        };
        let kube_config = match &self.context {
            Some(context) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| kube_err(e.to_string()))?,
            None => kube::Config::infer()
                .await
                .map_err(|e| kube_err(e.to_string()))?,
        };
        let cluster_name = self
            .cluster_name
            .clone()
            .or_else(|| self.context.clone())
            .or_else(|| {
                kube::config::Kubeconfig::read()
                    .ok()
                    .and_then(|k| k.current_context)
            })
            .unwrap_or_else(|| "local".into());
        let api_server_url = self.api_server_url.clone().unwrap_or_else(|| {
            kube_config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_string()
        });
        let api_ca_pem = match &self.api_ca_file {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::CaFile {
                path: path.clone(),
                source,
            })?,
            // The file wins when both are set, as it does inside kube itself.
            None => match (&kube_config.root_cert_file, &kube_config.root_cert) {
                (Some(path), _) => {
                    std::fs::read_to_string(path).map_err(|source| ConfigError::CaFile {
                        path: path.clone(),
                        source,
                    })?
                }
                (None, Some(ders)) => ders.iter().map(|d| der_to_pem(d)).collect(),
                (None, None) => String::new(),
            },
        };
        let kube = kube::Client::try_from(kube_config).map_err(|e| kube_err(e.to_string()))?;
        let tls = self.tls.load(Some(&kube)).await?;
        tls.server.check(self.listen)?;
        let access = self.access.authorizer(&kube, &cluster_name);
        let internal_token = self
            .access
            .internal_token()
            .map_err(ferry_authz::AccessConfigError::from)?;
        let mut config = PairingConfig::new(
            cluster_name,
            kube,
            api_server_url,
            api_ca_pem,
            self.ferry_endpoint,
            self.data_dir,
        );
        config.token_ttl = Duration::from_secs(self.token_ttl_seconds);
        config.namespace = self.namespace;
        config.credential_kind = self.credential_kind;
        config.credential_lifetime = Duration::from_secs(self.credential_lifetime_days * 86_400);
        config.trust_source_identities = self.trust_source_identities;
        config.peer_timeout = Duration::from_secs(self.peer_timeout_seconds);
        config.peer_tls = tls.client;
        if let Some(endpoint) = &self.catalog_endpoint {
            let tls = match &internal_token {
                Some(token) => config.peer_tls.clone().with_bearer(token).map_err(|_| {
                    ConfigError::Catalog {
                        endpoint: endpoint.clone(),
                        detail: "the internal credential cannot travel as a header".into(),
                    }
                })?,
                None => config.peer_tls.clone(),
            };
            let probe =
                crate::probe::RemoteCatalogProbe::lazy(endpoint, &tls, &config.cluster_name)
                    .map_err(|e| ConfigError::Catalog {
                        endpoint: endpoint.clone(),
                        detail: e.to_string(),
                    })?;
            config.profile_probe = Some(std::sync::Arc::new(probe));
        }
        if let Some(name) = &self.owner_cluster_role {
            let owner =
                crate::cluster::cluster_role_owner(&config.kube, &config.cluster_name, name)
                    .await
                    .map_err(|e| ConfigError::Owner(Box::new(e)))?;
            config.owner = Some(owner);
        }
        config.access = access;
        config.internal_token = internal_token;
        Ok((config, tls.server))
    }
}

/// PEM text of one DER certificate.
pub fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
