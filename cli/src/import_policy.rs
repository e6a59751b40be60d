//! `ferry import-policy`: on a destination cluster, import what a source exports to a
//! shared bucket, on an interval or a cron expression, and optionally restore it at once
//! (K10's import policies). A policy is a schedule of the scheduler service whose spec is
//! an `ImportPolicySpec`; its runs list the bucket, import the restore points the policy
//! has not imported before and record what they did.

use std::time::Duration;

use clap::{Args, Subcommand};
use ferry_client::{Ferry, local_ref};
use ferry_proto::v1::{
    ApplicationSelector, CreateScheduleRequest, DeleteScheduleRequest, GetScheduleRequest,
    ImportPolicySpec, ListRunsRequest, ListSchedulesRequest, ListSchedulesResponse, RepositoryRef,
    RetryPolicy, RunNowRequest, RunState, Schedule, ScheduleRun, create_schedule_request, schedule,
};
use tokio_util::sync::CancellationToken;

use crate::connect::ConnectArgs;
use crate::error::{Error, Result};
use crate::format::{enum_name, table, when};
use crate::migrate::ApplyArgs;
use crate::output::{Format, print, print_proto};

/// How often `run-now --wait` looks at the run.
const POLL: Duration = Duration::from_millis(500);

/// `ferry import-policy` and its subcommands.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  ferry --context a migration-token -n shop --profile exports --recipient-key-file b.pub > token.txt
  ferry --context b profile create shop-in --kind import --migration-token-file token.txt \\
      --expect-signer SHA256:... --credentials-secret s3-read
  kubectl --context b -n shop create serviceaccount importer      # then a RoleBinding
  ferry --context b import-policy create shop --profile shop-in -n shop --every 15m --restore \\
      --service-account importer
  ferry --context b import-policy create shop --profile shop-in -n shop --cron '0 * * * *' \\
      --restore --namespace-map shop=shop-dr --storage-class-map fast=standard --no-start \\
      --service-account importer                                  # shop-dr/importer
  ferry --context b import-policy create all --profile every-in --every 1h \\
      --service-account ops/importer        # every namespace: administrators, NAMESPACE/NAME
  ferry --context b import-policy run-now shop --wait
  ferry --context b import-policy runs shop
  ferry --context b restore-points --profile shop-in

Each run lists the bucket: a listing that fails fails the run (it never means \"nothing
new\"). Restore points the policy imported before are not imported again, also after a
restart; a run that found nothing new ends NOTHING-TO-DO and starts no job. With
--restore, each run restores the newest new restore point of each application (older
new ones are superseded by it); a restore point whose restore failed is tried again by
the next run. Every run acts as the policy's ServiceAccount (--service-account, required
of everyone, administrators too), judged by the rights RBAC gives it when the run starts.
Suspend and resume a policy with `ferry schedules suspend|resume NAME`.")]
pub struct ImportPolicyArgs {
    #[command(subcommand)]
    pub command: ImportPolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImportPolicyCommand {
    /// Create an import policy reading an import profile's repository.
    Create(Box<CreateArgs>),
    /// List import policies.
    List,
    /// Start a run now (also while suspended).
    RunNow {
        policy: String,
        /// Wait until the run ends and print what it did; exit status 13 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// A policy's runs, newest first, with what each found and imported.
    Runs {
        policy: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Delete a policy and its run history (restored applications, jobs and restore
    /// points stay).
    Delete { policy: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Unique name (shared with schedules); labels the restore points it imports.
    pub name: String,
    /// Import profile of the repository to poll (made from the source's migration token).
    #[arg(long)]
    pub profile: String,
    /// Only restore points of this application namespace (as on the source); default all
    /// namespaces, which only administrators may ask for.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Restore only objects with these labels, e.g. "app=shop,tier!=cache".
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Time between runs (at least the scheduler's minimum, 1m by default), e.g. 15m, 1h.
    #[arg(long, conflicts_with = "cron", required_unless_present = "cron")]
    pub every: Option<String>,
    /// Five-field cron expression, e.g. "0 * * * *".
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA time zone of the cron expression; default UTC.
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Restore what is imported right away, into the (mapped) namespace on this cluster.
    #[arg(long)]
    pub restore: bool,
    #[command(flatten)]
    pub apply: ApplyArgs,
    /// Attempts per run, the first included.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Create it suspended.
    #[arg(long)]
    pub suspended: bool,
    /// Required: every run acts as this ServiceAccount of the namespace it restores into
    /// (NAMESPACE/NAME: of another namespace, administrators only, and what a policy of
    /// every namespace needs), judged by the rights RBAC gives it when the run starts.
    #[arg(long, value_name = "NAME")]
    pub service_account: Option<String>,
}

impl CreateArgs {
    fn request(&self) -> Result<CreateScheduleRequest> {
        let trigger = crate::schedules::trigger(self.every.as_deref(), self.cron.as_deref())?;
        let a = &self.apply;
        let restore_only = !a.namespace_map.is_empty()
            || !a.storage_class_map.is_empty()
            || !a.zone_map.is_empty()
            || a.no_start
            || a.preserve_node_ports;
        if restore_only && !self.restore {
            return Err(Error::Usage(
                "--namespace-map, --storage-class-map, --zone-map, --no-start and \
                 --preserve-node-ports say how restores are applied: add --restore"
                    .into(),
            ));
        }
        let policy = ImportPolicySpec {
            repository: Some(RepositoryRef {
                profile: self.profile.clone(),
                repository_id: String::new(),
            }),
            application: Some(ApplicationSelector {
                namespace: self.namespace.clone().unwrap_or_default(),
                label_selector: self.selector.clone().unwrap_or_default(),
                ..Default::default()
            }),
            destination: Some(local_ref()),
            apply: Some(self.apply.options()?),
            restore: self.restore,
        };
        Ok(CreateScheduleRequest {
            name: self.name.clone(),
            trigger: Some(trigger),
            time_zone: self.time_zone.clone().unwrap_or_default(),
            spec: Some(create_schedule_request::Spec::ImportPolicy(policy)),
            retention: None,
            retry: self.max_attempts.map(|max_attempts| RetryPolicy {
                max_attempts,
                ..Default::default()
            }),
            suspended: self.suspended,
            service_account: self.service_account.clone().unwrap_or_default(),
        })
    }
}

pub async fn run(
    connect: &ConnectArgs,
    args: ImportPolicyArgs,
    cancel: CancellationToken,
    format: Format,
) -> Result<()> {
    let ferry = connect.ferry().await?;
    match args.command {
        ImportPolicyCommand::Create(a) => create(&ferry, &a, format).await,
        ImportPolicyCommand::List => list(&ferry, format).await,
        ImportPolicyCommand::RunNow { policy, wait } => {
            run_now(&ferry, &policy, wait, &cancel, format).await
        }
        ImportPolicyCommand::Runs { policy, limit } => runs(&ferry, &policy, limit, format).await,
        ImportPolicyCommand::Delete { policy } => delete(&ferry, &policy, format).await,
    }
}

async fn create(ferry: &Ferry, a: &CreateArgs, format: Format) -> Result<()> {
    let Some(s) = crate::schedules::create_schedule(ferry, a.request()?, format).await? else {
        return Ok(());
    };
    let what = match &a.namespace {
        Some(ns) => format!("restore points of {ns}"),
        None => "every restore point".to_owned(),
    };
    let restore = if a.restore {
        ", restoring them here"
    } else {
        " (import only)"
    };
    print(&format!(
        "import policy {} ({}) created: imports {what} from profile {}{restore}, {}; next run {}\n",
        s.name,
        s.id,
        a.profile,
        trigger(&s),
        when(s.next_run_at.as_ref())
    ))
}

/// The schedule `name`, refused unless it is an import policy.
async fn policy(ferry: &Ferry, name: &str) -> Result<(Schedule, ImportPolicySpec)> {
    let s = ferry
        .scheduler()
        .get_schedule(GetScheduleRequest {
            schedule: name.to_owned(),
        })
        .await
        .map_err(|s| ferry.rpc_error("GetSchedule", s))?
        .into_inner()
        .schedule
        .unwrap_or_default();
    match &s.spec {
        Some(schedule::Spec::ImportPolicy(p)) => {
            let p = p.clone();
            Ok((s, p))
        }
        _ => Err(Error::Usage(format!(
            "{name} is a schedule but not an import policy; manage it with `ferry schedules`"
        ))),
    }
}

async fn list(ferry: &Ferry, format: Format) -> Result<()> {
    let mut scheduler = ferry.scheduler();
    let mut policies = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = scheduler
            .list_schedules(ListSchedulesRequest {
                page_size: 0,
                page_token,
            })
            .await
            .map_err(|s| ferry.rpc_error("ListSchedules", s))?
            .into_inner();
        policies.extend(
            page.schedules
                .into_iter()
                .filter(|s| matches!(s.spec, Some(schedule::Spec::ImportPolicy(_)))),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if format.structured() {
        let resp = ListSchedulesResponse {
            schedules: policies,
            next_page_token: String::new(),
        };
        return print_proto(&resp, "ferry.v1.ListSchedulesResponse", format);
    }
    if policies.is_empty() {
        return print("no import policies\n");
    }
    let rows: Vec<Vec<String>> = policies.iter().map(policy_row).collect();
    print(&table(
        &[
            "NAME",
            "PROFILE",
            "NAMESPACE",
            "DOES",
            "TRIGGER",
            "STATE",
            "NEXT RUN",
            "LAST RUN",
        ],
        &rows,
    ))
}

async fn run_now(
    ferry: &Ferry,
    name: &str,
    wait: bool,
    cancel: &CancellationToken,
    format: Format,
) -> Result<()> {
    let (s, _) = policy(ferry, name).await?;
    let started = ferry
        .scheduler()
        .run_now(RunNowRequest {
            schedule: s.id.clone(),
        })
        .await
        .map_err(|st| ferry.rpc_error("RunNow", st))?
        .into_inner();
    let run = started.run.clone().unwrap_or_default();
    if !wait {
        if format.structured() {
            return print_proto(&started, "ferry.v1.RunNowResponse", format);
        }
        return print(&format!(
            "run {} of import policy {} started; see it with: ferry import-policy runs {}\n",
            run.id, s.name, s.name
        ));
    }
    let run = loop {
        if let Some(done) = find_run(ferry, &s.id, &run.id)
            .await?
            .filter(|r| r.state() != RunState::Running)
        {
            break done;
        }
        tokio::select! {
            () = cancel.cancelled() => {
                eprintln!(
                    "ferry: stopped waiting; run {} goes on (ferry import-policy runs {})",
                    run.id, s.name
                );
                return Err(Error::Interrupted);
            }
            () = tokio::time::sleep(POLL) => {}
        }
    };
    match format {
        Format::Json | Format::Yaml => print_proto(&run, "ferry.v1.ScheduleRun", format)?,
        Format::Text => print(&run_text(&s.name, &run))?,
    }
    if run.state() == RunState::Failed {
        let error = run.error.clone().unwrap_or_default();
        return Err(Error::RunEnded {
            run: run.id,
            schedule: s.name.clone(),
            state: "failed".into(),
            reason: if error.hint.is_empty() {
                error.message
            } else {
                format!("{}; {}", error.message, error.hint)
            },
        });
    }
    Ok(())
}

/// The run `run_id` of schedule `schedule_id`, among its newest runs.
async fn find_run(ferry: &Ferry, schedule_id: &str, run_id: &str) -> Result<Option<ScheduleRun>> {
    let runs = ferry
        .scheduler()
        .list_runs(ListRunsRequest {
            schedule: schedule_id.to_owned(),
            page_size: 50,
            page_token: String::new(),
        })
        .await
        .map_err(|s| ferry.rpc_error("ListRuns", s))?
        .into_inner()
        .runs;
    Ok(runs.into_iter().find(|r| r.id == run_id))
}

async fn runs(ferry: &Ferry, name: &str, limit: u32, format: Format) -> Result<()> {
    let (s, _) = policy(ferry, name).await?;
    let headers = [
        "RUN", "STATE", "DUE", "FINISHED", "FOUND", "IMPORTED", "JOBS", "ERROR",
    ];
    crate::schedules::print_runs(ferry, s.id, limit, format, &headers, run_row).await
}

async fn delete(ferry: &Ferry, name: &str, format: Format) -> Result<()> {
    let (s, _) = policy(ferry, name).await?;
    ferry
        .scheduler()
        .delete_schedule(DeleteScheduleRequest {
            schedule: s.id.clone(),
        })
        .await
        .map_err(|st| ferry.rpc_error("DeleteSchedule", st))?;
    if format.structured() {
        return print("{}\n");
    }
    print(&format!(
        "import policy {} deleted; what it restored, its jobs and the restore points are kept\n",
        s.name
    ))
}

fn trigger(s: &Schedule) -> String {
    match &s.trigger {
        Some(schedule::Trigger::Interval(d)) => format!("every {}s", d.seconds),
        Some(schedule::Trigger::Cron(c)) if s.time_zone.is_empty() => format!("cron {c}"),
        Some(schedule::Trigger::Cron(c)) => format!("cron {c} ({})", s.time_zone),
        None => "-".into(),
    }
}

fn policy_row(s: &Schedule) -> Vec<String> {
    let p = match &s.spec {
        Some(schedule::Spec::ImportPolicy(p)) => p.clone(),
        _ => ImportPolicySpec::default(),
    };
    let namespace = p
        .application
        .as_ref()
        .map(|a| a.namespace.clone())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "(all)".into());
    let last = s
        .last_run
        .as_ref()
        .map(|r| {
            let state = enum_name(r.state().as_str_name(), "RUN_STATE_");
            match r.state() {
                RunState::Succeeded => format!("{state} ({} imported)", r.restore_points_imported),
                _ => state,
            }
        })
        .unwrap_or_else(|| "-".into());
    vec![
        s.name.clone(),
        p.repository.map(|r| r.profile).unwrap_or_default(),
        namespace,
        if p.restore {
            "import+restore"
        } else {
            "import"
        }
        .into(),
        trigger(s),
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
        r.restore_points_found.to_string(),
        r.restore_points_imported.to_string(),
        r.job_ids.join(","),
        r.error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
    ]
}

/// What a finished run did, for people.
fn run_text(policy: &str, r: &ScheduleRun) -> String {
    let head = format!("run {} of import policy {policy}", r.id);
    match r.state() {
        RunState::NothingToDo => format!(
            "{head}: nothing new; {} restore point(s) found, all imported before; no job started\n",
            r.restore_points_found
        ),
        RunState::Succeeded => {
            let jobs = if r.job_ids.is_empty() {
                "no restore (import only)".to_owned()
            } else {
                format!("restore job(s) {}", r.job_ids.join(", "))
            };
            format!(
                "{head} succeeded: imported {} of {} restore point(s) found ({}); {jobs}\n",
                r.restore_points_imported,
                r.restore_points_found,
                r.imported_restore_point_ids.join(", ")
            )
        }
        state => {
            let error = r.error.clone().unwrap_or_default();
            let mut text = format!(
                "{head} {}: {}\n",
                enum_name(state.as_str_name(), "RUN_STATE_"),
                error.message
            );
            if !error.hint.is_empty() {
                text.push_str(&format!("  next step: {}\n", error.hint));
            }
            if r.restore_points_imported > 0 {
                text.push_str(&format!(
                    "  imported before it failed: {}\n",
                    r.imported_restore_point_ids.join(", ")
                ));
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn create(args: &[&str]) -> Result<CreateScheduleRequest> {
        let argv = ["ferry", "import-policy", "create"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).expect("parses");
        let Command::ImportPolicy(ImportPolicyArgs {
            command: ImportPolicyCommand::Create(a),
        }) = cli.command
        else {
            panic!("not import-policy create");
        };
        a.request()
    }

    #[test]
    fn create_flags_make_an_import_policy() {
        let req = create(&[
            "shop",
            "--profile",
            "shop-in",
            "-n",
            "shop",
            "--every",
            "15m",
            "--restore",
            "--namespace-map",
            "shop=shop-dr",
            "--max-attempts",
            "1",
            "--service-account",
            "importer",
        ])
        .expect("request");
        assert_eq!(req.name, "shop");
        assert_eq!(req.service_account, "importer");
        assert_eq!(
            req.trigger,
            Some(create_schedule_request::Trigger::Interval(
                prost_types::Duration {
                    seconds: 900,
                    nanos: 0
                }
            ))
        );
        assert_eq!(req.retry.map(|r| r.max_attempts), Some(1));
        let Some(create_schedule_request::Spec::ImportPolicy(p)) = req.spec else {
            panic!("not an import policy");
        };
        assert!(p.restore);
        assert_eq!(p.repository.map(|r| r.profile).as_deref(), Some("shop-in"));
        assert_eq!(p.application.map(|a| a.namespace).as_deref(), Some("shop"));
        assert_eq!(p.destination, Some(local_ref()));
        let apply = p.apply.expect("apply");
        assert_eq!(apply.namespace_mapping["shop"], "shop-dr");
        assert!(apply.start_applications);
    }

    #[test]
    fn mappings_without_restore_are_refused() {
        let e = create(&[
            "shop",
            "--profile",
            "in",
            "--cron",
            "0 * * * *",
            "--namespace-map",
            "a=b",
        ])
        .expect_err("mapping without --restore");
        assert!(e.to_string().contains("--restore"), "{e}");
        let ok = create(&["shop", "--profile", "in", "--cron", "0 * * * *"]).expect("import only");
        let Some(create_schedule_request::Spec::ImportPolicy(p)) = ok.spec else {
            panic!("not an import policy");
        };
        assert!(!p.restore);
        assert!(p.application.expect("selector").namespace.is_empty());
        assert!(
            Cli::try_parse_from(["ferry", "import-policy", "create", "x", "--profile", "in"])
                .is_err(),
            "a trigger is required"
        );
    }

    #[test]
    fn finished_runs_say_what_they_did() {
        let nothing = ScheduleRun {
            id: "run-1".into(),
            state: RunState::NothingToDo as i32,
            restore_points_found: 2,
            ..Default::default()
        };
        let text = run_text("shop", &nothing);
        assert!(text.contains("nothing new"), "{text}");
        assert!(text.contains("no job started"), "{text}");
        let done = ScheduleRun {
            id: "run-2".into(),
            state: RunState::Succeeded as i32,
            restore_points_found: 3,
            restore_points_imported: 1,
            imported_restore_point_ids: vec!["ab".into()],
            job_ids: vec!["job-9".into()],
            ..Default::default()
        };
        let text = run_text("shop", &done);
        assert!(text.contains("imported 1 of 3"), "{text}");
        assert!(text.contains("job-9"), "{text}");
    }
}
