//! Helpers of the tests that run pods on real nodes: kubectl with the environment's
//! kubeconfig, waits, and the teardown check.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use ferry_testenv::{EnvSpec, Lifetime, NodeInfo, TestEnv};

/// One cluster, `m`, with `nodes` nodes and no S3 server.
pub fn one_cluster(nodes: usize) -> EnvSpec {
    EnvSpec {
        clusters: vec!["m".to_owned()],
        s3: false,
        nodes_per_cluster: nodes,
        previous_minor: None,
    }
}

/// Starts `spec` in a fresh directory named after `prefix` and prints how long that took;
/// returns the environment, its directory and the toolbox image's reference. The
/// directory is kept, not a TempDir: if the test fails, the nodes' mounts must be gone
/// (the watchdog's teardown) before anything deletes files below it.
pub async fn start_kept(prefix: &str, spec: &EnvSpec) -> (TestEnv, std::path::PathBuf, String) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
        .keep();
    let started = Instant::now();
    let env = TestEnv::start(spec, &dir, Lifetime::WithThisProcess)
        .await
        .unwrap_or_else(|e| panic!("starting {spec:?}: {e}"));
    eprintln!(
        "{} cluster(s) with {} node(s) each started in {:?}",
        spec.clusters.len(),
        spec.nodes_per_cluster,
        started.elapsed()
    );
    let toolbox = ferry_testenv::NodeImages::locate(&ferry_testenv::versions())
        .expect("images")
        .toolbox;
    (env, dir, toolbox)
}

pub fn kubectl(env: &TestEnv, context: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut cmd = env.kubectl(context);
    cmd.args(args);
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    });
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("running kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing to kubectl");
    }
    let out = child.wait_with_output().expect("waiting for kubectl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl --context {context} {args:?} failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `kubectl exec` until it succeeds (a fresh pod's DNS or a new Service's rules can take a
/// moment); the last failure is the panic message.
pub fn exec_eventually(env: &TestEnv, context: &str, ns: &str, pod: &str, cmd: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let mut args = vec!["-n", ns, "exec", pod, "--"];
        args.extend_from_slice(cmd);
        let out = env.kubectl(context).args(&args).output().expect("kubectl");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{cmd:?} in {ns}/{pod} on {context} kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn wait_ready(env: &TestEnv, context: &str, ns: &str, what: &str) {
    // `kubectl wait` fails at once on a pod that does not exist yet, and a StatefulSet's
    // pod appears a moment after the StatefulSet.
    let start = Instant::now();
    while !env
        .kubectl(context)
        .args(["-n", ns, "get", what])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} in {ns} on {context} never appeared"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    kubectl(
        env,
        context,
        &[
            "-n",
            ns,
            "wait",
            "--for=condition=Ready",
            what,
            "--timeout=180s",
        ],
        None,
    );
}

/// Stops the environment and asserts that its `expected` nodes left nothing behind: no
/// mount, container, cgroup, namespace, route or rule; then removes its directory.
pub fn stop_and_find_nothing_left(env: TestEnv, dir: &std::path::Path, expected: usize) {
    let nodes: Vec<NodeInfo> = env
        .state
        .clusters
        .iter()
        .flat_map(|c| c.nodes.clone())
        .collect();
    assert_eq!(nodes.len(), expected);
    let stopping = Instant::now();
    env.stop();
    eprintln!("teardown took {:?}", stopping.elapsed());
    for node in &nodes {
        let left = ferry_testenv::node::leftovers(node);
        assert!(
            left.is_empty(),
            "{} left behind:\n{}",
            node.name,
            left.join("\n")
        );
    }
    std::fs::remove_dir_all(dir).expect("removing the environment's directory");
}

/// Runs `kubectl <args>` until its output satisfies `done` (a failing run counts as not
/// done), and returns that output; panics with the last output after `timeout`.
pub fn kubectl_until(
    env: &TestEnv,
    context: &str,
    args: &[&str],
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let out = env.kubectl(context).args(args).output().expect("kubectl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && done(&text) {
            return text;
        }
        assert!(
            start.elapsed() < timeout,
            "kubectl --context {context} {args:?} never gave what was awaited; last:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
