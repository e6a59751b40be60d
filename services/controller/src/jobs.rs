//! Objects whose work is transfer jobs (Migration, Restore), onto the transfer service.
//!
//! A new object starts its jobs as the user who created it (the webhook's signed
//! requester annotation): the transfer service reviews that user's rights and refuses
//! what they may not do, and the refusal becomes the `Succeeded=False` condition with
//! its reason. While the jobs run, the controller copies their progress into the
//! status as their event streams report (at most once a second, [`crate::watch`]);
//! once they end, it writes the per-volume and per-object outcomes. Deleting an object whose jobs still run cancels them and waits for them
//! to stop (the transfer service leaves nothing half-applied) before the object goes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_crd::requester::Requester;
use ferry_crd::{
    JobStatus, MigrationStatus, ObjectCounts, ObjectFailure, Phase, Progress, VolumeStatus,
    set_condition,
};
use ferry_proto::v1::{
    CancelJobRequest, ErrorCode, GetJobRequest, Job, JobRef, JobReport, JobState, ObjectAction,
    VolumeResult,
};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Code;

use crate::Ctx;
use crate::error::{Error, Result};
use crate::status::{condition, now, reason_of, refused};

/// How often a running object's status is refreshed without a word from its jobs'
/// event streams (one that broke, a service restarted).
const FOLLOW_EVERY: Duration = Duration::from_secs(15);

/// A kind whose work is transfer jobs, with the status they share.
pub(crate) trait JobsObject:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// The kind, as messages name it and the requester annotation is signed for.
    const KIND: &'static str;

    fn jobs_status(&self) -> Option<&MigrationStatus>;

    /// The wakes of this kind's objects ([`crate::watch`]).
    fn wakes(ctx: &Ctx) -> &crate::watch::Wakes<Self>;

    /// Whether its running warm jobs are to cut over (a Migration's `ferry.dev/cutover`
    /// annotation).
    fn cutover_asked(&self) -> bool {
        false
    }

    /// Starts the jobs, acting for `who`; a refusal is the service's status.
    fn start_jobs(
        &self,
        ctx: &Ctx,
        who: &Requester,
    ) -> impl Future<Output = Result<Vec<Job>, tonic::Status>> + Send;
}

/// A request for a service, acting for `who`.
pub(crate) fn acting<T>(message: T, who: &Requester) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    ferry_authz::act_for(request.metadata_mut(), &who.username, &who.groups);
    request
}

/// The jobs a start answered: several when a migration named several namespaces.
pub(crate) fn started(response: ferry_proto::v1::StartJobResponse) -> Vec<Job> {
    if response.jobs.is_empty() {
        response.job.into_iter().collect()
    } else {
        response.jobs
    }
}

fn label<K: JobsObject>(o: &K) -> String {
    format!(
        "{} {}/{}",
        K::KIND,
        o.namespace().unwrap_or_default(),
        o.name_any()
    )
}

/// The controller's entry for one object.
pub(crate) async fn reconcile<K: JobsObject>(o: Arc<K>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = o.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, ferry_crd::FINALIZER, o, |event| async {
        match event {
            Event::Apply(o) => apply(&api, &*o, &ctx).await,
            Event::Cleanup(o) => cleanup(&*o, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply<K: JobsObject>(api: &Api<K>, o: &K, ctx: &Ctx) -> Result<Action> {
    let status = o.jobs_status().cloned().unwrap_or_default();
    if status.phase.is_some_and(Phase::is_final) {
        return Ok(Action::await_change());
    }
    if status.jobs.is_empty() {
        return start(api, o, ctx, status).await;
    }
    follow(api, o, ctx, status).await
}

/// Starts the jobs, as the requester.
async fn start<K: JobsObject>(
    api: &Api<K>,
    m: &K,
    ctx: &Ctx,
    mut status: MigrationStatus,
) -> Result<Action> {
    let ns = m.namespace().unwrap_or_default();
    let name = m.name_any();
    let requester = match Requester::of(
        m.meta().annotations.as_ref(),
        &ctx.secret,
        K::KIND,
        &ns,
        &name,
    ) {
        Ok(r) => r,
        Err(e) => {
            return refuse(api, m, ctx, status, "RequesterUnknown", &e.to_string()).await;
        }
    };
    let jobs = match m.start_jobs(ctx, &requester).await {
        Ok(jobs) => jobs,
        Err(s) if refused(s.code()) => {
            tracing::info!(object = %label(m), user = %requester.username,
                reason = %s.message(), "refused");
            return refuse(api, m, ctx, status, reason_of(s.code()), s.message()).await;
        }
        Err(status) => {
            return Err(Error::Service {
                what: format!("starting {}", label(m)),
                status,
            });
        }
    };
    tracing::info!(object = %label(m), user = %requester.username,
        jobs = ?jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), "jobs started");
    for j in &jobs {
        crate::watch::follow(ctx, K::wakes(ctx), &j.id, ObjectRef::from_obj(m));
    }
    status.jobs = jobs.iter().map(job_status).collect();
    status.phase = Some(Phase::Running);
    status.started_at = Some(now());
    status.observed_generation = m.meta().generation;
    let g = m.meta().generation;
    set_condition(
        &mut status.conditions,
        condition(
            "Running",
            "True",
            "JobsStarted",
            &format!(
                "{} job(s) started; `ferry jobs get ID` follows one",
                jobs.len()
            ),
            g,
        ),
    );
    set_condition(
        &mut status.conditions,
        condition("Succeeded", "Unknown", "Running", "the jobs are running", g),
    );
    write_status(api, m, &status, ctx).await?;
    Ok(Action::requeue(FOLLOW_EVERY))
}

/// Copies the jobs' progress, and their outcomes once they end.
async fn follow<K: JobsObject>(
    api: &Api<K>,
    m: &K,
    ctx: &Ctx,
    mut status: MigrationStatus,
) -> Result<Action> {
    let mut jobs = Vec::new();
    let mut reports = Vec::new();
    for j in &status.jobs {
        let (job, report) = get_job(ctx, &j.id).await?;
        if report.is_none() {
            // Also after a controller restart or a new leadership term.
            crate::watch::follow(ctx, K::wakes(ctx), &j.id, ObjectRef::from_obj(m));
        }
        jobs.push(job);
        reports.extend(report);
    }
    if m.cutover_asked() {
        cut_over(ctx, &label(m), &mut jobs).await?;
    }
    status.jobs = jobs.iter().map(job_status).collect();
    for j in &mut status.jobs {
        if let Some(report) = reports.iter().find(|r| r.job_id == j.id) {
            j.restore_point = report.restore_point_id.clone();
        }
    }
    status.warm = warm_state(&jobs);
    let g = m.meta().generation;
    if reports.len() < jobs.len() {
        status.progress = Some(progress(&jobs));
        write_status(api, m, &status, ctx).await?;
        return Ok(Action::requeue(FOLLOW_EVERY));
    }
    let phase = final_phase(&reports);
    status.phase = Some(phase);
    status.progress = None;
    status.finished_at = Some(now());
    outcomes(&mut status, &reports);
    let (state, reason, message) = match phase {
        Phase::Succeeded => ("True", "Succeeded", "every job succeeded".to_owned()),
        Phase::PartiallySucceeded => (
            "False",
            "PartiallySucceeded",
            "the jobs ended with some objects or volumes failed; see failedObjects and volumes"
                .to_owned(),
        ),
        Phase::Cancelled => ("False", "Cancelled", "the jobs were cancelled".to_owned()),
        _ => {
            let failure = reports
                .iter()
                .find_map(|r| r.error.as_ref().map(|e| (r.job_id.as_str(), e)));
            // A refusal a job found only once it ran (a restore reviews the restore
            // point's namespace after reading it) reads as one at the start would.
            let reason = match failure.map(|(_, e)| e.code()) {
                Some(ErrorCode::PermissionDenied) => "Forbidden",
                _ => "JobFailed",
            };
            let message = failure
                .map(|(id, e)| format!("job {id}: {}", e.message))
                .unwrap_or_else(|| "a job failed; `ferry jobs get ID` says why".into());
            ("False", reason, message)
        }
    };
    set_condition(
        &mut status.conditions,
        condition("Running", "False", reason, "the jobs ended", g),
    );
    set_condition(
        &mut status.conditions,
        condition("Succeeded", state, reason, &message, g),
    );
    write_status(api, m, &status, ctx).await?;
    tracing::info!(object = %label(m), phase = ?phase, "jobs ended");
    Ok(Action::await_change())
}

/// Asks each running warm job that has not been asked yet to cut over.
async fn cut_over(ctx: &Ctx, name: &str, jobs: &mut [Job]) -> Result<()> {
    for job in jobs.iter_mut() {
        let asked = job.warm.as_ref().is_none_or(|w| w.cutover_requested);
        if asked || is_final(job.state()) || job.state() == JobState::Cancelling {
            continue;
        }
        tracing::info!(object = %name, job = %job.id, "cutover asked by annotation");
        let answer = ctx
            .transfer
            .clone()
            .cutover(ferry_proto::v1::CutoverRequest {
                job: Some(JobRef { id: job.id.clone() }),
            })
            .await
            .map_err(|status| Error::Service {
                what: format!("cutting over job {} of {name}", job.id),
                status,
            })?
            .into_inner();
        if let Some(now) = answer.job {
            *job = now;
        }
    }
    Ok(())
}

/// The jobs' warm status, over them all; None unless they are warm migrations.
fn warm_state(jobs: &[Job]) -> Option<ferry_crd::WarmState> {
    let warm: Vec<&ferry_proto::v1::WarmStatus> =
        jobs.iter().filter_map(|j| j.warm.as_ref()).collect();
    let first = warm.first()?;
    let last_sync = first
        .recent_syncs
        .last()
        .map(|s| {
            format!(
                "wrote {} MiB of {} MiB in {:.1}s",
                s.bytes_written >> 20,
                s.bytes_total >> 20,
                s.duration.as_ref().map_or(0.0, ferry_rpc::duration_secs)
            )
        })
        .unwrap_or_default();
    let downtime = warm
        .iter()
        .filter_map(|w| w.downtime.as_ref().map(ferry_rpc::duration_secs))
        .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))));
    Some(ferry_crd::WarmState {
        syncs: warm.iter().map(|w| w.syncs).min().unwrap_or(0),
        last_sync,
        cutover_requested: warm.iter().all(|w| w.cutover_requested),
        downtime: downtime.map(|d| format!("{d:.1}s")).unwrap_or_default(),
    })
}

/// Before the object goes: its running jobs are cancelled and have stopped.
async fn cleanup<K: JobsObject>(m: &K, ctx: &Ctx) -> Result<Action> {
    let status = m.jobs_status().cloned().unwrap_or_default();
    let name = label(m);
    let mut running = 0;
    for j in &status.jobs {
        let (job, _) = match get_job(ctx, &j.id).await {
            Ok(found) => found,
            Err(Error::Service { status, .. }) if status.code() == Code::NotFound => continue,
            Err(e) => return Err(e),
        };
        if is_final(job.state()) {
            continue;
        }
        running += 1;
        if job.state() != JobState::Cancelling {
            tracing::info!(object = %name, job = %j.id, "deleted: cancelling its job");
            ctx.transfer
                .clone()
                .cancel_job(CancelJobRequest {
                    job: Some(JobRef { id: j.id.clone() }),
                    reason: format!("{name} was deleted"),
                })
                .await
                .map_err(|status| Error::Service {
                    what: format!("cancelling job {} of {name}", j.id),
                    status,
                })?;
        }
    }
    if running > 0 {
        return Err(Error::Waiting(format!(
            "{running} job(s) of {name} still stopping"
        )));
    }
    Ok(Action::await_change())
}

async fn get_job(ctx: &Ctx, id: &str) -> Result<(Job, Option<JobReport>)> {
    let got = ctx
        .transfer
        .clone()
        .get_job(GetJobRequest {
            job: Some(JobRef { id: id.to_owned() }),
        })
        .await
        .map_err(|status| Error::Service {
            what: format!("reading job {id}"),
            status,
        })?
        .into_inner();
    let job = got.job.ok_or_else(|| Error::Service {
        what: format!("reading job {id}"),
        status: tonic::Status::internal("the transfer service answered no job"),
    })?;
    Ok((job, got.report))
}

async fn refuse<K: JobsObject>(
    api: &Api<K>,
    m: &K,
    ctx: &Ctx,
    mut status: MigrationStatus,
    reason: &str,
    message: &str,
) -> Result<Action> {
    let g = m.meta().generation;
    status.phase = Some(Phase::Failed);
    status.observed_generation = g;
    status.finished_at = Some(now());
    set_condition(
        &mut status.conditions,
        condition("Succeeded", "False", reason, message, g),
    );
    write_status(api, m, &status, ctx).await?;
    Ok(Action::await_change())
}

fn is_final(state: JobState) -> bool {
    !matches!(
        state,
        JobState::Queued | JobState::Running | JobState::Cancelling | JobState::Unspecified
    )
}

fn job_status(job: &Job) -> JobStatus {
    JobStatus {
        namespace: job
            .application
            .as_ref()
            .map(|a| a.namespace.clone())
            .unwrap_or_default(),
        id: job.id.clone(),
        state: job
            .state()
            .as_str_name()
            .trim_start_matches("JOB_STATE_")
            .to_ascii_lowercase(),
        restore_point: String::new(),
    }
}

fn progress(jobs: &[Job]) -> Progress {
    let mut p = Progress::default();
    for job in jobs {
        let Some(jp) = &job.progress else { continue };
        if !is_final(job.state()) && p.step.is_empty() {
            p.step = jp.step.clone();
        }
        p.bytes_done += jp.bytes_read;
        p.bytes_total += jp.bytes_total;
        p.objects_done += jp.objects_done;
        p.objects_total += jp.objects_total;
        p.bytes_per_second += jp.rate_bytes_per_second;
        if let Some(eta) = &jp.eta {
            p.eta_seconds = Some(p.eta_seconds.unwrap_or(0).max(eta.seconds));
        }
    }
    let step = if p.step.is_empty() { "queued" } else { &p.step };
    p.summary = if p.bytes_total > 0 {
        format!(
            "{step}: {} of {} MiB",
            p.bytes_done >> 20,
            p.bytes_total >> 20
        )
    } else if p.objects_total > 0 {
        format!("{step}: {} of {} objects", p.objects_done, p.objects_total)
    } else {
        step.to_owned()
    };
    p
}

fn final_phase(reports: &[JobReport]) -> Phase {
    let states: Vec<JobState> = reports.iter().map(|r| r.state()).collect();
    if states.contains(&JobState::Failed) {
        Phase::Failed
    } else if states.contains(&JobState::Cancelled) {
        Phase::Cancelled
    } else if states.contains(&JobState::PartiallySucceeded) {
        Phase::PartiallySucceeded
    } else {
        Phase::Succeeded
    }
}

fn outcomes(status: &mut MigrationStatus, reports: &[JobReport]) {
    let mut counts = ObjectCounts::default();
    status.volumes.clear();
    status.failed_objects.clear();
    for report in reports {
        for v in &report.volumes {
            status.volumes.push(VolumeStatus {
                namespace: v.namespace.clone(),
                claim: v.pvc_name.clone(),
                result: match v.result() {
                    VolumeResult::Succeeded => "Succeeded",
                    VolumeResult::Skipped => "Skipped",
                    VolumeResult::Failed => "Failed",
                    VolumeResult::Unspecified => "Unknown",
                }
                .into(),
                files: v.files,
                bytes: v.bytes_total,
                bytes_uploaded: v.bytes_uploaded,
                message: v
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
            });
        }
        for o in &report.objects {
            match o.action() {
                ObjectAction::Created => counts.created += 1,
                ObjectAction::Updated => counts.updated += 1,
                ObjectAction::Skipped => counts.skipped += 1,
                ObjectAction::Excluded => counts.excluded += 1,
                ObjectAction::Failed => {
                    counts.failed += 1;
                    let r = o.object.clone().unwrap_or_default();
                    status.failed_objects.push(ObjectFailure {
                        object: format!("{} {}/{}", r.kind, r.namespace, r.name),
                        message: o
                            .error
                            .as_ref()
                            .map(|e| e.message.clone())
                            .unwrap_or_default(),
                    });
                }
                ObjectAction::Captured | ObjectAction::Unspecified => {}
            }
        }
    }
    status.objects = Some(counts);
}

async fn write_status<K: JobsObject>(
    api: &Api<K>,
    m: &K,
    status: &MigrationStatus,
    ctx: &Ctx,
) -> Result<()> {
    crate::status::write(api, m, m.jobs_status(), status, &ctx.cluster).await
}
