//! The job model: the API's `Job` (state, steps, progress, error) and `JobReport`
//! (objects, volumes, restore point), plus the runner's [`Checkpoint`], the internal
//! state a restarted service resumes from.

use std::path::PathBuf;
use std::time::SystemTime;

use ferry_proto::v1::{Job, JobState, JobStep, StepState};
use serde::{Deserialize, Serialize};

/// Steps of the jobs, in the order they run. Names are stable across releases.
pub mod steps {
    use ferry_proto::v1::JobKind;

    /// Read the application from the source.
    pub const CAPTURE: &str = "capture";
    /// Plan for the destination and check it; nothing is written when it fails.
    pub const PREFLIGHT: &str = "preflight";
    /// Pre-hook: scale the source's workloads to zero for a consistent copy.
    pub const QUIESCE: &str = "quiesce-source";
    /// Agents back each claim's volume up into the repository.
    pub const BACKUP: &str = "backup-volumes";
    /// Scale the source's workloads back (runs even after a failure or a cancel).
    pub const UNQUIESCE: &str = "resume-source";
    /// Write the restore point, last, after every snapshot it names.
    pub const COMMIT: &str = "commit-restore-point";
    /// The destination's agents restore each snapshot into its new volume's path.
    pub const RESTORE: &str = "restore-volumes";
    /// Server-side apply of the planned objects on the destination.
    pub const APPLY: &str = "apply";
    /// Scale workloads up on the destination (start_applications).
    pub const START: &str = "start-applications";
    /// Export: the migration token that hands the restore point to a destination.
    pub const TOKEN: &str = "issue-token";
    /// Restore and import: read the restore point and check its data is there.
    pub const READ: &str = "read-restore-point";
    /// Warm migration: copy the volumes again and again while the application runs on
    /// the source, until the cutover.
    pub const SYNC: &str = "warm-sync";
    /// Warm migration: wait for the application's pods on the destination to be Ready,
    /// the end of its downtime.
    pub const READY: &str = "wait-ready";

    /// A migration: an export and a restore in one job, without the token.
    pub const MIGRATION: &[&str] = &[
        CAPTURE, PREFLIGHT, QUIESCE, BACKUP, UNQUIESCE, COMMIT, RESTORE, APPLY, START,
    ];
    /// An export: the source half of a migration, then the token.
    pub const EXPORT: &[&str] = &[
        CAPTURE, PREFLIGHT, QUIESCE, BACKUP, UNQUIESCE, COMMIT, TOKEN,
    ];
    /// A restore or an import: the destination half of a migration, from a repository.
    pub const RESTORE_POINT: &[&str] = &[READ, PREFLIGHT, RESTORE, APPLY, START];
    /// A warm migration: syncs while the application runs, then the cutover (capture and
    /// pre-flight again, stop the source, the last sync, apply, start, wait for Ready).
    /// The backup, commit and restore steps run once per sync.
    pub const WARM_MIGRATION: &[&str] = &[
        CAPTURE, PREFLIGHT, SYNC, QUIESCE, BACKUP, COMMIT, RESTORE, APPLY, START, READY, UNQUIESCE,
    ];

    /// The steps of a job of `kind`.
    pub fn of(kind: JobKind) -> &'static [&'static str] {
        match kind {
            JobKind::Export => EXPORT,
            JobKind::Restore | JobKind::Import => RESTORE_POINT,
            JobKind::Migration | JobKind::Unspecified => MIGRATION,
        }
    }

    /// The steps of `job`: its kind's, or a warm migration's.
    pub fn of_job(job: &ferry_proto::v1::Job) -> &'static [&'static str] {
        match JobKind::try_from(job.kind) {
            Ok(JobKind::Migration) if job.warm.is_some() => WARM_MIGRATION,
            Ok(kind) => of(kind),
            Err(_) => MIGRATION,
        }
    }

    /// Whether a step interrupted by a restart may simply run again. Committing a
    /// restore point may not: it may have been written already, and a second one would
    /// be a duplicate the user did not ask for.
    pub fn is_idempotent(step: &str) -> bool {
        step != COMMIT
    }
}

/// A workload the quiesce pre-hook scaled to zero on the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quiesced {
    /// "Deployment" or "StatefulSet".
    pub kind: String,
    pub name: String,
    pub replicas: i32,
}

/// What the runner needs to resume a job after a restart, written at step boundaries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Times the job was started; agent operation ids include it so a resumed step never
    /// collides with its own leftovers on an agent.
    #[serde(default)]
    pub attempt: u32,
    /// The capture, once the capture step succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured: Option<ferry_kube::Captured>,
    /// Workloads scaled to zero on the source and not yet scaled back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiesced: Vec<Quiesced>,
    /// The repository's id, pinned at the first step so agents refuse a repointed profile.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repository_id: String,
    /// The restore point, once committed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore_point_id: String,
    /// Why the job is being cancelled, once asked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cancel_reason: String,
    /// Where the destination's agent creates restored volumes, asked once per job so the
    /// new volumes' hostPath and the restore agree after a restart too. Absent in
    /// checkpoints written before it existed, and until the pre-flight asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_root: Option<PathBuf>,
    /// The destination's claims are provisioned through their StorageClass and restored
    /// through mover pods (no volume root), decided once per job like `volume_root`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provisioned: bool,
    /// Objects the restore step created ahead of the apply (the namespace, the claims
    /// their data went into), which the apply then finds as it wants them: the report
    /// says they were created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_before_apply: Vec<String>,
    /// Restore and import jobs: the restore point's volume snapshots, read with
    /// `captured` (which then holds the restore point's objects, narrowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<ferry_kube::VolumeSnapshot>,
    /// Groups of the user who started the job (`Job.requested_by`), for the reviews a
    /// job makes once it knows what it will create (a restore, after reading its
    /// restore point).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requester_groups: Vec<String>,
    /// Warm migrations: when the cutover starts by itself (cutover_after_seconds after
    /// the first sync), in Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover_at_ms: Option<i64>,
    /// Warm migrations: each claim's snapshot of the last sync, the parent of its next
    /// backup (cheaper than finding the latest restore point among the syncs').
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub warm_parents: std::collections::BTreeMap<String, String>,
    /// Warm migrations: syncs that failed in a row; the job stops after a few.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_syncs: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub fn now() -> prost_types::Timestamp {
    SystemTime::now().into()
}

/// A new job's steps, all pending.
pub fn pending_steps(names: &[&str]) -> Vec<JobStep> {
    names
        .iter()
        .map(|n| JobStep {
            name: (*n).to_owned(),
            state: StepState::Pending as i32,
            ..Default::default()
        })
        .collect()
}

pub fn step_mut<'a>(job: &'a mut Job, name: &str) -> Option<&'a mut JobStep> {
    job.steps.iter_mut().find(|s| s.name == name)
}

pub fn step_state(job: &Job, name: &str) -> StepState {
    job.steps
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| StepState::try_from(s.state).ok())
        .unwrap_or(StepState::Pending)
}

/// Whether a step has nothing left to do (a resumed job skips it).
pub fn step_finished(job: &Job, name: &str) -> bool {
    matches!(
        step_state(job, name),
        StepState::Succeeded | StepState::Skipped
    )
}

/// The step a job was in when it stopped: the running one, else the first not finished.
pub fn current_step(job: &Job) -> Option<&JobStep> {
    job.steps
        .iter()
        .find(|s| s.state == StepState::Running as i32)
        .or_else(|| {
            job.steps.iter().find(|s| {
                !matches!(
                    StepState::try_from(s.state),
                    Ok(StepState::Succeeded | StepState::Skipped)
                )
            })
        })
}

pub fn state_name(state: i32) -> &'static str {
    match JobState::try_from(state) {
        Ok(JobState::Queued) => "queued",
        Ok(JobState::Running) => "running",
        Ok(JobState::Cancelling) => "cancelling",
        Ok(JobState::Succeeded) => "succeeded",
        Ok(JobState::PartiallySucceeded) => "partially succeeded",
        Ok(JobState::Failed) => "failed",
        Ok(JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// A new job id: short, random, valid in a Kubernetes label value and an agent
/// operation id.
pub fn new_job_id() -> String {
    let n: u64 = rand::random();
    format!("job-{:012x}", n & 0xffff_ffff_ffff)
}

/// FNV-1a, for short stable names derived from longer ones.
pub fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_step_is_the_running_or_first_unfinished_one() {
        let mut job = Job {
            steps: pending_steps(steps::MIGRATION),
            ..Default::default()
        };
        assert_eq!(
            current_step(&job).map(|s| s.name.as_str()),
            Some(steps::CAPTURE)
        );
        for name in [steps::CAPTURE, steps::PREFLIGHT] {
            step_mut(&mut job, name).expect("step").state = StepState::Succeeded as i32;
        }
        step_mut(&mut job, steps::QUIESCE).expect("step").state = StepState::Skipped as i32;
        assert_eq!(
            current_step(&job).map(|s| s.name.as_str()),
            Some(steps::BACKUP)
        );
        step_mut(&mut job, steps::COMMIT).expect("step").state = StepState::Running as i32;
        assert_eq!(
            current_step(&job).map(|s| s.name.as_str()),
            Some(steps::COMMIT)
        );
        assert!(!steps::is_idempotent(steps::COMMIT));
        assert!(steps::is_idempotent(steps::BACKUP));
        let id = new_job_id();
        assert_eq!(id.len(), 16);
        assert_eq!(short_hash("a"), short_hash("a"));
        assert_ne!(short_hash("a"), short_hash("b"));
    }

    #[test]
    fn a_checkpoint_without_a_volume_root_still_loads() {
        let old: Checkpoint =
            serde_json::from_str(r#"{"attempt":2,"repository_id":"abc"}"#).expect("old row");
        assert_eq!(old.attempt, 2);
        assert_eq!(old.volume_root, None);
        let new = Checkpoint {
            volume_root: Some(PathBuf::from("/srv/volumes")),
            ..old
        };
        let json = serde_json::to_string(&new).expect("serialize");
        let back: Checkpoint = serde_json::from_str(&json).expect("new row");
        assert_eq!(back.volume_root, Some(PathBuf::from("/srv/volumes")));
    }
}
