//! Plan: turn captured objects into the objects to write on one destination. Pure: no
//! cluster is contacted, so a plan can be shown, stored and reviewed before anything
//! happens.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{ApiResource, DynamicObject};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, instrument};

use crate::capture::{Captured, CapturedVolume, Exclusion, to_value};
use crate::deps::{Dependency, dependencies_of};
use crate::error::{Error, Result};
use crate::portable::{ServicePorts, make_portable, rename_namespace};
use crate::resource::{Phase, is_scalable, known, matches_type, pod_spec_pointer};
use crate::{
    DestinationFacts, MIGRATION_LABEL, ObjectRef, Problem, ProblemKind, REPLICAS_ANNOTATION,
    SUSPEND_ANNOTATION, ZONE_LABEL,
};

/// How captured objects are changed on their way to the destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransformSpec {
    /// Labels every written object (`ferry.dev/migration=<id>`), so a later run can tell
    /// its objects from others' and purge what left the source. A label value: at most
    /// 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends.
    pub migration_id: String,
    /// The destination namespace; the source's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Source storage class -> destination storage class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_classes: BTreeMap<String, String>,
    /// Source zone -> destination zone, used when the destination has no workers in the
    /// source's zone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zones: BTreeMap<String, String>,
    /// Keep Services' nodePorts (else the destination picks free ones). A port taken on
    /// the destination then fails that Service, and only it.
    #[serde(default)]
    pub preserve_node_ports: bool,
    /// Keep LoadBalancer Services' `spec.loadBalancerIP`.
    #[serde(default)]
    pub keep_load_balancer_ip: bool,
    /// Workloads arrive with zero replicas (the original count kept in
    /// `ferry.dev/replicas`) and CronJobs suspended, until [`activate`](crate::activate).
    #[serde(default)]
    pub scale_to_zero: bool,
    /// With `scale_to_zero`, CronJobs and Jobs keep `spec.suspend` as on the source: for
    /// a migration that starts the application itself, so that no CronJob is left
    /// suspended when that start does not come (an object failed to apply).
    #[serde(default)]
    pub keep_suspend: bool,
    /// Source PVC name -> the volume its data is restored to. A PV is created for each
    /// and the claim bound to it; claims not named here are provisioned dynamically.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restored_volumes: BTreeMap<String, RestoredVolume>,
    /// JSON patches (RFC 6902) applied to matching objects after every other change,
    /// e.g. to relabel or re-annotate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<PatchRule>,
}

/// A static volume on the destination that will hold a claim's restored data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoredVolume {
    /// The PersistentVolume to create.
    pub pv_name: String,
    /// The PV's volume source fields, merged into its spec, e.g.
    /// `{"hostPath": {"path": "/var/lib/ferry/v1"}}` or `{"csi": {...}}`.
    pub source: serde_json::Map<String, Value>,
    /// `Retain` when absent: restored data is not thrown away with its claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim_policy: Option<String>,
}

/// A JSON patch and the objects it applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchRule {
    /// Resource types as kubectl names them; empty means every type.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Object names; empty means every object of those types.
    #[serde(default)]
    pub names: Vec<String>,
    pub patch: json_patch::Patch,
}

/// One object to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedObject {
    pub resource: ApiResource,
    pub phase: Phase,
    /// False for the Namespace and PersistentVolumes.
    pub namespaced: bool,
    /// The captured object it came from (absent for PVs made for restored volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ObjectRef>,
    /// The whole manifest to apply.
    pub object: DynamicObject,
}

impl PlannedObject {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::of(&self.resource, &self.object)
    }
}

/// Where one claim's data goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedVolume {
    pub pvc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_pv: Option<String>,
    /// The PV Ferry creates; absent when the destination provisions one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
}

/// Everything to write on one destination, in apply order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub migration_id: String,
    pub source_cluster: String,
    pub source_namespace: String,
    /// The destination namespace.
    pub namespace: String,
    pub objects: Vec<PlannedObject>,
    pub volumes: Vec<PlannedVolume>,
    /// Cluster-scoped objects that must exist on the destination, by destination names.
    pub dependencies: Vec<Dependency>,
    /// The resource types captured: a purge only deletes objects of these types.
    pub resources: Vec<ApiResource>,
    /// What capture left out, carried for the report.
    pub excluded: Vec<Exclusion>,
    /// Found while planning; errors stop [`apply`](crate::apply).
    pub problems: Vec<Problem>,
}

/// Plans `captured` for a destination with `facts`.
#[instrument(skip_all, fields(namespace = %captured.namespace, migration = %spec.migration_id))]
pub fn plan(captured: &Captured, spec: &TransformSpec, facts: &DestinationFacts) -> Result<Plan> {
    validate(spec)?;
    let target = spec
        .target_namespace
        .clone()
        .unwrap_or_else(|| captured.namespace.clone());
    let mut problems = Vec::new();
    let mut objects = vec![namespace_object(captured, &target, &spec.migration_id)?];

    let ports = ServicePorts {
        preserve_node_ports: spec.preserve_node_ports,
        keep_load_balancer_ip: spec.keep_load_balancer_ip,
    };
    for c in &captured.objects {
        let ar = &c.resource;
        let source = c.object_ref();
        let mut v = to_value(c)?;
        make_portable(&mut v, &ar.group, &ar.kind, ports);
        rename_namespace(&mut v, &ar.group, &ar.kind, &captured.namespace, &target);
        map_storage_classes(&mut v, ar, &spec.storage_classes);
        if ar.group.is_empty() && ar.kind == "PersistentVolumeClaim" {
            bind_claim(&mut v, spec.restored_volumes.get(&source.name));
        }
        if spec.scale_to_zero {
            scale_to_zero(&mut v, ar, &source, spec.keep_suspend, &mut problems);
        }
        if let Err(p) = apply_patches(&mut v, ar, &source, &spec.patches) {
            problems.push(*p);
            continue;
        }
        set_identity(&mut v, ar, Some(&target), &spec.migration_id);
        let object = from_value(v, &source)?;
        objects.push(PlannedObject {
            resource: ar.clone(),
            phase: Phase::of(&ar.group, &ar.kind),
            namespaced: true,
            source: Some(source),
            object,
        });
    }

    let volumes = plan_volumes(captured, spec, facts, &target, &mut objects, &mut problems)?;
    for name in spec.restored_volumes.keys() {
        if !captured.volumes.iter().any(|v| &v.pvc == name) {
            problems.push(Problem::warning(
                ProblemKind::NotSupported,
                None,
                format!(
                    "restored_volumes names claim {name}, which was not captured in {}; \
                     check the claim's name and the capture's selector",
                    captured.namespace
                ),
            ));
        }
    }

    // Stable order: by phase, then as captured (already sorted by type and name).
    objects.sort_by_key(|o| o.phase);
    let values: Vec<(ApiResource, Value)> = objects
        .iter()
        .filter(|o| o.namespaced)
        .map(|o| {
            let v = serde_json::to_value(&o.object).map_err(|source| Error::Serde {
                object: Box::new(o.object_ref()),
                source,
            })?;
            Ok((o.resource.clone(), v))
        })
        .collect::<Result<_>>()?;
    let dependencies = dependencies_of(values.iter().map(|(a, v)| (a, v)));
    debug!(
        objects = objects.len(),
        problems = problems.len(),
        "planned"
    );
    Ok(Plan {
        migration_id: spec.migration_id.clone(),
        source_cluster: captured.cluster.clone(),
        source_namespace: captured.namespace.clone(),
        namespace: target,
        objects,
        volumes,
        dependencies,
        resources: captured.resources.clone(),
        excluded: captured.excluded.clone(),
        problems,
    })
}

/// Each captured volume as planned: its class mapped and, for a volume whose data was
/// restored, its zone chosen and its PersistentVolume added to `objects`.
fn plan_volumes(
    captured: &Captured,
    spec: &TransformSpec,
    facts: &DestinationFacts,
    target: &str,
    objects: &mut Vec<PlannedObject>,
    problems: &mut Vec<Problem>,
) -> Result<Vec<PlannedVolume>> {
    let mut volumes = Vec::new();
    for vol in &captured.volumes {
        let storage_class = vol
            .storage_class
            .as_ref()
            .map(|c| spec.storage_classes.get(c).unwrap_or(c).clone());
        let mut planned = PlannedVolume {
            pvc: vol.pvc.clone(),
            source_pv: vol.pv.clone(),
            pv: None,
            storage_class: storage_class.clone(),
            source_zone: vol.zone.clone(),
            zone: None,
            capacity: vol.capacity.clone(),
        };
        if let Some(restored) = spec.restored_volumes.get(&vol.pvc) {
            let pvc_ref = ObjectRef::new(&known::persistent_volume_claim(), Some(target), &vol.pvc);
            let zone = match choose_zone(vol.zone.as_deref(), &spec.zones, facts) {
                Ok((zone, note)) => {
                    if let Some(note) = note {
                        problems.push(Problem::warning(
                            ProblemKind::Zone,
                            Some(pvc_ref.clone()),
                            note,
                        ));
                    }
                    zone
                }
                Err(message) => {
                    problems.push(Problem::error(ProblemKind::Zone, Some(pvc_ref), message));
                    None
                }
            };
            planned.zone = zone.clone();
            planned.pv = Some(restored.pv_name.clone());
            objects.push(volume_object(
                vol,
                restored,
                storage_class.as_deref(),
                zone.as_deref(),
                target,
                &spec.migration_id,
            )?);
        }
        volumes.push(planned);
    }
    Ok(volumes)
}

fn validate(spec: &TransformSpec) -> Result<()> {
    let id = &spec.migration_id;
    let id_ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if !id_ok {
        return Err(Error::InvalidSpec {
            field: "migration_id",
            message: format!(
                "{id:?} is not a label value: use at most 63 letters, digits, '-', '_' or \
                 '.', starting and ending with a letter or digit"
            ),
        });
    }
    if let Some(ns) = &spec.target_namespace {
        let ok = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !ok {
            return Err(Error::InvalidSpec {
                field: "target_namespace",
                message: format!(
                    "{ns:?} is not a namespace name: use at most 63 lowercase letters, \
                     digits or '-', not starting or ending with '-'"
                ),
            });
        }
    }
    for (pvc, r) in &spec.restored_volumes {
        if r.pv_name.is_empty() {
            return Err(Error::InvalidSpec {
                field: "restored_volumes",
                message: format!("the volume for claim {pvc} has no pv_name"),
            });
        }
    }
    Ok(())
}

fn from_value(v: Value, source: &ObjectRef) -> Result<DynamicObject> {
    serde_json::from_value(v).map_err(|e| Error::Serde {
        object: Box::new(source.clone()),
        source: e,
    })
}

fn namespace_object(
    captured: &Captured,
    target: &str,
    migration_id: &str,
) -> Result<PlannedObject> {
    let ar = known::namespace();
    let mut v = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": {
            "name": target,
            "labels": captured.namespace_metadata.labels,
        }
    });
    if !captured.namespace_metadata.annotations.is_empty() {
        v["metadata"]["annotations"] = json!(captured.namespace_metadata.annotations);
    }
    set_identity(&mut v, &ar, None, migration_id);
    let source = ObjectRef::new(&ar, None, &captured.namespace);
    Ok(PlannedObject {
        phase: Phase::Namespace,
        namespaced: false,
        object: from_value(v, &source)?,
        source: Some(source),
        resource: ar,
    })
}

/// Sets the namespace, apiVersion/kind and the migration label.
fn set_identity(v: &mut Value, ar: &ApiResource, namespace: Option<&str>, migration_id: &str) {
    v["apiVersion"] = Value::String(ar.api_version.clone());
    v["kind"] = Value::String(ar.kind.clone());
    if let Some(ns) = namespace {
        v["metadata"]["namespace"] = Value::String(ns.to_owned());
    }
    let labels = &mut v["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[MIGRATION_LABEL] = Value::String(migration_id.to_owned());
}

fn map_storage_classes(v: &mut Value, ar: &ApiResource, map: &BTreeMap<String, String>) {
    if map.is_empty() {
        return;
    }
    // A claim or claim template names its class by field or, as older manifests do, by
    // annotation: map both.
    let remap = |claim: &mut Value| {
        for pointer in [
            "/spec/storageClassName",
            "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
        ] {
            if let Some(class) = claim.pointer_mut(pointer)
                && let Some(to) = class.as_str().and_then(|c| map.get(c))
            {
                *class = Value::String(to.clone());
            }
        }
    };
    match (ar.group.as_str(), ar.kind.as_str()) {
        ("", "PersistentVolumeClaim") => remap(v),
        ("apps", "StatefulSet") => {
            for t in v
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                remap(t);
            }
        }
        _ => {}
    }
    if let Some(p) = pod_spec_pointer(&ar.group, &ar.kind) {
        for vol in v
            .pointer_mut(p)
            .and_then(|s| s.get_mut("volumes"))
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(template) = vol.pointer_mut("/ephemeral/volumeClaimTemplate") {
                remap(template);
            }
        }
    }
}

/// Points a claim at the PV made for its restored data, or lets the destination
/// provision one.
fn bind_claim(v: &mut Value, restored: Option<&RestoredVolume>) {
    let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    match restored {
        Some(r) => {
            spec.insert("volumeName".into(), Value::String(r.pv_name.clone()));
            // A claim without a class would get the destination's default class at
            // admission and then never match a PV of another class.
            spec.entry("storageClassName")
                .or_insert_with(|| Value::String(String::new()));
        }
        None => {
            spec.remove("volumeName");
        }
    }
}

fn scale_to_zero(
    v: &mut Value,
    ar: &ApiResource,
    source: &ObjectRef,
    keep_suspend: bool,
    problems: &mut Vec<Problem>,
) {
    let (group, kind) = (ar.group.as_str(), ar.kind.as_str());
    if is_scalable(group, kind) {
        // The API default for an absent replicas field is 1.
        let replicas = v
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        v["spec"]["replicas"] = json!(0);
        annotate(v, REPLICAS_ANNOTATION, &replicas.to_string());
    } else if keep_suspend && group == "batch" {
        // Left as on the source.
    } else if (group, kind) == ("batch", "CronJob") || (group, kind) == ("batch", "Job") {
        let suspended = v
            .pointer("/spec/suspend")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        v["spec"]["suspend"] = json!(true);
        annotate(v, SUSPEND_ANNOTATION, &suspended.to_string());
    } else if (group, kind) == ("apps", "DaemonSet") || (group, kind) == ("", "Pod") {
        problems.push(Problem::warning(
            ProblemKind::NotSupported,
            Some(source.clone()),
            format!(
                "a {kind} cannot be scaled to zero: it starts as soon as it arrives; leave it \
                 out with exclude_resources if it must wait for activation"
            ),
        ));
    }
}

fn annotate(v: &mut Value, key: &str, value: &str) {
    let ann = &mut v["metadata"]["annotations"];
    if !ann.is_object() {
        *ann = json!({});
    }
    ann[key] = Value::String(value.to_owned());
}

fn apply_patches(
    v: &mut Value,
    ar: &ApiResource,
    source: &ObjectRef,
    rules: &[PatchRule],
) -> Result<(), Box<Problem>> {
    for (i, rule) in rules.iter().enumerate() {
        let type_ok =
            rule.resources.is_empty() || rule.resources.iter().any(|p| matches_type(p, ar));
        let name_ok = rule.names.is_empty() || rule.names.iter().any(|n| n == &source.name);
        if !(type_ok && name_ok) {
            continue;
        }
        let before = (
            v["apiVersion"].clone(),
            v["kind"].clone(),
            v["metadata"]["namespace"].clone(),
        );
        json_patch::patch(v, &rule.patch).map_err(|e| {
            Box::new(Problem::error(
                ProblemKind::Transform,
                Some(source.clone()),
                format!(
                    "patch #{i} does not apply: {e}; fix the patch or narrow its resources/names \
                     (an `add` into a map needs the map to exist)"
                ),
            ))
        })?;
        let after = (
            v["apiVersion"].clone(),
            v["kind"].clone(),
            v["metadata"]["namespace"].clone(),
        );
        if before != after {
            return Err(Box::new(Problem::error(
                ProblemKind::Transform,
                Some(source.clone()),
                format!(
                    "patch #{i} changes apiVersion, kind or namespace, which a migration sets \
                     itself; use target_namespace to move namespaces"
                ),
            )));
        }
    }
    Ok(())
}

/// The zone for a restored volume: the source's zone when the destination has workers
/// there, else the mapped zone when it does, else any zone with workers. `Ok(None)`
/// means no zone affinity. The second value is a note worth telling the user.
pub(crate) fn choose_zone(
    source: Option<&str>,
    map: &BTreeMap<String, String>,
    facts: &DestinationFacts,
) -> Result<(Option<String>, Option<String>), String> {
    let Some(source) = source else {
        return Ok((None, None));
    };
    let zones: &BTreeSet<String> = &facts.zones;
    if zones.contains(source) {
        return Ok((Some(source.to_owned()), None));
    }
    if zones.is_empty() {
        let why = if facts.unknown.is_empty() {
            "the destination has no worker nodes with a zone label".to_owned()
        } else {
            facts.unknown.join("; ")
        };
        return Ok((
            None,
            Some(format!("source zone {source} kept no placement: {why}")),
        ));
    }
    let mapped = map.get(source);
    if let Some(m) = mapped
        && zones.contains(m)
    {
        return Ok((Some(m.clone()), None));
    }
    let any = zones.iter().next().cloned();
    let note = match mapped {
        Some(m) => format!(
            "zone map sends {source} to {m}, but the destination has no workers there; placed in {} instead",
            any.as_deref().unwrap_or_default()
        ),
        None => format!(
            "the destination has no workers in zone {source}; placed in {} (add a zone mapping to choose)",
            any.as_deref().unwrap_or_default()
        ),
    };
    match any {
        Some(z) => Ok((Some(z), Some(note))),
        None => Err(format!("no zone for source zone {source}")),
    }
}

fn volume_object(
    vol: &CapturedVolume,
    restored: &RestoredVolume,
    storage_class: Option<&str>,
    zone: Option<&str>,
    namespace: &str,
    migration_id: &str,
) -> Result<PlannedObject> {
    let ar = known::persistent_volume();
    let mut spec = serde_json::Map::new();
    for (k, v) in &restored.source {
        spec.insert(k.clone(), v.clone());
    }
    spec.insert(
        "capacity".into(),
        json!({ "storage": vol.capacity.clone().unwrap_or_else(|| "1Gi".into()) }),
    );
    let modes = if vol.access_modes.is_empty() {
        vec!["ReadWriteOnce".to_owned()]
    } else {
        vol.access_modes.clone()
    };
    spec.insert("accessModes".into(), json!(modes));
    if let Some(mode) = &vol.volume_mode {
        spec.insert("volumeMode".into(), json!(mode));
    }
    spec.insert(
        "storageClassName".into(),
        json!(storage_class.unwrap_or_default()),
    );
    spec.insert(
        "persistentVolumeReclaimPolicy".into(),
        json!(restored.reclaim_policy.as_deref().unwrap_or("Retain")),
    );
    // Pre-bound to its claim, so no other claim can take the restored data.
    spec.insert(
        "claimRef".into(),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace, "name": vol.pvc}),
    );
    if let Some(zone) = zone {
        spec.insert(
            "nodeAffinity".into(),
            json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": ZONE_LABEL, "operator": "In", "values": [zone]}
            ]}]}}),
        );
    }
    let mut v = json!({
        "metadata": { "name": restored.pv_name },
        "spec": spec,
    });
    set_identity(&mut v, &ar, None, migration_id);
    if let Some(zone) = zone {
        v["metadata"]["labels"][ZONE_LABEL] = json!(zone);
    }
    let r = ObjectRef::new(&ar, None, &restored.pv_name);
    Ok(PlannedObject {
        phase: Phase::Storage,
        namespaced: false,
        source: None,
        object: from_value(v, &r)?,
        resource: ar,
    })
}

#[cfg(test)]
mod tests;
