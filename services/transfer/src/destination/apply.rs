//! Applying the planned objects on the destination and reporting each one.

use std::collections::HashMap;

use ferry_kube::{ApplyOptions as KubeApplyOptions, ObjectResult, Outcome, Plan};
use ferry_proto::v1::{
    ErrorCode, ErrorDetail, JobState, ObjectAction, ObjectOutcome, Progress, StepState,
};

use crate::error::{Result, TransferError};
use crate::job::steps;
use crate::runtime::api_ref;

use super::Destination;

impl Destination<'_> {
    /// Applies the plan (or dry-runs it) and reports every object.
    pub(super) async fn apply_plan(&self, plan: &Plan) -> Result<JobState> {
        let run = self.run;
        let dry_run = self.dry_run;
        if run.step_finished(steps::APPLY) {
            return Ok(JobState::Succeeded);
        }
        run.step(
            steps::APPLY,
            StepState::Running,
            format!(
                "{}{} object(s) into namespace {} on cluster {}",
                if dry_run { "dry run of " } else { "" },
                plan.objects.len(),
                plan.namespace,
                self.cluster.name
            ),
        )
        .await;
        let opts = KubeApplyOptions {
            existing: self.existing_policy(),
            dry_run,
            ..Default::default()
        };
        let total = plan.objects.len() as u64;
        let seen: parking_lot::Mutex<Vec<ObjectResult>> = parking_lot::Mutex::new(Vec::new());
        let result = ferry_kube::apply(&self.writer, plan, &opts, |r| {
            let done = {
                let mut s = seen.lock();
                s.push(r.clone());
                s.len() as u64
            };
            run.progress(
                Progress {
                    step: steps::APPLY.into(),
                    objects_done: done,
                    objects_total: total,
                    ..Default::default()
                },
                done == total,
            );
        })
        .await;
        let (results, stop) = match result {
            Ok(results) => (results, None),
            Err(e) => (seen.into_inner(), Some(e)),
        };
        let outcomes = self.outcomes(&results, plan);
        let failed: Vec<&ObjectResult> = results.iter().filter(|r| r.is_failed()).collect();
        let applied = results
            .iter()
            .filter(|r| {
                matches!(
                    r.outcome,
                    Outcome::Created | Outcome::Updated | Outcome::Unchanged
                )
            })
            .count();
        run.with_report(|r| {
            // Only the capture's exclusions and this apply's results: never an earlier,
            // interrupted attempt's.
            r.objects
                .retain(|o| o.action == ObjectAction::Excluded as i32);
            r.objects.extend(outcomes);
        });
        if let Some(e) = stop {
            let applied_names: Vec<String> = results
                .iter()
                .filter(|r| !r.is_failed())
                .map(|r| r.object.to_string())
                .collect();
            let message = format!(
                "stopped after {applied} of {total} object(s) were applied ({}): {e}",
                if applied_names.is_empty() {
                    "none".to_owned()
                } else {
                    applied_names.join(", ")
                }
            );
            run.step(steps::APPLY, StepState::Failed, message.clone())
                .await;
            return Err(TransferError::Kube {
                step: "apply",
                cluster: self.cluster.name.clone(),
                source: Box::new(e),
            });
        }
        if let Some(first) = failed.first() {
            let e = TransferError::ApplyFailed {
                cluster: self.cluster.name.clone(),
                failed: failed.len(),
                applied,
                total: results.len(),
                first: format!("{}: {:?}", first.object, first.outcome),
            };
            run.with_report(|r| r.warnings.push(e.detail()));
            run.step(steps::APPLY, StepState::Failed, e.to_string())
                .await;
            return Ok(JobState::PartiallySucceeded);
        }
        run.step(
            steps::APPLY,
            StepState::Succeeded,
            format!(
                "{applied} object(s) {} in namespace {}",
                if dry_run {
                    "would be applied"
                } else {
                    "applied"
                },
                plan.namespace
            ),
        )
        .await;
        Ok(JobState::Succeeded)
    }

    /// The report's entry of each apply result: named by its source object, and
    /// "created" for the claims the restore step created before their data.
    fn outcomes(&self, results: &[ObjectResult], plan: &Plan) -> Vec<ObjectOutcome> {
        let sources: HashMap<ferry_kube::ObjectRef, ferry_kube::ObjectRef> = plan
            .objects
            .iter()
            .filter_map(|o| Some((o.object_ref(), o.source.clone()?)))
            .collect();
        let created_before = self.run.with_checkpoint(|c| c.created_before_apply.clone());
        results
            .iter()
            .map(|r| {
                let mut o = outcome_of(r, sources.get(&r.object));
                if matches!(r.outcome, Outcome::Unchanged)
                    && created_before.contains(&r.object.to_string())
                {
                    o.action = ObjectAction::Created as i32;
                    o.reason = "created before its volume data was restored".into();
                }
                o
            })
            .collect()
    }
}

/// One apply result as the report lists it.
pub(crate) fn outcome_of(
    r: &ObjectResult,
    source: Option<&ferry_kube::ObjectRef>,
) -> ObjectOutcome {
    let (action, reason, error) = match &r.outcome {
        Outcome::Created => (ObjectAction::Created, String::new(), None),
        Outcome::Updated => (ObjectAction::Updated, String::new(), None),
        Outcome::Unchanged => (
            ObjectAction::Updated,
            "unchanged: already as captured".to_owned(),
            None,
        ),
        Outcome::Deleted => (ObjectAction::Updated, "deleted by purge".to_owned(), None),
        Outcome::Skipped { reason } => (ObjectAction::Skipped, reason.clone(), None),
        Outcome::Failed { reason, code } => (
            ObjectAction::Failed,
            String::new(),
            Some(ErrorDetail {
                code: match code {
                    Some(403) => ErrorCode::PermissionDenied,
                    Some(409) => ErrorCode::Conflict,
                    Some(404) => ErrorCode::MissingPrerequisite,
                    _ => ErrorCode::Internal,
                } as i32,
                message: reason.clone(),
                object: Some(api_ref(&r.object)),
                cluster: String::new(),
                hint: String::new(),
            }),
        ),
    };
    let dest = api_ref(&r.object);
    let (object, destination_object) = match source {
        Some(s) if *s != r.object => (Some(api_ref(s)), Some(dest)),
        Some(s) => (Some(api_ref(s)), None),
        None => (Some(dest), None),
    };
    ObjectOutcome {
        object,
        destination_object,
        action: action as i32,
        reason,
        error,
    }
}
