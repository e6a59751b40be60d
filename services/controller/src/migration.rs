//! Migration objects onto the transfer service.
//!
//! A new Migration starts its jobs as the user who created it (the webhook's signed
//! requester annotation): the transfer service reviews that user's rights and refuses
//! what they may not do, and the refusal becomes the `Succeeded=False` condition with
//! its reason. While the jobs run, the controller copies their progress into the
//! status every few seconds; once they end, it writes the per-volume and per-object
//! outcomes. Deleting a Migration whose jobs still run cancels them and waits for them
//! to stop (the transfer service leaves nothing half-applied) before the object goes.

use std::sync::Arc;
use std::time::Duration;

use ferry_crd::requester::Requester;
use ferry_crd::{
    ExistingObjects, JobStatus, Migration, MigrationSpec, MigrationStatus, ObjectCounts,
    ObjectFailure, Phase, Progress, VolumeStatus, set_condition,
};
use ferry_proto::v1::{
    ApplicationSelector, ApplyOptions, CancelJobRequest, ClusterRef, ExistingObjectPolicy,
    GetJobRequest, Job, JobRef, JobReport, JobState, ObjectAction, RepositoryRef,
    StartMigrationRequest, VolumeResult, cluster_ref,
};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use tonic::Code;

use crate::Ctx;
use crate::error::{Error, Result};
use crate::status::{condition, now, reason_of, refused};

/// How often a running Migration's status is refreshed.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// The controller's entry for one Migration.
pub async fn reconcile(m: Arc<Migration>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = m.namespace().unwrap_or_default();
    let api: Api<Migration> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, ferry_crd::FINALIZER, m, |event| async {
        match event {
            Event::Apply(m) => apply(&api, &m, &ctx).await,
            Event::Cleanup(m) => cleanup(&m, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply(api: &Api<Migration>, m: &Migration, ctx: &Ctx) -> Result<Action> {
    let status = m.status.clone().unwrap_or_default();
    if status.phase.is_some_and(Phase::is_final) {
        return Ok(Action::await_change());
    }
    if status.jobs.is_empty() {
        return start(api, m, ctx, status).await;
    }
    follow(api, m, ctx, status).await
}

/// Starts the jobs, as the requester.
async fn start(
    api: &Api<Migration>,
    m: &Migration,
    ctx: &Ctx,
    mut status: MigrationStatus,
) -> Result<Action> {
    let ns = m.namespace().unwrap_or_default();
    let name = m.name_any();
    let requester = match Requester::of(
        m.metadata.annotations.as_ref(),
        &ctx.secret,
        "Migration",
        &ns,
        &name,
    ) {
        Ok(r) => r,
        Err(e) => {
            return refuse(api, m, ctx, status, "RequesterUnknown", &e.to_string()).await;
        }
    };
    let namespaces = if m.spec.namespaces.is_empty() {
        vec![ns.clone()]
    } else {
        m.spec.namespaces.clone()
    };
    let mut request = tonic::Request::new(start_request(&m.spec, &namespaces));
    ferry_authz::act_for(
        request.metadata_mut(),
        &requester.username,
        &requester.groups,
    );
    let started = ctx.transfer.clone().start_migration(request).await;
    let response = match started {
        Ok(r) => r.into_inner(),
        Err(s) if refused(s.code()) => {
            tracing::info!(migration = %format!("{ns}/{name}"), user = %requester.username,
                reason = %s.message(), "migration refused");
            return refuse(api, m, ctx, status, reason_of(s.code()), s.message()).await;
        }
        Err(status) => {
            return Err(Error::Service {
                what: format!("starting Migration {ns}/{name}"),
                status,
            });
        }
    };
    let jobs: Vec<Job> = if response.jobs.is_empty() {
        response.job.into_iter().collect()
    } else {
        response.jobs
    };
    tracing::info!(migration = %format!("{ns}/{name}"), user = %requester.username,
        jobs = ?jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), "jobs started");
    status.jobs = jobs.iter().map(job_status).collect();
    status.phase = Some(Phase::Running);
    status.started_at = Some(now());
    status.observed_generation = m.metadata.generation;
    let g = m.metadata.generation;
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
async fn follow(
    api: &Api<Migration>,
    m: &Migration,
    ctx: &Ctx,
    mut status: MigrationStatus,
) -> Result<Action> {
    let mut jobs = Vec::new();
    let mut reports = Vec::new();
    for j in &status.jobs {
        let (job, report) = get_job(ctx, &j.id).await?;
        jobs.push(job);
        reports.extend(report);
    }
    status.jobs = jobs.iter().map(job_status).collect();
    let g = m.metadata.generation;
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
        _ => (
            "False",
            "JobFailed",
            reports
                .iter()
                .find_map(|r| {
                    r.error
                        .as_ref()
                        .map(|e| format!("job {}: {}", r.job_id, e.message))
                })
                .unwrap_or_else(|| "a job failed; `ferry jobs get ID` says why".into()),
        ),
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
    tracing::info!(migration = %format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any()),
        phase = ?phase, "migration ended");
    Ok(Action::await_change())
}

/// Before the object goes: its running jobs are cancelled and have stopped.
async fn cleanup(m: &Migration, ctx: &Ctx) -> Result<Action> {
    let status = m.status.clone().unwrap_or_default();
    let name = format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any());
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
            tracing::info!(migration = %name, job = %j.id, "Migration deleted: cancelling its job");
            ctx.transfer
                .clone()
                .cancel_job(CancelJobRequest {
                    job: Some(JobRef { id: j.id.clone() }),
                    reason: format!("Migration {name} was deleted"),
                })
                .await
                .map_err(|status| Error::Service {
                    what: format!("cancelling job {} of Migration {name}", j.id),
                    status,
                })?;
        }
    }
    if running > 0 {
        return Err(Error::Waiting(format!(
            "{running} job(s) of Migration {name} still stopping"
        )));
    }
    Ok(Action::await_change())
}

/// The request a Migration's spec makes, for `namespaces`.
pub(crate) fn start_request(s: &MigrationSpec, namespaces: &[String]) -> StartMigrationRequest {
    StartMigrationRequest {
        source: None,
        destination: Some(ClusterRef {
            target: Some(cluster_ref::Target::PairId(s.cluster_pair.clone())),
        }),
        application: Some(ApplicationSelector {
            namespace: String::new(),
            label_selector: s.selector.clone(),
            include_resources: s.include_resources.clone(),
            exclude_resources: s.exclude_resources.clone(),
        }),
        apply: Some(ApplyOptions {
            namespace_mapping: s.namespace_mapping.clone().into_iter().collect(),
            storage_class_mapping: s.storage_class_mapping.clone().into_iter().collect(),
            zone_mapping: s.zone_mapping.clone().into_iter().collect(),
            start_applications: s.start_applications.unwrap_or(true),
            existing_object_policy: match s.existing_objects {
                ExistingObjects::Skip => ExistingObjectPolicy::Skip,
                ExistingObjects::Update => ExistingObjectPolicy::Update,
                ExistingObjects::Fail => ExistingObjectPolicy::Fail,
            } as i32,
            preserve_node_ports: s.preserve_node_ports,
        }),
        dry_run: s.dry_run,
        repository: (!s.profile.is_empty()).then(|| RepositoryRef {
            profile: s.profile.clone(),
            repository_id: String::new(),
        }),
        skip_volume_data: s.skip_volume_data,
        schedule_id: String::new(),
        quiesce_source: s.quiesce_source,
        namespaces: namespaces.to_vec(),
        all_namespaces: false,
    }
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

async fn refuse(
    api: &Api<Migration>,
    m: &Migration,
    ctx: &Ctx,
    mut status: MigrationStatus,
    reason: &str,
    message: &str,
) -> Result<Action> {
    let g = m.metadata.generation;
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

async fn write_status(
    api: &Api<Migration>,
    m: &Migration,
    status: &MigrationStatus,
    ctx: &Ctx,
) -> Result<()> {
    crate::status::write(api, m, m.status.as_ref(), status, &ctx.cluster).await
}
