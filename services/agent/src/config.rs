//! The agent's settings, from flags and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::profile::ProfileSource;

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Kubernetes node name (or host name), reported by GetInfo and stamped on snapshots.
    pub node_name: String,
    pub profiles: ProfileSource,
    /// Directories requests may read and write under; empty allows any absolute path.
    pub allowed_roots: Vec<PathBuf>,
    /// Operations run at once; more wait for a slot.
    pub max_concurrent_operations: usize,
    /// On shutdown, how long running operations may finish before they are cancelled.
    pub shutdown_grace: Duration,
}

/// Command-line flags of `ferry-agent`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ferry-agent",
    version,
    about = "Ferry's per-node data mover (gRPC)"
)]
pub struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "FERRY_AGENT_LISTEN", default_value = "0.0.0.0:7443")]
    pub listen: SocketAddr,
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
    /// A directory requests may read and write under; repeat for more. None: any path.
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
}

impl Args {
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
        }
    }
}
