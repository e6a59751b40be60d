//! A whole environment: N clusters and an S3 server, started together.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::bins::{Binaries, NodeBinaries, NodeImages, Versions};
use crate::cluster::{ClusterInfo, NodeParts, start_cluster};
use crate::error::{Error, Result};
use crate::process::{Lifetime, Proc};
use crate::s3::{S3Info, start_minio};

/// What to start.
#[derive(Debug, Clone)]
pub struct EnvSpec {
    /// Cluster names; each becomes a kubeconfig context.
    pub clusters: Vec<String>,
    /// Whether to start the S3 server.
    pub s3: bool,
    /// Real nodes per cluster (kubelet, containerd, kube-proxy, CoreDNS, a default
    /// StorageClass); 0 is the API-only mode, where pods never run.
    pub nodes_per_cluster: usize,
    /// The cluster that runs the previous Kubernetes minor (`KUBE_PREVIOUS_VERSION`),
    /// control plane and nodes; the others run `KUBE_VERSION`.
    pub previous_minor: Option<String>,
}

impl Default for EnvSpec {
    fn default() -> Self {
        EnvSpec {
            clusters: vec!["a".to_owned(), "b".to_owned()],
            s3: true,
            nodes_per_cluster: 0,
            previous_minor: None,
        }
    }
}

impl EnvSpec {
    /// Clusters `a` and `b` with one real node each, and the S3 server.
    pub fn with_nodes() -> Self {
        EnvSpec {
            nodes_per_cluster: 1,
            ..EnvSpec::default()
        }
    }

    /// [`Self::with_nodes`], cluster `a` at the previous Kubernetes minor: a source on
    /// the older version, a destination on the newer.
    pub fn across_versions() -> Self {
        EnvSpec {
            previous_minor: Some("a".to_owned()),
            ..EnvSpec::with_nodes()
        }
    }
}

/// The description of a running environment, also written as `state.json` into its
/// directory so that other processes can attach to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvState {
    pub dir: PathBuf,
    /// A kubeconfig with every cluster and user (contexts `<cluster>`, `<cluster>-<user>`).
    pub kubeconfig: PathBuf,
    pub clusters: Vec<ClusterInfo>,
    pub s3: Option<S3Info>,
    /// Pids of every process, for `ferry-testenv down`.
    pub pids: Vec<u32>,
    pub kube_version: String,
}

/// A running environment. Dropping it stops what it started (unless it was attached to
/// an environment some other process owns).
#[derive(Debug)]
pub struct TestEnv {
    pub state: EnvState,
    procs: Vec<Proc>,
}

impl TestEnv {
    /// Starts the environment in `dir` (created if missing).
    ///
    /// With nodes and [`Lifetime::WithThisProcess`], a watchdog (a detached shell) waits
    /// for this process to end, however it ends, and then tears the nodes down: their
    /// containers outlive any parent-death signal, so something must outlive the parent.
    pub async fn start(spec: &EnvSpec, dir: &Path, lifetime: Lifetime) -> Result<TestEnv> {
        let bins = Binaries::locate()?;
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let node_kit = if spec.nodes_per_cluster > 0 {
            let kit = (
                NodeBinaries::locate(&bins)?,
                NodeImages::locate(&bins.versions)?,
            );
            let script = dir.join("node-teardown.sh");
            std::fs::write(&script, crate::node::TEARDOWN_SCRIPT)
                .map_err(Error::io("writing", &script))?;
            if lifetime == Lifetime::WithThisProcess {
                spawn_watchdog(dir)?;
            }
            Some(kit)
        } else {
            None
        };
        let started = Self::start_in(spec, dir, &bins, node_kit.as_ref(), lifetime).await;
        if started.is_err() {
            crate::node::teardown(
                &dir.join("node-teardown.sh"),
                &crate::node::env_files_under(dir),
            );
        }
        started
    }

    async fn start_in(
        spec: &EnvSpec,
        dir: &Path,
        bins: &Binaries,
        node_kit: Option<&(NodeBinaries, NodeImages)>,
        lifetime: Lifetime,
    ) -> Result<TestEnv> {
        let mut procs = Vec::new();
        let mut node_pids = Vec::new();
        let nodes = node_kit.map(|(nbins, images)| NodeParts {
            count: spec.nodes_per_cluster,
            bins: nbins,
            images,
        });

        // The cluster of the previous minor, if any, runs that Kubernetes's control plane
        // and node binaries; everything else (etcd, images, add-ons) is shared.
        let previous = match &spec.previous_minor {
            Some(_) => {
                let older = bins.at_kube_version(&bins.versions.kube_previous)?;
                let node_bins = node_kit
                    .map(|(_, images)| NodeBinaries::locate(&older).map(|b| (b, images)))
                    .transpose()?;
                Some((older, node_bins))
            }
            None => None,
        };
        // Clusters start one after another: two API servers booting at once on two cores
        // is slower than in turn, and the failure messages stay readable.
        let mut clusters = Vec::new();
        for name in &spec.clusters {
            let (bins, nodes) = match &previous {
                Some((older, node_bins)) if spec.previous_minor.as_ref() == Some(name) => (
                    older,
                    node_bins.as_ref().map(|(nbins, images)| NodeParts {
                        count: spec.nodes_per_cluster,
                        bins: nbins,
                        images,
                    }),
                ),
                _ => (bins, nodes),
            };
            let running = start_cluster(name, &dir.join(name), bins, nodes, lifetime).await?;
            clusters.push(running.info);
            procs.extend(running.procs);
            node_pids.extend(running.node_pids);
        }
        let s3 = if spec.s3 {
            // With nodes, where the first API server listens: an address of this machine
            // that pods of every cluster reach too (never one other hosts route to).
            let host = clusters
                .first()
                .filter(|_| nodes.is_some())
                .and_then(|c| url_host(&c.server))
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
            let (info, proc) = start_minio(&dir.join("s3"), bins, host, lifetime).await?;
            procs.push(proc);
            Some(info)
        } else {
            None
        };

        let kubeconfig = dir.join("kubeconfig");
        crate::kubeconfig::write(&kubeconfig, &clusters, None)?;
        let state = EnvState {
            dir: dir.to_owned(),
            kubeconfig,
            clusters,
            s3,
            pids: procs.iter().map(Proc::pid).chain(node_pids).collect(),
            kube_version: bins.versions.kube.clone(),
        };
        let state_file = dir.join("state.json");
        let json = serde_json::to_vec_pretty(&state)
            .map_err(|e| Error::io("serialising", &state_file)(std::io::Error::other(e)))?;
        std::fs::write(&state_file, json).map_err(Error::io("writing", &state_file))?;
        Ok(TestEnv { state, procs })
    }

    /// Attaches to an environment started by another process (`ferry-testenv up`).
    pub fn attach(dir: &Path) -> Result<TestEnv> {
        let path = dir.join("state.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::State {
            path: path.clone(),
            message: if dir.is_relative() {
                format!(
                    "{e} (relative to {:?}; give an absolute path)",
                    std::env::current_dir().unwrap_or_default()
                )
            } else {
                e.to_string()
            },
        })?;
        let state: EnvState = serde_json::from_slice(&bytes).map_err(|e| Error::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if let Some(dead) = state.pids.iter().find(|&&p| !crate::process::pid_alive(p)) {
            return Err(Error::State {
                path,
                message: format!("process {dead} of that environment is no longer running"),
            });
        }
        Ok(TestEnv {
            state,
            procs: Vec::new(),
        })
    }

    /// Hands the processes over to the caller's care: they keep running after this
    /// value is gone and are stopped by pid (`ferry-testenv down`).
    pub fn detach(mut self) -> EnvState {
        for p in std::mem::take(&mut self.procs) {
            p.release();
        }
        self.state.clone()
    }

    pub fn cluster(&self, name: &str) -> Result<&ClusterInfo> {
        self.state
            .clusters
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::Unknown {
                what: "cluster",
                name: name.to_owned(),
                known: self
                    .state
                    .clusters
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The bearer token of `user` (`admin`, `alice`, ...) on `cluster`.
    pub fn token(&self, cluster: &str, user: &str) -> Result<String> {
        Ok(self.cluster(cluster)?.user(user)?.token.clone())
    }

    /// The first cluster (`a` in the default spec).
    pub fn source(&self) -> &ClusterInfo {
        &self.state.clusters[0]
    }

    /// The second cluster (`b` in the default spec).
    pub fn destination(&self) -> &ClusterInfo {
        &self.state.clusters[self.state.clusters.len().min(2) - 1]
    }

    pub fn s3(&self) -> Result<&S3Info> {
        self.state.s3.as_ref().ok_or_else(|| Error::Unknown {
            what: "S3 server",
            name: "s3".to_owned(),
            known: "none (EnvSpec.s3 was false)".to_owned(),
        })
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.state.kubeconfig
    }

    /// A kube-rs client for `user` (`admin`, `alice`, `bob`) on `cluster`.
    pub async fn client(&self, cluster: &str, user: &str) -> Result<kube::Client> {
        crate::kubeconfig::client_for(self.cluster(cluster)?, user).await
    }

    /// The client configuration of `user` on `cluster`, for a service that acts as its
    /// callers over it (impersonation needs the configuration, not a made client).
    pub async fn config(&self, cluster: &str, user: &str) -> Result<kube::Config> {
        crate::kubeconfig::config_for(self.cluster(cluster)?, user).await
    }

    /// `kubectl --kubeconfig <env> --context <context>`, ready for more arguments.
    pub fn kubectl(&self, context: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(
            std::env::var_os("FERRY_KUBECTL").unwrap_or_else(|| "kubectl".into()),
        );
        cmd.arg("--kubeconfig")
            .arg(&self.state.kubeconfig)
            .arg("--context")
            .arg(context);
        cmd
    }

    /// Imports an image tarball (docker-archive, as `scripts/build-images.sh` makes them)
    /// into every node of every cluster, for an image built after the nodes started
    /// (Ferry's own, from the binary under test).
    pub fn import_image(&self, tarball: &Path) -> Result<()> {
        let bins = Binaries::locate()?;
        let ctr = NodeBinaries::locate(&bins)?.ctr.display().to_string();
        let image = tarball.display().to_string();
        for node in self.state.clusters.iter().flat_map(|c| &c.nodes) {
            let sock = node.containerd_socket.display().to_string();
            crate::node::run(
                &ctr,
                &[
                    "--address",
                    &sock,
                    "--namespace",
                    "k8s.io",
                    "images",
                    "import",
                    &image,
                ],
            )?;
        }
        Ok(())
    }

    /// Every process of this environment (empty when attached).
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter()
    }

    /// Stops everything now: the nodes through their teardown (pods, containers, mounts,
    /// cgroups, network), then the control planes and the S3 server.
    pub fn stop(mut self) {
        stop_nodes(&self.state.dir);
        for mut p in std::mem::take(&mut self.procs) {
            p.kill();
        }
    }
}

/// Tears down every node of the environment in `dir` (see `scripts/node-teardown.sh`).
pub fn stop_nodes(dir: &Path) {
    crate::node::teardown(
        &dir.join("node-teardown.sh"),
        &crate::node::env_files_under(dir),
    );
}

/// A detached shell that waits for this process to end and then tears the nodes down.
fn spawn_watchdog(dir: &Path) -> Result<()> {
    let script = r#"owner="$1"; dir="$2"
while kill -0 "$owner" 2>/dev/null; do sleep 1; done
for f in "$dir"/*/nodes/*/node.env; do
  [ -f "$f" ] && bash "$dir/node-teardown.sh" "$f"
done"#;
    let log = dir.join("watchdog.log");
    let proc = Proc::spawn(
        "node watchdog",
        Path::new("bash"),
        &[
            "-c".to_owned(),
            script.to_owned(),
            "ferry-testenv-watchdog".to_owned(),
            std::process::id().to_string(),
            dir.display().to_string(),
        ],
        &[],
        &log,
        Lifetime::Detached,
    )?;
    proc.release();
    Ok(())
}

/// A name no other test of this process (or of another process sharing the
/// environment) uses: for namespaces and bucket prefixes. DNS-1123 safe.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!("{}-{}-{n}", prefix.trim_matches('-'), std::process::id())
}

/// The environment shared by every test of this test binary, started on first use.
///
/// With `FERRY_TESTENV_DIR` set (e.g. to `.ferry-dev` after `make dev-up`), tests attach
/// to that running environment instead of starting their own: quick local iteration.
/// Otherwise it lives in a fresh directory under the system temp dir and every process
/// it starts dies with the test process, however that ends.
pub async fn shared() -> Result<&'static TestEnv> {
    static SHARED: OnceCell<TestEnv> = OnceCell::const_new();
    SHARED
        .get_or_try_init(|| shared_env(EnvSpec::default(), "api"))
        .await
}

/// Like [`shared()`], with one real node per cluster ([`EnvSpec::with_nodes`]): for the
/// tests where pods must run. `FERRY_TESTENV_DIR` attaches as for [`shared()`] (the
/// environment of `make dev-up` has nodes).
pub async fn shared_with_nodes() -> Result<&'static TestEnv> {
    static SHARED: OnceCell<TestEnv> = OnceCell::const_new();
    SHARED
        .get_or_try_init(|| shared_env(EnvSpec::with_nodes(), "nodes"))
        .await
}

/// Like [`shared_with_nodes()`], cluster `a` at the previous Kubernetes minor
/// ([`EnvSpec::across_versions`]). Always its own environment: `make dev-up`'s runs one
/// version.
pub async fn shared_across_versions() -> Result<&'static TestEnv> {
    static SHARED: OnceCell<TestEnv> = OnceCell::const_new();
    SHARED
        .get_or_try_init(|| async {
            let root = std::env::temp_dir().join("ferry-testenv");
            sweep_stale(&root);
            let dir = root.join(format!("{}-versions", std::process::id()));
            TestEnv::start(&EnvSpec::across_versions(), &dir, Lifetime::WithThisProcess).await
        })
        .await
}

async fn shared_env(spec: EnvSpec, kind: &str) -> Result<TestEnv> {
    if let Some(dir) = std::env::var_os("FERRY_TESTENV_DIR") {
        return TestEnv::attach(Path::new(&dir));
    }
    let root = std::env::temp_dir().join("ferry-testenv");
    sweep_stale(&root);
    let dir = root.join(format!("{}-{kind}", std::process::id()));
    TestEnv::start(&spec, &dir, Lifetime::WithThisProcess).await
}

/// Removes directories of earlier test processes that have ended (their processes were
/// killed with them, but statics never run destructors, so the files stay).
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !crate::process::pid_alive(pid) {
            // Its watchdog normally did this; it may have been killed with the test run.
            stop_nodes(&entry.path());
            let left = crate::node::mounts_under(&entry.path());
            if left.is_empty() {
                let _ = std::fs::remove_dir_all(entry.path());
            } else {
                // Never delete through a mount: it could reach a volume's real data.
                tracing::warn!(dir = %entry.path().display(), ?left, "mounts remain; not removing");
            }
        }
    }
}

/// The versions this build of the environment starts.
pub fn versions() -> Versions {
    Versions::pinned()
}

/// The IPv4 host of `https://host:port`.
fn url_host(url: &str) -> Option<std::net::Ipv4Addr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split([':', '/']).next()?.parse().ok()
}
