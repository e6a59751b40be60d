//! Helpers for the migration tests: creating objects of any kind on a real cluster,
//! reading them back, and building a rich application.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ferry_testenv::TestEnv;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::Scope;
use kube::{Api, Client};
use serde_json::{Value, json};

pub async fn env() -> &'static TestEnv {
    match ferry_testenv::shared().await {
        Ok(env) => env,
        Err(e) => panic!("test environment: {e}"),
    }
}

pub async fn clients(env: &TestEnv) -> (Client, Client) {
    (
        env.client("a", "admin").await.unwrap(),
        env.client("b", "admin").await.unwrap(),
    )
}

fn gvk_of(v: &Value) -> GroupVersionKind {
    let api_version = v["apiVersion"].as_str().expect("apiVersion");
    let kind = v["kind"].as_str().expect("kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// The ApiResource of a kind, retried while a just-created CRD is being published.
pub async fn resource(client: &Client, gvk: &GroupVersionKind) -> (ApiResource, bool) {
    let start = Instant::now();
    loop {
        match kube::discovery::pinned_kind(client, gvk).await {
            Ok((ar, caps)) => return (ar, caps.scope == Scope::Namespaced),
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                panic!("discovering {gvk:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub async fn api_for(client: &Client, v: &Value) -> Api<DynamicObject> {
    let (ar, namespaced) = resource(client, &gvk_of(v)).await;
    if namespaced {
        let ns = v["metadata"]["namespace"]
            .as_str()
            .expect("namespaced object needs a namespace");
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    }
}

/// Creates an object of any kind from its JSON.
pub async fn create(client: &Client, v: Value) -> DynamicObject {
    let api = api_for(client, &v).await;
    let obj: DynamicObject = serde_json::from_value(v.clone()).expect("valid object");
    let start = Instant::now();
    loop {
        match api.create(&PostParams::default(), &obj).await {
            Ok(o) => return o,
            // Pods wait for the namespace's default ServiceAccount, which a controller
            // makes a moment after the namespace.
            Err(e)
                if start.elapsed() < Duration::from_secs(30)
                    && e.to_string().contains("serviceaccount") =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("creating {}: {e}", serde_json::to_string(&v).unwrap()),
        }
    }
}

/// Reads an object of any kind; None when absent.
pub async fn get(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<Value> {
    let mut probe = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
    if let Some(ns) = ns {
        probe["metadata"]["namespace"] = json!(ns);
    }
    let api = api_for(client, &probe).await;
    api.get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("reading {kind} {name}: {e}"))
        .map(|o| serde_json::to_value(o).unwrap())
}

pub async fn must_get(
    client: &Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Value {
    get(client, api_version, kind, ns, name)
        .await
        .unwrap_or_else(|| panic!("{kind} {ns:?}/{name} is missing"))
}

pub async fn namespace(client: &Client, name: &str, labels: Value) {
    create(
        client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )
    .await;
}

pub async fn namespace_exists(client: &Client, name: &str) -> bool {
    get(client, "v1", "Namespace", None, name).await.is_some()
}

/// A CRD `<plural>.<group>` (namespaced, v1, anything goes in spec), established.
pub async fn crd(client: &Client, group: &str, kind: &str, plural: &str) {
    let name = format!("{plural}.{group}");
    create(
        client,
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }}}
                }]
            }
        }),
    )
    .await;
    let gvk = GroupVersionKind::gvk(group, "v1", kind);
    resource(client, &gvk).await;
}

/// A Node in `zone`: gives the cluster a zone with a worker.
pub async fn node(client: &Client, name: &str, zone: &str) {
    create(
        client,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}}),
    )
    .await;
}

pub async fn storage_class(client: &Client, name: &str) {
    create(
        client,
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
               "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"}),
    )
    .await;
}

/// A hostPath PV in `zone` of `class`, pre-bound to claim `ns/claim`.
pub async fn bound_pv(client: &Client, name: &str, class: &str, zone: &str, ns: &str, claim: &str) {
    create(
        client,
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
               "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                        "storageClassName": class, "persistentVolumeReclaimPolicy": "Retain",
                        "hostPath": {"path": format!("/tmp/ferry-test/{name}")},
                        "claimRef": {"namespace": ns, "name": claim},
                        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]}]}]}}}}),
    )
    .await;
}

pub async fn wait_bound(client: &Client, ns: &str, claim: &str) {
    eventually(
        &format!("claim {ns}/{claim} to bind"),
        Duration::from_secs(30),
        || async {
            get(client, "v1", "PersistentVolumeClaim", Some(ns), claim)
                .await
                .and_then(|c| c["status"]["phase"].as_str().map(|p| p == "Bound"))
                .unwrap_or(false)
        },
    )
    .await;
}

/// Names of everything cluster-scoped a rich application needs, unique per test.
#[derive(Debug, Clone)]
pub struct Names {
    pub ns: String,
    pub tag: String,
    pub crd_group: String,
    /// Storage class of the source volumes.
    pub class: String,
    pub priority_class: String,
    pub ingress_class: String,
    pub cluster_role: String,
    pub zone: String,
    pub node_port: u16,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        let ns = ferry_testenv::unique_name(prefix);
        let tag = ns.clone();
        Names {
            crd_group: format!("{tag}.ferry.test"),
            class: format!("sc-{tag}"),
            priority_class: format!("prio-{tag}"),
            ingress_class: format!("ic-{tag}"),
            cluster_role: format!("cr-{tag}"),
            zone: format!("zone-{tag}"),
            node_port: node_port(&tag),
            ns,
            tag,
        }
    }
}

/// A NodePort unlikely to be used by another test of this process or a leftover.
pub fn node_port(tag: &str) -> u16 {
    let h = tag
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    30000 + (h % 2700) as u16
}

/// The cluster-scoped objects a rich application depends on (not the storage class:
/// tests choose whether it differs between clusters).
pub async fn cluster_dependencies(client: &Client, n: &Names) {
    crd(client, &n.crd_group, "Widget", "widgets").await;
    create(
        client,
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": n.priority_class}, "value": 1000}),
    )
    .await;
    create(
        client,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": n.ingress_class},
               "spec": {"controller": "example.com/ingress"}}),
    )
    .await;
    create(
        client,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": n.cluster_role},
               "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
    )
    .await;
}

fn pod_spec(extra: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "example.com/app:1",
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]}],
        "volumes": [{"name": "config", "configMap": {"name": "settings"}}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    spec
}

/// Builds the rich application on the source: every kind the issue lists, objects that
/// must not move, and volumes bound to PVs in `n.zone`. The cluster-scoped dependencies
/// and the storage class `n.class` must exist already.
pub async fn rich_application(a: &Client, n: &Names) {
    let ns = n.ns.as_str();
    namespace(a, ns, json!({"team": "blue"})).await;
    node(a, &format!("node-{}", n.tag), &n.zone).await;

    rich_configuration(a, n).await;
    rich_storage(a, n).await;
    rich_services(a, n).await;
    rich_workloads(a, n).await;
    rich_rest(a, n).await;

    // Last: without a quota controller here, a fresh quota's usage stays unknown and
    // quota admission would refuse what it constrains. It constrains only pods.
    create(a, json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "quota", "namespace": ns},
        "spec": {"hard": {"pods": "50"}}})).await;

    // The token controller fills the token Secret; the root-CA publisher adds its map.
    eventually(
        "the service-account token and kube-root-ca.crt",
        Duration::from_secs(30),
        || async {
            let token = get(a, "v1", "Secret", Some(ns), "app-sa-token").await;
            let filled = token.is_some_and(|t| t["data"]["token"].is_string());
            filled
                && get(a, "v1", "ConfigMap", Some(ns), "kube-root-ca.crt")
                    .await
                    .is_some()
        },
    )
    .await;
}

/// ConfigMaps, Secrets of every type, a ServiceAccount with its token Secret, RBAC and
/// a LimitRange in `n.ns`.
async fn rich_configuration(a: &Client, n: &Names) {
    let ns = n.ns.as_str();
    create(a, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns, "labels": {"app": "web"}},
                     "data": {"greeting": "hello", "db": "db.svc"}})).await;
    create(a, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret", "namespace": ns},
                     "type": "Opaque", "stringData": {"password": "s3cret"}})).await;
    create(a, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls", "namespace": ns},
                     "type": "kubernetes.io/tls", "stringData": {"tls.crt": "CERT", "tls.key": "KEY"}})).await;
    create(a, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred", "namespace": ns},
                     "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{\"auths\":{}}"}})).await;
    create(a, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "basic", "namespace": ns},
                     "type": "kubernetes.io/basic-auth", "stringData": {"username": "u", "password": "p"}})).await;
    create(a, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app-sa", "namespace": ns}})).await;
    create(a, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-sa-token", "namespace": ns,
                     "annotations": {"kubernetes.io/service-account.name": "app-sa"}},
                     "type": "kubernetes.io/service-account-token"})).await;
    create(a, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader", "namespace": ns},
                     "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})).await;
    create(a, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader", "namespace": ns},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                     "subjects": [{"kind": "ServiceAccount", "name": "app-sa", "namespace": ns},
                                  {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "carol"}]})).await;
    create(a, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "viewers", "namespace": ns},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": n.cluster_role},
                     "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]})).await;
    create(a, json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults", "namespace": ns},
                     "spec": {"limits": [{"type": "Container", "default": {"memory": "256Mi"}, "defaultRequest": {"memory": "64Mi"}}]}})).await;
}

/// The StatefulSet's claim and a standalone one, bound to PVs in `n.zone`.
async fn rich_storage(a: &Client, n: &Names) {
    let ns = n.ns.as_str();
    for claim in ["data-db-0", "uploads"] {
        let pv = format!("{}-{claim}", n.tag);
        bound_pv(a, &pv, &n.class, &n.zone, ns, claim).await;
        create(a, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": ns, "labels": {"app": "db"}},
                         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": n.class, "volumeName": pv,
                                  "resources": {"requests": {"storage": "1Gi"}}}})).await;
        wait_bound(a, ns, claim).await;
    }
}

/// Services of every type, Endpoints and an Event.
async fn rich_services(a: &Client, n: &Names) {
    let ns = n.ns.as_str();
    create(a, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                     "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})).await;
    create(a, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": ns},
                     "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}})).await;
    create(a, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-np", "namespace": ns},
                     "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": n.node_port}]}})).await;
    create(a, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-lb", "namespace": ns},
                     "spec": {"type": "LoadBalancer", "loadBalancerIP": "203.0.113.10", "selector": {"app": "web"}, "ports": [{"port": 443}]}})).await;
    // Endpoints made by hand (no endpoints controller runs here) and an Event.
    create(a, json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external", "namespace": ns},
                     "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 5432}]}]})).await;
    create(
        a,
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1", "namespace": ns},
                     "involvedObject": {"kind": "Deployment", "name": "web", "namespace": ns},
                     "reason": "Test", "message": "something happened", "type": "Normal"}),
    )
    .await;
}

/// Workloads, with the objects their controllers would have made.
async fn rich_workloads(a: &Client, n: &Names) {
    let ns = n.ns.as_str();
    let deploy = create(a, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec(json!({"priorityClassName": n.priority_class, "serviceAccountName": "app-sa"}))}}})).await;
    let rs = create(a, json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-5d4f", "namespace": ns, "labels": {"app": "web"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": deploy.metadata.uid, "controller": true}]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec(json!({}))}}})).await;
    create(a, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-5d4f-x1", "namespace": ns, "labels": {"app": "web"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f", "uid": rs.metadata.uid, "controller": true}]},
        "spec": pod_spec(json!({}))})).await;
    create(a, json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": ns},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "example.com/db:1",
                     "volumeMounts": [{"name": "data", "mountPath": "/var/lib/db"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": n.class,
                     "resources": {"requests": {"storage": "1Gi"}}}}]}})).await;
    let cron = create(a, json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": ns},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "job", "image": "example.com/job:1"}]}}}}}})).await;
    create(a, json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "nightly-28000000", "namespace": ns,
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": cron.metadata.uid, "controller": true}]},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": "example.com/job:1"}]}}}})).await;
}

/// The rest: Ingress, NetworkPolicy, PodDisruptionBudget, HorizontalPodAutoscaler and
/// a custom resource.
async fn rich_rest(a: &Client, n: &Names) {
    let ns = n.ns.as_str();
    create(a, json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": ns,
        "annotations": {"nginx.ingress.kubernetes.io/upstream-vhost": format!("web.{ns}.svc.cluster.local"), "note": "keep web.other.svc"}},
        "spec": {"ingressClassName": n.ingress_class, "rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})).await;
    create(a, json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "same-namespace", "namespace": ns},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}]}]}})).await;
    create(a, json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": ns},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})).await;
    create(a, json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web", "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}})).await;
    create(a, json!({"apiVersion": format!("{}/v1", n.crd_group), "kind": "Widget", "metadata": {"name": "w1", "namespace": ns},
        "spec": {"size": 3, "color": "blue"}})).await;
}

pub use ferry_testenv::eventually;
