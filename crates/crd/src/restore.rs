//! Restore: put a restore point back, once.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ApplySpec, MigrationStatus, Selection, VolumeSpec};

/// Restores a restore point (a Migration's, an export's, or one imported from another
/// cluster's repository) into this cluster or onto a pair's destination, once, as
/// `ferry restore` does. The spec cannot change after creation; deleting a Restore whose
/// job still runs cancels it, and nothing is left half-applied.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Restore",
    namespaced,
    status = "MigrationStatus",
    shortname = "frestore",
    category = "ferry",
    printcolumn = r#"{"name":"Restore Point","type":"string","jsonPath":".spec.restorePoint"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.summary"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The restore point's id (`ferry restore-points -n NAMESPACE` lists them).
    pub restore_point: String,
    /// Repository profile holding it; empty: Ferry's default profile.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile: String,
    /// Restore onto this ClusterPair's destination; empty: this cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_pair: String,
    /// Which of the restore point's objects are restored.
    #[serde(flatten)]
    pub objects: Selection,
    /// How they are mapped and applied (`namespaceMapping` restores into another
    /// namespace).
    #[serde(flatten)]
    pub apply: ApplySpec,
    /// Report what would happen and change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// How volume data is written (mover pods); absent: Ferry's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<VolumeSpec>,
}
