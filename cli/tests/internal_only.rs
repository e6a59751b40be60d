//! What no one outside a Ferry deployment may reach, probed as the namespace user and
//! with no token at all: the agent (it moves any volume's bytes) and the internal APIs
//! (they hand out credentials) answer only the deployment's internal credential, and a
//! component that could not check its callers refuses to start.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::control::{free_port, grpcurl};

/// `ferry service ARGS...` started, killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn service(args: &[&str], kubeconfig: Option<&std::path::Path>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("service").args(args);
    if let Some(kc) = kubeconfig {
        cmd.env("KUBECONFIG", kc);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// Runs a component that must refuse to start; its stderr.
fn refused(args: &[&str]) -> String {
    let out = service(args, None).output().unwrap();
    assert!(!out.status.success(), "started: {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_callers_without_the_internal_credential() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let alice = env.token("a", "alice").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("internal");
    std::fs::write(&token, "k".repeat(48)).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _agent = Running(
        service(
            &[
                "agent",
                "--listen",
                &listen,
                "--node-name",
                "n1",
                "--internal-token-file",
                token.to_str().unwrap(),
                "--allow-root",
                tmp.path().to_str().unwrap(),
                "--kubelet-root",
                tmp.path().join("kubelet").to_str().unwrap(),
            ],
            None,
        )
        .spawn()
        .unwrap(),
    );
    wait_listening(port);

    let anonymous = grpcurl(&listen, None, "ferry.v1.AgentService/GetInfo", "{}");
    assert!(anonymous.contains("Unauthenticated"), "{anonymous}");
    // A user of the cluster, with a valid token: still not Ferry itself.
    let user = grpcurl(&listen, Some(&alice), "ferry.v1.AgentService/GetInfo", "{}");
    assert!(
        user.contains("PermissionDenied") && user.contains("internal credential"),
        "{user}"
    );
    let backup = format!(
        r#"{{"operationId":"steal","path":"{}","repository":{{"profile":"x"}}}}"#,
        tmp.path().display()
    );
    let stolen = grpcurl(
        &listen,
        Some(&alice),
        "ferry.v1.AgentService/Backup",
        &backup,
    );
    assert!(stolen.contains("PermissionDenied"), "{stolen}");
    // A pod's CSI volume, named instead of a path: refused the same way before anything
    // looks at it; and to Ferry itself, only that pod's volume mount, never a way out.
    let pod_volume = |uid: &str| {
        format!(
            r#"{{"operationId":"pv-{}","repository":{{"profile":"x"}},"podVolume":{{"node":"n1","podUid":"{uid}","volume":"pvc-1"}}}}"#,
            uid.len()
        )
    };
    let anonymous = grpcurl(
        &listen,
        None,
        "ferry.v1.AgentService/Backup",
        &pod_volume("u-1"),
    );
    assert!(anonymous.contains("Unauthenticated"), "{anonymous}");
    let as_alice = grpcurl(
        &listen,
        Some(&alice),
        "ferry.v1.AgentService/Restore",
        &format!(
            r#"{{"operationId":"r","snapshotId":"{}","repository":{{"profile":"x"}},"targetPodVolume":{{"node":"n1","podUid":"u-1","volume":"pvc-1"}}}}"#,
            "0".repeat(64)
        ),
    );
    assert!(as_alice.contains("PermissionDenied"), "{as_alice}");
    let climbing = grpcurl(
        &listen,
        Some(&"k".repeat(48)),
        "ferry.v1.AgentService/Backup",
        &pod_volume(".."),
    );
    assert!(
        climbing.contains("InvalidArgument") && climbing.contains("not a Kubernetes name"),
        "{climbing}"
    );
    // The deployment's own components are served.
    let own = grpcurl(
        &listen,
        Some(&"k".repeat(48)),
        "ferry.v1.AgentService/GetInfo",
        "{}",
    );
    assert!(own.contains("\"nodeName\": \"n1\""), "{own}");
}

#[test]
fn components_that_cannot_check_their_callers_refuse_to_start() {
    // An agent with no internal credential could tell no one apart.
    let agent = refused(&["agent", "--listen", "127.0.0.1:0", "--node-name", "n1"]);
    assert!(agent.contains("--internal-token-file"), "{agent}");
    // Serving unchecked is for tests on loopback only.
    let open_agent = refused(&[
        "agent",
        "--listen",
        "0.0.0.0:0",
        "--insecure-plaintext",
        "--insecure-no-access-checks",
    ]);
    assert!(open_agent.contains("loopback"), "{open_agent}");
    let open_transfer = refused(&[
        "transfer",
        "--listen",
        "0.0.0.0:0",
        "--insecure-plaintext",
        "--insecure-no-access-checks",
    ]);
    assert!(open_transfer.contains("loopback"), "{open_transfer}");
    let open_pairing = refused(&[
        "pairing",
        "--listen",
        "0.0.0.0:0",
        "--insecure-plaintext",
        "--insecure-no-access-checks",
        "--ferry-endpoint",
        "127.0.0.1:1",
    ]);
    assert!(open_pairing.contains("loopback"), "{open_pairing}");
}
