//! The foundation: the test environment's clusters and S3 server are real, separate, and
//! behave like the components users run.

// The helpers below are test code too: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ferry_testenv::{TestEnv, shared, unique_name};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

async fn env() -> &'static TestEnv {
    match shared().await {
        Ok(env) => env,
        Err(e) => panic!("test environment: {e}"),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("test object is valid")
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &from_json(json!({ "metadata": { "name": name } })),
    )
    .await
    .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

fn kubectl_ok(env: &TestEnv, context: &str, args: &[&str]) -> String {
    let out = env
        .kubectl(context)
        .args(args)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl --context {context} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn api_servers_are_the_pinned_real_kubernetes() {
    let env = env().await;
    for cluster in ["a", "b"] {
        let client = env.client(cluster, "admin").await.unwrap();
        let version = client.apiserver_version().await.unwrap();
        assert_eq!(
            version.git_version,
            ferry_testenv::versions().kube,
            "cluster {cluster}"
        );
    }
}

#[tokio::test]
async fn pvc_binds_on_a_and_nothing_leaks_to_b() {
    let env = env().await;
    let ns = unique_name("foundation-pv");
    let a = env.client("a", "admin").await.unwrap();
    let b = env.client("b", "admin").await.unwrap();
    create_namespace(&a, &ns).await;

    // The directory lives as long as the test: dropping it removes the volume's data.
    let volume_dir = tempfile::tempdir().unwrap();
    let pv_name = create_settings_and_static_volume(&a, &ns, volume_dir.path()).await;

    // The controller-manager's binder must pick the matching volume.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(a.clone(), &ns);
    let bound = wait_for_pvc_bound(&pvcs, &ns).await;
    assert_eq!(
        bound.spec.unwrap().volume_name.as_deref(),
        Some(pv_name.as_str())
    );
    let pvs: Api<PersistentVolume> = Api::all(a.clone());
    let pv = pvs.get(&pv_name).await.unwrap();
    assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Bound"));

    assert_nothing_leaked_to_b(&b, &ns, &pv_name).await;
    assert_kubectl_sees_a_and_not_b(env, &ns);
}

/// Creates the `settings` ConfigMap, a static PV named `<ns>-data` on `host_path`, and the
/// `data` PVC that should bind to it; returns the PV's name.
async fn create_settings_and_static_volume(
    a: &kube::Client,
    ns: &str,
    host_path: &std::path::Path,
) -> String {
    let cms: Api<ConfigMap> = Api::namespaced(a.clone(), ns);
    cms.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": { "name": "settings" },
            "data": { "greeting": "hello from a" }
        })),
    )
    .await
    .unwrap();

    // A static volume on a host path, the way local-path provisioners lay data out.
    let pv_name = format!("{ns}-data");
    let pvs: Api<PersistentVolume> = Api::all(a.clone());
    pvs.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": { "name": pv_name },
            "spec": {
                "capacity": { "storage": "1Gi" },
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": format!("manual-{ns}"),
                "hostPath": { "path": host_path.display().to_string() }
            }
        })),
    )
    .await
    .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(a.clone(), ns);
    pvcs.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": { "name": "data" },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": format!("manual-{ns}"),
                "resources": { "requests": { "storage": "1Gi" } }
            }
        })),
    )
    .await
    .unwrap();
    pv_name
}

async fn wait_for_pvc_bound(pvcs: &Api<PersistentVolumeClaim>, ns: &str) -> PersistentVolumeClaim {
    let start = Instant::now();
    loop {
        let pvc = pvcs.get("data").await.unwrap();
        let phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
        if phase.as_deref() == Some("Bound") {
            break pvc;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "PVC data in {ns} still {phase:?} after 60s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Cluster b is a different cluster: none of it exists there.
async fn assert_nothing_leaked_to_b(b: &kube::Client, ns: &str, pv_name: &str) {
    let b_ns: Api<Namespace> = Api::all(b.clone());
    assert!(
        b_ns.get_opt(ns).await.unwrap().is_none(),
        "namespace {ns} leaked to b"
    );
    let b_pvs: Api<PersistentVolume> = Api::all(b.clone());
    assert!(
        b_pvs.get_opt(pv_name).await.unwrap().is_none(),
        "PV leaked to b"
    );
}

/// Real kubectl against both contexts.
fn assert_kubectl_sees_a_and_not_b(env: &TestEnv, ns: &str) {
    let greeting = kubectl_ok(
        env,
        "a",
        &[
            "get",
            "configmap",
            "settings",
            "-n",
            ns,
            "-o",
            "jsonpath={.data.greeting}",
        ],
    );
    assert_eq!(greeting, "hello from a");
    let phase = kubectl_ok(
        env,
        "a",
        &[
            "get",
            "pvc",
            "data",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.phase}",
        ],
    );
    assert_eq!(phase, "Bound");
    let out = env
        .kubectl("b")
        .args(["get", "configmap", "settings", "-n", ns])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "cluster b must not have the ConfigMap"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "kubectl on b: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // b answers on its own, with its own default namespace.
    let names = kubectl_ok(env, "b", &["get", "namespaces", "-o", "name"]);
    assert!(names.lines().any(|l| l == "namespace/default"), "{names}");
    assert!(!names.contains(ns), "{names}");
}

#[tokio::test]
async fn rbac_confines_plain_users_to_their_namespace() {
    let env = env().await;
    let own = unique_name("alice-own");
    let other = unique_name("alice-other");
    let admin = env.client("a", "admin").await.unwrap();
    create_namespace(&admin, &own).await;
    create_namespace(&admin, &other).await;

    let roles: Api<Role> = Api::namespaced(admin.clone(), &own);
    roles
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "configmap-editor" },
                "rules": [{
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get", "list", "create", "update", "delete"]
                }]
            })),
        )
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &own);
    bindings
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": { "name": "alice-configmaps" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-editor" },
                "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice" }]
            })),
        )
        .await
        .unwrap();

    let alice = env.client("a", "alice").await.unwrap();
    let cm: ConfigMap = from_json(json!({ "metadata": { "name": "mine" }, "data": { "k": "v" } }));

    // RBAC is enforced as soon as the binding exists; allow the authorizer's cache a moment.
    let own_api: Api<ConfigMap> = Api::namespaced(alice.clone(), &own);
    let start = Instant::now();
    loop {
        match own_api.create(&PostParams::default(), &cm).await {
            Ok(created) => {
                assert_eq!(created.data.unwrap()["k"], "v");
                break;
            }
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("alice could not write in her own namespace {own}: {e}"),
        }
    }

    let other_api: Api<ConfigMap> = Api::namespaced(alice.clone(), &other);
    match other_api.create(&PostParams::default(), &cm).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains("alice"), "{}", status.message);
        }
        other => panic!("alice wrote outside her namespace: {other:?}"),
    }
    let ns_api: Api<Namespace> = Api::all(alice.clone());
    assert!(
        matches!(ns_api.list(&Default::default()).await, Err(kube::Error::Api(s)) if s.code == 403),
        "alice must not list namespaces"
    );
    // Nothing was written in the other namespace.
    let admin_other: Api<ConfigMap> = Api::namespaced(admin.clone(), &other);
    assert!(admin_other.get_opt("mine").await.unwrap().is_none());

    // kubectl agrees, through alice's own context.
    let ctx = env.cluster("a").unwrap().context_for("alice");
    let yes = kubectl_ok(
        env,
        &ctx,
        &["auth", "can-i", "create", "configmaps", "-n", &own],
    );
    assert_eq!(yes.trim(), "yes");
    let out = env
        .kubectl(&ctx)
        .args(["auth", "can-i", "create", "configmaps", "-n", &other])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    // The same user on cluster b has no grants at all.
    let ctx_b = env.cluster("b").unwrap().context_for("alice");
    let out = env
        .kubectl(&ctx_b)
        .args(["auth", "can-i", "create", "configmaps", "-n", &own])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
}

#[tokio::test]
async fn s3_server_stores_and_returns_objects() {
    let env = env().await;
    let s3 = env.s3().unwrap();
    let client = s3.client();
    let prefix = unique_name("foundation-s3");
    let key = format!("{prefix}/hello.bin");
    // Not valid UTF-8, and larger than one TCP segment.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    client
        .put_object()
        .bucket(&s3.bucket)
        .key(&key)
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let got = client
        .get_object()
        .bucket(&s3.bucket)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(got.len(), body.len());
    assert!(got.as_ref() == body.as_slice(), "object content differs");

    let listed = client
        .list_objects_v2()
        .bucket(&s3.bucket)
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, vec![key.as_str()]);

    // A missing key is an error the caller can tell apart, not empty content.
    let missing = client
        .get_object()
        .bucket(&s3.bucket)
        .key(format!("{prefix}/missing"))
        .send()
        .await;
    assert!(
        missing.is_err_and(|e| e.as_service_error().is_some_and(|s| s.is_no_such_key())),
        "missing key must be NoSuchKey"
    );
}
