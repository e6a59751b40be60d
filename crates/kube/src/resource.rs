//! Knowledge about resource types: how users name them, which groups the API server
//! itself serves, the order objects are applied in, and where pod specs live.

use kube::api::ApiResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Groups served by kube-apiserver itself. Anything else is served because something
/// was installed (a CRD, an aggregated API) and so must also be on the destination.
/// CRDs may live in `*.k8s.io` groups (e.g. snapshot.storage.k8s.io), hence an exact
/// list rather than a suffix test.
const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

pub fn is_built_in_group(group: &str) -> bool {
    BUILT_IN_GROUPS.contains(&group)
}

/// `plural.group`, or `plural` for the core group: how kubectl and RBAC name a resource.
pub fn qualified_plural(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

/// Whether a user's name for a resource type means `ar`. Accepted, case-insensitively:
/// the plural (`deployments`), the kind (`Deployment`), and either followed by the group
/// (`deployments.apps`, `Deployment.apps`); the core group can be written `core` or
/// left out.
pub fn matches_type(pattern: &str, ar: &ApiResource) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    let plural = ar.plural.to_ascii_lowercase();
    let kind = ar.kind.to_ascii_lowercase();
    let group = ar.group.to_ascii_lowercase();
    let (name, pattern_group) = match pattern.split_once('.') {
        Some((n, g)) => (n, Some(g)),
        None => (pattern.as_str(), None),
    };
    if name != plural && name != kind {
        return false;
    }
    match pattern_group {
        None => true,
        Some(g) => g == group || (group.is_empty() && g == "core"),
    }
}

/// Apply order. Objects of a phase go in parallel; phases go one after the other, so
/// what a later object needs on arrival is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Namespace,
    /// Quotas, limits and NetworkPolicies: in force before any pod could be admitted, so
    /// no workload ever runs unlimited or unisolated, even briefly.
    Policies,
    /// ConfigMaps, Secrets and Roles: what pods mount and the rights they run with.
    Configuration,
    /// RoleBindings, once the Roles they name exist: a writer without the `bind` verb
    /// (a pair's credential) is checked by the API server against the rules of the
    /// Role it binds, and while that Role is not there the answer is 404.
    Bindings,
    /// PersistentVolumes and their claims, so claims bind before pods want them.
    Storage,
    Services,
    Workloads,
    /// Everything else: Ingresses, HPAs, PDBs, custom resources, ...
    Rest,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Namespace,
        Phase::Policies,
        Phase::Configuration,
        Phase::Bindings,
        Phase::Storage,
        Phase::Services,
        Phase::Workloads,
        Phase::Rest,
    ];

    pub fn of(group: &str, kind: &str) -> Phase {
        match (group, kind) {
            ("", "Namespace") => Phase::Namespace,
            ("", "ResourceQuota" | "LimitRange") | ("networking.k8s.io", "NetworkPolicy") => {
                Phase::Policies
            }
            ("", "ConfigMap" | "Secret" | "ServiceAccount")
            | ("rbac.authorization.k8s.io", "Role") => Phase::Configuration,
            ("rbac.authorization.k8s.io", "RoleBinding") => Phase::Bindings,
            ("", "PersistentVolume" | "PersistentVolumeClaim") => Phase::Storage,
            ("", "Service") => Phase::Services,
            ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
            | ("batch", "Job" | "CronJob")
            | ("", "Pod" | "ReplicationController") => Phase::Workloads,
            _ => Phase::Rest,
        }
    }
}

/// Kinds whose `spec.replicas` Ferry may set to zero and restore later.
pub fn is_scalable(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet") | ("", "ReplicationController")
    )
}

/// JSON pointer to the pod spec of a workload object, if the kind has one.
pub fn pod_spec_pointer(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("", "Pod") => Some("/spec"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template/spec"),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job")
        | ("", "ReplicationController" | "PodTemplate") => Some("/spec/template/spec"),
        _ => None,
    }
}

/// JSON pointer to the pod template's metadata, if the kind has one.
pub fn pod_template_metadata_pointer(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template/metadata"),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job")
        | ("", "ReplicationController" | "PodTemplate") => Some("/spec/template/metadata"),
        _ => None,
    }
}

/// The ApiResources this crate writes or reads by name.
pub mod known {
    use kube::api::ApiResource;

    fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.to_owned(),
            plural: plural.to_owned(),
        }
    }

    pub fn namespace() -> ApiResource {
        ar("", "v1", "Namespace", "namespaces")
    }
    pub fn persistent_volume() -> ApiResource {
        ar("", "v1", "PersistentVolume", "persistentvolumes")
    }
    pub fn persistent_volume_claim() -> ApiResource {
        ar("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims")
    }
    pub fn deployment() -> ApiResource {
        ar("apps", "v1", "Deployment", "deployments")
    }
    pub fn stateful_set() -> ApiResource {
        ar("apps", "v1", "StatefulSet", "statefulsets")
    }
    pub fn replica_set() -> ApiResource {
        ar("apps", "v1", "ReplicaSet", "replicasets")
    }
    pub fn replication_controller() -> ApiResource {
        ar("", "v1", "ReplicationController", "replicationcontrollers")
    }
    pub fn cron_job() -> ApiResource {
        ar("batch", "v1", "CronJob", "cronjobs")
    }
    pub fn job() -> ApiResource {
        ar("batch", "v1", "Job", "jobs")
    }
    pub fn storage_class() -> ApiResource {
        ar("storage.k8s.io", "v1", "StorageClass", "storageclasses")
    }
    pub fn priority_class() -> ApiResource {
        ar(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
        )
    }
    pub fn ingress_class() -> ApiResource {
        ar("networking.k8s.io", "v1", "IngressClass", "ingressclasses")
    }
    pub fn cluster_role() -> ApiResource {
        ar(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
        )
    }
    pub fn runtime_class() -> ApiResource {
        ar("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses")
    }
}

/// Mutable access to the value at a JSON pointer, if present.
pub(crate) fn at_mut<'a>(v: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    v.pointer_mut(pointer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_match_like_kubectl() {
        let deploy = known::deployment();
        for p in [
            "deployments",
            "Deployment",
            "deployments.apps",
            "Deployment.apps",
            " DEPLOYMENTS ",
        ] {
            assert!(matches_type(p, &deploy), "{p}");
        }
        for p in [
            "deployment.batch",
            "deploy",
            "statefulsets",
            "deployments.core",
        ] {
            assert!(!matches_type(p, &deploy), "{p}");
        }
        let cm = ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
        };
        assert!(matches_type("configmaps.core", &cm));
        assert!(matches_type("configmap", &cm));
    }

    #[test]
    fn phases_put_dependencies_first() {
        assert!(Phase::of("", "Namespace") < Phase::of("", "ResourceQuota"));
        assert!(Phase::of("", "LimitRange") < Phase::of("", "Secret"));
        assert!(Phase::of("", "ConfigMap") < Phase::of("", "PersistentVolumeClaim"));
        let rbac = "rbac.authorization.k8s.io";
        assert!(Phase::of(rbac, "Role") < Phase::of(rbac, "RoleBinding"));
        assert!(Phase::of(rbac, "RoleBinding") < Phase::of("", "PersistentVolumeClaim"));
        assert!(Phase::of("", "PersistentVolumeClaim") < Phase::of("", "Service"));
        assert!(Phase::of("", "Service") < Phase::of("apps", "StatefulSet"));
        assert!(Phase::of("batch", "CronJob") < Phase::of("example.com", "Widget"));
        assert_eq!(Phase::of("networking.k8s.io", "Ingress"), Phase::Rest);
    }

    #[test]
    fn crd_groups_under_k8s_io_are_not_built_in() {
        assert!(is_built_in_group("apps"));
        assert!(is_built_in_group(""));
        assert!(!is_built_in_group("snapshot.storage.k8s.io"));
        assert!(!is_built_in_group("gateway.networking.k8s.io"));
    }
}
