//! The CSI driver of clusters with nodes (hostpath.csi.k8s.io): a claim of class
//! csi-hostpath binds and holds what a pod wrote, a VolumeSnapshot of it becomes ready, a
//! claim restored from it on another node reads back the same bytes, deleting it all
//! leaves no VolumeSnapshotContent and no volume data, and the teardown unmounts what
//! the driver mounted.
//!
//! Where things are on the host (the Ferry data mover reads volumes there):
//! - a pod's CSI volume is mounted by the kubelet at
//!   `<node dir>/kubelet/pods/<pod uid>/volumes/kubernetes.io~csi/<pv name>/mount`
//!   ([`NodeInfo::csi_volume_mount`]);
//! - the driver keeps that volume's data in `<node dir>/csi-hostpath/volumes/<pv name>`
//!   and a snapshot as `<node dir>/csi-hostpath/snapshots/snapshot-<VolumeSnapshot uid>.tar`
//!   on its source volume's node ([`NodeInfo::csi_data_dir`]); a volume's node is the one
//!   its PV's node affinity names, and both ids (the PV's volumeHandle, the content's
//!   snapshotHandle) are `<node>_<name>`.

mod common;

use std::time::{Duration, Instant};

use common::{
    kubectl, kubectl_until, one_cluster, start_kept, stop_and_find_nothing_left, wait_ready,
};
use ferry_testenv::addons::{CSI_DRIVER, CSI_SNAPSHOT_CLASS, CSI_STORAGE_CLASS};
use ferry_testenv::{NodeInfo, TestEnv};

const NS: &str = "csi-test";
const WAIT: Duration = Duration::from_secs(120);

/// A claim of the CSI class, optionally restored from a VolumeSnapshot.
fn claim(name: &str, from_snapshot: Option<&str>) -> String {
    let source = from_snapshot.map_or(String::new(), |snap| {
        format!(
            "\n  dataSource: {{ apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: {snap} }}"
        )
    });
    format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{ name: {name}, namespace: {NS} }}
spec:
  storageClassName: {CSI_STORAGE_CLASS}
  accessModes: [ReadWriteOnce]
  resources: {{ requests: {{ storage: 16Mi }} }}{source}
"#
    )
}

/// A pod on `node` (by nodeSelector: the scheduler must pick it, or a WaitForFirstConsumer
/// claim is never provisioned) that runs `script` with `claim` at /data, Ready once
/// /data/content exists.
fn pod(name: &str, node: &str, claim: &str, image: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{ name: {name}, namespace: {NS} }}
spec:
  nodeSelector: {{ kubernetes.io/hostname: {node} }}
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {image}
      imagePullPolicy: IfNotPresent
      command: ["sh", "-c", {script:?}]
      readinessProbe:
        exec: {{ command: ["test", "-f", "/data/content"] }}
        periodSeconds: 1
      volumeMounts: [{{ name: data, mountPath: /data }}]
  volumes:
    - name: data
      persistentVolumeClaim: {{ claimName: {claim} }}
"#
    )
}

/// Applies a claim (restored from `snapshot` if given) and a pod on `node` that uses it,
/// and waits until the pod is Ready.
fn run_with_claim(
    env: &TestEnv,
    (pod_name, node, image): (&str, &str, &str),
    (claim_name, snapshot): (&str, Option<&str>),
    script: &str,
) {
    let yaml = [
        claim(claim_name, snapshot),
        pod(pod_name, node, claim_name, image, script),
    ]
    .join("---\n");
    apply(env, &yaml);
    wait_ready(env, "m", NS, &format!("pod/{pod_name}"));
}

fn get(env: &TestEnv, what: &str, jsonpath: &str) -> String {
    let mut args = vec!["get"];
    args.extend(what.split(' '));
    let jsonpath = format!("jsonpath={jsonpath}");
    args.extend(["-o", &jsonpath]);
    kubectl(env, "m", &args, None)
}

fn apply(env: &TestEnv, yaml: &str) {
    kubectl(env, "m", &["apply", "-f", "-"], Some(yaml));
}

/// Files (and directories) under `dir`, none if it does not exist.
fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_volumes_snapshot_restore_on_another_node_and_leave_nothing_behind() {
    // Two nodes: the restored claim lands on the other node than its snapshot's source.
    let (env, dir, toolbox) = start_kept("ferry-csi-test-", &one_cluster(2)).await;
    let nodes: Vec<NodeInfo> = env.state.clusters[0].nodes.clone();

    assert_driver_and_classes_installed(&env);

    let (content, write) = content_and_writer_script();
    let mount = write_on_first_node_and_read_on_host(&env, &nodes[0], &toolbox, &content, &write);
    snapshot_source_on_its_node(&env, &nodes[0]);
    change_source_after_snapshot(&env);
    let reader_mount = restore_on_the_other_node(&env, &nodes[1], &toolbox, &content);

    delete_all_and_find_nothing_left(&env, &nodes, [&mount, &reader_mount]);
    leave_a_volume_mounted(&env, &nodes[1], &toolbox, &write);
    stop_and_find_nothing_left(env, &dir, 2);
}

/// The driver, its classes, and local-path still the default.
fn assert_driver_and_classes_installed(env: &TestEnv) {
    let drivers = kubectl(env, "m", &["get", "csidrivers", "-o", "name"], None);
    assert!(
        drivers.contains(&format!("csidriver.storage.k8s.io/{CSI_DRIVER}")),
        "{drivers}"
    );
    assert_eq!(
        get(
            env,
            &format!("csidriver {CSI_DRIVER}"),
            "{.spec.attachRequired}"
        ),
        "false"
    );
    let class = get(
        env,
        &format!("volumesnapshotclass {CSI_SNAPSHOT_CLASS}"),
        "{.driver} {.deletionPolicy}",
    );
    assert_eq!(class, format!("{CSI_DRIVER} Delete"));
    let defaults = get(
        env,
        "storageclass",
        r#"{range .items[*]}{.metadata.name}={.metadata.annotations.storageclass\.kubernetes\.io/is-default-class} {end}"#,
    );
    assert!(defaults.contains("local-path=true"), "{defaults}");
    assert!(
        !defaults.contains(&format!("{CSI_STORAGE_CLASS}=true")),
        "{defaults}"
    );
}

/// Content unique to this run, and the pod script that writes it into /data/content.
fn content_and_writer_script() -> (String, String) {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let content = format!(
        "written by the csi test, pid {}, {stamp}\n",
        std::process::id()
    );
    let write = format!(
        "printf '%s' '{content}' > /data/content.tmp && mv /data/content.tmp /data/content && sync && exec sleep 3600"
    );
    (content, write)
}

/// A claim on `node`, and a pod that writes into it; the kubelet's mount of the volume, on
/// the host, and the driver's data behind it hold what was written. Returns the mount.
fn write_on_first_node_and_read_on_host(
    env: &TestEnv,
    node: &NodeInfo,
    toolbox: &str,
    content: &str,
    write: &str,
) -> std::path::PathBuf {
    apply(
        env,
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {NS} }}\n"),
    );
    run_with_claim(
        env,
        ("writer", &node.name, toolbox),
        ("source", None),
        write,
    );
    assert_eq!(
        get(env, &format!("-n {NS} pvc source"), "{.status.phase}"),
        "Bound"
    );
    let pv = get(env, &format!("-n {NS} pvc source"), "{.spec.volumeName}");
    assert_eq!(
        get(
            env,
            &format!("pv {pv}"),
            "{.spec.csi.driver} {.spec.csi.volumeHandle}"
        ),
        format!("{CSI_DRIVER} {}_{pv}", node.name)
    );
    let read = kubectl(
        env,
        "m",
        &["-n", NS, "exec", "writer", "--", "cat", "/data/content"],
        None,
    );
    assert_eq!(read, content);

    // The kubelet's mount of the volume, on the host, and the driver's data behind it.
    let uid = get(env, &format!("-n {NS} pod writer"), "{.metadata.uid}");
    let mount = node.csi_volume_mount(&uid, &pv);
    assert!(
        ferry_testenv::node::mounts_under(&mount).contains(&mount.display().to_string()),
        "{} is not a mount point",
        mount.display()
    );
    let on_host =
        std::fs::read_to_string(mount.join("content")).expect("reading the mount on the host");
    assert_eq!(on_host, content);
    let data = node
        .csi_data_dir()
        .join("volumes")
        .join(&pv)
        .join("content");
    assert_eq!(
        std::fs::read_to_string(&data).expect("reading the driver's data"),
        content
    );
    mount
}

/// A snapshot of the source claim becomes ready to use, kept on `node` (its source's).
fn snapshot_source_on_its_node(env: &TestEnv, node: &NodeInfo) {
    apply(
        env,
        &format!(
            r#"apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {{ name: snap, namespace: {NS} }}
spec:
  volumeSnapshotClassName: {CSI_SNAPSHOT_CLASS}
  source: {{ persistentVolumeClaimName: source }}
"#
        ),
    );
    let snap_args = [
        "-n",
        NS,
        "get",
        "volumesnapshot",
        "snap",
        "-o",
        "jsonpath={.status.readyToUse}",
    ];
    kubectl_until(env, "m", &snap_args, WAIT, |s| s == "true");
    let content_name = get(
        env,
        &format!("-n {NS} volumesnapshot snap"),
        "{.status.boundVolumeSnapshotContentName}",
    );
    let handle = get(
        env,
        &format!("volumesnapshotcontent {content_name}"),
        "{.status.snapshotHandle}",
    );
    let (handle_node, name) = handle
        .split_once('_')
        .expect("a snapshot handle <node>_<name>");
    assert_eq!(
        handle_node, node.name,
        "the snapshot is kept on its source's node"
    );
    let file = node
        .csi_data_dir()
        .join("snapshots")
        .join(format!("{name}.tar"));
    assert!(file.is_file(), "no snapshot file {}", file.display());
}

/// Changed after the snapshot: the restored claim must not see this.
fn change_source_after_snapshot(env: &TestEnv) {
    kubectl(
        env,
        "m",
        &[
            "-n",
            NS,
            "exec",
            "writer",
            "--",
            "sh",
            "-c",
            "echo later > /data/content",
        ],
        None,
    );
}

/// A claim restored from the snapshot, on the other node, reads back what was written.
/// Returns the reader's mount of it.
fn restore_on_the_other_node(
    env: &TestEnv,
    node: &NodeInfo,
    toolbox: &str,
    content: &str,
) -> std::path::PathBuf {
    let read_back = "cat /data/content > /dev/null && exec sleep 3600";
    run_with_claim(
        env,
        ("reader", &node.name, toolbox),
        ("restored", Some("snap")),
        read_back,
    );
    assert_eq!(
        get(env, &format!("-n {NS} pvc restored"), "{.status.phase}"),
        "Bound"
    );
    let restored = kubectl(
        env,
        "m",
        &["-n", NS, "exec", "reader", "--", "cat", "/data/content"],
        None,
    );
    assert_eq!(
        restored, content,
        "the restored claim holds what the snapshot took"
    );
    let restored_pv = get(env, &format!("-n {NS} pvc restored"), "{.spec.volumeName}");
    let reader_uid = get(env, &format!("-n {NS} pod reader"), "{.metadata.uid}");
    let reader_mount = node.csi_volume_mount(&reader_uid, &restored_pv);
    assert_eq!(
        std::fs::read_to_string(reader_mount.join("content")).expect("reading the restored mount"),
        content
    );
    reader_mount
}

/// Deleting it all: pods unmount, claims' volumes and the snapshot's content go.
fn delete_all_and_find_nothing_left(
    env: &TestEnv,
    nodes: &[NodeInfo],
    mounts: [&std::path::Path; 2],
) {
    kubectl(
        env,
        "m",
        &[
            "-n",
            NS,
            "delete",
            "pod/writer",
            "pod/reader",
            "volumesnapshot/snap",
            "pvc/source",
            "pvc/restored",
            "--wait=true",
        ],
        None,
    );
    kubectl_until(
        env,
        "m",
        &["get", "volumesnapshotcontents", "-o", "name"],
        WAIT,
        str::is_empty,
    );
    kubectl_until(
        env,
        "m",
        &[
            "get",
            "pv",
            "-o",
            "jsonpath={.items[*].spec.storageClassName}",
        ],
        WAIT,
        |s| !s.contains(CSI_STORAGE_CLASS),
    );
    // The kubelet unmounts (NodeUnpublishVolume) after the pod object is gone.
    for m in mounts {
        let start = Instant::now();
        while !ferry_testenv::node::mounts_under(m).is_empty() {
            assert!(start.elapsed() < WAIT, "{} still mounted", m.display());
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    for node in nodes {
        for sub in ["volumes", "snapshots"] {
            let left = entries(&node.csi_data_dir().join(sub));
            assert!(left.is_empty(), "{} {sub} left: {left:?}", node.name);
        }
    }
}

/// A volume still mounted when the environment stops: the teardown unmounts it.
fn leave_a_volume_mounted(env: &TestEnv, node: &NodeInfo, toolbox: &str, write: &str) {
    run_with_claim(env, ("keeper", &node.name, toolbox), ("kept", None), write);
    let kept_uid = get(env, &format!("-n {NS} pod keeper"), "{.metadata.uid}");
    let kept_pv = get(env, &format!("-n {NS} pvc kept"), "{.spec.volumeName}");
    let kept_mount = node.csi_volume_mount(&kept_uid, &kept_pv);
    assert!(!ferry_testenv::node::mounts_under(&kept_mount).is_empty());
}
