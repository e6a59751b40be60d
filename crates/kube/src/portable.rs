//! Making one object portable: removing what only made sense on the source cluster, and
//! rewriting the references that name the source namespace.

use serde_json::{Map, Value};

use crate::resource::{at_mut, pod_spec_pointer, pod_template_metadata_pointer};

/// Metadata the API server sets or that names source-only identities.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    // Owner uids are the source's: on the destination the garbage collector would find
    // no owner with that uid and delete the object. Owned objects are not captured
    // (their owner's controller remakes them); the one exception, a StatefulSet's claim,
    // is adopted again by the StatefulSet controller.
    "ownerReferences",
    // A finalizer belongs to a controller of the source; on a destination without it,
    // the object could never be deleted. Controllers that run there add theirs back.
    "finalizers",
];

/// Annotations that describe the source's history, not the desired state.
const SOURCE_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    // Binding and provisioning state written by the source's PV controller.
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

/// Labels the Job controller derives from the Job's uid.
const JOB_GENERATED_LABELS: &[&str] = &[
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
];

/// What to keep of a Service's source addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServicePorts {
    /// Keep `nodePort`s; the destination must have them free.
    pub preserve_node_ports: bool,
    /// Keep `spec.loadBalancerIP`.
    pub keep_load_balancer_ip: bool,
}

/// Removes server-set and source-only fields from `v` (a whole object as JSON).
pub fn make_portable(v: &mut Value, group: &str, kind: &str, ports: ServicePorts) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    obj.remove("status");
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in SERVER_METADATA {
            meta.remove(*k);
        }
        remove_keys(meta, "annotations", SOURCE_ANNOTATIONS);
    }

    // Pod templates carry an always-null creationTimestamp that apply would own.
    if let Some(p) = pod_template_metadata_pointer(group, kind)
        && let Some(meta) = at_mut(v, p).and_then(Value::as_object_mut)
    {
        meta.remove("creationTimestamp");
    }
    if let Some(p) = pod_spec_pointer(group, kind)
        && let Some(pod) = at_mut(v, p).and_then(Value::as_object_mut)
    {
        portable_pod_spec(pod, kind == "Pod");
    }

    match (group, kind) {
        ("", "Service") => portable_service(v, ports),
        ("batch", "Job") => portable_job(v),
        ("apps", "StatefulSet") => {
            if let Some(templates) =
                at_mut(v, "/spec/volumeClaimTemplates").and_then(Value::as_array_mut)
            {
                for t in templates.iter_mut().filter_map(Value::as_object_mut) {
                    t.remove("status");
                    if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("creationTimestamp");
                    }
                }
            }
        }
        _ => {}
    }
}

fn remove_keys(meta: &mut Map<String, Value>, field: &str, keys: &[&str]) {
    if let Some(m) = meta.get_mut(field).and_then(Value::as_object_mut) {
        for k in keys {
            m.remove(*k);
        }
        if m.is_empty() {
            meta.remove(field);
        }
    }
}

fn portable_pod_spec(pod: &mut Map<String, Value>, is_pod: bool) {
    if is_pod {
        // The source's node does not exist on the destination; let the scheduler choose.
        pod.remove("nodeName");
    }
    // The ServiceAccount admission plugin injects a projected token volume named
    // kube-api-access-<random> into pods; the destination injects its own.
    let mut injected = Vec::new();
    if let Some(volumes) = pod.get_mut("volumes").and_then(Value::as_array_mut) {
        volumes.retain(|vol| {
            let name = vol.get("name").and_then(Value::as_str).unwrap_or_default();
            let is_injected =
                name.starts_with("kube-api-access-") && vol.get("projected").is_some();
            if is_injected {
                injected.push(name.to_owned());
            }
            !is_injected
        });
    }
    if injected.is_empty() {
        return;
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in pod
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(mounts) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                mounts.retain(|m| {
                    let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
                    !injected.iter().any(|i| i == name)
                });
            }
        }
    }
}

fn portable_service(v: &mut Value, ports: ServicePorts) {
    let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    // A headless Service is headless by its clusterIP "None": that is desired state.
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if !headless {
        spec.remove("clusterIP");
    }
    spec.remove("clusterIPs");
    // The destination may be single-stack in another family; it picks its own.
    spec.remove("ipFamilies");
    if !ports.preserve_node_ports {
        spec.remove("healthCheckNodePort");
        for port in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            port.remove("nodePort");
        }
    }
    if !ports.keep_load_balancer_ip {
        spec.remove("loadBalancerIP");
    }
}

fn portable_job(v: &mut Value) {
    let manual = v
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if manual {
        return;
    }
    // The selector and these labels are generated from the Job's uid; the API server
    // rejects a Job that brings its own without manualSelector.
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("selector");
    }
    if let Some(labels) = at_mut(v, "/spec/template/metadata/labels").and_then(Value::as_object_mut)
    {
        for k in JOB_GENERATED_LABELS {
            labels.remove(*k);
        }
    }
}

/// Rewrites the references to namespace `from` that name it explicitly. Names inside
/// a namespace (a RoleBinding's roleRef, an Ingress backend) need nothing.
pub fn rename_namespace(v: &mut Value, group: &str, kind: &str, from: &str, to: &str) {
    if from == to {
        return;
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut)
        && meta.contains_key("namespace")
    {
        meta.insert("namespace".into(), Value::String(to.to_owned()));
    }
    match (group, kind) {
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            for s in v
                .get_mut("subjects")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if s.get("namespace").and_then(Value::as_str) == Some(from) {
                    s["namespace"] = Value::String(to.to_owned());
                }
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            for (rules, peers) in [("/spec/ingress", "from"), ("/spec/egress", "to")] {
                for rule in at_mut(v, rules)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    for peer in rule
                        .get_mut(peers)
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(sel) = peer.get_mut("namespaceSelector") {
                            rename_in_selector(sel, from, to);
                        }
                    }
                }
            }
        }
        ("", "Service") => {
            if let Some(name) = at_mut(v, "/spec/externalName")
                && let Some(renamed) = name.as_str().and_then(|n| rename_service_dns(n, from, to))
            {
                *name = Value::String(renamed);
            }
        }
        ("networking.k8s.io", "Ingress") => {
            // Controllers' annotations sometimes name a Service by DNS (e.g. an upstream
            // vhost); only whole values that are exactly such a name are rewritten.
            if let Some(ann) = at_mut(v, "/metadata/annotations").and_then(Value::as_object_mut) {
                for value in ann.values_mut() {
                    if let Some(renamed) =
                        value.as_str().and_then(|n| rename_service_dns(n, from, to))
                    {
                        *value = Value::String(renamed);
                    }
                }
            }
        }
        _ => {}
    }
}

/// The label every namespace carries with its own name: the way NetworkPolicies select
/// a namespace by name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn rename_in_selector(sel: &mut Value, from: &str, to: &str) {
    if let Some(v) = at_mut(sel, "/matchLabels").and_then(|m| m.get_mut(NAMESPACE_NAME_LABEL))
        && v.as_str() == Some(from)
    {
        *v = Value::String(to.to_owned());
    }
    for expr in sel
        .get_mut("matchExpressions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if expr.get("key").and_then(Value::as_str) != Some(NAMESPACE_NAME_LABEL) {
            continue;
        }
        for value in expr
            .get_mut("values")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if value.as_str() == Some(from) {
                *value = Value::String(to.to_owned());
            }
        }
    }
}

/// `svc.from.svc`, `svc.from.svc.cluster.local` (any cluster domain) and either with a
/// `:port`, to the same in `to`. Anything else is not simple enough to be sure of.
pub(crate) fn rename_service_dns(name: &str, from: &str, to: &str) -> Option<String> {
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (name, None),
    };
    let labels: Vec<&str> = host.split('.').collect();
    let simple = labels.len() >= 3
        && labels[1] == from
        && labels[2] == "svc"
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !simple {
        return None;
    }
    let mut out = labels.clone();
    out[1] = to;
    let host = out.join(".");
    Some(match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_fields_and_status_go() {
        let mut v = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "7",
                "generation": 3, "creationTimestamp": "2024-01-01T00:00:00Z",
                "managedFields": [{}], "ownerReferences": [{"uid": "x"}],
                "finalizers": ["example.com/cleanup"],
                "labels": {"app": "web"},
                "annotations": {"deployment.kubernetes.io/revision": "2"}
            },
            "spec": {"replicas": 2, "template": {"metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "kube-api-access-abcde"}, {"name": "data"}]}],
                         "volumes": [{"name": "kube-api-access-abcde", "projected": {}}, {"name": "data", "emptyDir": {}}]}}},
            "status": {"replicas": 2}
        });
        make_portable(&mut v, "apps", "Deployment", ServicePorts::default());
        assert_eq!(
            v,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "data"}]}],
                             "volumes": [{"name": "data", "emptyDir": {}}]}}}
            })
        );
    }

    #[test]
    fn services_lose_addresses_unless_kept() {
        let svc = json!({
            "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"],
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "loadBalancerIP": "1.2.3.4", "healthCheckNodePort": 31000,
                     "ports": [{"port": 80, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
        });
        let mut reset = svc.clone();
        make_portable(&mut reset, "", "Service", ServicePorts::default());
        assert_eq!(
            reset["spec"],
            json!({"type": "LoadBalancer", "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80}]})
        );
        assert!(reset.get("status").is_none());

        let mut kept = svc;
        make_portable(
            &mut kept,
            "",
            "Service",
            ServicePorts {
                preserve_node_ports: true,
                keep_load_balancer_ip: true,
            },
        );
        assert_eq!(kept["spec"]["ports"][0]["nodePort"], 30080);
        assert_eq!(kept["spec"]["healthCheckNodePort"], 31000);
        assert_eq!(kept["spec"]["loadBalancerIP"], "1.2.3.4");
        assert!(kept["spec"].get("clusterIP").is_none());

        let mut headless = json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        make_portable(&mut headless, "", "Service", ServicePorts::default());
        assert_eq!(headless["spec"], json!({"clusterIP": "None"}));
    }

    #[test]
    fn jobs_lose_generated_selector() {
        let mut job = json!({"spec": {"selector": {"matchLabels": {"controller-uid": "u"}},
            "template": {"metadata": {"labels": {"controller-uid": "u", "job-name": "j", "app": "x"}}, "spec": {}}}});
        make_portable(&mut job, "batch", "Job", ServicePorts::default());
        assert_eq!(
            job,
            json!({"spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {}}}})
        );
    }

    #[test]
    fn namespace_references_follow_a_rename() {
        let mut rb = json!({"metadata": {"name": "r", "namespace": "old"},
            "subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": "old"},
                         {"kind": "ServiceAccount", "name": "b", "namespace": "other"},
                         {"kind": "User", "name": "alice"}]});
        rename_namespace(
            &mut rb,
            "rbac.authorization.k8s.io",
            "RoleBinding",
            "old",
            "new",
        );
        assert_eq!(rb["metadata"]["namespace"], "new");
        assert_eq!(rb["subjects"][0]["namespace"], "new");
        assert_eq!(rb["subjects"][1]["namespace"], "other");
        assert!(rb["subjects"][2].get("namespace").is_none());

        let mut np = json!({"metadata": {"name": "p", "namespace": "old"}, "spec": {
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "old"}}},
                                  {"namespaceSelector": {"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": ["old", "x"]}]}}]}],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "elsewhere"}}}]}]}});
        rename_namespace(&mut np, "networking.k8s.io", "NetworkPolicy", "old", "new");
        assert_eq!(
            np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
                [NAMESPACE_NAME_LABEL],
            "new"
        );
        assert_eq!(
            np["spec"]["ingress"][0]["from"][1]["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["new", "x"])
        );
        assert_eq!(
            np["spec"]["egress"][0]["to"][0]["namespaceSelector"]["matchLabels"]
                [NAMESPACE_NAME_LABEL],
            "elsewhere"
        );
    }

    #[test]
    fn only_simple_service_dns_names_are_renamed() {
        assert_eq!(
            rename_service_dns("db.old.svc", "old", "new").as_deref(),
            Some("db.new.svc")
        );
        assert_eq!(
            rename_service_dns("db.old.svc.cluster.local:5432", "old", "new").as_deref(),
            Some("db.new.svc.cluster.local:5432")
        );
        assert_eq!(rename_service_dns("db.other.svc", "old", "new"), None);
        assert_eq!(rename_service_dns("old.svc", "old", "new"), None);
        assert_eq!(
            rename_service_dns("http://db.old.svc/x", "old", "new"),
            None
        );
        assert_eq!(rename_service_dns("db.old.example.com", "old", "new"), None);
    }
}
