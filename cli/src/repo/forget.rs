//! `ferry repo forget --keep-last N --keep-within DUR [--app NAME] [--dry-run] [--prune]`:
//! removes restore points and snapshots the policy does not keep; with `--prune`, also
//! the data only they used, under the same lock.

use std::time::Duration;

use clap::Args;
use ferry_repo::{ForgetPolicy, ForgetReport, RestorePointEntry, SnapshotEntry};
use serde::Serialize;

use super::Ctx;
use super::prune::{PruneJson, PruneLimits, summary as prune_summary};
use crate::error::{Error, Result};
use crate::format::duration_arg;
use crate::output::{print, print_json, rfc3339, utc};

/// Arguments of `ferry repo forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Keep the newest N restore points of each application, and the newest N
    /// snapshots of each host and path that no restore point names.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_last: Option<u64>,

    /// Keep everything younger than DURATION (e.g. 36h, 30d).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub keep_within: Option<Duration>,

    /// Only the restore points of this application (namespace); snapshots no restore
    /// point names are then left alone.
    #[arg(long = "app", value_name = "NAME")]
    pub app: Option<String>,

    /// Say what would be removed, without locking or removing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Prune afterwards, under the same lock: delete the data only the removed
    /// snapshots used.
    #[arg(long)]
    pub prune: bool,

    #[command(flatten)]
    pub limits: PruneLimits,
}

#[derive(Serialize)]
struct PointJson<'a> {
    application: &'a str,
    id: String,
    short_id: String,
    time: Option<String>,
    snapshots: Vec<String>,
}

impl<'a> From<&'a RestorePointEntry> for PointJson<'a> {
    fn from(p: &'a RestorePointEntry) -> Self {
        PointJson {
            application: &p.application,
            id: p.id.to_hex(),
            short_id: p.id.short(),
            time: p.time.map(rfc3339),
            snapshots: p.snapshots.iter().map(|s| s.to_hex()).collect(),
        }
    }
}

#[derive(Serialize)]
struct SnapshotJson<'a> {
    id: String,
    short_id: String,
    time: String,
    hostname: &'a str,
    paths: &'a [String],
    in_restore_point: bool,
}

impl<'a> From<&'a SnapshotEntry> for SnapshotJson<'a> {
    fn from(s: &'a SnapshotEntry) -> Self {
        SnapshotJson {
            id: s.id.to_hex(),
            short_id: s.id.short(),
            time: rfc3339(s.time),
            hostname: &s.hostname,
            paths: &s.paths,
            in_restore_point: s.in_restore_point,
        }
    }
}

#[derive(Serialize)]
struct ForgetJson<'a> {
    dry_run: bool,
    restore_points_removed: Vec<PointJson<'a>>,
    restore_points_kept: Vec<PointJson<'a>>,
    snapshots_removed: Vec<SnapshotJson<'a>>,
    snapshots_kept: Vec<SnapshotJson<'a>>,
    /// Present with --prune.
    prune: Option<PruneJson>,
}

pub(crate) async fn run(args: ForgetArgs, ctx: &Ctx) -> Result<()> {
    if args.keep_last.is_none() && args.keep_within.is_none() {
        return Err(Error::Usage(
            "forget needs a keep rule: --keep-last N and/or --keep-within DURATION \
             (it never removes everything)"
                .into(),
        ));
    }
    let policy = ForgetPolicy {
        keep_last: args
            .keep_last
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        keep_within: args.keep_within,
        application: args.app.clone(),
    };
    policy.validate().map_err(|e| Error::Usage(e.to_string()))?;
    let repo = ctx.open().await?;
    let (forgot, pruned) = if args.prune {
        let (f, p) = repo
            .forget_and_prune(&policy, &args.limits.options(args.dry_run, ctx))
            .await
            .map_err(|e| ctx.interrupted_or(e))?;
        (f, Some(p))
    } else {
        // Removing a few objects is quick, and stopping halfway would leave the lock
        // to expire; so this runs to the end.
        let f = repo
            .forget(&policy, args.dry_run)
            .await
            .map_err(|e| ctx.interrupted_or(e))?;
        (f, None)
    };
    if ctx.json {
        return print_json(&ForgetJson {
            dry_run: forgot.dry_run,
            restore_points_removed: forgot
                .restore_points_removed
                .iter()
                .map(Into::into)
                .collect(),
            restore_points_kept: forgot.restore_points_kept.iter().map(Into::into).collect(),
            snapshots_removed: forgot.snapshots_removed.iter().map(Into::into).collect(),
            snapshots_kept: forgot.snapshots_kept.iter().map(Into::into).collect(),
            prune: pruned.as_ref().map(PruneJson::from),
        });
    }
    let mut text = summary(&forgot, pruned.is_some());
    if let Some(p) = &pruned {
        text.push('\n');
        text.push_str(&prune_summary(p));
    }
    print(&text)
}

fn summary(r: &ForgetReport, pruning: bool) -> String {
    let remove = if r.dry_run { "would remove" } else { "remove" };
    let mut out = String::new();
    let mut points: Vec<(&str, &RestorePointEntry)> = r
        .restore_points_removed
        .iter()
        .map(|p| (remove, p))
        .chain(r.restore_points_kept.iter().map(|p| ("keep", p)))
        .collect();
    points.sort_by(|a, b| {
        (&a.1.application, a.1.time, a.1.id).cmp(&(&b.1.application, b.1.time, b.1.id))
    });
    if !points.is_empty() {
        out.push_str("Restore points:\n");
        for (what, p) in points {
            out.push_str(&format!(
                "  {what:<12}  {}  {}  {}  {} snapshot(s)\n",
                p.application,
                p.id.short(),
                p.time.map_or_else(|| "(no time)".into(), utc),
                p.snapshots.len()
            ));
        }
    }
    let mut snapshots: Vec<(&str, &SnapshotEntry)> = r
        .snapshots_removed
        .iter()
        .map(|s| (remove, s))
        .chain(r.snapshots_kept.iter().map(|s| ("keep", s)))
        .collect();
    snapshots.sort_by_key(|a| (a.1.time, a.1.id));
    if !snapshots.is_empty() {
        out.push_str("Snapshots:\n");
        for (what, s) in snapshots {
            out.push_str(&format!(
                "  {what:<12}  {}  {}  {}  {}{}\n",
                s.id.short(),
                utc(s.time),
                s.hostname,
                s.paths.join(", "),
                if s.in_restore_point {
                    "  (restore point)"
                } else {
                    ""
                }
            ));
        }
    }
    out.push_str(&format!(
        "{} {} restore point(s) and {} snapshot(s); {} restore point(s) and {} snapshot(s) kept\n",
        if r.dry_run { "would remove" } else { "removed" },
        r.restore_points_removed.len(),
        r.snapshots_removed.len(),
        r.restore_points_kept.len(),
        r.snapshots_kept.len(),
    ));
    if !r.dry_run && !pruning && !r.snapshots_removed.is_empty() {
        out.push_str("their data stays until `ferry repo prune` (or forget --prune)\n");
    }
    out
}
