//! `ferry jobs`: list, show, follow and cancel the transfer jobs of a Ferry.

use clap::{Args, Subcommand};
use ferry_proto::v1::{GetJobResponse, JobKind, JobState, ListJobsRequest};
use tokio_util::sync::CancellationToken;

use crate::connect::ConnectArgs;
use crate::error::Result;
use crate::format::{between, enum_name, table, when};
use crate::migrate::FollowArgs;
use crate::output::{Format, clock, print, print_proto};
use crate::watch::{OnInterrupt, detached, finish, follow, report_text};

/// `ferry jobs` and its subcommands.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  ferry --context a jobs list
  ferry --context a jobs list --state running
  ferry --context a jobs watch JOB_ID
  ferry --context a jobs get JOB_ID --show-objects
  ferry --context a jobs cancel JOB_ID")]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List(ListArgs),
    /// Show one job and, once it has finished, its report.
    Get {
        /// The job's id.
        id: String,
        /// List every object in the report, not only counts.
        #[arg(long)]
        show_objects: bool,
    },
    /// Follow a job with a progress bar until it ends; Ctrl-C stops following only
    /// (exit status 14), the job goes on.
    Watch {
        /// The job's id.
        id: String,
        /// List every object in the report, not only counts.
        #[arg(long)]
        show_objects: bool,
    },
    /// Ask a job to stop; nothing is left half-applied.
    Cancel {
        /// The job's id.
        id: String,
        /// Why, kept in the job's report.
        #[arg(long, default_value = "cancelled from the ferry command line")]
        reason: String,
        /// Return at once instead of waiting for the job to stop.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this state; repeat for more.
    #[arg(long, value_enum)]
    pub state: Vec<StateArg>,
    /// Only jobs of this kind; repeat for more.
    #[arg(long, value_enum)]
    pub kind: Vec<KindArg>,
    /// Only jobs a schedule started (its id).
    #[arg(long)]
    pub schedule: Option<String>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StateArg {
    Queued,
    Running,
    Cancelling,
    Succeeded,
    PartiallySucceeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    Migration,
    Export,
    Import,
    Restore,
}

pub async fn run(
    connect: &ConnectArgs,
    args: JobsArgs,
    cancel: CancellationToken,
    format: Format,
) -> Result<()> {
    let ferry = connect.ferry().await?;
    match args.command {
        JobsCommand::List(args) => {
            let resp = ferry
                .transfer()
                .list_jobs(ListJobsRequest {
                    kinds: args.kind.iter().map(|k| kind(*k) as i32).collect(),
                    states: args.state.iter().map(|s| state(*s) as i32).collect(),
                    schedule_id: args.schedule.unwrap_or_default(),
                    page_size: args.limit,
                    page_token: String::new(),
                })
                .await
                .map_err(|s| ferry.rpc_error("ListJobs", s))?
                .into_inner();
            if format.structured() {
                return print_proto(&resp, "ferry.v1.ListJobsResponse", format);
            }
            if resp.jobs.is_empty() {
                return print("no jobs\n");
            }
            let rows: Vec<Vec<String>> = resp
                .jobs
                .iter()
                .map(|j| {
                    let app = j.application.clone().unwrap_or_default();
                    let took = if ferry_client::is_final(j.state()) {
                        between(j.created_at.as_ref(), j.updated_at.as_ref())
                            .map(clock)
                            .unwrap_or_default()
                    } else {
                        String::new()
                    };
                    vec![
                        j.id.clone(),
                        enum_name(j.kind().as_str_name(), "JOB_KIND_"),
                        app.namespace,
                        enum_name(j.state().as_str_name(), "JOB_STATE_"),
                        when(j.created_at.as_ref()),
                        took,
                    ]
                })
                .collect();
            print(&table(
                &["ID", "KIND", "NAMESPACE", "STATE", "CREATED", "TOOK"],
                &rows,
            ))
        }
        JobsCommand::Get { id, show_objects } => {
            let (job, report) = ferry.job(&id).get().await?;
            if format.structured() {
                let resp = GetJobResponse {
                    job: Some(job),
                    report,
                };
                return print_proto(&resp, "ferry.v1.GetJobResponse", format);
            }
            match report {
                Some(report) => print(&report_text(&report, show_objects)),
                None => {
                    let mut text = format!(
                        "job {} ({}) is {}\n",
                        job.id,
                        enum_name(job.kind().as_str_name(), "JOB_KIND_"),
                        enum_name(job.state().as_str_name(), "JOB_STATE_")
                    );
                    for step in &job.steps {
                        text.push_str(&format!(
                            "  {:<18} {:<10} {}\n",
                            step.name,
                            enum_name(step.state().as_str_name(), "STEP_STATE_"),
                            step.message
                        ));
                    }
                    if let Some(p) = &job.progress {
                        text.push_str(&format!("  {}\n", crate::watch::progress_line(p)));
                    }
                    print(&text)
                }
            }
        }
        JobsCommand::Watch { id, show_objects } => {
            let report = follow(&ferry.job(&id), &cancel, OnInterrupt::Detach).await?;
            finish(&report, show_objects, format)
        }
        JobsCommand::Cancel {
            id,
            reason,
            no_wait,
        } => {
            let job = ferry.job(&id);
            let now = job.cancel(&reason).await?;
            if format.structured() && (no_wait || ferry_client::is_final(now.state())) {
                return print_proto(&now, "ferry.v1.Job", format);
            }
            if no_wait || ferry_client::is_final(now.state()) {
                return print(&format!(
                    "job {id} is {}\n",
                    enum_name(now.state().as_str_name(), "JOB_STATE_")
                ));
            }
            let report = follow(&job, &cancel, OnInterrupt::Detach).await?;
            match format {
                Format::Text => print(&report_text(&report, false)),
                Format::Json | Format::Yaml => print_proto(&report, "ferry.v1.JobReport", format),
            }
        }
    }
}

/// `ferry cutover`.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  ferry --context a migrate -n shop --to b --warm --detach
  ferry --context a cutover JOB_ID

The job stops the application on the source (its Deployments and StatefulSets scaled to
zero), copies what changed since the last sync, applies and starts it on the
destination, and waits for its pods to be Ready; the report says how long the
application was down. Should the apply fail, the source is scaled back.")]
pub struct CutoverArgs {
    /// The warm migration's job id (`ferry jobs list --state running`).
    pub id: String,
    #[command(flatten)]
    pub follow: FollowArgs,
}

pub async fn cutover(
    connect: &ConnectArgs,
    args: CutoverArgs,
    cancel: CancellationToken,
    format: Format,
) -> Result<()> {
    let ferry = connect.ferry().await?;
    let job = ferry.job(&args.id);
    job.cutover().await?;
    eprintln!(
        "job {}: cutting over: the application stops on the source, the last change is \
         copied, and it starts on the destination",
        args.id
    );
    if args.follow.detach {
        return detached(&job, format);
    }
    let report = follow(&job, &cancel, args.follow.on_interrupt()).await?;
    finish(&report, args.follow.show_objects, format)
}

fn state(s: StateArg) -> JobState {
    match s {
        StateArg::Queued => JobState::Queued,
        StateArg::Running => JobState::Running,
        StateArg::Cancelling => JobState::Cancelling,
        StateArg::Succeeded => JobState::Succeeded,
        StateArg::PartiallySucceeded => JobState::PartiallySucceeded,
        StateArg::Failed => JobState::Failed,
        StateArg::Cancelled => JobState::Cancelled,
    }
}

fn kind(k: KindArg) -> JobKind {
    match k {
        KindArg::Migration => JobKind::Migration,
        KindArg::Export => JobKind::Export,
        KindArg::Import => JobKind::Import,
        KindArg::Restore => JobKind::Restore,
    }
}
