//! Every way a volume is read and written, on clusters with real nodes: one StatefulSet
//! with a local-path volume and a CSI volume (the test driver `hostpath.csi.k8s.io`,
//! with snapshots), migrated with `ferry migrate` while it runs and keeps writing to its
//! CSI volume, comes up on b with its own check of both volumes passing.
//!
//! Ferry runs beside the clusters (`ferry serve`); its agent reaches each node's
//! directory on this machine, which is also the nodes' filesystem, and each node's
//! kubelet directory is named to it with `--kubelet-root NODE=DIR`.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::control::{
    assert_same_claim_data, delete_on_both, eventually, jsonpath, kubectl, migrate_to_b,
    profiles_and_pair, records_application, serve_on_nodes, wait_answering, wait_ready,
};

/// Checks every complete record of each file (a torn last line, which a crash or a
/// snapshot may cut, is not a record), then writes 100 to both volumes, then keeps
/// appending to the CSI volume until stopped.
const PROGRAM: &str = r#"set -eu
for f in /data/records /fast/records; do
  n=0
  if [ -f "$f" ]; then
    while read -r i payload sum; do
      [ "$i" = "$((n + 1))" ] || { echo "$f: record $((n + 1)) missing (found $i)"; exit 1; }
      [ "$(printf %s "$payload" | sha256sum | cut -c1-64)" = "$sum" ] || { echo "$f: record $i corrupt"; exit 1; }
      n=$i
    done < "$f"
  fi
  echo "verified $n records in $f"
done
touch /tmp/verified
[ -f /fast/static ] || head -c 3000000 /dev/urandom > /fast/static
append() {
  n=$(($(wc -l < "$1") + 1))
  payload="r$n-$RANDOM$RANDOM"
  echo "$n $payload $(printf %s "$payload" | sha256sum | cut -c1-64)" >> "$1"
}
touch /data/records /fast/records
while [ "$(wc -l < /data/records)" -lt 100 ]; do append /data/records; done
while [ "$(wc -l < /fast/records)" -lt 100 ]; do append /fast/records; done
sync
echo "holding 100 records"
while true; do append /fast/records; sleep 0.05; done
"#;

/// The application on a, Ready with 100 records in each volume.
fn application(kubeconfig: &Path, ns: &str, image: &str) {
    let claims = [("data", None), ("fast", Some("csi-hostpath"))];
    let yaml = records_application(ns, image, PROGRAM, &claims, "");
    kubectl(kubeconfig, "a", &["apply", "-f", "-"], Some(&yaml));
    wait_ready(kubeconfig, "a", ns);
    eventually("the application on a to write its records", || {
        kubectl(kubeconfig, "a", &["-n", ns, "logs", "db-0"], None).contains("holding 100 records")
    });
}

/// `sha256sum` of the files inside pod db-0 of `ns`.
fn sums(kubeconfig: &Path, context: &str, ns: &str, files: &str) -> String {
    kubectl(
        kubeconfig,
        context,
        &[
            "-n",
            ns,
            "exec",
            "db-0",
            "--",
            "sh",
            "-c",
            &format!("sha256sum {files}"),
        ],
        None,
    )
}

/// How many records of `file` the application verified when it started, from its log.
fn verified(logs: &str, file: &str) -> usize {
    logs.lines()
        .find_map(|l| {
            l.strip_prefix("verified ")?
                .strip_suffix(&format!(" records in {file}"))?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn file(kubeconfig: &Path, context: &str, ns: &str, path: &str) -> String {
    kubectl(
        kubeconfig,
        context,
        &["-n", ns, "exec", "db-0", "--", "cat", path],
        None,
    )
}

/// One test, two Ferries per cluster in turn: a Ferry's settings (its ConfigMap, its
/// profiles' Secrets) are per cluster, so tests of this binary cannot run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_volume_path_local_path_csi_snapshot_running_pod_and_mover_pod() {
    let env = ferry_testenv::shared_with_nodes()
        .await
        .expect("test environment with nodes");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let image = ferry_testenv::NodeImages::locate(&ferry_testenv::versions())
        .unwrap()
        .toolbox;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = serve_on_nodes(env, "a", root, &image, &[]);
    let _b = serve_on_nodes(env, "b", root, &image, &[]);
    wait_answering(&kc, &["a", "b"]);
    profiles_and_pair(&kc, s3, root, ("s3", "repo-key"), "any-volume", 33);

    local_path_and_csi_snapshot_volumes_of_a_writing_application_arrive_consistent(&kc, &image)
        .await;
    // The same Ferry on a (its state kept), reading CSI volumes live.
    drop(a);
    let _a = serve_on_nodes(env, "a", root, &image, &["--csi-snapshots", "false"]);
    wait_answering(&kc, &["a"]);
    csi_volumes_without_snapshots_are_read_through_the_running_pod_or_a_mover_pod(&kc, &image)
        .await;
}

async fn local_path_and_csi_snapshot_volumes_of_a_writing_application_arrive_consistent(
    kc: &Path,
    image: &str,
) {
    let kc = kc.to_path_buf();
    let ns = ferry_testenv::unique_name("any-volume");
    application(&kc, &ns, image);

    // It keeps appending to its CSI volume while the migration runs.
    let volumes = migrate_to_b(&kc, &ns, &[]).await.1.volumes;
    let through: Vec<(&str, &str, &str)> = volumes
        .iter()
        .map(|v| {
            (
                v.pvc_name.as_str(),
                v.read_through.as_str(),
                v.written_through.as_str(),
            )
        })
        .collect();
    assert_eq!(through.len(), 2, "{volumes:?}");
    assert_eq!(through[0].1, "host path", "{through:?}");
    assert!(
        through[1].1.starts_with("csi snapshot ferry-")
            && through[1]
                .1
                .contains("(class csi-hostpath-snapclass), mover pod ferry-mover-"),
        "the report names the snapshot: {through:?}"
    );
    assert!(
        through
            .iter()
            .all(|t| t.2.starts_with("mover pod ferry-mover-")),
        "{through:?}"
    );

    // On b the application's own check passes on both volumes, as they were at one
    // point in time: every record whole and in sequence.
    wait_ready(&kc, "b", &ns);
    let logs = kubectl(&kc, "b", &["-n", &ns, "logs", "db-0"], None);
    for f in ["/data/records", "/fast/records"] {
        assert!(
            verified(&logs, f) >= 100,
            "the application's own check of {f} on b:\n{logs}"
        );
    }
    // Byte for byte: the local-path volume whole; the CSI volume's still file, and its
    // records up to the snapshot, a prefix of what a went on to write.
    assert_same_claim_data(&kc, &ns, "data-db-0");
    assert_eq!(
        sums(&kc, "a", &ns, "/fast/static"),
        sums(&kc, "b", &ns, "/fast/static")
    );
    let (on_a, on_b) = (
        file(&kc, "a", &ns, "/fast/records"),
        file(&kc, "b", &ns, "/fast/records"),
    );
    // (b's application appends again once it has checked what arrived.)
    let arrived = verified(&logs, "/fast/records");
    let snapshot_part: String = on_b
        .lines()
        .take(arrived)
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(on_a.starts_with(&snapshot_part), "b's records are not a's");
    assert_eq!(
        jsonpath(&kc, "b", &ns, "pvc/fast-db-0", "{.spec.storageClassName}"),
        "csi-hostpath"
    );

    // Nothing of the copy is left: no snapshot, temporary claim or mover pod.
    for side in ["a", "b"] {
        let left = kubectl(
            &kc,
            side,
            &["-n", &ns, "get", "pods,pvc,volumesnapshots", "-o", "name"],
            None,
        );
        let mut left: Vec<&str> = left.lines().collect();
        left.sort();
        assert_eq!(
            left,
            [
                "persistentvolumeclaim/data-db-0",
                "persistentvolumeclaim/fast-db-0",
                "pod/db-0"
            ],
            "left on {side}"
        );
    }
    delete_on_both(&kc, &ns);
}

async fn csi_volumes_without_snapshots_are_read_through_the_running_pod_or_a_mover_pod(
    kc: &Path,
    image: &str,
) {
    let kc = kc.to_path_buf();
    let ns = ferry_testenv::unique_name("no-snapshots");
    application(&kc, &ns, image);

    // Running: read where the kubelet mounted it for db-0 (the mover path below).
    let volumes = migrate_to_b(&kc, &ns, &["--no-start"]).await.1.volumes;
    assert_eq!(volumes[1].read_through, "pod db-0", "{volumes:?}");

    // Stopped by the migration's quiesce: nobody mounts it, so a mover pod does.
    let volumes = migrate_to_b(&kc, &ns, &["--quiesce", "--existing", "update"])
        .await
        .1
        .volumes;
    assert!(
        volumes[1]
            .read_through
            .starts_with("mover pod ferry-mover-"),
        "{volumes:?}"
    );
    wait_ready(&kc, "b", &ns);
    let logs = kubectl(&kc, "b", &["-n", &ns, "logs", "db-0"], None);
    assert!(logs.contains("verified "), "{logs}");
    // The quiesced application stopped writing: b holds exactly a's records.
    wait_ready(&kc, "a", &ns);
    let arrived = verified(&logs, "/fast/records");
    let on_b: String = file(&kc, "b", &ns, "/fast/records")
        .lines()
        .take(arrived)
        .map(|l| format!("{l}\n"))
        .collect();
    let on_a = file(&kc, "a", &ns, "/fast/records");
    assert!(
        arrived >= 100 && on_a.starts_with(&on_b),
        "b's records are not a's"
    );
    delete_on_both(&kc, &ns);
}
