//! The two-volume application of the real-node tests: a StatefulSet with a local-path
//! volume (`/data`) and a CSI volume (`/fast`, class `csi-hostpath`, with snapshots)
//! that checks every record of both when it starts and keeps appending to the CSI
//! volume, and the checks of what arrived on b.

use std::path::Path;

use super::control::{eventually, jsonpath, kubectl, records_application, wait_ready};

/// Checks every complete record of each file (a torn last line, which a crash or a
/// snapshot may cut, is not a record), then writes 100 to both volumes, then keeps
/// appending to the CSI volume until stopped.
pub const TWO_VOLUMES_PROGRAM: &str = r#"set -eu
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

/// The application on a in namespace `ns`, Ready with 100 records in each volume;
/// `extra` (YAML documents) is applied with it.
pub fn two_volume_application(kubeconfig: &Path, ns: &str, image: &str, extra: &str) {
    let claims = [("data", None), ("fast", Some("csi-hostpath"))];
    let yaml = records_application(ns, image, TWO_VOLUMES_PROGRAM, &claims, extra);
    kubectl(kubeconfig, "a", &["apply", "-f", "-"], Some(&yaml));
    wait_ready(kubeconfig, "a", ns);
    eventually("the application on a to write its records", || {
        kubectl(kubeconfig, "a", &["-n", ns, "logs", "db-0"], None).contains("holding 100 records")
    });
}

/// How many records of `file` the application verified when it started, from its log.
pub fn verified(logs: &str, file: &str) -> usize {
    logs.lines()
        .find_map(|l| {
            l.strip_prefix("verified ")?
                .strip_suffix(&format!(" records in {file}"))?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The content of `path` inside pod db-0 of `ns`.
pub fn pod_file(kubeconfig: &Path, context: &str, ns: &str, path: &str) -> String {
    kubectl(
        kubeconfig,
        context,
        &["-n", ns, "exec", "db-0", "--", "cat", path],
        None,
    )
}

/// `sha256sum` of `files` inside pod db-0 of `ns`.
pub fn pod_sums(kubeconfig: &Path, context: &str, ns: &str, files: &str) -> String {
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

/// Waits for the application on b and asserts that its own check passed on both
/// volumes with at least 100 records each, as they were at one point in time; then that
/// the CSI volume's still file is a's byte for byte and its records a prefix of what a
/// went on to write. Answers b's log.
pub fn assert_both_volumes_arrived(kubeconfig: &Path, ns: &str) -> String {
    wait_ready(kubeconfig, "b", ns);
    let logs = kubectl(kubeconfig, "b", &["-n", ns, "logs", "db-0"], None);
    for f in ["/data/records", "/fast/records"] {
        assert!(
            verified(&logs, f) >= 100,
            "the application's own check of {f} on b:\n{logs}"
        );
    }
    assert_eq!(
        pod_sums(kubeconfig, "a", ns, "/fast/static"),
        pod_sums(kubeconfig, "b", ns, "/fast/static")
    );
    assert_records_are_a_prefix(kubeconfig, ns, &logs);
    assert_eq!(
        jsonpath(
            kubeconfig,
            "b",
            ns,
            "pvc/fast-db-0",
            "{.spec.storageClassName}"
        ),
        "csi-hostpath"
    );
    logs
}

/// b's CSI records up to what its application verified are the start of a's.
pub fn assert_records_are_a_prefix(kubeconfig: &Path, ns: &str, b_logs: &str) {
    // (b's application appends again once it has checked what arrived.)
    let arrived = verified(b_logs, "/fast/records");
    let on_b: String = pod_file(kubeconfig, "b", ns, "/fast/records")
        .lines()
        .take(arrived)
        .map(|l| format!("{l}\n"))
        .collect();
    let on_a = pod_file(kubeconfig, "a", ns, "/fast/records");
    assert!(
        arrived >= 100 && on_a.starts_with(&on_b),
        "b's {arrived} records are not a's"
    );
}

/// Asserts that nothing of a copy is left in `ns` on either cluster: no VolumeSnapshot,
/// temporary claim or mover pod, only the application's pod and claims.
pub fn assert_nothing_of_the_copy_left(kubeconfig: &Path, ns: &str) {
    for side in ["a", "b"] {
        let left = kubectl(
            kubeconfig,
            side,
            &["-n", ns, "get", "pods,pvc,volumesnapshots", "-o", "name"],
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
}
