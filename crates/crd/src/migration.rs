//! Migration: move namespaces through a pair, once.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Condition;

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
    /// Which of the namespaces' objects move.
    #[serde(flatten)]
    pub objects: Selection,
    /// How they are mapped and applied on the destination.
    #[serde(flatten)]
    pub apply: ApplySpec,
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
    /// Report what would happen and change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// How volume data is reached (CSI snapshots, mover pods); absent: Ferry's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<VolumeSpec>,
    /// A warm migration: the volumes are synced again and again while the application
    /// runs on the source, until the annotation `ferry.dev/cutover` (any value) is set
    /// on the Migration, or `cutoverAfter` has passed; then the application moves with a
    /// short downtime (`status.warm.downtime`). Not with dryRun, skipVolumeData or
    /// quiesceSource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmSpec>,
}

/// Annotation that tells a warm Migration to cut over (`kubectl annotate migration NAME
/// ferry.dev/cutover=now`).
pub const CUTOVER_ANNOTATION: &str = "ferry.dev/cutover";

/// How a warm Migration syncs and when it cuts over.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmSpec {
    /// Time from the end of one sync to the start of the next (`90s`, `5m`, `1h`);
    /// empty: 60s.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sync_interval: String,
    /// Cut over by itself this long after the first sync (`30m`, `2h`); empty: only
    /// when the `ferry.dev/cutover` annotation asks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cutover_after: String,
}

/// A warm Migration's syncs and cutover, over its jobs.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmState {
    /// Syncs every job finished while the application ran on the source.
    pub syncs: u32,
    /// The newest sync of the first job: "wrote 12 MiB of 1024 MiB in 2.1s".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_sync: String,
    /// The cutover was asked (the annotation, or cutoverAfter).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cutover_requested: bool,
    /// How long the application was down at the cutover ("6.2s"), the longest over
    /// the jobs: from the source's last pod gone to every pod Ready on the destination.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub downtime: String,
}

/// How a job reaches volume data: CSI snapshots on the source, and the mover pods that
/// hold claims mounted on either side.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// VolumeSnapshotClass for CSI volumes of its driver (others use their driver's
    /// default); empty: the class marked default for each driver, or its only one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot_class: String,
    /// false: read CSI volumes live (through a running pod, else a mover pod) instead
    /// of from a VolumeSnapshot. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_snapshots: Option<bool>,
    /// Mover pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover: Option<MoverSpec>,
    /// A job run again over a destination volume refuses when files there changed since
    /// its last restore (someone wrote to it on the destination); true replaces them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overwrite_destination_changes: bool,
}

/// Settings of the mover pods a job starts.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoverSpec {
    /// CPU request (a Kubernetes quantity, `50m`), for namespaces whose ResourceQuota or
    /// LimitRange asks for one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu: String,
    /// Memory request and limit (`32Mi`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memory: String,
    /// How long a mover pod may take to start (claim provisioned, volume attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout_seconds: Option<u32>,
}

/// Which objects of a namespace (or of a restore point) a job takes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// Label selector narrowing the objects, in its string form (`app=shop,tier!=cache`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Resource types to move, as `plural.group` (`deployments.apps`); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_resources: Vec<String>,
    /// Resource types never to move, in the same form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_resources: Vec<String>,
}

/// How a job's objects are mapped and applied on the destination.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplySpec {
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
    /// Keep Services' nodePort values.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_node_ports: bool,
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

/// What a Migration or a Restore did and is doing.
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
    /// A warm Migration's syncs and cutover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmState>,
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
    /// The restore point it wrote (a migration) or read (a restore), once it has ended.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore_point: String,
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
