//! The whole job on clusters with real nodes: an application whose pod really runs on a,
//! checking its own data when it starts, is migrated with `ferry migrate` and comes up
//! Running and Ready on b, its own check passing on the restored volume, every byte equal.
//!
//! Ferry runs beside the clusters here (`ferry serve`, reading hostPath volumes on this
//! machine, which is also the nodes' filesystem); the chart-installed form comes later.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::assert_same_tree;
use common::control::{
    RECORDS_PROGRAM, eventually, hostpath_volume, jsonpath, kubectl, migrate, namespace_and_class,
    profiles_and_pair, serve, storage_class, wait_answering, wait_ready,
};

fn application(kubeconfig: &Path, ns: &str, class: &str, volume: &Path, image: &str) {
    let program = RECORDS_PROGRAM
        .lines()
        .map(|l| format!("          {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    let yaml = format!(
        r#"{head}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: records, namespace: {ns}}}
data:
  program.sh: |
{program}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {ns}}}
spec:
  replicas: 1
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: db
          image: {image}
          imagePullPolicy: IfNotPresent
          command: ["sh", "/program/program.sh"]
          readinessProbe:
            exec: {{command: ["test", "-f", "/tmp/verified"]}}
            periodSeconds: 1
          volumeMounts:
            - {{name: data, mountPath: /data}}
            - {{name: program, mountPath: /program}}
      volumes:
        - name: program
          configMap: {{name: records}}
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec: {{accessModes: [ReadWriteOnce], storageClassName: {class}, resources: {{requests: {{storage: 1Gi}}}}}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: compact, namespace: {ns}}}
spec:
  schedule: "0 3 * * *"
  suspend: false
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{{name: compact, image: {image}, imagePullPolicy: IfNotPresent, command: ["true"]}}]
---
{pv}
"#,
        head = namespace_and_class(ns, class),
        pv = hostpath_volume(ns, class, "data-db-0", volume),
    );
    kubectl(kubeconfig, "a", &["apply", "-f", "-"], Some(&yaml));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_application_arrives_running_on_b_and_verifies_its_own_data() {
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
    let (_serve_a, _) = serve(&kc, "a", root);
    let (_serve_b, _) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);
    profiles_and_pair(&kc, s3, root, ("s3", "repo-key"), "running-app", 31);

    let ns = ferry_testenv::unique_name("running-app");
    let class = format!("local-{ns}");
    let disk = root.join("disks").join(&ns);
    std::fs::create_dir_all(&disk).unwrap();
    application(&kc, &ns, &class, &disk, &image);
    storage_class(&kc, "b", &class);

    // The application runs on a: it wrote its records and holds them.
    wait_ready(&kc, "a", &ns);
    eventually("the application on a to write its records", || {
        kubectl(&kc, "a", &["-n", &ns, "logs", "db-0"], None).contains("holding 100 records")
    });
    let node_a = jsonpath(&kc, "a", &ns, "pod/db-0", "{.spec.nodeName}");
    assert_eq!(node_a, "a-node0");

    migrate(&kc, &ns, "b", &[]).ok();

    // On b the same program starts on the restored volume, verifies every record before
    // it reports Ready, and so proves the data itself.
    wait_ready(&kc, "b", &ns);
    let logs = kubectl(&kc, "b", &["-n", &ns, "logs", "db-0"], None);
    assert!(
        logs.contains("verified 100 records") && logs.contains("holding 100 records"),
        "the application's own check on b:\n{logs}"
    );
    let node_b = jsonpath(&kc, "b", &ns, "pod/db-0", "{.spec.nodeName}");
    assert_eq!(node_b, "b-node0");
    // Started as on a: the CronJob runs on its schedule, not suspended.
    let suspend = jsonpath(&kc, "b", &ns, "cronjob/compact", "{.spec.suspend}");
    assert_eq!(suspend, "false", "the CronJob arrived suspended");

    // And byte for byte: the restored volume on b equals the one on a.
    let pv = jsonpath(&kc, "b", &ns, "pvc/data-db-0", "{.spec.volumeName}");
    let restored = kubectl(
        &kc,
        "b",
        &["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"],
        None,
    );
    assert_same_tree(&disk, Path::new(&restored));

    for side in ["a", "b"] {
        kubectl(
            &kc,
            side,
            &["delete", "namespace", &ns, "--wait=false"],
            None,
        );
    }
}
