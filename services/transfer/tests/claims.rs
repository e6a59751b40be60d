//! A claim moves only the volume bound to it. A namespace user can create a claim
//! whose `spec.volumeName` names anyone's PersistentVolume; the claim stays Pending,
//! since the volume's claimRef names its real owner, but until the fix the source took
//! the volume from volumeName alone and moved the other tenant's data.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferry_proto::v1::JobState;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::json;

/// Everything in the core, apps and RBAC groups of `ns` for `user` (the RBAC objects
/// granting it are part of what she migrates).
async fn grant(c: &kube::Client, ns: &str, user: &str) {
    create_in::<Role>(
        c,
        ns,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": format!("{user}-edit"), "namespace": ns},
        "rules": [{"apiGroups": ["", "apps", "rbac.authorization.k8s.io"], "resources": ["*"], "verbs": ["*"]}]}),
    )
    .await;
    create_in::<RoleBinding>(c, ns, json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding", "metadata": {"name": format!("{user}-edit"), "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{user}-edit")},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_whose_volume_does_not_point_back_is_refused() {
    let bench = Bench::start_checking_callers().await;
    let env = ferry_testenv::shared().await.unwrap();
    // bob's application, with its data, bound the normal way.
    let (bobs, _) = bench.with_application("bob-db", 64 << 10).await;
    let bobs_pv = format!("{bobs}-data-db-0");

    // alice's namespace on both clusters, hers alone.
    let mine = ferry_testenv::unique_name("alice-shop");
    for c in [&bench.a, &bench.b] {
        create_cluster::<Namespace>(
            c,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": mine}}),
        )
        .await;
        grant(c, &mine, "alice").await;
    }
    // As alice: a claim naming bob's volume.
    let alice = env.client("a", "alice").await.unwrap();
    create_in::<PersistentVolumeClaim>(
        &alice,
        &mine,
        json!({"apiVersion": "v1",
        "kind": "PersistentVolumeClaim", "metadata": {"name": "steal", "namespace": mine},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": format!("sc-{bobs}"),
                 "volumeName": bobs_pv, "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;

    let req = bench.as_user("alice", bench.request(&mine)).await;
    let id = bench
        .service
        .client
        .clone()
        .start_migration(req)
        .await
        .expect("alice may migrate her own namespace")
        .into_inner()
        .job
        .unwrap()
        .id;
    // Polled as alice: the service answers only callers with a token.
    let mut report = None;
    for _ in 0..480 {
        let req = ferry_proto::v1::GetJobRequest {
            job: Some(ferry_proto::v1::JobRef { id: id.clone() }),
        };
        let answer = bench
            .service
            .client
            .clone()
            .get_job(bench.as_user("alice", req).await)
            .await
            .unwrap()
            .into_inner();
        if let Some(r) = answer.report {
            report = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let report = report.expect("the job ends within 4 minutes");
    assert_eq!(report.state, JobState::Failed as i32, "{report:#?}");
    let message = report.error.clone().unwrap().message;
    assert!(
        message.contains(&format!("claim {mine}/steal names volume {bobs_pv}")),
        "{message}"
    );
    assert!(message.contains("Pending, not Bound"), "{message}");
    // None of bob's data left cluster a.
    assert!(bench.restore_points(&mine).await.is_empty());
    assert!(!bench.dst_volume(&mine, "steal").exists());
}
