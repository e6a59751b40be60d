//! Flags of `ferry-controller`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line flags of `ferry-controller`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ferry-controller",
    version,
    about = "Ferry's controller: ClusterPair, Profile, Migration, Restore and MigrationSchedule objects onto Ferry's services, and \
             the admission webhook that records who created them"
)]
pub struct Args {
    /// The transfer service (https:// when it serves TLS).
    #[arg(
        long,
        env = "FERRY_TRANSFER_ENDPOINT",
        default_value = "http://127.0.0.1:7444"
    )]
    pub transfer_endpoint: String,
    /// The pairing service (https:// when it serves TLS).
    #[arg(
        long,
        env = "FERRY_PAIRING_ENDPOINT",
        default_value = "http://127.0.0.1:7447"
    )]
    pub pairing_endpoint: String,
    /// The scheduler service (https:// when it serves TLS).
    #[arg(
        long,
        env = "FERRY_SCHEDULER_ENDPOINT",
        default_value = "http://127.0.0.1:7446"
    )]
    pub scheduler_endpoint: String,
    /// The catalog service (https:// when it serves TLS).
    #[arg(
        long,
        env = "FERRY_CATALOG_ENDPOINT",
        default_value = "http://127.0.0.1:7445"
    )]
    pub catalog_endpoint: String,
    /// TLS of the calls to the services (--tls-ca, and --tls-cert/--tls-key for mutual
    /// TLS). The webhook has its own certificate: --webhook-cert.
    #[command(flatten)]
    pub tls: ferry_rpc::TlsArgs,
    /// Who administers Ferry (they may create ClusterPairs), and the deployment's
    /// internal credential (required): the calls to the services bear it, and the
    /// webhook signs the requester annotations with it.
    #[command(flatten)]
    pub access: ferry_authz::AccessArgs,
    /// Address of the admission webhook (HTTPS; the API server calls it).
    #[arg(long, env = "FERRY_WEBHOOK_LISTEN", default_value = "0.0.0.0:7449")]
    pub webhook_listen: SocketAddr,
    /// The webhook's certificate (PEM), signed by the CA in the webhook configuration's
    /// caBundle.
    #[arg(long, env = "FERRY_WEBHOOK_CERT")]
    pub webhook_cert: PathBuf,
    /// Its key.
    #[arg(long, env = "FERRY_WEBHOOK_KEY")]
    pub webhook_key: PathBuf,
    /// Kubeconfig of this cluster; default: KUBECONFIG, ~/.kube/config or in-cluster.
    #[arg(long, env = "FERRY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Its context; default: the current one.
    #[arg(long, env = "FERRY_CONTEXT")]
    pub context: Option<String>,
    /// This cluster's name, as messages name it.
    #[arg(long, env = "FERRY_CLUSTER_NAME", default_value = "local")]
    pub cluster_name: String,
    /// Namespace of a ClusterPair's token Secret when it names none, and of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "ferry-system")]
    pub namespace: String,
    /// The Lease through which one replica at a time acts.
    #[arg(long, default_value = "ferry-controller")]
    pub lease_name: String,
    /// This replica's name in the Lease; default: the pod's (POD_NAME) or host's name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Lease holder that stopped renewing keeps it.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    #[command(flatten)]
    pub probes: ferry_rpc::ProbeArgs,
}

impl Args {
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_seconds.max(3))
    }

    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned();
            format!("{host}-{}", std::process::id())
        })
    }
}
