//! ImportPolicy: on the destination, import (and optionally restore) what is new in a
//! repository, on a schedule.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ApplySpec, MigrationScheduleStatus, Selection, Timing};

/// Polls the repository of an import profile on a schedule, as a Kasten import policy
/// does: each run lists the bucket, imports the restore points it has not imported
/// before (labelled with its name in this cluster's catalog) and, with `restore`,
/// restores the newest new one of each application at once. The controller creates it
/// in Ferry's scheduler, acting for the object's creator, every run acting as
/// `serviceAccountName`; an empty `sourceNamespace` imports every namespace's restore
/// points, only administrators may create that, and it names its ServiceAccount as
/// `NAMESPACE/NAME`.
/// Only `suspend` may change after creation; deleting the object deletes the policy.
/// Its status is a MigrationSchedule's.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "ImportPolicy",
    namespaced,
    status = "MigrationScheduleStatus",
    shortname = "fimp",
    category = "ferry",
    printcolumn = r#"{"name":"Profile","type":"string","jsonPath":".spec.profile"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".status.trigger"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last Run","type":"string","jsonPath":".status.runs[0].state"}"#,
    printcolumn = r#"{"name":"Last Success","type":"date","jsonPath":".status.lastSuccessTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImportPolicySpec {
    /// When runs start, and whether they are suspended.
    #[serde(flatten)]
    pub timing: Timing,
    /// The import profile whose repository is polled (`ferry profile import`, or a
    /// Profile with `migrationTokenSecretRef`).
    pub profile: String,
    /// Import the restore points of this application namespace, as named on the
    /// source; empty: every namespace's (administrators only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
    /// Which of a restore point's objects a restore applies.
    #[serde(flatten)]
    pub objects: Selection,
    /// How they are mapped and applied here (`namespaceMapping` puts them elsewhere).
    #[serde(flatten)]
    pub apply: ApplySpec,
    /// Restore each run's newest new restore point of each application right away;
    /// false: only import them, for a later Restore.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore: bool,
}

/// The CEL rule that lets only `suspend` change.
pub(crate) fn only_suspend_changes() -> String {
    let mut parts = Vec::new();
    for field in [
        "schedule",
        "interval",
        "timeZone",
        "serviceAccountName",
        "profile",
        "sourceNamespace",
        "selector",
        "includeResources",
        "excludeResources",
        "namespaceMapping",
        "storageClassMapping",
        "zoneMapping",
        "existingObjects",
        "startApplications",
        "preserveNodePorts",
        "restore",
    ] {
        parts.push(format!(
            "has(self.{field}) == has(oldSelf.{field}) && \
             (!has(self.{field}) || self.{field} == oldSelf.{field})"
        ));
    }
    parts.join(" && ")
}
