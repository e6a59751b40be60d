//! Warm migration: the volumes are copied again and again while the application keeps
//! running on the source, each sync writing only what changed on the destination; then
//! the cutover moves it with a short downtime: a fresh capture and pre-flight, the
//! source scaled to zero, the last change copied, the application applied and started
//! on the destination, and its pods waited for until Ready.
//!
//! An abort (a cancel, or a failure) before the apply leaves the source as it was
//! (scaled back if the cutover had stopped it) and removes what the syncs created on
//! the destination.

use std::time::{Duration, Instant};

use ferry_kube::Captured;
use ferry_proto::v1::{
    ErrorCode, JobState, StartMigrationRequest, StepState, VolumeResult, WarmOptions, WarmSync,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::Api;
use kube::api::DeleteParams;
use tracing::{info, warn};

use crate::destination::{Destination, Planned};
use crate::error::{Result, TransferError};
use crate::job::{now, steps};
use crate::preflight::Checked;
use crate::quiesce::{quiesce, unquiesce};
use crate::runtime::JobRun;
use crate::source::Source;
use ferry_rpc::proto_duration;

/// Time between syncs when the request gives none.
pub(crate) const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(60);
const MAX_SYNC_INTERVAL_SECONDS: u32 = 86_400;
const MAX_CUTOVER_AFTER_SECONDS: u32 = 30 * 86_400;
/// Syncs that may fail in a row (an S3 hiccup, a node restarting) before the job stops.
const MAX_FAILED_SYNCS: u32 = 3;
/// Syncs kept in the job's status.
const RECENT_SYNCS: usize = 20;
/// How often the cutover looks at the destination's workloads while waiting for Ready.
const READY_POLL: Duration = Duration::from_millis(200);

/// Refuses warm options that cannot work, before a job exists.
pub(crate) fn check_options(req: &StartMigrationRequest) -> Result<()> {
    let Some(warm) = &req.warm else {
        return Ok(());
    };
    if req.dry_run {
        return Err(TransferError::invalid(
            "warm",
            "set with dry_run; a dry run shows what one copy would do: leave warm out",
        ));
    }
    if req.skip_volume_data {
        return Err(TransferError::invalid(
            "warm",
            "set with skip_volume_data; a warm migration syncs volume data: migrate once to \
             move objects only",
        ));
    }
    if req.quiesce_source {
        return Err(TransferError::invalid(
            "quiesce_source",
            "set with warm; the cutover stops the source's workloads itself, after the \
             syncs: leave quiesce_source out",
        ));
    }
    if warm.sync_interval_seconds > MAX_SYNC_INTERVAL_SECONDS {
        return Err(TransferError::invalid(
            "warm.sync_interval_seconds",
            format!(
                "{} is more than a day ({MAX_SYNC_INTERVAL_SECONDS}); sync at least daily",
                warm.sync_interval_seconds
            ),
        ));
    }
    if warm.cutover_after_seconds > MAX_CUTOVER_AFTER_SECONDS {
        return Err(TransferError::invalid(
            "warm.cutover_after_seconds",
            format!(
                "{} is more than 30 days ({MAX_CUTOVER_AFTER_SECONDS}); give a shorter time, \
                 or 0 to cut over only when asked",
                warm.cutover_after_seconds
            ),
        ));
    }
    Ok(())
}

/// Runs (or resumes) a warm migration after its first capture and pre-flight.
pub(crate) async fn run(
    run: &JobRun,
    req: &StartMigrationRequest,
    src: &Source<'_>,
    dst: &Destination<'_>,
    captured: Captured,
    checked: Checked,
) -> Result<JobState> {
    let options = req.warm.unwrap_or_default();
    let outcome = async {
        if !run.step_finished(steps::SYNC) {
            sync_until_cutover(run, &options, src, dst, &captured, &checked).await?;
        }
        cutover(run, req, src, dst, captured, checked).await
    }
    .await;
    if let Err(e) = &outcome {
        info!(error = %e, "warm migration stopped; undoing what it did");
        abort(run, src, dst, e).await;
    }
    outcome
}

fn planned(checked: &Checked) -> Result<&Planned> {
    checked
        .planned
        .as_ref()
        .ok_or_else(|| TransferError::Internal("a migration's pre-flight made no plan".into()))
}

/// Syncs on the request's interval until a cutover is asked or due.
async fn sync_until_cutover(
    run: &JobRun,
    options: &WarmOptions,
    src: &Source<'_>,
    dst: &Destination<'_>,
    captured: &Captured,
    checked: &Checked,
) -> Result<()> {
    let interval = match options.sync_interval_seconds {
        0 => DEFAULT_SYNC_INTERVAL,
        s => Duration::from_secs(u64::from(s)),
    };
    let job = run.id();
    loop {
        if run.warm().cutover_requested {
            break;
        }
        run.check_cancel()?;
        let number = run.warm().syncs + 1;
        run.step(
            steps::SYNC,
            StepState::Running,
            format!("sync {number}: copying what changed while the application runs"),
        )
        .await;
        run.reset_steps(&[steps::BACKUP, steps::COMMIT, steps::RESTORE])
            .await;
        clear_round(run).await;
        let started = (Instant::now(), now());
        match sync_once(run, src, dst, captured, checked).await {
            Ok(phases) => {
                let done = record_sync(run, number, false, started, phases).await;
                run.update_checkpoint(|c| {
                    c.failed_syncs = 0;
                    if c.cutover_at_ms.is_none() && options.cutover_after_seconds > 0 {
                        c.cutover_at_ms =
                            Some(unix_ms() + i64::from(options.cutover_after_seconds) * 1000);
                    }
                })
                .await;
                info!(sync = number, took = ?done, "warm sync done");
            }
            // Cancelled; or someone wrote to a destination volume, which waits for a
            // person, not for the next sync.
            Err(e) if e.is_cancelled() || e.code() == ErrorCode::Conflict => return Err(e),
            Err(e) => {
                let failed = run.with_checkpoint(|c| c.failed_syncs) + 1;
                run.update_checkpoint(|c| c.failed_syncs = failed).await;
                if failed >= MAX_FAILED_SYNCS {
                    return Err(e);
                }
                warn!(sync = number, error = %e, failed, "warm sync failed; trying again");
                run.with_report(|r| {
                    r.warnings.push(ferry_proto::v1::ErrorDetail {
                        message: format!(
                            "sync {number} failed ({failed} in a row; the job stops after \
                             {MAX_FAILED_SYNCS}): {e}"
                        ),
                        ..e.detail()
                    });
                });
            }
        }
        wait_for_next(run, interval, &job).await?;
    }
    let syncs = run.warm().syncs;
    run.step(
        steps::SYNC,
        StepState::Succeeded,
        format!("{syncs} sync(s) while the application ran on the source; cutting over"),
    )
    .await;
    Ok(())
}

/// Waits `interval` for the next sync, less when a cutover is asked or due.
async fn wait_for_next(run: &JobRun, interval: Duration, job: &str) -> Result<()> {
    let next = time::OffsetDateTime::now_utc() + interval;
    let cutover_at = run.with_checkpoint(|c| c.cutover_at_ms);
    let wait = match cutover_at {
        Some(at) => interval.min(Duration::from_millis(
            u64::try_from(at - unix_ms()).unwrap_or(0),
        )),
        None => interval,
    };
    let syncs = run.warm().syncs;
    let next_at = prost_types::Timestamp {
        seconds: next.unix_timestamp(),
        nanos: i32::try_from(next.nanosecond()).unwrap_or(0),
    };
    run.update_warm(|w| w.next_sync_at = Some(next_at)).await;
    let last = last_sync_line(run);
    let due = match cutover_at {
        Some(_) => "; the cutover starts by itself when due (cutover_after_seconds)",
        None => "",
    };
    run.step(
        steps::SYNC,
        StepState::Running,
        format!(
            "{syncs} sync(s){last}; next in {} s; move the application with `ferry cutover \
             {job}`{due}",
            interval.as_secs()
        ),
    )
    .await;
    if !run.warm().cutover_requested {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = run.cutover_asked() => {}
            () = run.cancel_token().cancelled() => return Err(run.cancelled()),
        }
    }
    let due = cutover_at.is_some_and(|at| unix_ms() >= at);
    run.update_warm(|w| {
        w.next_sync_at = None;
        if due {
            w.cutover_requested = true;
        }
    })
    .await;
    Ok(())
}

/// "; the last copied 1.0 MiB of 1.0 GiB in 2.1 s", from the newest sync.
fn last_sync_line(run: &JobRun) -> String {
    let warm = run.warm();
    let Some(last) = warm.recent_syncs.last() else {
        return String::new();
    };
    let took = last.duration.as_ref().map_or(0.0, ferry_rpc::duration_secs);
    format!(
        "; the last wrote {} byte(s) of {} on the destination in {took:.1} s",
        last.bytes_written, last.bytes_total
    )
}

/// Forgets the previous sync's snapshots and restore point, so the next backs every
/// volume up again (incrementally, from those snapshots, its parents) and restores it.
async fn clear_round(run: &JobRun) {
    let parents: std::collections::BTreeMap<String, String> = run.with_report(|r| {
        r.volumes
            .iter()
            .filter(|v| !v.snapshot_id.is_empty())
            .map(|v| (v.pvc_name.clone(), v.snapshot_id.clone()))
            .collect()
    });
    run.with_report(|r| {
        r.restore_point_id.clear();
        for v in &mut r.volumes {
            v.snapshot_id.clear();
            v.bytes_uploaded = 0;
            v.bytes_written = 0;
            v.result = VolumeResult::Skipped as i32;
            v.error = None;
        }
    });
    run.update_checkpoint(|c| {
        c.restore_point_id.clear();
        if !parents.is_empty() {
            c.warm_parents = parents;
        }
    })
    .await;
}

/// One sync: back up on the source, commit a restore point, restore on the destination
/// (only what changed since the previous sync is written there). Resumable step by step.
/// The time each phase took.
async fn sync_once(
    run: &JobRun,
    src: &Source<'_>,
    dst: &Destination<'_>,
    captured: &Captured,
    checked: &Checked,
) -> Result<[Duration; 3]> {
    let t = Instant::now();
    let snapshots = src.backup(&checked.volumes).await?;
    let backup = t.elapsed();
    run.check_cancel()?;
    let t = Instant::now();
    src.commit(captured, &snapshots).await?;
    let commit = t.elapsed();
    run.check_cancel()?;
    let t = Instant::now();
    dst.restore(planned(checked)?).await?;
    Ok([backup, commit, t.elapsed()])
}

/// Adds the sync just done to the job's status; how long it took.
async fn record_sync(
    run: &JobRun,
    number: u32,
    last: bool,
    (started, started_at): (Instant, prost_types::Timestamp),
    [backup, commit, restore]: [Duration; 3],
) -> Duration {
    let took = started.elapsed();
    let (total, uploaded, written, restore_point) = run.with_report(|r| {
        (
            r.volumes.iter().map(|v| v.bytes_total).sum(),
            r.volumes.iter().map(|v| v.bytes_uploaded).sum(),
            r.volumes.iter().map(|v| v.bytes_written).sum(),
            r.restore_point_id.clone(),
        )
    });
    let sync = WarmSync {
        number,
        r#final: last,
        started_at: Some(started_at),
        duration: Some(proto_duration(took)),
        bytes_total: total,
        bytes_uploaded: uploaded,
        bytes_written: written,
        restore_point_id: restore_point,
        backup_duration: Some(proto_duration(backup)),
        commit_duration: Some(proto_duration(commit)),
        restore_duration: Some(proto_duration(restore)),
    };
    run.update_warm(|w| {
        if !last {
            w.syncs = number;
        }
        w.recent_syncs.push(sync);
        let extra = w.recent_syncs.len().saturating_sub(RECENT_SYNCS);
        w.recent_syncs.drain(..extra);
    })
    .await;
    took
}

/// The cutover: capture and plan afresh while the source still runs, stop the source,
/// copy the last change, apply and start on the destination, wait for Ready. A restart
/// resumes it where it was: past the stop, the capture taken before it is kept.
async fn cutover(
    run: &JobRun,
    req: &StartMigrationRequest,
    src: &Source<'_>,
    dst: &Destination<'_>,
    captured: Captured,
    checked: Checked,
) -> Result<JobState> {
    let (captured, checked) = if run.step_finished(steps::QUIESCE) {
        (captured, checked)
    } else {
        // What changed in the objects while the syncs ran goes too.
        run.reset_steps(&[
            steps::CAPTURE,
            steps::PREFLIGHT,
            steps::BACKUP,
            steps::COMMIT,
            steps::RESTORE,
        ])
        .await;
        clear_round(run).await;
        crate::migrate::prepare(run, req, src, dst).await?
    };
    let planned = planned(&checked)?;
    if !run.step_finished(steps::QUIESCE) {
        quiesce(run, &src.cluster, src.namespace(), &captured, true).await?;
        let stopped = now();
        run.update_warm(|w| w.source_stopped_at = Some(stopped))
            .await;
    }
    let started = (Instant::now(), now());
    if !run.step_finished(steps::RESTORE) {
        let phases = sync_once(run, src, dst, &captured, &checked).await?;
        let number = run.warm().syncs + 1;
        record_sync(run, number, true, started, phases).await;
    }
    run.check_cancel()?;
    // The movers go while the application is applied and starts: their pods only held
    // the volumes mounted, and a volume's pods on one node may share it; a
    // ReadWriteOncePod claim's pod is scheduled once its mover is gone.
    let (state, ()) = tokio::join!(dst.deliver(planned), dst.release_movers());
    let state = state?;
    if state != JobState::Succeeded || !dst.apply.start_applications {
        return keep_source(run, src, state).await;
    }
    wait_ready(run, dst, planned).await?;
    leave_source_stopped(run, src).await;
    Ok(state)
}

/// After a cutover whose application did not start on the destination (objects failed,
/// or start_applications is off): the source comes back, so the application runs
/// somewhere.
async fn keep_source(run: &JobRun, src: &Source<'_>, state: JobState) -> Result<JobState> {
    let why = if state == JobState::Succeeded {
        "start_applications is off: the application waits at zero replicas on the destination"
    } else {
        "some objects failed to apply on the destination"
    };
    run.step(steps::READY, StepState::Skipped, why).await;
    unquiesce(run, &src.cluster, src.namespace()).await?;
    run.with_report(|r| {
        r.warnings.push(ferry_proto::v1::ErrorDetail {
            message: format!(
                "{why}; the application was scaled back on the source, where it keeps running"
            ),
            ..Default::default()
        });
    });
    Ok(state)
}

/// Waits until every Deployment and StatefulSet of the plan has its replicas Ready on
/// the destination: the end of the downtime, which is recorded.
async fn wait_ready(run: &JobRun, dst: &Destination<'_>, planned: &Planned) -> Result<()> {
    let workloads: Vec<(String, String)> = planned
        .plan
        .objects
        .iter()
        .filter(|o| {
            o.resource.group == "apps"
                && matches!(o.resource.kind.as_str(), "Deployment" | "StatefulSet")
        })
        .map(|o| {
            (
                o.resource.kind.clone(),
                o.object.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    run.step(
        steps::READY,
        StepState::Running,
        format!(
            "waiting for {} workload(s) in {} on cluster {} to be Ready",
            workloads.len(),
            dst.target,
            dst.cluster.name
        ),
    )
    .await;
    let deadline = Instant::now() + run.config().ready_timeout;
    for (kind, name) in &workloads {
        loop {
            let (want, ready) = readiness(dst, kind, name).await?;
            if ready >= want {
                break;
            }
            if Instant::now() > deadline {
                let e = TransferError::Object {
                    action: "waiting for the pods of",
                    cluster: dst.cluster.name.clone(),
                    object: Box::new(crate::quiesce::workload_ref(&dst.target, kind, name)),
                    message: format!(
                        "{ready} of {want} replica(s) Ready after {} s",
                        run.config().ready_timeout.as_secs()
                    ),
                    hint: "the application was started on the destination and its source \
                           stays at zero replicas: look at its pods there (kubectl describe \
                           pod) and fix what keeps them from being Ready"
                        .into(),
                };
                run.step(steps::READY, StepState::Failed, e.to_string())
                    .await;
                return Err(e);
            }
            run.check_cancel()?;
            tokio::time::sleep(READY_POLL).await;
        }
    }
    let ready = now();
    let downtime = run
        .warm()
        .source_stopped_at
        .map(|s| Duration::from_secs_f64(ferry_rpc::seconds_between(&s, &ready).max(0.0)));
    run.update_warm(|w| {
        w.destination_ready_at = Some(ready);
        w.downtime = downtime.map(proto_duration);
    })
    .await;
    let down = downtime.map_or_else(String::new, |d| {
        format!("; the application was down {:.1} s", d.as_secs_f64())
    });
    run.step(
        steps::READY,
        StepState::Succeeded,
        format!("{} workload(s) Ready{down}", workloads.len()),
    )
    .await;
    Ok(())
}

/// (replicas wanted, replicas Ready) of a workload on the destination.
async fn readiness(dst: &Destination<'_>, kind: &str, name: &str) -> Result<(i32, i32)> {
    let client = dst.cluster.client.clone();
    let err = |e: kube::Error| TransferError::Object {
        action: "reading",
        cluster: dst.cluster.name.clone(),
        object: Box::new(crate::quiesce::workload_ref(&dst.target, kind, name)),
        message: e.to_string(),
        hint: "grant Ferry's transfer service get on deployments and statefulsets".into(),
    };
    Ok(if kind == "Deployment" {
        let d = Api::<Deployment>::namespaced(client, &dst.target)
            .get(name)
            .await
            .map_err(err)?;
        let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.unwrap_or_default();
        (want, status.ready_replicas.unwrap_or(0))
    } else {
        let s = Api::<StatefulSet>::namespaced(client, &dst.target)
            .get(name)
            .await
            .map_err(err)?;
        let want = s.spec.and_then(|s| s.replicas).unwrap_or(1);
        let status = s.status.unwrap_or_default();
        (want, status.ready_replicas.unwrap_or(0))
    })
}

/// The application moved: its workloads on the source stay at zero replicas, no longer
/// the job's to scale back.
async fn leave_source_stopped(run: &JobRun, src: &Source<'_>) {
    let stopped = run.with_checkpoint(|c| c.quiesced.clone());
    if let Err(e) = crate::quiesce::hand_over(&src.cluster, src.namespace(), &stopped).await {
        warn!(error = %e, "marking the source's workloads as moved");
    }
    run.update_checkpoint(|c| c.quiesced.clear()).await;
    run.step(
        steps::UNQUIESCE,
        StepState::Skipped,
        format!(
            "the application moved: its {} workload(s) on cluster {} stay at zero replicas \
             (their counts are in annotation {})",
            stopped.len(),
            src.cluster.name,
            crate::quiesce::MOVED_ANNOTATION
        ),
    )
    .await;
}

/// Undoes a warm migration that stopped (with `why`) before its apply: the source
/// scaled back if the cutover had stopped it, and the claims (and the namespace) its
/// syncs created on the destination deleted, unless someone wrote to them there.
/// Problems are warnings: the job's own error says why it stopped.
async fn abort(run: &JobRun, src: &Source<'_>, dst: &Destination<'_>, why: &TransferError) {
    let state_of = |name: &str| {
        run.job()
            .steps
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.state())
    };
    // Started on the destination: it stays there (not Ready yet, the job's error says),
    // and the source stays stopped, so the two never run at once.
    if state_of(steps::START) == Some(StepState::Succeeded) {
        return;
    }
    dst.release_movers().await;
    if let Err(e) = unquiesce(run, &src.cluster, src.namespace()).await {
        warn!(error = %e, "scaling the source back after a stopped warm migration");
        run.with_report(|r| r.warnings.push(e.detail()));
    }
    let apply_began = !matches!(state_of(steps::APPLY), Some(StepState::Pending) | None);
    if apply_began {
        return;
    }
    if why.code() == ErrorCode::Conflict {
        run.with_report(|r| {
            r.warnings.push(ferry_proto::v1::ErrorDetail {
                message: format!(
                    "the claims the syncs created on cluster {} stay, with what was written \
                     to them there",
                    dst.cluster.name
                ),
                cluster: dst.cluster.name.clone(),
                hint: "copy away what should be kept, then delete the namespace's claims \
                       there, or migrate again with overwrite_destination_changes"
                    .into(),
                ..Default::default()
            });
        });
        return;
    }
    let created = run.with_checkpoint(|c| c.created_before_apply.clone());
    let mut left = Vec::new();
    for object in created.iter().rev() {
        if let Err(message) = delete_created(dst, object).await {
            left.push(format!("{object} ({message})"));
        }
    }
    if !left.is_empty() {
        run.with_report(|r| {
            r.warnings.push(ferry_proto::v1::ErrorDetail {
                message: format!(
                    "the warm migration stopped, and what its syncs created on cluster {} \
                     could not all be deleted: {}",
                    dst.cluster.name,
                    left.join(", ")
                ),
                cluster: dst.cluster.name.clone(),
                hint: "delete them with kubectl".into(),
                ..Default::default()
            });
        });
    }
    if let crate::destination::Placement::Root(_) = &planned_placement(run) {
        run.with_report(|r| {
            r.warnings.push(ferry_proto::v1::ErrorDetail {
                message: "the synced data stays in the destination's volume directories \
                          (no claim was created for it)"
                    .into(),
                cluster: dst.cluster.name.clone(),
                hint: "delete the directories of the namespace under the destination \
                       agent's volume root"
                    .into(),
                ..Default::default()
            });
        });
    }
}

fn planned_placement(run: &JobRun) -> crate::destination::Placement {
    match run.with_checkpoint(|c| c.volume_root.clone()) {
        Some(root) => crate::destination::Placement::Root(root),
        None => crate::destination::Placement::Provision,
    }
}

/// Deletes one object the syncs created ("PersistentVolumeClaim ns/name" or "Namespace
/// name"), as the job's user; a message when it could not.
async fn delete_created(dst: &Destination<'_>, object: &str) -> std::result::Result<(), String> {
    let client = dst.writer.client.clone();
    let dp = DeleteParams::default();
    match object.split_once(' ') {
        Some(("PersistentVolumeClaim", rest)) => {
            let (ns, name) = rest.split_once('/').unwrap_or((&dst.target, rest));
            info!(claim = %rest, cluster = %dst.cluster.name, "deleting a synced claim");
            gone(
                Api::<PersistentVolumeClaim>::namespaced(client, ns)
                    .delete(name, &dp)
                    .await,
            )
        }
        Some(("Namespace", name)) => {
            info!(namespace = %name, cluster = %dst.cluster.name, "deleting the namespace the syncs created");
            gone(Api::<Namespace>::all(client).delete(name, &dp).await)
        }
        _ => Ok(()),
    }
}

/// Deleted, or already gone; else why not.
fn gone<T>(r: std::result::Result<T, kube::Error>) -> std::result::Result<(), String> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn unix_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(i64::MAX)
}
