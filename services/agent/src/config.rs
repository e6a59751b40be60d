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
    /// Directories requests may read and write under; empty allows any absolute path.
    pub allowed_roots: Vec<PathBuf>,
    /// Operations run at once; more wait for a slot.
    pub max_concurrent_operations: usize,
    /// On shutdown, how long running operations may finish before they are cancelled.
    pub shutdown_grace: Duration,
    /// Directory under which restored volumes are created on this node
    /// (`<root>/<namespace>/<claim>`), reported by GetInfo so the transfer service puts
    /// them there; None lets the transfer service use its own setting.
    pub volume_root: Option<PathBuf>,
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
    #[arg(long, env = "FERRY_AGENT_LISTEN", default_value = "0.0.0.0:7443")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: ferry_rpc::TlsArgs,
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
    /// Directory under which restored volumes are created on this node, reported by
    /// GetInfo; it should be under an allowed root. None: the transfer service decides.
    #[arg(long, env = "FERRY_VOLUME_ROOT", value_parser = absolute_path)]
    pub volume_root: Option<PathBuf>,
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
