//! MigrationSchedule and ImportPolicy objects onto the scheduler service.
//!
//! A new MigrationSchedule (or ImportPolicy) becomes a schedule in Ferry's scheduler,
//! created as the user who created the object (the webhook's signed requester), who
//! owns it; every run acts as `spec.serviceAccountName`, passed through, which the
//! scheduler requires and refuses when that user may not act as it. The
//! controller then keeps `spec.suspend` and the scheduler's state in step and copies
//! the latest runs into the status every few seconds. Deleting the object deletes the
//! schedule. The two kinds differ only in what each run does ([`Scheduled`]).
//!
//! The schedule's name in the scheduler is derived from the object's namespace and
//! name, so a controller that died between creating it and writing the status finds
//! it again instead of creating a second one.

use std::sync::Arc;
use std::time::Duration;

use ferry_crd::requester::Requester;
use ferry_crd::{
    ImportPolicy, MigrationSchedule, MigrationScheduleStatus, ScheduleRunStatus, Timing,
    parse_duration, set_condition,
};
use ferry_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, GetScheduleRequest, ListRunsRequest,
    ResumeScheduleRequest, Retention, RunState, Schedule, ScheduleRun, SuspendScheduleRequest,
    create_schedule_request,
};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use tonic::Code;

use crate::Ctx;
use crate::error::{Error, Result};
use crate::jobs::acting;
use crate::migration::start_request;
use crate::status::{condition, reason_of, refused};
use ferry_rpc::proto_duration;

/// How often the status follows the scheduler.
const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// A kind of object that becomes a schedule of the scheduler service.
pub trait Scheduled:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind, as the requester annotation is signed for it.
    const KIND: &'static str;
    /// The schedule's name in the scheduler starts with it.
    const PREFIX: &'static str;
    /// `spec`'s schedule, interval, time zone and suspension.
    fn timing(&self) -> &Timing;
    fn schedule_status(&self) -> Option<&MigrationScheduleStatus>;
    /// What each run does and how many restore points it keeps, or what is wrong
    /// with the spec.
    fn run(&self) -> Result<(create_schedule_request::Spec, Option<Retention>), String>;
}

impl Scheduled for MigrationSchedule {
    const KIND: &'static str = "MigrationSchedule";
    const PREFIX: &'static str = "migrationschedule";
    fn timing(&self) -> &Timing {
        &self.spec.timing
    }
    fn schedule_status(&self) -> Option<&MigrationScheduleStatus> {
        self.status.as_ref()
    }
    fn run(&self) -> Result<(create_schedule_request::Spec, Option<Retention>), String> {
        migration_run(self)
    }
}

impl Scheduled for ImportPolicy {
    const KIND: &'static str = "ImportPolicy";
    const PREFIX: &'static str = "importpolicy";
    fn timing(&self) -> &Timing {
        &self.spec.timing
    }
    fn schedule_status(&self) -> Option<&MigrationScheduleStatus> {
        self.status.as_ref()
    }
    fn run(&self) -> Result<(create_schedule_request::Spec, Option<Retention>), String> {
        let spec = &self.spec;
        if spec.profile.is_empty() {
            return Err("spec.profile is empty; name the import profile to poll".into());
        }
        let policy = ferry_proto::v1::ImportPolicySpec {
            repository: crate::migration::repository(&spec.profile),
            application: Some(crate::migration::selector(
                &spec.objects,
                spec.source_namespace.clone(),
            )),
            destination: None,
            apply: Some(crate::migration::apply_options(&spec.apply)),
            restore: spec.restore,
        };
        Ok((create_schedule_request::Spec::ImportPolicy(policy), None))
    }
}

/// The controller's entry for one MigrationSchedule or ImportPolicy.
pub async fn reconcile<K: Scheduled>(s: Arc<K>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = s.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, ferry_crd::FINALIZER, s, |event| async {
        match event {
            Event::Apply(s) => apply(&api, &*s, &ctx).await,
            Event::Cleanup(s) => cleanup(&*s, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The name of the scheduler's schedule for `s`: readable in `ferry schedules list`,
/// the same on every reconcile.
pub fn scheduler_name<K: Scheduled>(s: &K) -> String {
    let ns = s.namespace().unwrap_or_default();
    let name = format!("{}.{ns}.{}", K::PREFIX, s.name_any());
    // The scheduler takes names of at most 253 bytes; the uid is shorter and unique.
    if name.len() <= 253 {
        name
    } else {
        format!("{}.{ns}.{}", K::PREFIX, s.uid().unwrap_or_default())
    }
}

/// `Kind namespace/name`, for messages.
fn label<K: Scheduled>(s: &K) -> String {
    format!(
        "{} {}/{}",
        K::KIND,
        s.namespace().unwrap_or_default(),
        s.name_any()
    )
}

async fn apply<K: Scheduled>(api: &Api<K>, s: &K, ctx: &Ctx) -> Result<Action> {
    let mut status = s.schedule_status().cloned().unwrap_or_default();
    let g = s.meta().generation;
    let ns = s.namespace().unwrap_or_default();
    let who = match Requester::of(
        s.meta().annotations.as_ref(),
        &ctx.secret,
        K::KIND,
        &ns,
        &s.name_any(),
    ) {
        Ok(who) => who,
        Err(e) => return refuse(api, s, ctx, status, "RequesterUnknown", &e.to_string()).await,
    };
    if status.schedule_id.is_empty() {
        // A refusal stands until the object changes (only `suspend` can).
        let refused_now = status.observed_generation == g
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False");
        if refused_now {
            return Ok(Action::await_change());
        }
        let request = match create_request(s) {
            Ok(r) => r,
            Err(message) => return refuse(api, s, ctx, status, "Invalid", &message).await,
        };
        match create(ctx, s, request, &who).await? {
            Ok(schedule) => status.schedule_id = schedule.id,
            Err((reason, message)) => return refuse(api, s, ctx, status, reason, &message).await,
        }
    }
    let mut schedule = match get(ctx, &status.schedule_id, &who).await {
        Ok(found) => found,
        Err(Error::Service { status: st, .. }) if st.code() == Code::NotFound => {
            let message = format!(
                "the scheduler no longer has schedule {} (deleted with `ferry schedules \
                 delete`?); delete this {} and create it again",
                status.schedule_id,
                K::KIND
            );
            return refuse(api, s, ctx, status, "ScheduleDeleted", &message).await;
        }
        Err(e) => return Err(e),
    };
    let suspend = s.timing().suspend;
    if schedule.suspended != suspend {
        schedule = set_suspended(ctx, s, &schedule.id, suspend, &who).await?;
    }
    let runs = ctx
        .scheduler
        .clone()
        .list_runs(acting(
            ListRunsRequest {
                schedule: schedule.id.clone(),
                page_size: MigrationScheduleStatus::KEPT_RUNS as u32,
                page_token: String::new(),
            },
            &who,
        ))
        .await
        .map_err(|status| Error::Service {
            what: format!("listing the runs of {}", label(s)),
            status,
        })?
        .into_inner()
        .runs;
    follow(&mut status, &schedule, &runs);
    status.observed_generation = g;
    let (reason, message) = if schedule.suspended {
        (
            "Suspended",
            "suspended: no runs until spec.suspend is false".to_owned(),
        )
    } else {
        (
            "Scheduled",
            runs_as(&status.trigger, &schedule.service_account, &who.username),
        )
    };
    set_condition(
        &mut status.conditions,
        condition("Ready", "True", reason, &message, g),
    );
    crate::status::write(api, s, s.schedule_status(), &status, &ctx.cluster).await?;
    Ok(Action::requeue(FOLLOW_EVERY))
}

/// The Ready condition's message of a schedule running `trigger` as `service_account`,
/// created for `creator`.
fn runs_as(trigger: &str, service_account: &str, creator: &str) -> String {
    if service_account.is_empty() {
        format!("runs {trigger}, created by {creator}")
    } else {
        format!("runs {trigger} as ServiceAccount {service_account}, created by {creator}")
    }
}

/// A refusal's message followed by its next step, when the service gave one: the
/// condition is all the object's creator sees of it.
fn with_next_step(status: &tonic::Status) -> String {
    match ferry_rpc::detail(status).filter(|d| !d.hint.is_empty()) {
        Some(d) => format!("{}; {}", status.message(), d.hint),
        None => status.message().to_owned(),
    }
}

/// The scheduler's request for `s`, or what is wrong with its spec.
fn create_request<K: Scheduled>(s: &K) -> Result<CreateScheduleRequest, String> {
    let timing = s.timing();
    let interval = &timing.interval;
    let trigger = match (timing.schedule.is_empty(), interval.is_empty()) {
        (false, true) => create_schedule_request::Trigger::Cron(timing.schedule.clone()),
        (true, false) => {
            let every = parse_duration(interval).ok_or_else(|| {
                format!(
                    "spec.interval {interval:?} is not a duration; write it like 15m, 1h30m or 1d"
                )
            })?;
            create_schedule_request::Trigger::Interval(proto_duration(every))
        }
        _ => {
            return Err(
                "set exactly one of spec.schedule (a cron expression) and spec.interval".into(),
            );
        }
    };
    let (spec, retention) = s.run()?;
    Ok(CreateScheduleRequest {
        name: scheduler_name(s),
        trigger: Some(trigger),
        time_zone: timing.time_zone.clone(),
        spec: Some(spec),
        retention,
        retry: None,
        suspended: timing.suspend,
        service_account: timing.service_account_name.clone(),
    })
}

/// What each run of a MigrationSchedule does: its template's migration of one
/// namespace, with its retention.
fn migration_run(
    s: &MigrationSchedule,
) -> Result<(create_schedule_request::Spec, Option<Retention>), String> {
    let spec = &s.spec;
    let retention = match &spec.retention {
        None => None,
        Some(r) => Some(Retention {
            keep_last: r.keep_last.unwrap_or(0),
            max_age: if r.max_age.is_empty() {
                None
            } else {
                let age = parse_duration(&r.max_age).ok_or_else(|| {
                    format!(
                        "spec.retention.maxAge {:?} is not a duration; write it like 30d or 12h",
                        r.max_age
                    )
                })?;
                Some(proto_duration(age))
            },
        }),
    };
    // A schedule repeats the migration of one namespace (its restore points and
    // retention are per namespace).
    let namespace = match spec.template.namespaces.as_slice() {
        [] => s.namespace().unwrap_or_default(),
        [one] => one.clone(),
        more => {
            return Err(format!(
                "spec.template.namespaces names {} namespaces; a MigrationSchedule moves one: \
                 create one MigrationSchedule per namespace",
                more.len()
            ));
        }
    };
    if spec.template.warm.is_some() {
        return Err(
            "spec.template.warm is set; a schedule's runs each copy and apply once: leave \
             warm out, or create a warm Migration"
                .into(),
        );
    }
    let mut migration = start_request(&spec.template, &[]);
    if let Some(application) = migration.application.as_mut() {
        application.namespace = namespace;
    }
    Ok((
        create_schedule_request::Spec::Migration(migration),
        retention,
    ))
}

/// Creates the schedule, or finds the one a previous reconcile created; a refusal the
/// user must act on comes back as (reason, message).
async fn create<K: Scheduled>(
    ctx: &Ctx,
    s: &K,
    request: CreateScheduleRequest,
    who: &Requester,
) -> Result<Result<Schedule, (&'static str, String)>> {
    let name = request.name.clone();
    match ctx
        .scheduler
        .clone()
        .create_schedule(acting(request, who))
        .await
    {
        Ok(r) => {
            let schedule = r.into_inner().schedule.unwrap_or_default();
            tracing::info!(schedule = %label(s), id = %schedule.id, user = %who.username,
                "schedule created");
            Ok(Ok(schedule))
        }
        // Made by a reconcile that died before writing the status: take it over. The
        // scheduler shows it only to its creator, so it cannot be someone else's.
        Err(st) if st.code() == Code::AlreadyExists => match get(ctx, &name, who).await {
            Ok(schedule) => Ok(Ok(schedule)),
            Err(Error::Service { status: st, .. }) if refused(st.code()) => Ok(Err((
                "AlreadyExists",
                format!(
                    "the scheduler already has a schedule named {name} that {} cannot see: {}",
                    who.username,
                    st.message()
                ),
            ))),
            Err(e) => Err(e),
        },
        Err(st) if refused(st.code()) => {
            tracing::info!(schedule = %label(s), user = %who.username, reason = %st.message(),
                "schedule refused");
            Ok(Err((reason_of(st.code()), with_next_step(&st))))
        }
        Err(status) => Err(Error::Service {
            what: format!("creating the schedule of {}", label(s)),
            status,
        }),
    }
}

async fn get(ctx: &Ctx, schedule: &str, who: &Requester) -> Result<Schedule> {
    let answer = ctx
        .scheduler
        .clone()
        .get_schedule(acting(
            GetScheduleRequest {
                schedule: schedule.to_owned(),
            },
            who,
        ))
        .await
        .map_err(|status| Error::Service {
            what: format!("reading schedule {schedule}"),
            status,
        })?;
    Ok(answer.into_inner().schedule.unwrap_or_default())
}

async fn set_suspended<K: Scheduled>(
    ctx: &Ctx,
    s: &K,
    id: &str,
    suspend: bool,
    who: &Requester,
) -> Result<Schedule> {
    let mut scheduler = ctx.scheduler.clone();
    let schedule = id.to_owned();
    let answer = if suspend {
        scheduler
            .suspend_schedule(acting(SuspendScheduleRequest { schedule }, who))
            .await
            .map(|r| r.into_inner().schedule)
    } else {
        scheduler
            .resume_schedule(acting(ResumeScheduleRequest { schedule }, who))
            .await
            .map(|r| r.into_inner().schedule)
    };
    let verb = if suspend { "suspending" } else { "resuming" };
    let schedule = answer.map_err(|status| Error::Service {
        what: format!("{verb} the schedule of {}", label(s)),
        status,
    })?;
    tracing::info!(schedule = %label(s), suspend, "schedule suspension changed");
    Ok(schedule.unwrap_or_default())
}

/// Copies the scheduler's view into the status.
fn follow(status: &mut MigrationScheduleStatus, schedule: &Schedule, runs: &[ScheduleRun]) {
    use ferry_proto::v1::schedule::Trigger;
    status.trigger = match &schedule.trigger {
        Some(Trigger::Cron(cron)) if schedule.time_zone.is_empty() => cron.clone(),
        Some(Trigger::Cron(cron)) => format!("{cron} ({})", schedule.time_zone),
        Some(Trigger::Interval(d)) => format!("every {}s", d.seconds),
        None => String::new(),
    };
    status.next_run_at = timestamp(schedule.next_run_at.as_ref());
    status.runs = runs.iter().map(run_status).collect();
    let newest_success = runs
        .iter()
        .find(|r| r.state() == RunState::Succeeded)
        .and_then(|r| timestamp(r.finished_at.as_ref()));
    if newest_success.is_some() {
        status.last_success_time = newest_success;
    }
}

fn run_status(run: &ScheduleRun) -> ScheduleRunStatus {
    ScheduleRunStatus {
        id: run.id.clone(),
        state: run
            .state()
            .as_str_name()
            .trim_start_matches("RUN_STATE_")
            .to_ascii_lowercase(),
        scheduled_at: timestamp(run.scheduled_at.as_ref()),
        started_at: timestamp(run.started_at.as_ref()),
        finished_at: timestamp(run.finished_at.as_ref()),
        attempts: run.attempts,
        jobs: run.job_ids.clone(),
        restore_point: run.restore_point_id.clone(),
        restore_points_pruned: run.restore_points_pruned,
        message: run
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
    }
}

/// A protobuf time as RFC 3339.
fn timestamp(t: Option<&prost_types::Timestamp>) -> Option<String> {
    let t = t?;
    k8s_openapi::jiff::Timestamp::new(t.seconds, t.nanos)
        .ok()
        .map(|t| t.to_string())
}

/// Before the object goes: the schedule goes from the scheduler (a run in progress
/// finishes; no new one starts).
async fn cleanup<K: Scheduled>(s: &K, ctx: &Ctx) -> Result<Action> {
    let status = s.schedule_status().cloned().unwrap_or_default();
    if status.schedule_id.is_empty() {
        return Ok(Action::await_change());
    }
    let ns = s.namespace().unwrap_or_default();
    // An object whose requester cannot be trusted never got a schedule.
    let Ok(who) = Requester::of(
        s.meta().annotations.as_ref(),
        &ctx.secret,
        K::KIND,
        &ns,
        &s.name_any(),
    ) else {
        return Ok(Action::await_change());
    };
    let deleted = ctx
        .scheduler
        .clone()
        .delete_schedule(acting(
            DeleteScheduleRequest {
                schedule: status.schedule_id.clone(),
            },
            &who,
        ))
        .await;
    match deleted {
        Ok(_) => {
            tracing::info!(schedule = %label(s), id = %status.schedule_id,
                "object deleted: schedule deleted");
            Ok(Action::await_change())
        }
        Err(st) if st.code() == Code::NotFound => Ok(Action::await_change()),
        Err(status) => Err(Error::Service {
            what: format!("deleting the schedule of {}", label(s)),
            status,
        }),
    }
}

async fn refuse<K: Scheduled>(
    api: &Api<K>,
    s: &K,
    ctx: &Ctx,
    mut status: MigrationScheduleStatus,
    reason: &str,
    message: &str,
) -> Result<Action> {
    let g = s.meta().generation;
    status.observed_generation = g;
    set_condition(
        &mut status.conditions,
        condition("Ready", "False", reason, message, g),
    );
    crate::status::write(api, s, s.schedule_status(), &status, &ctx.cluster).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_tells_the_creator_its_next_step() {
        let detail = ferry_rpc::error_detail(
            ferry_proto::v1::ErrorCode::InvalidArgument,
            "invalid service_account: empty",
            "name a ServiceAccount (`serviceAccountName`)",
        );
        let status = ferry_rpc::status(Code::InvalidArgument, detail);
        assert_eq!(
            with_next_step(&status),
            "invalid service_account: empty; name a ServiceAccount (`serviceAccountName`)"
        );
        let bare = tonic::Status::invalid_argument("no detail");
        assert_eq!(with_next_step(&bare), "no detail");
        assert_eq!(
            runs_as("every 6s", "shop/mover", "admin"),
            "runs every 6s as ServiceAccount shop/mover, created by admin"
        );
    }
}
