//! Everything the environment starts dies with the process that started it, also when
//! that process panics: nothing is left running or listening.

use std::process::Command;
use std::time::{Duration, Instant};

use ferry_testenv::EnvState;
use ferry_testenv::process::pid_alive;

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

#[test]
fn processes_die_with_a_panicking_owner() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-testenv"))
        .args(["start-then-panic", "--dir"])
        .arg(dir.path())
        .output()
        .expect("running ferry-testenv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(101),
        "expected a panic; stderr:\n{stderr}"
    );
    assert!(stderr.contains("deliberate panic"), "stderr:\n{stderr}");
    let state: EnvState = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("state on stdout: {e}; stderr:\n{stderr}"));

    // One cluster (etcd, kube-apiserver, kube-controller-manager) and MinIO.
    assert_eq!(state.pids.len(), 4, "{state:?}");
    let cluster = &state.clusters[0];
    let ports = [
        port_of(&cluster.server),
        port_of(&cluster.etcd),
        port_of(&state.s3.as_ref().unwrap().endpoint),
    ];

    let start = Instant::now();
    while state.pids.iter().any(|&p| pid_alive(p)) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running after the owner panicked: {:?}",
            state
                .pids
                .iter()
                .filter(|&&p| pid_alive(p))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Free means this process can bind it: a listener would stop that (std sets
    // SO_REUSEADDR, so leftover TIME_WAIT connections do not). A connect probe is not used
    // because a connect to a free ephemeral port can, rarely, connect to itself.
    for port in ports {
        let start = Instant::now();
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "port {port} still in use after the owner panicked"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A node's containers outlive any parent-death signal; the environment's watchdog must
/// notice the owner is gone and tear the node down: nothing mounted, running or routed.
#[test]
fn nodes_are_torn_down_after_their_owner_panics() {
    let dir = tempfile::Builder::new()
        .prefix("ferry-panic-nodes-")
        .tempdir()
        .unwrap()
        .keep();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-testenv"))
        .args(["start-then-panic", "--nodes", "1", "--dir"])
        .arg(&dir)
        .output()
        .expect("running ferry-testenv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "stderr:\n{stderr}");
    let state: EnvState = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("state on stdout: {e}; stderr:\n{stderr}"));
    let node = state.clusters[0].nodes[0].clone();

    let start = Instant::now();
    loop {
        let left = ferry_testenv::node::leftovers(&node);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "60s after the owner panicked, {} still has:\n{}",
            node.name,
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::fs::remove_dir_all(&dir).expect("removing the environment's directory");
}
