//! MigrationSchedule: a Migration on a schedule.

use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, MigrationSpec};

/// Runs the Migration in `template` on a schedule, as Velero's Schedule does for
/// backups: the controller creates it in Ferry's scheduler, acting for the object's
/// creator, every run acting as `serviceAccountName`, and copies the latest runs into
/// the status. Only `suspend` may change after creation (delete and create another to
/// change the rest); deleting the object deletes the schedule.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "MigrationSchedule",
    namespaced,
    status = "MigrationScheduleStatus",
    shortname = "fmsched",
    category = "ferry",
    printcolumn = r#"{"name":"Pair","type":"string","jsonPath":".spec.template.clusterPair"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".status.trigger"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last Run","type":"string","jsonPath":".status.runs[0].state"}"#,
    printcolumn = r#"{"name":"Last Success","type":"date","jsonPath":".status.lastSuccessTime"}"#,
    printcolumn = r#"{"name":"Next Run","type":"string","jsonPath":".status.nextRunAt","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MigrationScheduleSpec {
    /// When runs start, and whether they are suspended.
    #[serde(flatten)]
    pub timing: Timing,
    /// How many restore points the runs leave in the repository; absent keeps all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
    /// The Migration each run performs (the fields of a Migration's spec; `dryRun`
    /// cannot be set).
    pub template: MigrationSpec,
}

/// When a schedule's runs start, whether they are suspended, and as whom: the first
/// fields of a MigrationSchedule's spec and of an ImportPolicy's.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    /// When runs start, as a five-field cron expression (`0 2 * * *`) in `timeZone`.
    /// Set exactly one of `schedule` and `interval`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub schedule: String,
    /// Or a fixed interval between run starts: `90s`, `15m`, `1h30m`, `2d`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interval: String,
    /// IANA time zone of `schedule` (`Europe/Paris`); empty: UTC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_zone: String,
    /// No runs while true; the one field that may change.
    #[serde(default)]
    pub suspend: bool,
    /// Required: every run acts as this ServiceAccount, judged by the rights RBAC gives
    /// it when the run starts (as a CronJob's pods are), on both clusters. `NAME` is one
    /// of the namespace the runs work in (the template's for a MigrationSchedule, the
    /// one an ImportPolicy restores into); `NAMESPACE/NAME` one of another namespace,
    /// which only administrators may name (an ImportPolicy without `sourceNamespace`
    /// needs it). Everyone must give one, administrators too; others must be allowed to
    /// get its tokens.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
}

/// Which restore points a schedule keeps; both limits apply.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep at most this many of the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Delete those older than this (`30d`, `12h`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub max_age: String,
}

/// What a MigrationSchedule is and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationScheduleStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (True while the scheduler holds it), with the reason when not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The scheduler's id of it (`ferry schedules get ID`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub schedule_id: String,
    /// When runs start, for people: the cron expression or `every 15m`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trigger: String,
    /// When the next run is due (RFC 3339); absent while suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
    /// When the newest successful run ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<String>,
    /// The latest runs, newest first (at most [`MigrationScheduleStatus::KEPT_RUNS`]);
    /// `ferry schedules runs ID` lists them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<ScheduleRunStatus>,
}

impl MigrationScheduleStatus {
    /// How many runs the status keeps.
    pub const KEPT_RUNS: usize = 10;
}

/// One run of a schedule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRunStatus {
    /// The run's id.
    pub id: String,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped`, ...
    pub state: String,
    /// When it was due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Attempts so far, the first included.
    #[serde(default)]
    pub attempts: u32,
    /// The transfer job of each attempt (`ferry jobs get ID`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    /// The restore point it wrote.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore_point: String,
    /// Restore points retention deleted after it.
    #[serde(default)]
    pub restore_points_pruned: u32,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The CEL rule that lets only `suspend` change: every other field keeps its value,
/// present or absent.
pub(crate) fn only_suspend_changes() -> String {
    let mut parts = vec!["self.template == oldSelf.template".to_owned()];
    for field in [
        "schedule",
        "interval",
        "timeZone",
        "retention",
        "serviceAccountName",
    ] {
        parts.push(format!(
            "has(self.{field}) == has(oldSelf.{field}) && \
             (!has(self.{field}) || self.{field} == oldSelf.{field})"
        ));
    }
    parts.join(" && ")
}

/// "90s", "15m", "1h30m", "2d" as a duration; a bare number is seconds. None when the
/// text is no such duration (or overflows).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v))?;
        number.clear();
    }
    number.is_empty().then_some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        for bad in ["", "m", "10x", "10m5", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
