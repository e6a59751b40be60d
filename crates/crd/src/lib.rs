//! Ferry's custom resources, group `ferry.dev`, version `v1alpha1`.
//!
//! They are a Kubernetes-native front end to the same gRPC services the `ferry` command
//! drives: the controller (services/controller) turns each object into the matching
//! call and writes what happened into its status. The CustomResourceDefinitions the
//! chart ships (`charts/ferry/crds/`) are generated from these types by [`all_yaml`];
//! a test keeps the two equal.
//!
//! - [`ClusterPair`] (cluster-scoped): accept a pairing token from the destination.
//! - [`Migration`] (namespaced): move namespaces through a pair, once.
//!
//! Who asked matters: the controller acts for the user who created an object, never
//! with more rights. The admission webhook records that user in [`requester`]'s
//! annotations when the object is created, and keeps them as they were on every update.

pub mod requester;

use std::collections::BTreeMap;

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Ferry resource.
pub const GROUP: &str = "ferry.dev";
/// Its version.
pub const VERSION: &str = "v1alpha1";
/// The finalizer the controller puts on objects whose deletion must undo or stop
/// something first (a running Migration's job, a pair's other half).
pub const FINALIZER: &str = "ferry.dev/controller";

/// A pair with another cluster's Ferry, made from the pairing token that cluster's
/// `ferry pair token` (CreatePairingToken) printed. Only administrators may create one.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "ClusterPair",
    status = "ClusterPairStatus",
    shortname = "fpair",
    category = "ferry",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Destination","type":"string","jsonPath":".status.destination"}"#,
    printcolumn = r#"{"name":"Pair ID","type":"string","jsonPath":".status.pairId","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPairSpec {
    /// The Secret holding the pairing token (never the token itself).
    pub token_secret_ref: SecretKeyRef,
}

/// A key of a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret; empty: the namespace Ferry runs in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key in the Secret's data; default `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What became of a ClusterPair.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPairStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (True once paired), with the reason when not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The pair's id, the same on both clusters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pair_id: String,
    /// The destination cluster's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination: String,
}

/// Moves namespaces to the destination of a ClusterPair, once. The spec cannot change
/// after creation (create another Migration instead); deleting a Migration that is
/// still running cancels its jobs, and nothing is left half-applied.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Migration",
    namespaced,
    status = "MigrationStatus",
    shortname = "fmig",
    category = "ferry",
    printcolumn = r#"{"name":"Pair","type":"string","jsonPath":".spec.clusterPair"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.summary"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MigrationSpec {
    /// The ClusterPair (by name) whose destination receives the application.
    pub cluster_pair: String,
    /// Namespaces to move, one job each; empty: the Migration's own namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Label selector narrowing the objects, in its string form (`app=shop,tier!=cache`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Resource types to move, as `plural.group` (`deployments.apps`); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_resources: Vec<String>,
    /// Resource types never to move, in the same form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_resources: Vec<String>,
    /// Source namespace to destination namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_mapping: BTreeMap<String, String>,
    /// Source StorageClass to destination StorageClass.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_class_mapping: BTreeMap<String, String>,
    /// Source topology zone to destination zone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zone_mapping: BTreeMap<String, String>,
    /// What to do with objects that already exist on the destination.
    #[serde(default)]
    pub existing_objects: ExistingObjects,
    /// Start the workloads on the destination with their source replica counts
    /// (default); false: they arrive scaled to zero, for `ferry activate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_applications: Option<bool>,
    /// Scale the source's Deployments and StatefulSets to zero while their volumes are
    /// copied, then back (a consistent copy).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiesce_source: bool,
    /// Repository profile the data passes through; empty: the pair's default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile: String,
    /// Move objects only; claims arrive empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_volume_data: bool,
    /// Keep Services' nodePort values.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_node_ports: bool,
    /// Report what would happen and change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// What a Migration does with objects already on the destination.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExistingObjects {
    /// Leave them alone and report them as skipped.
    #[default]
    Skip,
    /// Update them to the source's version.
    Update,
    /// Fail before anything is applied.
    Fail,
}

/// Where a Migration is.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, no job started yet.
    Pending,
    /// Its jobs run.
    Running,
    /// Every job succeeded.
    Succeeded,
    /// Every job ended, some objects or volumes failed.
    PartiallySucceeded,
    /// A job failed, or the Migration was refused.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl Phase {
    /// Whether nothing more will happen.
    pub fn is_final(self) -> bool {
        !matches!(self, Phase::Pending | Phase::Running)
    }
}

/// What a Migration did and is doing.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Succeeded` (True, False with the reason, or Unknown while running) and
    /// `Running`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The transfer service's jobs, one per namespace (`ferry jobs get ID`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobStatus>,
    /// Progress of the running step, summed over the jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// One entry per volume moved, once its job has ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeStatus>,
    /// Objects by what happened to them, once the jobs have ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectCounts>,
    /// Objects that failed, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_objects: Vec<ObjectFailure>,
    /// When the first job started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the last job ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// One job of a Migration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// The source namespace it moves.
    pub namespace: String,
    /// The job's id.
    pub id: String,
    /// Its state (`queued`, `running`, `succeeded`, `failed`, ...).
    pub state: String,
}

/// How far the running step has got.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// A line for people, shown by `kubectl get migrations`.
    pub summary: String,
    /// The step running.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step: String,
    /// Bytes of volume data read so far.
    pub bytes_done: u64,
    /// Bytes of volume data to read; 0 while unknown.
    pub bytes_total: u64,
    /// Objects handled so far.
    pub objects_done: u64,
    /// Objects to handle; 0 while unknown.
    pub objects_total: u64,
    /// Recent throughput, bytes per second.
    pub bytes_per_second: u64,
    /// Seconds left, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
}

/// What became of one volume.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// Namespace of the claim on the source.
    pub namespace: String,
    /// The claim.
    pub claim: String,
    /// `Succeeded`, `Skipped` or `Failed`.
    pub result: String,
    /// Files in the volume.
    pub files: u64,
    /// Bytes of data in the volume.
    pub bytes: u64,
    /// Bytes sent to the object store.
    pub bytes_uploaded: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Objects by outcome.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCounts {
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    pub excluded: u64,
    pub failed: u64,
}

/// An object that failed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectFailure {
    /// `Kind namespace/name`.
    pub object: String,
    /// Why.
    pub message: String,
}

/// A condition, as the Kubernetes API conventions shape it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Succeeded`, `Running`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word saying why.
    pub reason: String,
    /// What happened and what to do, for people.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation it was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Sets `condition` in `conditions`, keeping the transition time when the status did
/// not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(old) => {
            if old.status == condition.status {
                condition.last_transition_time = old.last_transition_time.clone();
            }
            *old = condition;
        }
        None => conditions.push(condition),
    }
}

/// Every Ferry CRD, with the rules the derive cannot express added.
pub fn all()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    let mut migration = Migration::crd();
    // A Migration runs once, as its creator asked: its spec never changes after.
    immutable_spec(
        &mut migration,
        "the spec of a Migration cannot change; create another Migration",
    );
    let mut pair = ClusterPair::crd();
    immutable_spec(
        &mut pair,
        "the spec of a ClusterPair cannot change; delete it and create another",
    );
    vec![pair, migration]
}

fn immutable_spec(
    crd: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    message: &str,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
    for version in &mut crd.spec.versions {
        let spec = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"));
        if let Some(spec) = spec {
            spec.x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .push(ValidationRule {
                    rule: "self == oldSelf".into(),
                    message: Some(message.into()),
                    ..ValidationRule::default()
                });
        }
    }
}

/// [`all`] as the YAML the chart ships in `crds/`.
pub fn all_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::from(
        "# Generated from crates/crd by `ferry crds`; do not edit. Regenerate with\n\
         #   cargo run -q -p ferry-cli --bin ferry -- crds > charts/ferry/crds/ferry.dev.yaml\n",
    );
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_ships_the_crds_these_types_make() {
        let shipped = include_str!("../../../charts/ferry/crds/ferry.dev.yaml");
        let made = all_yaml().expect("CRDs serialize");
        assert!(
            shipped == made,
            "charts/ferry/crds/ferry.dev.yaml is out of date; regenerate it with\n  \
             cargo run -q -p ferry-cli --bin ferry -- crds > charts/ferry/crds/ferry.dev.yaml"
        );
    }

    #[test]
    fn a_migration_reads_from_the_yaml_users_write() {
        let m: Migration = serde_yaml::from_str(
            "apiVersion: ferry.dev/v1alpha1\n\
             kind: Migration\n\
             metadata: {name: shop-to-b, namespace: shop}\n\
             spec:\n  clusterPair: a-to-b\n  existingObjects: Update\n  \
             storageClassMapping: {fast: standard}\n",
        )
        .expect("parses");
        assert_eq!(m.spec.cluster_pair, "a-to-b");
        assert_eq!(m.spec.existing_objects, ExistingObjects::Update);
        assert_eq!(m.spec.storage_class_mapping["fast"], "standard");
        assert_eq!(m.spec.start_applications, None);
    }
}
