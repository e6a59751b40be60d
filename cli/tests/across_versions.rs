//! Validate a new version of Kubernetes, blue-green: cluster a runs the previous minor
//! (`KUBE_PREVIOUS_VERSION`, control plane and node), cluster b the pinned one
//! (`KUBE_VERSION`). An application of the common kinds, whose pod checks its own data
//! when it starts, is migrated from a to b with `ferry migrate`, comes up Ready on b with
//! its own check passing, and every object arrives in the API version b serves for it.
//!
//! This binary starts its own environment ([`ferry_testenv::shared_across_versions`]);
//! `scripts/build-testenv.sh kube-previous` (part of `make testenv`) builds the older
//! binaries.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::control::{
    RECORDS_PROGRAM, assert_same_claim_data, compact_cronjob, eventually, kubectl, migrate_to_b,
    records_application, serve_and_pair_in, wait_ready,
};

/// The kinds an application usually has beside its StatefulSet, each of a group whose
/// preferred version may move between minors.
fn companions(ns: &str, image: &str) -> String {
    let cronjob = compact_cronjob(ns, image);
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {ns}}}
spec: {{selector: {{app: db}}, ports: [{{port: 5432}}]}}
{cronjob}---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: db, namespace: {ns}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: StatefulSet, name: db}}
  minReplicas: 1
  maxReplicas: 1
  metrics: [{{type: Resource, resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: db, namespace: {ns}}}
spec: {{minAvailable: 1, selector: {{matchLabels: {{app: db}}}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: db, namespace: {ns}}}
spec: {{podSelector: {{matchLabels: {{app: db}}}}, policyTypes: [Ingress], ingress: [{{ports: [{{port: 5432}}]}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: db, namespace: {ns}}}
spec: {{rules: [{{host: db.example.test, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: db, port: {{number: 5432}}}}}}}}]}}}}]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: reader, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [get, list]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}}
subjects: [{{kind: ServiceAccount, name: default, namespace: {ns}}}]
"#
    )
}

/// The Kubernetes version cluster `context`'s API server reports.
fn server_version(kc: &Path, context: &str) -> String {
    let json = kubectl(kc, context, &["get", "--raw", "/version"], None);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["gitVersion"].as_str().unwrap_or_default().to_owned()
}

/// The version cluster `context` prefers for API group `group_version`'s group ("v1" for
/// the core group).
fn preferred_version(kc: &Path, context: &str, group_version: &str) -> String {
    let Some((group, _)) = group_version.split_once('/') else {
        return "v1".to_owned();
    };
    let json = kubectl(
        kc,
        context,
        &["get", "--raw", &format!("/apis/{group}")],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["preferredVersion"]["groupVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_moves_from_the_previous_kubernetes_minor_to_this_one() {
    let env = ferry_testenv::shared_across_versions()
        .await
        .expect("test environment across versions");
    let versions = ferry_testenv::versions();
    let kc = env.kubeconfig().to_path_buf();
    assert_eq!(server_version(&kc, "a"), versions.kube_previous);
    assert_eq!(server_version(&kc, "b"), versions.kube);
    let served = serve_and_pair_in(env, "across-versions", 43);
    let image = served.image.clone();

    let ns = ferry_testenv::unique_name("old-to-new");
    let yaml = records_application(
        &ns,
        &image,
        RECORDS_PROGRAM,
        &[("data", None)],
        &companions(&ns, &image),
    );
    kubectl(&kc, "a", &["apply", "-f", "-"], Some(&yaml));
    wait_ready(&kc, "a", &ns);
    eventually("the application on a to write its records", || {
        kubectl(&kc, "a", &["-n", &ns, "logs", "db-0"], None).contains("holding 100 records")
    });

    let (_, report) = migrate_to_b(&kc, &ns, &[]).await;

    // On the newer cluster the program verifies every record before it reports Ready.
    wait_ready(&kc, "b", &ns);
    let logs = kubectl(&kc, "b", &["-n", &ns, "logs", "db-0"], None);
    assert!(
        logs.contains("verified 100 records") && logs.contains("holding 100 records"),
        "the application's own check on b:\n{logs}"
    );
    assert_same_claim_data(&kc, &ns, "data-db-0");

    // Every object was created in the version b prefers for its group, and b serves it
    // there under that version.
    let created: Vec<&ferry_client::proto::ObjectRef> = report
        .objects
        .iter()
        .filter(|o| o.action == ferry_client::proto::ObjectAction::Created as i32)
        .filter_map(|o| o.destination_object.as_ref().or(o.object.as_ref()))
        .collect();
    let kinds: Vec<&str> = created.iter().map(|o| o.kind.as_str()).collect();
    for kind in [
        "StatefulSet",
        "Service",
        "CronJob",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Ingress",
        "Role",
        "RoleBinding",
    ] {
        assert!(kinds.contains(&kind), "{kind} not created on b: {kinds:?}");
    }
    for object in created {
        assert_eq!(
            object.api_version,
            preferred_version(&kc, "b", &object.api_version),
            "{object:?}"
        );
        // kubectl's TYPE.VERSION.GROUP/NAME: found only if b serves it in that version.
        let kind = object.kind.to_lowercase();
        let typed = match object.api_version.split_once('/') {
            Some((group, version)) => format!("{kind}.{version}.{group}/{}", object.name),
            None => format!("{kind}/{}", object.name),
        };
        let mut args = vec!["get", typed.as_str(), "-o", "name"];
        if !object.namespace.is_empty() {
            args.extend(["-n", object.namespace.as_str()]);
        }
        let found = kubectl(&kc, "b", &args, None);
        assert!(!found.trim().is_empty(), "{typed} missing on b");
    }
}
