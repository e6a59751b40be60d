//! `ferry schedules`: recurring migrations, on an interval or a cron expression.

use clap::{Args, Subcommand};
use ferry_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, ListRunsRequest, ListSchedulesRequest,
    ResumeScheduleRequest, Retention, RetryPolicy, RunNowRequest, Schedule, ScheduleRun,
    SuspendScheduleRequest, create_schedule_request, schedule,
};

use crate::connect::ConnectArgs;
use crate::error::{Error, Result};
use crate::format::{enum_name, parse_duration, proto_duration, table, when};
use crate::migrate::MigrationArgs;
use crate::output::{Format, print, print_proto};

/// `ferry schedules` and its subcommands.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  kubectl --context a -n shop create serviceaccount shop-mover   # then RoleBindings on a and b
  ferry --context a schedules create shop-hourly --every 1h -n shop --to b --service-account shop-mover --no-start
  ferry --context a schedules create shop-nightly --cron '0 2 * * *' --time-zone Europe/Paris -n shop --to b \\
      --service-account shop-mover
  ferry --context a schedules create shop-daily --every 1d -n shop --to b --profile main --keep-last 7 \\
      --service-account ops/ferry-runs      # administrators may name one of another namespace
  ferry --context a schedules list
  ferry --context a schedules runs shop-hourly
  ferry --context a schedules suspend shop-hourly

Every run acts as the schedule's ServiceAccount (--service-account, required of everyone,
administrators too): Kubernetes judges each run by the rights RBAC gives it when the run
starts, on both clusters, as it judges a CronJob's pods.")]
pub struct SchedulesArgs {
    #[command(subcommand)]
    pub command: SchedulesCommand,
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Create a recurring migration.
    Create(Box<CreateArgs>),
    /// List schedules.
    List,
    /// Stop starting runs (a run in progress goes on).
    Suspend { schedule: String },
    /// Start runs again, from the next due time.
    Resume { schedule: String },
    /// Start a run now.
    RunNow { schedule: String },
    /// A schedule's runs, newest first.
    Runs {
        schedule: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Delete a schedule and its run history (jobs and restore points stay).
    Delete { schedule: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Unique name.
    pub name: String,
    /// Time between runs (at least 1m), e.g. 30m, 6h.
    #[arg(long, conflicts_with = "cron", required_unless_present = "cron")]
    pub every: Option<String>,
    /// Five-field cron expression, e.g. "0 2 * * *".
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA time zone of the cron expression; default UTC.
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Attempts per run, the first included.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Create it suspended.
    #[arg(long)]
    pub suspended: bool,
    /// Required: every run acts as this ServiceAccount of the application's namespace
    /// (NAMESPACE/NAME: of another namespace, administrators only), judged by the rights
    /// RBAC gives it when the run starts; unless you administer Ferry, you must be
    /// allowed to get its tokens.
    #[arg(long, value_name = "NAME")]
    pub service_account: Option<String>,
    /// Retention: after each successful run, keep at most the newest N restore points of
    /// the application in the run's repository (needs --profile).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_last: Option<u32>,
    /// Retention: after each successful run, remove the application's restore points
    /// older than DURATION (e.g. 7d; at least 1m). With --keep-last both limits apply.
    #[arg(long, value_name = "DURATION", visible_alias = "max-age")]
    pub keep_within: Option<String>,
    #[command(flatten)]
    pub migration: MigrationArgs,
}

impl CreateArgs {
    /// The schedule's retention; `None` keeps every restore point.
    fn retention(&self) -> Result<Option<Retention>> {
        let max_age = self
            .keep_within
            .as_deref()
            .map(parse_duration)
            .transpose()?;
        if self.keep_last.is_none() && max_age.is_none() {
            return Ok(None);
        }
        if self.migration.profile.is_none() {
            return Err(Error::Usage(
                "retention (--keep-last, --keep-within) prunes the repository the runs write \
                 to: name it with --profile"
                    .into(),
            ));
        }
        Ok(Some(Retention {
            keep_last: self.keep_last.unwrap_or(0),
            max_age: max_age.map(proto_duration),
        }))
    }
}

pub async fn run(connect: &ConnectArgs, args: SchedulesArgs, format: Format) -> Result<()> {
    let ferry = connect.ferry().await?;
    let mut scheduler = ferry.scheduler();
    match args.command {
        SchedulesCommand::Create(a) => create(connect, &ferry, *a, format).await,
        SchedulesCommand::List => {
            let resp = scheduler
                .list_schedules(ListSchedulesRequest::default())
                .await
                .map_err(|s| ferry.rpc_error("ListSchedules", s))?
                .into_inner();
            if format.structured() {
                return print_proto(&resp, "ferry.v1.ListSchedulesResponse", format);
            }
            if resp.schedules.is_empty() {
                return print("no schedules\n");
            }
            let rows: Vec<Vec<String>> = resp.schedules.iter().map(schedule_row).collect();
            print(&table(
                &[
                    "NAME", "ID", "TRIGGER", "WHAT", "STATE", "NEXT RUN", "LAST RUN",
                ],
                &rows,
            ))
        }
        SchedulesCommand::Suspend { schedule } => {
            let resp = scheduler
                .suspend_schedule(SuspendScheduleRequest {
                    schedule: schedule.clone(),
                })
                .await
                .map_err(|s| ferry.rpc_error("SuspendSchedule", s))?
                .into_inner();
            if format.structured() {
                return print_proto(&resp, "ferry.v1.SuspendScheduleResponse", format);
            }
            print(&format!("schedule {schedule} suspended\n"))
        }
        SchedulesCommand::Resume { schedule } => {
            let resp = scheduler
                .resume_schedule(ResumeScheduleRequest {
                    schedule: schedule.clone(),
                })
                .await
                .map_err(|s| ferry.rpc_error("ResumeSchedule", s))?
                .into_inner();
            if format.structured() {
                return print_proto(&resp, "ferry.v1.ResumeScheduleResponse", format);
            }
            let s = resp.schedule.unwrap_or_default();
            print(&format!(
                "schedule {schedule} resumed; next run {}\n",
                when(s.next_run_at.as_ref())
            ))
        }
        SchedulesCommand::RunNow { schedule } => {
            let resp = scheduler
                .run_now(RunNowRequest {
                    schedule: schedule.clone(),
                })
                .await
                .map_err(|s| ferry.rpc_error("RunNow", s))?
                .into_inner();
            if format.structured() {
                return print_proto(&resp, "ferry.v1.RunNowResponse", format);
            }
            let run = resp.run.unwrap_or_default();
            print(&format!(
                "run {} of {schedule} started (jobs: {}); follow it with: ferry jobs watch JOB\n",
                run.id,
                run.job_ids.join(", ")
            ))
        }
        SchedulesCommand::Runs { schedule, limit } => {
            let headers = [
                "RUN", "STATE", "DUE", "FINISHED", "ATTEMPTS", "JOBS", "PRUNED", "ERROR",
            ];
            print_runs(&ferry, schedule, limit, format, &headers, run_row).await
        }
        SchedulesCommand::Delete { schedule } => {
            scheduler
                .delete_schedule(DeleteScheduleRequest {
                    schedule: schedule.clone(),
                })
                .await
                .map_err(|s| ferry.rpc_error("DeleteSchedule", s))?;
            if format.structured() {
                return print("{}\n");
            }
            print(&format!(
                "schedule {schedule} deleted; its jobs and restore points are kept\n"
            ))
        }
    }
}

/// When a schedule's runs start, from `--every` or `--cron` (exactly one).
pub(crate) fn trigger(
    every: Option<&str>,
    cron: Option<&str>,
) -> Result<create_schedule_request::Trigger> {
    match (every, cron) {
        (Some(every), None) => Ok(create_schedule_request::Trigger::Interval(proto_duration(
            parse_duration(every)?,
        ))),
        (None, Some(cron)) => Ok(create_schedule_request::Trigger::Cron(cron.to_owned())),
        _ => Err(Error::Usage(
            "give exactly one of --every DURATION or --cron EXPRESSION".into(),
        )),
    }
}

/// Creates a schedule. Structured output prints the response and answers None; text
/// output is left to the caller, with the schedule made.
pub(crate) async fn create_schedule(
    ferry: &ferry_client::Ferry,
    request: CreateScheduleRequest,
    format: Format,
) -> Result<Option<Schedule>> {
    let resp = ferry
        .scheduler()
        .create_schedule(request)
        .await
        .map_err(|s| ferry.rpc_error("CreateSchedule", s))?
        .into_inner();
    if format.structured() {
        print_proto(&resp, "ferry.v1.CreateScheduleResponse", format)?;
        return Ok(None);
    }
    Ok(Some(resp.schedule.unwrap_or_default()))
}

/// `ferry schedules create`.
async fn create(
    connect: &ConnectArgs,
    ferry: &ferry_client::Ferry,
    a: CreateArgs,
    format: Format,
) -> Result<()> {
    let trigger = trigger(a.every.as_deref(), a.cron.as_deref())?;
    if a.migration.all_namespaces || a.migration.app.namespace.len() != 1 {
        return Err(Error::Usage(
            "a schedule migrates one namespace: give -n once (make one schedule per \
             namespace)"
                .into(),
        ));
    }
    let retention = a.retention()?;
    let migration = a.migration.request(connect, ferry).await?;
    let request = CreateScheduleRequest {
        name: a.name,
        trigger: Some(trigger),
        time_zone: a.time_zone.unwrap_or_default(),
        spec: Some(create_schedule_request::Spec::Migration(migration)),
        retention,
        retry: a.max_attempts.map(|max_attempts| RetryPolicy {
            max_attempts,
            ..Default::default()
        }),
        suspended: a.suspended,
        service_account: a.service_account.unwrap_or_default(),
    };
    let Some(s) = create_schedule(ferry, request, format).await? else {
        return Ok(());
    };
    print(&format!(
        "schedule {} ({}) created; next run {}\n",
        s.name,
        s.id,
        when(s.next_run_at.as_ref())
    ))
}

fn schedule_row(s: &Schedule) -> Vec<String> {
    let trigger = match &s.trigger {
        Some(schedule::Trigger::Interval(d)) => format!("every {}s", d.seconds),
        Some(schedule::Trigger::Cron(c)) if s.time_zone.is_empty() => format!("cron {c}"),
        Some(schedule::Trigger::Cron(c)) => format!("cron {c} ({})", s.time_zone),
        None => "-".into(),
    };
    let what = match &s.spec {
        Some(schedule::Spec::Migration(m)) => format!(
            "migrate {}",
            m.application.clone().unwrap_or_default().namespace
        ),
        Some(schedule::Spec::Export(e)) => format!(
            "export {}",
            e.application.clone().unwrap_or_default().namespace
        ),
        Some(schedule::Spec::ImportPolicy(_)) => "import".into(),
        None => "-".into(),
    };
    let last = s
        .last_run
        .as_ref()
        .map(|r| enum_name(r.state().as_str_name(), "RUN_STATE_"))
        .unwrap_or_else(|| "-".into());
    vec![
        s.name.clone(),
        s.id.clone(),
        trigger,
        what,
        if s.suspended { "suspended" } else { "active" }.into(),
        when(s.next_run_at.as_ref()),
        last,
    ]
}

fn run_row(r: &ScheduleRun) -> Vec<String> {
    vec![
        r.id.clone(),
        enum_name(r.state().as_str_name(), "RUN_STATE_"),
        when(r.scheduled_at.as_ref()),
        when(r.finished_at.as_ref()),
        r.attempts.to_string(),
        r.job_ids.join(","),
        r.restore_points_pruned.to_string(),
        r.error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
    ]
}

/// A schedule's newest runs (`ferry schedules runs`, `ferry import-policy runs`): the
/// response as JSON, or a table of `headers` with a `row` per run.
pub(crate) async fn print_runs(
    ferry: &ferry_client::Ferry,
    schedule: String,
    limit: u32,
    format: Format,
    headers: &[&str],
    row: fn(&ScheduleRun) -> Vec<String>,
) -> Result<()> {
    let resp = ferry
        .scheduler()
        .list_runs(ListRunsRequest {
            schedule,
            page_size: limit,
            page_token: String::new(),
        })
        .await
        .map_err(|s| ferry.rpc_error("ListRuns", s))?
        .into_inner();
    if format.structured() {
        return print_proto(&resp, "ferry.v1.ListRunsResponse", format);
    }
    if resp.runs.is_empty() {
        return print("no runs yet\n");
    }
    let rows: Vec<Vec<String>> = resp.runs.iter().map(row).collect();
    print(&table(headers, &rows))
}
