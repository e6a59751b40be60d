//! Ferry as users run it: its image (built from the binary under test) imported into
//! every node, the Helm chart installed on both clusters with its default transport
//! security (mutual TLS between components from a CA each release generates; each
//! cluster then trusts the other's CA), every Ferry pod Ready, and a running
//! application migrated from a to b with the `ferry` command. The application
//! checks its own data when it starts; on b it must come up Running and Ready with that
//! check passing, every byte of its volume equal. Then `helm upgrade` with a changed
//! value rolls the pods without losing the job, and `helm uninstall` leaves no Ferry
//! object behind but the claims of its state (as Helm does).

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::assert_same_tree;
use common::control::{
    cli, delete_on_both, eventually, jsonpath, kubectl, kubectl_ok, migrate, profiles_and_pair,
};
use common::volumes::{
    assert_both_volumes_arrived, assert_nothing_of_the_copy_left, pod_sums, two_volume_application,
    verified,
};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/ferry");
const NS: &str = "ferry-system";

/// `helm --kubeconfig K --kube-context C ARGS...`, which must succeed.
fn helm(kubeconfig: &Path, context: &str, args: &[&str]) -> String {
    let helm = ferry_testenv::helm().expect("helm (make testenv builds it)");
    let out = Command::new(helm)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--kube-context", context])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm {args:?} on {context}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ferry's image of the `ferry` binary under test, as `make image` builds it, into `dir`.
fn ferry_image(dir: &Path) -> (String, PathBuf) {
    let tag = format!("test-{}", std::process::id());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/build-images.sh");
    let out = Command::new("bash")
        .args([script, "ferry"])
        .env("FERRY_BIN", env!("CARGO_BIN_EXE_ferry"))
        .env("FERRY_IMAGE_TAG", &tag)
        .env("FERRY_IMAGE_DIR", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-images.sh ferry: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tarball = dir.join(format!("ferry-{tag}.tar"));
    eprintln!(
        "image ferry.local/ferry:{tag}: {} MiB",
        std::fs::metadata(&tarball).unwrap().len() >> 20
    );
    (tag, tarball)
}

/// One cluster's install: where its gateway and API server are reached from the other.
struct Install {
    context: &'static str,
    node_port: u16,
    node_ip: String,
    api_server: String,
    local_paths: Vec<String>,
    /// The directory holding the cluster's node directories, a shared mount.
    nodes_dir: String,
    /// `NODE=DIR` of each node's kubelet root.
    kubelet_roots: Vec<String>,
}

impl Install {
    fn new(env: &ferry_testenv::TestEnv, context: &'static str, node_port: u16) -> Self {
        let cluster = env.cluster(context).unwrap();
        let node = cluster.nodes.first().expect("a node");
        Install {
            context,
            node_port,
            node_ip: node.ip.to_string(),
            api_server: cluster.server.clone(),
            local_paths: cluster
                .nodes
                .iter()
                .map(|n| n.dir.join("local-path").display().to_string())
                .collect(),
            nodes_dir: node
                .dir
                .parent()
                .expect("a node directory under the cluster's")
                .display()
                .to_string(),
            kubelet_roots: cluster
                .nodes
                .iter()
                .map(|n| format!("{}={}", n.name, n.kubelet_dir().display()))
                .collect(),
        }
    }

    fn values(&self, tag: &str, log_level: &str) -> Vec<String> {
        let set = |k: &str, v: &str| format!("{k}={v}");
        let mut values = vec![
            set("image.tag", tag),
            set("image.pullPolicy", "Never"),
            set("clusterName", self.context),
            set("logLevel", log_level),
            set("gateway.service.type", "NodePort"),
            set("gateway.service.nodePort", &self.node_port.to_string()),
            set(
                "peer.endpoint",
                &format!("{}:{}", self.node_ip, self.node_port),
            ),
            set("peer.apiServerURL", &self.api_server),
            // Every node of the test clusters has a kubelet directory of its own,
            // which one hostPath cannot name: the agent mounts the directory holding
            // all nodes' (a shared mount, as a node's `/` is), with HostToContainer
            // propagation, and is told each node's kubelet root.
            set("agent.kubeletDir", ""),
            set("agent.hostPaths[0]", &self.nodes_dir),
            set("metrics.enabled", "true"),
            // Migration objects carry no caller credential for the destination: it
            // trusts the names its sources give.
            set("pairing.trustSourceIdentities", "true"),
        ];
        for (i, root) in self.kubelet_roots.iter().enumerate() {
            values.push(set(
                &format!("agent.extraArgs[{i}]"),
                &format!("--kubelet-root={root}"),
            ));
        }
        values
            .into_iter()
            .flat_map(|v| ["--set".to_string(), v])
            .collect()
    }

    /// `helm install|upgrade`; `trusted`: the other cluster's CA certificate file.
    fn helm_install(
        &self,
        kubeconfig: &Path,
        verb: &str,
        tag: &str,
        log_level: &str,
        trusted: Option<&Path>,
    ) {
        let mut args = vec![verb, "ferry", CHART, "-n", NS, "--wait", "--timeout", "5m"];
        if verb == "install" {
            args.push("--create-namespace");
        }
        let mut values = self.values(tag, log_level);
        if let Some(ca) = trusted {
            values.push("--set-file".into());
            values.push(format!("tls.extraTrustedCA={}", ca.display()));
        }
        args.extend(values.iter().map(String::as_str));
        helm(kubeconfig, self.context, &args);
    }

    /// The CA this release generated, written to `dir/<context>-ca.crt`.
    fn ca(&self, kubeconfig: &Path, dir: &Path) -> PathBuf {
        let b64 = kubectl(
            kubeconfig,
            self.context,
            &[
                "-n",
                NS,
                "get",
                "secret",
                "ferry-ca",
                "-o",
                "jsonpath={.data.tls\\.crt}",
            ],
            None,
        );
        let pem = base64_decode(b64.trim());
        let path = dir.join(format!("{}-ca.crt", self.context));
        std::fs::write(&path, pem).unwrap();
        path
    }
}

/// Waits until the `ferry` command reaches the Ferry of each context (through the API
/// server); on timeout, says what the last attempt answered.
fn wait_answering(kubeconfig: &Path, contexts: &[&str]) {
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    for context in contexts {
        loop {
            let answer = cli(kubeconfig, &["--context", context, "pair", "list"]);
            if answer.code == Some(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Ferry of {context} does not answer: {answer:?}\n{}",
                kubectl(
                    kubeconfig,
                    context,
                    &["-n", NS, "get", "pods,endpoints", "-o", "wide"],
                    None
                )
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

/// Where the volume of claim `data-db-0` of `ns` is on this machine (every node's
/// filesystem is this machine's).
fn volume_dir(kubeconfig: &Path, context: &str, ns: &str) -> PathBuf {
    let pv = jsonpath(
        kubeconfig,
        context,
        ns,
        "pvc/data-db-0",
        "{.spec.volumeName}",
    );
    let spec = kubectl(
        kubeconfig,
        context,
        &[
            "get",
            "pv",
            &pv,
            "-o",
            "jsonpath={.spec.hostPath.path}{.spec.local.path}",
        ],
        None,
    );
    PathBuf::from(spec)
}

/// Names of the pods of the release on `context`.
fn ferry_pods(kubeconfig: &Path, context: &str) -> Vec<String> {
    let out = kubectl(
        kubeconfig,
        context,
        &[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/instance=ferry",
            "-o",
            "name",
        ],
        None,
    );
    let mut pods: Vec<String> = out.lines().map(str::to_owned).collect();
    pods.sort();
    pods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installed_ferry_migrates_local_path_and_csi_snapshot_volumes_through_mover_pods_and_kills()
 {
    let env = ferry_testenv::shared_with_nodes()
        .await
        .expect("test environment with nodes");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let toolbox = ferry_testenv::NodeImages::locate(&ferry_testenv::versions())
        .unwrap()
        .toolbox;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    let (tag, tarball) = ferry_image(root);
    env.import_image(&tarball).unwrap();
    std::fs::remove_file(&tarball).unwrap();

    let (a, b) = install_chart_on_both(env, &kc, &tag);
    let bundle = trust_each_others_ca(&kc, root, &tag, &a, &b);
    assert_every_ferry_pod_ready(&kc, [&a, &b]);

    // The `ferry` command finds each in-cluster Ferry from its context alone.
    wait_answering(&kc, &["a", "b"]);
    profiles_and_pair(&kc, s3, root, ("s3", "repo-key"), "in-cluster", 61);

    // The application runs on a with its own data, and keeps writing to its CSI volume
    // while it migrates.
    let ns = ferry_testenv::unique_name("chart-app");
    two_volume_application(&kc, &ns, &toolbox, "");
    migrate_a_to_b(&kc, &ns);
    assert_the_application_arrived_on_b(&kc, &ns, &b, &bundle).await;
    kubectl_apply_of_a_migration_moves_a_namespace(&kc);
    for kill in [Kill::MoverPod, Kill::Agent, Kill::Transfer] {
        a_migration_survives_a_kill_mid_copy(&kc, &toolbox, &bundle, kill).await;
    }

    // A changed value rolls the pods; the job survives in the transfer service's state.
    roll_the_pods_and_find_the_job(&kc, &a, &tag, root, &ns);

    // Uninstalled, nothing of the release is left but its state's claims; what pairing
    // made on the destination for the pair goes with it (garbage collection).
    uninstall_and_find_only_the_claims(&kc, [&a, &b]);
    assert_what_pairing_made_on_b_is_collected(&kc);
}

/// Installs the chart on both clusters, every Ferry pod Ready.
fn install_chart_on_both(env: &ferry_testenv::TestEnv, kc: &Path, tag: &str) -> (Install, Install) {
    // Distinct NodePorts: every node of the machine shares one kernel's port space only
    // per network namespace, but a distinct port per cluster keeps the logs readable.
    let base = 30000 + (std::process::id() % 1000) as u16 * 2;
    let a = Install::new(env, "a", base);
    let b = Install::new(env, "b", base + 1);
    let started = Instant::now();
    a.helm_install(kc, "install", tag, "info", None);
    b.helm_install(kc, "install", tag, "info", None);
    eprintln!(
        "chart installed and every Ferry pod Ready on both clusters in {:.0?}",
        started.elapsed()
    );
    (a, b)
}

/// Each cluster's Ferry calls the other's gateway: it trusts the other's CA too. The
/// `ferry` command trusts both; returns the file holding both CAs.
fn trust_each_others_ca(kc: &Path, root: &Path, tag: &str, a: &Install, b: &Install) -> PathBuf {
    let (ca_a, ca_b) = (a.ca(kc, root), b.ca(kc, root));
    a.helm_install(kc, "upgrade", tag, "info", Some(&ca_b));
    b.helm_install(kc, "upgrade", tag, "info", Some(&ca_a));
    let bundle = root.join("ferry-cas.crt");
    let both = [ca_a, ca_b]
        .map(|p| std::fs::read_to_string(p).unwrap())
        .concat();
    std::fs::write(&bundle, both).unwrap();
    common::trust_ca_file(&bundle);
    bundle
}

fn assert_every_ferry_pod_ready(kc: &Path, sides: [&Install; 2]) {
    for side in sides {
        let ready = kubectl(
            kc,
            side.context,
            &[
                "-n",
                NS,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/instance=ferry",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
            ],
            None,
        );
        // Five control-plane Deployments, the controller and one agent per node.
        assert_eq!(ready.split_whitespace().count(), 7, "{ready}");
        assert!(!ready.contains("=False"), "{ready}");
    }
}

/// Migrates namespace `ns` from a to b with the `ferry` command; on failure, says what
/// the transfer service logged.
fn migrate_a_to_b(kc: &Path, ns: &str) {
    let started = Instant::now();
    let migrated = migrate(kc, ns, "a-to-b", &[]);
    assert_eq!(
        migrated.code,
        Some(0),
        "{migrated:?}\n{}",
        kubectl(
            kc,
            "a",
            &["-n", NS, "logs", "deploy/ferry-transfer", "--tail=60"],
            None
        )
    );
    eprintln!("migrated in {:.0?}", started.elapsed());
}

/// On b the application runs, and its own check of every record of both volumes passes;
/// the local-path volume is provisioned on b through its class, restored through a
/// mover pod that is gone again, and holds every byte; the metrics count the migration.
async fn assert_the_application_arrived_on_b(kc: &Path, ns: &str, b: &Install, bundle: &Path) {
    let logs = assert_both_volumes_arrived(kc, ns);
    assert_eq!(verified(&logs, "/data/records"), 100, "{logs}");
    let src = volume_dir(kc, "a", ns);
    let dst = volume_dir(kc, "b", ns);
    // Provisioned on b through its class (local-path), restored through a mover pod
    // that is gone again.
    assert!(
        b.local_paths.iter().any(|p| dst.starts_with(p)),
        "{} is not a local-path volume of b",
        dst.display()
    );
    assert_nothing_of_the_copy_left(kc, ns);
    assert_same_tree(&src, &dst);
    metrics_count_the_migration(kc, &src, bundle).await;
}

/// `helm upgrade` of a with a changed value rolls its pods; the job of the migration of
/// `ns` is still listed, succeeded, through the rolled gateway.
fn roll_the_pods_and_find_the_job(kc: &Path, a: &Install, tag: &str, root: &Path, ns: &str) {
    let before = ferry_pods(kc, "a");
    a.helm_install(kc, "upgrade", tag, "debug", Some(&root.join("b-ca.crt")));
    // Recreated components' old pods are gone before the new ones start; the
    // controller's (rolled one at a time) may still be terminating just after the wait.
    let mut after = Vec::new();
    eventually("every old Ferry pod but the agents' to go", || {
        after = ferry_pods(kc, "a");
        before
            .iter()
            .all(|p| !after.contains(p) || p.contains("agent"))
    });
    assert!(after.len() >= before.len() - 1, "{before:?} -> {after:?}");
    wait_answering(kc, &["a"]);
    // The gateway answers as soon as it is Ready; its route to the new transfer pod
    // (the Service's address on the node) may take a moment more after the roll.
    let mut jobs = None;
    eventually("the job list through the rolled gateway", || {
        let listed = cli(kc, &["--context", "a", "jobs", "list"]);
        let unavailable = listed.code == Some(1) && listed.stderr.contains("could not reach");
        if !unavailable {
            jobs = Some(listed);
        }
        !unavailable
    });
    let jobs = jobs.unwrap().ok();
    assert!(
        jobs.stdout
            .lines()
            .any(|l| l.contains(ns) && l.contains("succeeded")),
        "{jobs:?}"
    );
}

fn uninstall_and_find_only_the_claims(kc: &Path, sides: [&Install; 2]) {
    for side in sides {
        helm(
            kc,
            side.context,
            &["uninstall", "ferry", "-n", NS, "--wait"],
        );
        let left = kubectl(
            kc,
            side.context,
            &[
                "get",
                "deploy,ds,svc,sa,secret,configmap,role,rolebinding,clusterrole,clusterrolebinding,networkpolicy",
                "-A",
                "-l",
                "app.kubernetes.io/instance=ferry",
                "-o",
                "name",
            ],
            None,
        );
        assert_eq!(left.trim(), "", "left behind on {}", side.context);
        let claims = kubectl(
            kc,
            side.context,
            &[
                "-n",
                NS,
                "get",
                "pvc",
                "-l",
                "app.kubernetes.io/instance=ferry",
                "-o",
                "name",
            ],
            None,
        );
        assert!(claims.contains("persistentvolumeclaim/"), "{claims}");
    }
}

fn assert_what_pairing_made_on_b_is_collected(kc: &Path) {
    eventually("what pairing made on b to be collected", || {
        !kubectl_ok(kc, "b", &["get", "clusterrole", "ferry-migrator"])
            && kubectl(
                kc,
                "b",
                &[
                    "get",
                    "serviceaccounts,clusterrolebindings",
                    "-A",
                    "-l",
                    "app.kubernetes.io/managed-by=ferry-pairing",
                    "-o",
                    "name",
                ],
                None,
            )
            .trim()
            .is_empty()
    });
}

/// The SDK's client of a's Ferry, trusting the releases' CAs `cas`.
async fn ferry_of_a(kc: &Path, cas: &Path) -> ferry_client::Ferry {
    let tls = ferry_rpc::ClientTls::new()
        .with_ca(ferry_rpc::Pem::read("--ca-file", cas).unwrap())
        .unwrap();
    ferry_client::Ferry::for_context_with(Some(kc), Some("a"), &tls)
        .await
        .unwrap()
}

/// A field of Migration `to-b` in `ns` on a, by JSONPath.
fn migration_field(kc: &Path, ns: &str, path: &str) -> String {
    kubectl(
        kc,
        "a",
        &[
            "-n",
            ns,
            "get",
            "migration",
            "to-b",
            "-o",
            &format!("jsonpath={{{path}}}"),
        ],
        None,
    )
}

/// What is killed while a migration copies volume data on a.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// The read-only mover pod holding the CSI snapshot's temporary claim.
    MoverPod,
    /// The node's agent pod, force-deleted; its DaemonSet starts another.
    Agent,
    /// The transfer service's pod, force-deleted; its Deployment starts another, which
    /// resumes the job from its state volume. The migration is a Migration object here.
    Transfer,
}

/// A migration of the two-volume application (with 250 MB more in its CSI volume, so
/// the copy takes a while) started detached; once the backup step has read data,
/// `kill` is killed. The job still succeeds, the application's own check passes on b,
/// every byte of the large file arrived, and no VolumeSnapshot, temporary claim or mover
/// pod is left on either cluster.
async fn a_migration_survives_a_kill_mid_copy(kc: &Path, image: &str, cas: &Path, kill: Kill) {
    let ns = ferry_testenv::unique_name("killed");
    two_volume_application(kc, &ns, image, "");
    write_a_large_file_to_the_csi_volume(kc, &ns);
    let ferry_a = ferry_of_a(kc, cas).await;
    let id = start_the_migration(kc, &ns, kill);
    wait_until_the_csi_volume_is_being_read(&ferry_a, &id).await;
    kill_mid_copy(kc, &ns, kill);
    eprintln!("{kill:?} killed mid-copy in job {id}");
    let job = wait_for_the_job_to_end(&ferry_a, &id, kill).await;
    if kill == Kill::Transfer && job.state() == ferry_client::proto::JobState::Failed {
        assert_it_failed_clearly_and_left_nothing(kc, &ns, kill, &job);
    } else {
        assert_it_succeeded_and_every_byte_arrived(kc, &ns, kill, &job);
    }
    delete_on_both(kc, &ns);
}

/// 250 MB more in the CSI volume of `ns` on a, so that copying it takes a while.
fn write_a_large_file_to_the_csi_volume(kc: &Path, ns: &str) {
    kubectl(
        kc,
        "a",
        &[
            "-n",
            ns,
            "exec",
            "db-0",
            "--",
            "sh",
            "-c",
            "head -c 250000000 /dev/urandom > /fast/large && sync",
        ],
        None,
    );
}

/// Starts the migration of `ns` detached; the job's id.
fn start_the_migration(kc: &Path, ns: &str, kill: Kill) -> String {
    // The transfer service's own kill goes through a Migration object: its controller
    // must follow the job across the restart.
    if kill == Kill::Transfer {
        let yaml = format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: Migration\n\
             metadata: {{name: to-b, namespace: {ns}}}\n\
             spec: {{clusterPair: a-to-b, profile: main}}\n"
        );
        kubectl(kc, "a", &["apply", "-f", "-"], Some(&yaml));
        let mut id = String::new();
        eventually("the Migration to start its job", || {
            id = migration_field(kc, ns, ".status.jobs[0].id");
            !id.is_empty()
        });
        id
    } else {
        let started = migrate(kc, ns, "a-to-b", &["--detach"]).ok();
        started.stdout.trim().to_owned()
    }
}

/// Mid-copy: the backup step has read part of the CSI volume (its progress names each
/// volume).
async fn wait_until_the_csi_volume_is_being_read(ferry_a: &ferry_client::Ferry, id: &str) {
    let deadline = Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let (job, _) = ferry_a.job(id).get().await.unwrap();
        let p = job.progress.clone().unwrap_or_default();
        let csi = p.volumes.iter().find(|v| v.pvc_name == "fast-db-0");
        if p.step == "backup-volumes"
            && csi.is_some_and(|v| {
                v.bytes_read > 0 && !v.done && v.through.starts_with("csi snapshot")
            })
        {
            break;
        }
        assert!(
            Instant::now() < deadline && !ferry_client::is_final(job.state()),
            "the backup of job {id} never got under way: {job:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn kill_mid_copy(kc: &Path, ns: &str, kill: Kill) {
    let force = ["--grace-period=0", "--force", "--wait=false"];
    match kill {
        Kill::MoverPod => {
            let movers = kubectl(kc, "a", &["-n", ns, "get", "pods", "-o", "name"], None);
            let mover = movers
                .lines()
                .find(|p| p.starts_with("pod/ferry-mover-"))
                .unwrap_or_else(|| panic!("no mover pod in {ns} on a: {movers}"));
            kubectl(
                kc,
                "a",
                &[&["-n", ns, "delete", mover][..], &force].concat(),
                None,
            );
        }
        Kill::Agent | Kill::Transfer => {
            let component = if kill == Kill::Agent {
                "agent"
            } else {
                "transfer"
            };
            let selector = format!("app.kubernetes.io/component={component}");
            kubectl(
                kc,
                "a",
                &[&["-n", NS, "delete", "pod", "-l", &selector][..], &force].concat(),
                None,
            );
        }
    }
}

/// The job ends by itself (a killed transfer service's job once the new pod resumed it).
async fn wait_for_the_job_to_end(
    ferry_a: &ferry_client::Ferry,
    id: &str,
    kill: Kill,
) -> ferry_client::proto::Job {
    let deadline = Instant::now() + std::time::Duration::from_secs(300);
    loop {
        // While the transfer service restarts, the gateway has nobody to ask.
        if let Ok((job, _)) = ferry_a.job(id).get().await
            && ferry_client::is_final(job.state())
        {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not end after {kill:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The issue allows a killed transfer service's job a clear failure: it names the
/// claim, and nothing of the copy is left behind.
fn assert_it_failed_clearly_and_left_nothing(
    kc: &Path,
    ns: &str,
    kill: Kill,
    job: &ferry_client::proto::Job,
) {
    let message = job.error.clone().unwrap_or_default().message;
    assert!(message.contains("fast-db-0"), "after {kill:?}: {job:?}");
    eprintln!("{kill:?}: the job failed clearly: {message}");
    eventually("the failed job's movers and snapshots to go", || {
        kubectl(
            kc,
            "a",
            &["-n", ns, "get", "pods,pvc,volumesnapshots", "-o", "name"],
            None,
        )
        .lines()
        .all(|l| !l.contains("ferry-"))
    });
}

/// The job succeeded (a Migration object says so too), the application's own check
/// passes on b, every byte of the large file arrived, and nothing of the copy is left.
fn assert_it_succeeded_and_every_byte_arrived(
    kc: &Path,
    ns: &str,
    kill: Kill,
    job: &ferry_client::proto::Job,
) {
    assert_eq!(
        job.state(),
        ferry_client::proto::JobState::Succeeded,
        "after {kill:?}: {job:?}\n{}",
        kubectl(
            kc,
            "a",
            &["-n", NS, "logs", "deploy/ferry-transfer", "--tail=40"],
            None
        )
    );
    if kill == Kill::Transfer {
        eventually("the Migration object to say Succeeded", || {
            migration_field(kc, ns, ".status.phase") == "Succeeded"
        });
        let volumes = migration_field(kc, ns, ".status.volumes");
        assert!(volumes.contains("fast-db-0"), "{volumes}");
    }
    assert_both_volumes_arrived(kc, ns);
    assert_eq!(
        pod_sums(kc, "a", ns, "/fast/large"),
        pod_sums(kc, "b", ns, "/fast/large"),
        "after {kill:?}"
    );
    assert_nothing_of_the_copy_left(kc, ns);
}

/// The chart's controller and webhook at work: a Migration applied with kubectl (as
/// the administrator) moves a namespace through the pair the `ferry` command made.
fn kubectl_apply_of_a_migration_moves_a_namespace(kc: &Path) {
    let ns = ferry_testenv::unique_name("crd-settings");
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\n\
         data: {{greeting: moved-by-a-migration-object}}\n---\n\
         apiVersion: ferry.dev/v1alpha1\nkind: Migration\n\
         metadata: {{name: to-b, namespace: {ns}}}\n\
         spec: {{clusterPair: a-to-b, profile: main}}\n"
    );
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&yaml));
    let field = |path: &str| migration_field(kc, &ns, path);
    eventually("the Migration object to succeed", || {
        let phase = field(".status.phase");
        assert!(
            phase.is_empty() || phase == "Running" || phase == "Succeeded",
            "{}\n{}",
            field(".status"),
            kubectl(
                kc,
                "a",
                &["-n", NS, "logs", "deploy/ferry-controller", "--tail=40"],
                None
            )
        );
        phase == "Succeeded"
    });
    let requester = field(".metadata.annotations.ferry\\.dev/requester");
    assert!(requester.contains("\"username\":\"admin\""), "{requester}");
    assert_eq!(
        jsonpath(kc, "b", &ns, "configmap/settings", "{.data.greeting}"),
        "moved-by-a-migration-object"
    );
}

/// What Prometheus scrapes from a's transfer service moved by exactly the one
/// migration this release ran: the job's report and the volume on disk say how much.
async fn metrics_count_the_migration(kc: &Path, src: &Path, cas: &Path) {
    let ferry_a = ferry_of_a(kc, cas).await;
    let report =
        common::control::report(&ferry_a, &common::control::newest_job(&ferry_a).await).await;
    let m = common::metrics::scrape_in_cluster(kc, "a", NS, "deploy/ferry-transfer", 9090);
    let succeeded = [("result", "succeeded")];
    assert_eq!(m.value("ferry_migrations_total", &succeeded), 1.0);
    assert_eq!(
        m.value(
            "ferry_jobs_total",
            &[("kind", "migration"), ("result", "succeeded")]
        ),
        1.0
    );
    assert_eq!(m.value("ferry_jobs_running", &[("kind", "migration")]), 0.0);
    assert_eq!(m.histogram_count("ferry_migration_duration_seconds"), 1);

    // The local-path volume is read on disk; the CSI volume was a snapshot of a
    // volume still being written, so the report says how much of it there was.
    let on_disk = common::tree_bytes(src);
    let data = report
        .volumes
        .iter()
        .find(|v| v.pvc_name == "data-db-0")
        .expect("data-db-0 in the report");
    assert_eq!(data.bytes_total, on_disk, "{:?}", report.volumes);
    let total: u64 = report.volumes.iter().map(|v| v.bytes_total).sum();
    let uploaded: u64 = report.volumes.iter().map(|v| v.bytes_uploaded).sum();
    assert_eq!(report.volumes.len(), 2, "{:?}", report.volumes);
    assert!(uploaded > 0, "{:?}", report.volumes);
    assert_eq!(
        m.value(
            "ferry_bytes_transferred_total",
            &[("direction", "restored")]
        ),
        total as f64
    );
    assert_eq!(
        m.value(
            "ferry_bytes_transferred_total",
            &[("direction", "uploaded")]
        ),
        uploaded as f64
    );

    // The repository, as of the restore point the migration wrote: at least what it
    // uploaded into an empty one.
    let size = m.value("ferry_repository_size_bytes", &[("profile", "main")]);
    assert!(
        size >= uploaded as f64 && size > 0.0,
        "repository {size} bytes, uploaded {uploaded}"
    );

    let created = report
        .objects
        .iter()
        .filter(|o| o.action() == ferry_client::proto::ObjectAction::Created)
        .count();
    assert!(created >= 3, "{:?}", report.objects);
    assert_eq!(
        m.value("ferry_objects_applied_total", &[("result", "created")]),
        created as f64
    );
    assert_eq!(
        m.value("ferry_objects_applied_total", &[("result", "failed")]),
        0.0
    );
    assert_eq!(
        m.value(
            "grpc_server_handled_total",
            &[
                ("grpc_service", "ferry.v1.TransferService"),
                ("grpc_method", "StartMigration"),
                ("grpc_code", "OK"),
            ]
        ),
        1.0
    );
    eprintln!(
        "metrics: 1 migration, {total} bytes restored, {uploaded} uploaded, {created} objects created"
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64 from kubectl")
}
