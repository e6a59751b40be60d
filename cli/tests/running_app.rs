//! The whole job on clusters with real nodes: an application whose pod really runs on a,
//! checking its own data when it starts, is migrated with `ferry migrate` and comes up
//! Running and Ready on b, its own check passing on the restored volume, every byte equal.
//!
//! Its volume is provisioned by local-path (the clusters' default class) on both sides:
//! on b, Ferry creates the claim through the class and restores into it through a mover
//! pod that holds it mounted. Ferry runs beside the clusters here (`ferry serve`, its
//! agent reaching the nodes' local-path directories on this machine, which is also the
//! nodes' filesystem); tests/chart.rs and in_cluster.rs run it from its chart.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::control::{
    RECORDS_PROGRAM, assert_same_claim_data, compact_cronjob, delete_on_both, eventually, jsonpath,
    kubectl, migrate_to_b, records_application, serve_and_pair_on_nodes, wait_ready,
};

fn application(kubeconfig: &Path, ns: &str, image: &str) {
    let cronjob = compact_cronjob(ns, image);
    let yaml = records_application(ns, image, RECORDS_PROGRAM, &[("data", None)], &cronjob);
    kubectl(kubeconfig, "a", &["apply", "-f", "-"], Some(&yaml));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_application_on_local_path_arrives_running_on_b_through_a_mover_pod() {
    let served = serve_and_pair_on_nodes("running-app", 31).await;
    let (kc, image) = (served.kc.clone(), served.image.clone());

    let ns = ferry_testenv::unique_name("running-app");
    application(&kc, &ns, &image);

    // The application runs on a: it wrote its records and holds them.
    wait_ready(&kc, "a", &ns);
    eventually("the application on a to write its records", || {
        kubectl(&kc, "a", &["-n", &ns, "logs", "db-0"], None).contains("holding 100 records")
    });

    let (job, report) = migrate_to_b(&kc, &ns, &[]).await;
    let restore = job
        .steps
        .iter()
        .find(|s| s.name == "restore-volumes")
        .map(|s| s.message.clone())
        .unwrap_or_default();
    assert!(
        restore.contains("into claims provisioned on cluster b"),
        "the restore step says how: {restore}"
    );

    // On b the same program starts on the restored volume, verifies every record before
    // it reports Ready, and so proves the data itself.
    wait_ready(&kc, "b", &ns);
    let logs = kubectl(&kc, "b", &["-n", &ns, "logs", "db-0"], None);
    assert!(
        logs.contains("verified 100 records") && logs.contains("holding 100 records"),
        "the application's own check on b:\n{logs}"
    );
    // Started as on a: the CronJob runs on its schedule, not suspended.
    let suspend = jsonpath(&kc, "b", &ns, "cronjob/compact", "{.spec.suspend}");
    assert_eq!(suspend, "false", "the CronJob arrived suspended");
    // The claim was provisioned on b by its class, not pointed at a volume Ferry made,
    // and no mover pod is left.
    let class = jsonpath(&kc, "b", &ns, "pvc/data-db-0", "{.spec.storageClassName}");
    assert_eq!(class, "local-path");
    let pods = kubectl(&kc, "b", &["-n", &ns, "get", "pods", "-o", "name"], None);
    assert_eq!(pods.trim(), "pod/db-0", "pods left on b");

    // And byte for byte: the volume on b equals the one on a.
    let pv_b = jsonpath(&kc, "b", &ns, "pvc/data-db-0", "{.spec.volumeName}");
    assert_eq!(
        report
            .volumes
            .iter()
            .map(|v| v.destination_volume.as_str())
            .collect::<Vec<_>>(),
        [pv_b.as_str()],
        "the report names the volume provisioned on b"
    );
    // Read on a's node at its path; written on b through a mover pod of the job.
    let volume = &report.volumes[0];
    assert_eq!(volume.read_through, "host path");
    assert_eq!(volume.node, "a-node0");
    assert!(
        volume.written_through.starts_with("mover pod ferry-mover-"),
        "{volume:?}"
    );
    assert_same_claim_data(&kc, &ns, "data-db-0");

    delete_on_both(&kc, &ns);
}
