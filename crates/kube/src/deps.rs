//! Cluster-scoped things namespaced objects depend on: they are never moved, so the
//! destination must already have them.

use std::collections::BTreeMap;
use std::fmt;

use kube::api::ApiResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ObjectRef;
use crate::resource::{is_built_in_group, pod_spec_pointer, qualified_plural};

/// What kind of cluster-scoped dependency.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DependencyKind {
    /// An API that kube-apiserver does not serve by itself: normally a
    /// CustomResourceDefinition named `plural.group`, which must serve `version`.
    Api {
        group: String,
        version: String,
        kind: String,
        plural: String,
    },
    StorageClass,
    PriorityClass,
    IngressClass,
    /// Named by a RoleBinding's roleRef.
    ClusterRole,
    RuntimeClass,
}

impl DependencyKind {
    /// The apiVersion of the cluster-scoped object.
    pub fn object_api_version(&self) -> &'static str {
        match self {
            DependencyKind::Api { .. } => "apiextensions.k8s.io/v1",
            DependencyKind::StorageClass => "storage.k8s.io/v1",
            DependencyKind::PriorityClass => "scheduling.k8s.io/v1",
            DependencyKind::IngressClass => "networking.k8s.io/v1",
            DependencyKind::ClusterRole => "rbac.authorization.k8s.io/v1",
            DependencyKind::RuntimeClass => "node.k8s.io/v1",
        }
    }

    /// The kind of the cluster-scoped object, for messages.
    pub fn object_kind(&self) -> &'static str {
        match self {
            DependencyKind::Api { .. } => "CustomResourceDefinition",
            DependencyKind::StorageClass => "StorageClass",
            DependencyKind::PriorityClass => "PriorityClass",
            DependencyKind::IngressClass => "IngressClass",
            DependencyKind::ClusterRole => "ClusterRole",
            DependencyKind::RuntimeClass => "RuntimeClass",
        }
    }
}

/// One cluster-scoped object the application needs, with the objects that need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub kind: DependencyKind,
    /// The object's name (`plural.group` for a CRD).
    pub name: String,
    pub required_by: Vec<ObjectRef>,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DependencyKind::Api { group, version, .. } => write!(
                f,
                "CustomResourceDefinition {} (serving {group}/{version})",
                self.name
            ),
            other => write!(f, "{} {}", other.object_kind(), self.name),
        }
    }
}

/// Collects the dependencies of `objects`, merged by dependency and sorted.
pub fn dependencies_of<'a>(
    objects: impl IntoIterator<Item = (&'a ApiResource, &'a Value)>,
) -> Vec<Dependency> {
    let mut found: BTreeMap<(DependencyKind, String), Vec<ObjectRef>> = BTreeMap::new();
    for (ar, obj) in objects {
        let r = object_ref(ar, obj);
        let mut add = |kind: DependencyKind, name: &str| {
            if !name.is_empty() {
                found
                    .entry((kind, name.to_owned()))
                    .or_default()
                    .push(r.clone());
            }
        };
        if !is_built_in_group(&ar.group) {
            add(
                DependencyKind::Api {
                    group: ar.group.clone(),
                    version: ar.version.clone(),
                    kind: ar.kind.clone(),
                    plural: ar.plural.clone(),
                },
                &qualified_plural(ar),
            );
        }
        for class in storage_classes_of(ar, obj) {
            add(DependencyKind::StorageClass, class);
        }
        if let Some(pointer) = pod_spec_pointer(&ar.group, &ar.kind)
            && let Some(pod) = obj.pointer(pointer)
        {
            if let Some(p) = pod.get("priorityClassName").and_then(Value::as_str) {
                add(DependencyKind::PriorityClass, p);
            }
            if let Some(rc) = pod.get("runtimeClassName").and_then(Value::as_str) {
                add(DependencyKind::RuntimeClass, rc);
            }
        }
        match (ar.group.as_str(), ar.kind.as_str()) {
            ("networking.k8s.io", "Ingress") => {
                if let Some(c) = obj
                    .pointer("/spec/ingressClassName")
                    .and_then(Value::as_str)
                {
                    add(DependencyKind::IngressClass, c);
                }
            }
            ("rbac.authorization.k8s.io", "RoleBinding") => {
                let role_kind = obj.pointer("/roleRef/kind").and_then(Value::as_str);
                if role_kind == Some("ClusterRole")
                    && let Some(name) = obj.pointer("/roleRef/name").and_then(Value::as_str)
                {
                    add(DependencyKind::ClusterRole, name);
                }
            }
            _ => {}
        }
    }
    found
        .into_iter()
        .map(|((kind, name), mut required_by)| {
            required_by.sort();
            required_by.dedup();
            Dependency {
                kind,
                name,
                required_by,
            }
        })
        .collect()
}

/// The annotation claims used to name their class before `spec.storageClassName`; the
/// API server still honours it, and public manifests (the Cassandra example) still use it.
pub(crate) const LEGACY_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// The class a claim (or claim template) names: `spec.storageClassName`, else the legacy
/// annotation. An empty name asks for no class, so it names none.
fn claim_class(claim: &Value) -> Option<&str> {
    claim
        .pointer("/spec/storageClassName")
        .or_else(|| {
            claim
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
        })
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
}

/// The storage classes an object names: a PVC's, a StatefulSet's claim templates', and
/// generic ephemeral volumes' in pod specs, by field or by the legacy annotation.
pub(crate) fn storage_classes_of<'a>(ar: &ApiResource, obj: &'a Value) -> Vec<&'a str> {
    let mut out = Vec::new();
    match (ar.group.as_str(), ar.kind.as_str()) {
        ("", "PersistentVolumeClaim") => out.extend(claim_class(obj)),
        ("apps", "StatefulSet") => {
            if let Some(templates) = obj
                .pointer("/spec/volumeClaimTemplates")
                .and_then(Value::as_array)
            {
                out.extend(templates.iter().filter_map(claim_class));
            }
        }
        _ => {}
    }
    if let Some(pointer) = pod_spec_pointer(&ar.group, &ar.kind)
        && let Some(volumes) = obj
            .pointer(pointer)
            .and_then(|p| p.get("volumes"))
            .and_then(Value::as_array)
    {
        out.extend(
            volumes
                .iter()
                .filter_map(|v| v.pointer("/ephemeral/volumeClaimTemplate"))
                .filter_map(claim_class),
        );
    }
    out
}

fn object_ref(ar: &ApiResource, obj: &Value) -> ObjectRef {
    ObjectRef::new(
        ar,
        obj.pointer("/metadata/namespace").and_then(Value::as_str),
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::known;
    use serde_json::json;

    fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    #[test]
    fn finds_every_kind_of_dependency_once() {
        let pvc = known::persistent_volume_claim();
        let sts = known::stateful_set();
        let cron = known::cron_job();
        let ing = ar("networking.k8s.io", "v1", "Ingress", "ingresses");
        let rb = ar(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
        );
        let widget = ar("example.com", "v1beta1", "Widget", "widgets");
        let objs = [
            (
                pvc.clone(),
                json!({"metadata": {"name": "a", "namespace": "n"}, "spec": {"storageClassName": "fast"}}),
            ),
            (
                sts,
                json!({"metadata": {"name": "db", "namespace": "n"}, "spec": {
                    "volumeClaimTemplates": [{"spec": {"storageClassName": "fast"}}],
                    "template": {"spec": {"priorityClassName": "high", "volumes": [
                        {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {"storageClassName": "scratch"}}}}
                    ]}}
                }}),
            ),
            (
                cron,
                json!({"metadata": {"name": "c", "namespace": "n"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"runtimeClassName": "gvisor"}}}}}}),
            ),
            (
                ing,
                json!({"metadata": {"name": "i", "namespace": "n"}, "spec": {"ingressClassName": "nginx"}}),
            ),
            (
                rb.clone(),
                json!({"metadata": {"name": "r", "namespace": "n"}, "roleRef": {"kind": "ClusterRole", "name": "view"}}),
            ),
            (
                rb,
                json!({"metadata": {"name": "r2", "namespace": "n"}, "roleRef": {"kind": "Role", "name": "local"}}),
            ),
            (widget, json!({"metadata": {"name": "w", "namespace": "n"}})),
        ];
        let deps = dependencies_of(objs.iter().map(|(a, o)| (a, o)));
        let names: Vec<String> = deps.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            vec![
                "CustomResourceDefinition widgets.example.com (serving example.com/v1beta1)",
                "StorageClass fast",
                "StorageClass scratch",
                "PriorityClass high",
                "IngressClass nginx",
                "ClusterRole view",
                "RuntimeClass gvisor",
            ]
        );
        let fast = &deps[1];
        assert_eq!(fast.required_by.len(), 2);
    }
}
