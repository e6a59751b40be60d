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
    assert_same_claim_data, delete_on_both, kubectl, migrate, migrate_to_b,
    serve_and_pair_on_nodes, wait_ready,
};
use common::volumes::{
    assert_both_volumes_arrived, assert_nothing_of_the_copy_left, assert_records_are_a_prefix,
    two_volume_application,
};

/// One test: a Ferry's settings (its ConfigMap, its profiles' Secrets) are per cluster,
/// so tests of this binary cannot run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_volume_path_local_path_csi_snapshot_running_pod_and_mover_pod() {
    let served = serve_and_pair_on_nodes("any-volume", 33).await;
    let (kc, image) = (&served.kc, &served.image);

    local_path_and_csi_snapshot_volumes_of_a_writing_application_arrive_consistent(kc, image).await;
    // The same Ferry, told by each migration to read CSI volumes live.
    csi_volumes_without_snapshots_are_read_through_the_running_pod_or_a_mover_pod(kc, image).await;
}

async fn local_path_and_csi_snapshot_volumes_of_a_writing_application_arrive_consistent(
    kc: &Path,
    image: &str,
) {
    let kc = kc.to_path_buf();
    let ns = ferry_testenv::unique_name("any-volume");
    two_volume_application(&kc, &ns, image, "");

    // A snapshot class that does not exist fails the job by name, and takes nothing.
    let failed = migrate(&kc, &ns, "b", &["--snapshot-class", "nope"]);
    assert!(
        failed.code == Some(13)
            && format!("{}{}", failed.stdout, failed.stderr)
                .contains("VolumeSnapshotClass nope does not exist"),
        "{failed:?}"
    );
    let on_a = kubectl(
        &kc,
        "a",
        &["-n", &ns, "get", "pods,pvc,volumesnapshots", "-o", "name"],
        None,
    );
    let mut on_a: Vec<&str> = on_a.lines().collect();
    on_a.sort();
    assert_eq!(
        on_a,
        [
            "persistentvolumeclaim/data-db-0",
            "persistentvolumeclaim/fast-db-0",
            "pod/db-0"
        ]
    );

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
    // point in time: every record whole and in sequence; the local-path volume byte for
    // byte.
    assert_both_volumes_arrived(&kc, &ns);
    assert_same_claim_data(&kc, &ns, "data-db-0");
    assert_nothing_of_the_copy_left(&kc, &ns);
    delete_on_both(&kc, &ns);
}

async fn csi_volumes_without_snapshots_are_read_through_the_running_pod_or_a_mover_pod(
    kc: &Path,
    image: &str,
) {
    let kc = kc.to_path_buf();
    let ns = ferry_testenv::unique_name("no-snapshots");
    two_volume_application(&kc, &ns, image, "");

    // Volume options are checked before anything starts, and name what is wrong.
    let refused = migrate(&kc, &ns, "b", &["--mover-memory", "1gb"]);
    assert!(
        refused.code != Some(0) && refused.stderr.contains("volumes.mover_memory"),
        "{refused:?}"
    );
    let refused = migrate(&kc, &ns, "b", &["--snapshot-class", "Fast_Snaps"]);
    assert!(
        refused.code != Some(0) && refused.stderr.contains("volumes.snapshot_class"),
        "{refused:?}"
    );

    // Running: read where the kubelet mounted it for db-0 (the mover path below).
    let live = [
        "--no-csi-snapshots",
        "--mover-cpu",
        "20m",
        "--mover-memory",
        "48Mi",
    ];
    let volumes = migrate_to_b(&kc, &ns, &[&live[..], &["--no-start"]].concat())
        .await
        .1
        .volumes;
    assert_eq!(volumes[1].read_through, "pod db-0", "{volumes:?}");

    // Stopped by the migration's quiesce: nobody mounts it, so a mover pod does.
    let again = [&live[..], &["--quiesce", "--existing", "update"]].concat();
    let volumes = migrate_to_b(&kc, &ns, &again).await.1.volumes;
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
    assert_records_are_a_prefix(&kc, &ns, &logs);
    delete_on_both(&kc, &ns);
}
