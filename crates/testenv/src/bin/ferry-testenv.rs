//! `ferry-testenv`: the test environment for people (`make dev-up` / `make dev-down`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_testenv::{EnvSpec, Lifetime, TestEnv};

#[derive(Parser)]
#[command(about = "Start or stop local Kubernetes clusters and an S3 server for Ferry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the clusters and the S3 server and leave them running.
    Up {
        /// Directory for state, logs, kubeconfig and s3.env.
        #[arg(long, default_value = ".ferry-dev")]
        dir: PathBuf,
        /// Cluster names, comma separated; each is a kubeconfig context.
        #[arg(long, value_delimiter = ',', default_value = "a,b")]
        clusters: Vec<String>,
        /// Real nodes per cluster (0: API only, pods never run).
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// This cluster runs the previous Kubernetes minor (KUBE_PREVIOUS_VERSION in
        /// crates/testenv/versions.env; `scripts/build-testenv.sh kube-previous` builds it).
        #[arg(long, value_name = "CLUSTER")]
        previous_minor: Option<String>,
    },
    /// Import an image tarball (as scripts/build-images.sh makes them) into every node
    /// of the environment in this directory.
    ImportImage {
        #[arg(long, default_value = ".ferry-dev")]
        dir: PathBuf,
        tarball: PathBuf,
    },
    /// Stop everything `up` started in this directory.
    Down {
        #[arg(long, default_value = ".ferry-dev")]
        dir: PathBuf,
    },
    /// Start an environment tied to this process, print its ports, then panic: the
    /// tests use it to prove nothing is left running after a panic.
    #[command(hide = true)]
    StartThenPanic {
        #[arg(long)]
        dir: PathBuf,
        /// Real nodes for the cluster (their watchdog must tear them down).
        #[arg(long, default_value_t = 0)]
        nodes: usize,
    },
}

/// Where each cluster is reached from the other, as shell exports for scripts (`make
/// demo`): its API server, its first node's address, its nodes' local-path directories.
fn clusters_env(state: &ferry_testenv::EnvState) -> String {
    let mut out = String::new();
    for c in &state.clusters {
        let prefix = c.name.to_uppercase().replace('-', "_");
        out.push_str(&format!("export FERRY_{prefix}_SERVER={}\n", c.server));
        if let Some(node) = c.nodes.first() {
            out.push_str(&format!("export FERRY_{prefix}_NODE_IP={}\n", node.ip));
        }
        let local_paths: Vec<String> = c
            .nodes
            .iter()
            .map(|n| n.dir.join("local-path").display().to_string())
            .collect();
        out.push_str(&format!(
            "export FERRY_{prefix}_LOCAL_PATHS={}\n",
            local_paths.join(",")
        ));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env() // The readiness polls expect errors while servers boot; kube's client
                // would log each of them.
                .unwrap_or_else(|_| "info,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Up {
            dir,
            clusters,
            nodes,
            previous_minor,
        } => {
            if TestEnv::attach(&dir).is_ok() {
                anyhow::bail!(
                    "an environment is already running in {}; stop it with `make dev-down`",
                    dir.display()
                );
            }
            let dir = std::path::absolute(&dir).context("resolving --dir")?;
            let _ = std::fs::remove_dir_all(&dir);
            let spec = EnvSpec {
                clusters,
                s3: true,
                nodes_per_cluster: nodes,
                previous_minor,
            };
            let env = TestEnv::start(&spec, &dir, Lifetime::Detached)
                .await
                .context("starting the environment (logs are under the --dir)")?;
            let state = env.detach();
            if let Some(s3) = &state.s3 {
                std::fs::write(dir.join("s3.env"), s3.env_lines()).context("writing s3.env")?;
            }
            std::fs::write(dir.join("clusters.env"), clusters_env(&state))
                .context("writing clusters.env")?;
            println!("kubeconfig: {}", state.kubeconfig.display());
            for c in &state.clusters {
                println!(
                    "cluster {}: {} (contexts {}, {})",
                    c.name,
                    c.server,
                    c.name,
                    c.users
                        .iter()
                        .map(|u| c.context_for(&u.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if let Some(s3) = &state.s3 {
                println!(
                    "s3: {} bucket {} (source {}/s3.env)",
                    s3.endpoint,
                    s3.bucket,
                    dir.display()
                );
            }
            println!("stop with: make dev-down");
        }
        Command::ImportImage { dir, tarball } => {
            let env = TestEnv::attach(&dir)
                .with_context(|| format!("no environment running in {}", dir.display()))?;
            env.import_image(&tarball)
                .with_context(|| format!("importing {}", tarball.display()))?;
            println!("imported {} into every node", tarball.display());
        }
        Command::Down { dir } => {
            let state_file = dir.join("state.json");
            let Ok(bytes) = std::fs::read(&state_file) else {
                println!("nothing running in {}", dir.display());
                return Ok(());
            };
            let state: ferry_testenv::EnvState = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", state_file.display()))?;
            // Nodes first: their teardown removes pods through containerd while it runs.
            ferry_testenv::stop_nodes(&state.dir);
            ferry_testenv::process::stop_pids(&state.pids, Duration::from_secs(10));
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            println!(
                "stopped {} processes and removed {}",
                state.pids.len(),
                dir.display()
            );
        }
        Command::StartThenPanic { dir, nodes } => {
            let spec = EnvSpec {
                clusters: vec!["p".to_owned()],
                s3: nodes == 0,
                nodes_per_cluster: nodes,
                previous_minor: None,
            };
            let env = TestEnv::start(&spec, &dir, Lifetime::WithThisProcess).await?;
            // Keep the handles alive: the point is that the kernel, not Drop, stops them.
            let env = Box::leak(Box::new(env));
            println!("{}", serde_json::to_string(&env.state)?);
            panic!("deliberate panic with the environment running");
        }
    }
    Ok(())
}
