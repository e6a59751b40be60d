//! The scheduler's settings, and the flags of `ferry-scheduler`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Retry settings of schedules whose request leaves them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryDefaults {
    /// Attempts per run, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles after each.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryDefaults {
    fn default() -> Self {
        RetryDefaults {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
        }
    }
}

/// Everything [`crate::Scheduler::open`] needs besides the [`crate::Jobs`] it starts.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// State lives in `<data_dir>/scheduler.db`.
    pub data_dir: PathBuf,
    /// Shortest interval a schedule may have: each run is a whole transfer job, and a
    /// typo such as `60ms` must not flood the transfer service.
    pub min_interval: Duration,
    /// How often due schedules are looked for; a run starts at most this late.
    pub tick: Duration,
    /// Retry settings for schedules that give none.
    pub retry: RetryDefaults,
    /// Reviews callers with the cluster the scheduler runs in: schedules record their
    /// creator, and runs act for them. None checks no callers.
    pub access: Option<ferry_authz::Authorizer>,
    /// The deployment's internal credential: a call bearing it (the controller) acts
    /// for the user its on-behalf headers name, who then owns what it creates.
    pub internal: Option<String>,
}

impl SchedulerConfig {
    /// The defaults: intervals of at least a minute, a one-second tick, 3 attempts with
    /// 30 s backoff doubling up to 10 min.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SchedulerConfig {
            data_dir: data_dir.into(),
            min_interval: Duration::from_secs(60),
            tick: Duration::from_secs(1),
            retry: RetryDefaults::default(),
            access: None,
            internal: None,
        }
    }
}

/// Command-line flags of `ferry-scheduler`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ferry-scheduler",
    version,
    about = "Ferry's scheduler: recurring migrations, exports and import policies (gRPC)"
)]
pub struct Args {
    /// Address to serve gRPC on; other than loopback, it takes TLS flags or
    /// --insecure-plaintext.
    #[arg(long, env = "FERRY_SCHEDULER_LISTEN", default_value = "0.0.0.0:7446")]
    pub listen: SocketAddr,
    /// TLS of this server and of its calls to the transfer service (an `https://`
    /// --transfer-endpoint is verified with --tls-ca or --tls-client-ca, and presented
    /// --tls-cert for mutual TLS).
    #[command(flatten)]
    pub tls: ferry_rpc::TlsArgs,
    #[command(flatten)]
    pub probes: ferry_rpc::ProbeArgs,
    /// Directory holding scheduler.db.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "/var/lib/ferry")]
    pub data_dir: PathBuf,
    /// The transfer service that runs the jobs (https:// when it serves TLS).
    #[arg(
        long,
        env = "FERRY_TRANSFER_ENDPOINT",
        default_value = "http://127.0.0.1:7444"
    )]
    pub transfer_endpoint: String,
    /// The catalog import policies read profiles and restore points from (https:// when
    /// it serves TLS).
    #[arg(
        long,
        env = "FERRY_CATALOG_ENDPOINT",
        default_value = "http://127.0.0.1:7445"
    )]
    pub catalog_endpoint: String,
    /// Shortest interval a schedule may have, in seconds.
    #[arg(long, default_value_t = 60)]
    pub min_interval_seconds: u64,
    /// File holding the secret this scheduler's calls to the transfer service and the
    /// catalog bear (the same file, from one Kubernetes Secret, mounted into all three):
    /// with it they act for each schedule's creator.
    #[arg(long, env = "FERRY_INTERNAL_TOKEN_FILE", value_name = "FILE")]
    pub internal_token_file: Option<PathBuf>,
    /// Name of the cluster this scheduler runs in, as refusals name it. Callers are
    /// reviewed with that cluster (in-cluster configuration, or KUBECONFIG).
    #[arg(long, env = "FERRY_CLUSTER_NAME", default_value = "local")]
    pub cluster_name: String,
}

impl Args {
    pub fn config(&self) -> SchedulerConfig {
        let mut c = SchedulerConfig::new(&self.data_dir);
        c.min_interval = Duration::from_secs(self.min_interval_seconds.max(1));
        c
    }
}
