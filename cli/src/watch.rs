//! Following a job on the command line: a progress bar on a terminal (a line per step
//! plus a live status line), plain lines off one, and the final report.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ferry_client::Job;
use ferry_proto::v1::{
    JobEvent, JobReport, JobState, JobStep, ObjectAction, Progress, StepState, VolumeResult,
    job_event,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::{between, enum_name, table};
use crate::output::{Format, bytes, clock, print, print_data, print_proto};

/// What the first Ctrl-C does while following a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnInterrupt {
    /// Cancel the job and wait for its report (`--cancel-on-interrupt`).
    CancelJob,
    /// Stop following; the job goes on, and the command's error says how to follow or
    /// cancel it (as `velero --wait` does: a long job outlives an impatient terminal).
    Detach,
}

/// Draws a job's events as they come.
struct Renderer {
    bar: Option<ProgressBar>,
    last_plain: Instant,
    /// The state and message each step was last drawn with: a reconnect replays the
    /// job's snapshot; a warm migration's sync step says something new after each sync.
    steps_seen: std::collections::HashMap<String, (i32, String)>,
}

impl Renderer {
    fn new() -> Renderer {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(150));
            bar
        });
        Renderer {
            bar,
            last_plain: Instant::now(),
            steps_seen: Default::default(),
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn step(&mut self, step: &JobStep) {
        let seen = (step.state, step.message.clone());
        if self.steps_seen.get(&step.name) == Some(&seen) {
            return;
        }
        self.steps_seen.insert(step.name.clone(), seen);
        let mark = match step.state() {
            StepState::Running => "…",
            StepState::Succeeded => "✓",
            StepState::Failed => "✗",
            StepState::Skipped => "-",
            _ => " ",
        };
        let took = between(step.started_at.as_ref(), step.finished_at.as_ref())
            .map(|d| format!(" ({:.1}s)", d.as_secs_f64()))
            .unwrap_or_default();
        self.line(&format!("{mark} {:<18}{took} {}", step.name, step.message));
        if let Some(bar) = &self.bar {
            bar.set_message(step.name.clone());
        }
    }

    fn event(&mut self, event: &JobEvent) {
        match &event.event {
            Some(job_event::Event::Snapshot(job)) => {
                self.line(&format!(
                    "job {} ({}) is {}",
                    job.id,
                    enum_name(job.kind().as_str_name(), "JOB_KIND_"),
                    enum_name(job.state().as_str_name(), "JOB_STATE_")
                ));
                // Steps that ran before this stream began.
                for step in job.steps.iter().filter(|s| s.state() != StepState::Pending) {
                    self.step(step);
                }
            }
            Some(job_event::Event::Step(step)) => self.step(step),
            Some(job_event::Event::Progress(p)) => {
                let text = progress_line(p);
                match &self.bar {
                    Some(bar) => bar.set_message(text),
                    // Off a terminal, a line every few seconds is enough for a log.
                    None if self.last_plain.elapsed() >= Duration::from_secs(5) => {
                        self.last_plain = Instant::now();
                        eprintln!("  {text}");
                    }
                    None => {}
                }
            }
            Some(job_event::Event::Report(_)) | None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// "transfer-volumes | 12/300 files | 1.0 GiB / 2.0 GiB | 80.0 MiB/s | ETA 0:12 | 40.0 MiB uploaded".
pub(crate) fn progress_line(p: &Progress) -> String {
    let mut parts = vec![p.step.clone()];
    if p.objects_total > 0 {
        parts.push(format!("{}/{} objects", p.objects_done, p.objects_total));
    }
    if p.files_total > 0 {
        parts.push(format!("{}/{} files", p.files_done, p.files_total));
    }
    if p.bytes_total > 0 || p.bytes_read > 0 {
        parts.push(format!(
            "{} / {}",
            bytes(p.bytes_read),
            bytes(p.bytes_total)
        ));
        parts.push(format!("{}/s", bytes(p.rate_bytes_per_second)));
        if let Some(eta) = &p.eta {
            parts.push(format!(
                "ETA {}",
                clock(Duration::from_secs(u64::try_from(eta.seconds).unwrap_or(0)))
            ));
        }
        if p.bytes_uploaded > 0 {
            parts.push(format!("{} uploaded", bytes(p.bytes_uploaded)));
        }
    }
    // The volumes under way, each with how it is reached.
    let active: Vec<String> = p
        .volumes
        .iter()
        .filter(|v| !v.done && (v.bytes_read > 0 || v.files_total > 0))
        .map(|v| {
            let how = through_kind(&v.through);
            let how = if how.is_empty() {
                String::new()
            } else {
                format!(" ({how})")
            };
            format!(
                "{}{how} {} / {}",
                v.pvc_name,
                bytes(v.bytes_read),
                bytes(v.bytes_total)
            )
        })
        .collect();
    if !active.is_empty() {
        parts.push(active.join(", "));
    }
    parts.join(" | ")
}

/// The kind of a volume's way in or out, without the names of the objects Ferry made
/// for it: "csi snapshot", "mover pod", "pod db-0", "host path".
fn through_kind(through: &str) -> &str {
    ["csi snapshot", "mover pod"]
        .into_iter()
        .find(|k| through.starts_with(k))
        .unwrap_or(through)
}

/// Follows `job` to its report, drawing progress. The first Ctrl-C does what
/// `on_interrupt` says; the second ends the process (see `signal`).
pub(crate) async fn follow(
    job: &Job,
    cancel: &CancellationToken,
    on_interrupt: OnInterrupt,
) -> Result<JobReport> {
    let mut renderer = Renderer::new();
    // None: the user stopped following.
    let outcome: Result<Option<JobReport>> = {
        let wait = job.wait(|e| renderer.event(e));
        tokio::pin!(wait);
        tokio::select! {
            r = &mut wait => r.map(Some).map_err(Error::from),
            _ = cancel.cancelled() => match on_interrupt {
                OnInterrupt::Detach => Ok(None),
                OnInterrupt::CancelJob => {
                    eprintln!("ferry: cancelling job {} and waiting for it to stop", job.id());
                    match job.cancel("interrupted from the ferry command line").await {
                        Ok(_) => wait.await.map(Some).map_err(Error::from),
                        Err(e) => Err(e.into()),
                    }
                }
            },
        }
    };
    renderer.finish();
    match outcome? {
        Some(report) => Ok(report),
        None => Err(Error::Detached {
            ids: vec![job.id().to_owned()],
        }),
    }
}

/// The job's final account: what happened to objects and volumes, warnings, and the
/// error. With `all_objects`, one line per object instead of counts.
pub(crate) fn report_text(report: &JobReport, all_objects: bool) -> String {
    let mut out = String::new();
    let took = between(report.started_at.as_ref(), report.finished_at.as_ref());
    out.push_str(&format!(
        "job {} {}{}\n",
        report.job_id,
        enum_name(report.state().as_str_name(), "JOB_STATE_"),
        took.map(|d| format!(" in {}", clock(d)))
            .unwrap_or_default()
    ));
    if !report.restore_point_id.is_empty() {
        out.push_str(&format!("restore point {}\n", report.restore_point_id));
    }
    if all_objects {
        let rows: Vec<Vec<String>> = report
            .objects
            .iter()
            .map(|o| {
                let obj = o.object.clone().unwrap_or_default();
                let name = if obj.namespace.is_empty() {
                    format!("{}/{}", obj.kind, obj.name)
                } else {
                    format!("{}/{}/{}", obj.kind, obj.namespace, obj.name)
                };
                let why = o
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_else(|| o.reason.clone());
                vec![
                    enum_name(o.action().as_str_name(), "OBJECT_ACTION_"),
                    name,
                    why,
                ]
            })
            .collect();
        out.push_str(&table(&["ACTION", "OBJECT", "DETAIL"], &rows));
    } else if !report.objects.is_empty() {
        let mut counts: Vec<(ObjectAction, usize)> = Vec::new();
        for o in &report.objects {
            match counts.iter_mut().find(|(a, _)| *a == o.action()) {
                Some((_, n)) => *n += 1,
                None => counts.push((o.action(), 1)),
            }
        }
        counts.sort_by_key(|(a, _)| *a as i32);
        let parts: Vec<String> = counts
            .iter()
            .map(|(a, n)| format!("{n} {}", enum_name(a.as_str_name(), "OBJECT_ACTION_")))
            .collect();
        out.push_str(&format!(
            "objects: {} ({})\n",
            report.objects.len(),
            parts.join(", ")
        ));
        out.push_str(&left_out(report));
        for o in report
            .objects
            .iter()
            .filter(|o| o.action() == ObjectAction::Failed)
        {
            let obj = o.object.clone().unwrap_or_default();
            let e = o.error.clone().unwrap_or_default();
            out.push_str(&format!(
                "  failed {}/{}: {}{}\n",
                obj.kind,
                obj.name,
                e.message,
                if e.hint.is_empty() {
                    String::new()
                } else {
                    format!("; {}", e.hint)
                }
            ));
        }
    }
    if !report.volumes.is_empty() {
        out.push_str(&volumes_table(report));
    }
    if let Some(warm) = &report.warm {
        out.push_str(&warm_text(warm));
    }
    for w in &report.warnings {
        out.push_str(&format!("warning: {}", w.message));
        if !w.hint.is_empty() {
            out.push_str(&format!("; {}", w.hint));
        }
        out.push('\n');
    }
    if let Some(e) = &report.error {
        out.push_str(&format!("error: {}", e.message));
        if !e.cluster.is_empty() {
            out.push_str(&format!(" (cluster {})", e.cluster));
        }
        if !e.hint.is_empty() {
            out.push_str(&format!("\n  hint: {}", e.hint));
        }
        out.push('\n');
    }
    out
}

/// A warm migration's syncs, one row each, and its downtime.
fn warm_text(warm: &ferry_proto::v1::WarmStatus) -> String {
    let rows: Vec<Vec<String>> = warm
        .recent_syncs
        .iter()
        .map(|s| {
            let secs = |d: Option<&prost_types::Duration>| {
                format!("{:.1}s", d.map_or(0.0, ferry_rpc::duration_secs))
            };
            vec![
                if s.r#final {
                    format!("{} (final)", s.number)
                } else {
                    s.number.to_string()
                },
                secs(s.duration.as_ref()),
                secs(s.backup_duration.as_ref()),
                secs(s.commit_duration.as_ref()),
                secs(s.restore_duration.as_ref()),
                bytes(s.bytes_total),
                bytes(s.bytes_uploaded),
                bytes(s.bytes_written),
            ]
        })
        .collect();
    let mut out = format!(
        "warm migration: {} sync(s) while the application ran on the source\n",
        warm.syncs
    );
    if !rows.is_empty() {
        out.push_str(&table(
            &[
                "SYNC", "TIME", "BACKUP", "COMMIT", "RESTORE", "SIZE", "UPLOADED", "WRITTEN",
            ],
            &rows,
        ));
    }
    if let Some(d) = &warm.downtime {
        out.push_str(&format!(
            "downtime: {:.1} s (source's last pod gone to every pod Ready on the destination)\n",
            ferry_rpc::duration_secs(d)
        ));
    }
    out
}

/// One row per volume: how it was reached, its size, what was uploaded and written,
/// and its result.
fn volumes_table(report: &JobReport) -> String {
    let rows: Vec<Vec<String>> = report
        .volumes
        .iter()
        .map(|v| {
            let secs = v
                .duration
                .as_ref()
                .map(ferry_rpc::duration_secs)
                .unwrap_or(0.0);
            let rate = if secs > 0.0 {
                format!("{}/s", bytes((v.bytes_total as f64 / secs) as u64))
            } else {
                "-".into()
            };
            let mut result = enum_name(v.result().as_str_name(), "VOLUME_RESULT_");
            if v.result() == VolumeResult::Failed
                && let Some(e) = &v.error
            {
                result.push_str(&format!(": {}", e.message));
            }
            let through = [&v.read_through, &v.written_through]
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" -> ");
            vec![
                format!("{}/{}", v.namespace, v.pvc_name),
                if through.is_empty() {
                    "-".into()
                } else {
                    through
                },
                v.files.to_string(),
                bytes(v.bytes_total),
                bytes(v.bytes_new),
                bytes(v.bytes_uploaded),
                bytes(v.bytes_written),
                format!("{secs:.1}s"),
                rate,
                result,
            ]
        })
        .collect();
    table(
        &[
            "VOLUME", "THROUGH", "FILES", "SIZE", "NEW", "UPLOADED", "WRITTEN", "TIME", "RATE",
            "RESULT",
        ],
        &rows,
    )
}

/// The objects a report says were left out, each with why, on one line (the first few;
/// `--show-objects` lists all); empty when none were.
fn left_out(report: &JobReport) -> String {
    const NAMED: usize = 8;
    let mut excluded: Vec<String> = Vec::new();
    for o in report
        .objects
        .iter()
        .filter(|o| o.action() == ObjectAction::Excluded)
    {
        let obj = o.object.clone().unwrap_or_default();
        // A type left out whole (Events, Endpoints) is listed without a name, once per
        // API group; said once.
        let what = if obj.name.is_empty() {
            format!("every {} ({})", obj.kind, o.reason)
        } else {
            format!("{}/{} ({})", obj.kind, obj.name, o.reason)
        };
        if !excluded.contains(&what) {
            excluded.push(what);
        }
    }
    if excluded.is_empty() {
        return String::new();
    }
    let more = match excluded.len().checked_sub(NAMED) {
        Some(n) if n > 0 => format!("; {n} more (--show-objects lists them)"),
        _ => String::new(),
    };
    let named: Vec<&str> = excluded.iter().take(NAMED).map(String::as_str).collect();
    format!("  left out: {}{more}\n", named.join("; "))
}

/// Prints the report (as text, or as the API's JobReport in JSON) and turns a job that
/// did not succeed into the command's error.
pub(crate) fn finish(report: &JobReport, all_objects: bool, format: Format) -> Result<()> {
    match format {
        Format::Text => print(&report_text(report, all_objects))?,
        Format::Json | Format::Yaml => print_proto(report, "ferry.v1.JobReport", format)?,
    }
    outcome(report)
}

/// [`finish`] with the text report on stderr, for a command whose stdout carries one
/// result of its own (`ferry export`'s migration token).
pub(crate) fn finish_on_stderr(report: &JobReport, all_objects: bool) -> Result<()> {
    eprint!("{}", report_text(report, all_objects));
    outcome(report)
}

/// What a command started with `--detach` prints: the job's id.
pub(crate) fn detached(job: &Job, format: Format) -> Result<()> {
    match format {
        Format::Text => print(&format!("{}\n", job.id())),
        Format::Json | Format::Yaml => {
            print_data(&serde_json::json!({ "jobId": job.id() }), format)
        }
    }
}

/// A job that did not succeed as the command's error.
fn outcome(report: &JobReport) -> Result<()> {
    match report.state() {
        JobState::Succeeded => Ok(()),
        state => Err(Error::JobEnded {
            id: report.job_id.clone(),
            state: enum_name(state.as_str_name(), "JOB_STATE_"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_client::proto::VolumeProgress;

    #[test]
    fn a_progress_line_names_the_volumes_under_way_and_how_they_are_read() {
        let volume = |pvc: &str, through: &str, read: u64, done: bool| VolumeProgress {
            pvc_namespace: "shop".into(),
            pvc_name: pvc.into(),
            through: through.into(),
            files_done: 1,
            files_total: 2,
            bytes_read: read,
            bytes_total: 100 << 20,
            done,
        };
        let p = Progress {
            step: "backup-volumes".into(),
            files_done: 3,
            files_total: 6,
            bytes_read: 140 << 20,
            bytes_total: 300 << 20,
            volumes: vec![
                volume("data-db-0", "host path", 100 << 20, true),
                volume(
                    "fast-db-0",
                    "csi snapshot ferry-1 (class snap), mover pod ferry-mover-2",
                    40 << 20,
                    false,
                ),
                // Not started yet.
                VolumeProgress {
                    files_total: 0,
                    ..volume("logs-db-0", "", 0, false)
                },
            ],
            ..Default::default()
        };
        let line = progress_line(&p);
        assert!(
            line.ends_with("| fast-db-0 (csi snapshot) 40.0 MiB / 100.0 MiB"),
            "{line}"
        );
        assert!(
            !line.contains("data-db-0") && !line.contains("logs-db-0"),
            "{line}"
        );
    }
}
