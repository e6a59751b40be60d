//! The pre-flight step every job runs before it changes anything: the source's volumes
//! (a migration, an export) and the destination's plan and checks (a migration, a
//! restore). All problems are reported at once, and nothing is written when there is
//! one.

use ferry_kube::{Captured, Plan, VolumeSnapshot};
use ferry_proto::v1::{StepState, VolumeOutcome, VolumeResult};

use crate::destination::{Destination, Planned};
use crate::error::{Result, TransferError};
use crate::job::steps;
use crate::runtime::JobRun;
use crate::source::{Source, SourceVolume};

/// What the pre-flight found out: the source's volumes (empty without a source half),
/// and the destination's plan (None without a destination half).
pub(crate) struct Checked {
    pub volumes: Vec<SourceVolume>,
    pub planned: Option<Planned>,
}

/// Runs the pre-flight step. Runs on every (re)start, since the plan is not stored;
/// the checks themselves run until they once succeeded. `snapshots` are the restore
/// point's when the data comes from one (a restore), for the report's volumes.
pub(crate) async fn preflight(
    run: &JobRun,
    src: Option<&Source<'_>>,
    dst: Option<&Destination<'_>>,
    captured: &Captured,
    snapshots: &[VolumeSnapshot],
) -> Result<Checked> {
    let done = run.step_finished(steps::PREFLIGHT);
    // Problems are reported against the cluster written to, else the one read.
    let cluster = match (dst, src) {
        (Some(d), _) => d.cluster.name.clone(),
        (None, Some(s)) => s.cluster.name.clone(),
        (None, None) => String::new(),
    };
    if !done {
        run.step(
            steps::PREFLIGHT,
            StepState::Running,
            format!("checking cluster {cluster}"),
        )
        .await;
    }
    let mut warnings = Vec::new();
    let planned = match dst {
        Some(d) => Some(d.plan(captured, done, &mut warnings).await?),
        None => None,
    };
    let mut problems: Vec<String> = Vec::new();
    let volumes = match src {
        Some(s) => s.volumes(captured, &mut problems).await?,
        None => Vec::new(),
    };
    if done {
        return Ok(Checked { volumes, planned });
    }
    let mut missing_prerequisite = false;
    if let (Some(d), Some(p)) = (dst, &planned) {
        missing_prerequisite = d.check(&p.plan, &mut problems, &mut warnings).await?;
    }
    if let Some(s) = src
        && !volumes.is_empty()
        && run
            .repository_ref(s.repository.as_ref())?
            .profile
            .is_empty()
    {
        problems.push("no repository profile for the volume data".into());
    }
    if !problems.is_empty() {
        return Err(TransferError::Preflight {
            cluster,
            problems,
            missing_prerequisite,
            planned: planned
                .as_ref()
                .map(|p| would_apply(&p.plan))
                .unwrap_or_default(),
        });
    }
    let namespace = &captured.namespace;
    let plan = planned.as_ref().map(|p| &p.plan);
    // One line per claim, filled in as its data moves.
    run.with_report(|r| {
        r.warnings.extend(warnings);
        r.volumes = volume_outcomes(captured, plan, snapshots);
    });
    let message = match &planned {
        Some(p) => {
            let moves =
                dst.is_some_and(|d| d.moves_data) && (!volumes.is_empty() || !snapshots.is_empty());
            let restored_under = if moves {
                format!("; {}", p.placement)
            } else {
                String::new()
            };
            format!(
                "{} object(s) to apply in namespace {} on cluster {cluster}{restored_under}",
                p.plan.objects.len(),
                p.plan.namespace,
            )
        }
        None => format!(
            "{} object(s) and {} volume(s) of namespace {namespace} on cluster {cluster}",
            captured.objects.len(),
            volumes.len(),
        ),
    };
    run.step(steps::PREFLIGHT, StepState::Succeeded, message)
        .await;
    Ok(Checked { volumes, planned })
}

/// What an apply of `plan` would have written, for a job that stopped before it.
fn would_apply(plan: &Plan) -> String {
    const NAMED: usize = 10;
    let mut names: Vec<String> = plan
        .objects
        .iter()
        .take(NAMED)
        .map(|o| {
            let r = o.object_ref();
            format!("{}/{}", r.kind, r.name)
        })
        .collect();
    if plan.objects.len() > NAMED {
        names.push(format!("{} more", plan.objects.len() - NAMED));
    }
    format!(
        "{} object(s) would have been applied into namespace {}: {}",
        plan.objects.len(),
        plan.namespace,
        names.join(", ")
    )
}

/// The report's line for each claim: where its data comes from and goes, before any
/// of it moved. With a plan, the claims it places; else every captured claim.
fn volume_outcomes(
    captured: &Captured,
    plan: Option<&Plan>,
    snapshots: &[VolumeSnapshot],
) -> Vec<VolumeOutcome> {
    captured
        .volumes
        .iter()
        .filter_map(|c| {
            let planned = match plan {
                Some(p) => Some(p.volumes.iter().find(|v| v.pvc == c.pvc)?),
                None => None,
            };
            let snapshot = snapshots.iter().find(|s| s.pvc == c.pvc);
            Some(VolumeOutcome {
                namespace: captured.namespace.clone(),
                pvc_name: c.pvc.clone(),
                source_volume: planned
                    .and_then(|v| v.source_pv.clone())
                    .or_else(|| c.pv.clone())
                    .unwrap_or_default(),
                destination_volume: planned.and_then(|v| v.pv.clone()).unwrap_or_default(),
                source_storage_class: c.storage_class.clone().unwrap_or_default(),
                destination_storage_class: planned
                    .and_then(|v| v.storage_class.clone())
                    .unwrap_or_default(),
                snapshot_id: snapshot.map(|s| s.snapshot_id.clone()).unwrap_or_default(),
                bytes_total: snapshot.map(|s| s.bytes).unwrap_or_default(),
                result: VolumeResult::Skipped as i32,
                ..Default::default()
            })
        })
        .collect()
}
