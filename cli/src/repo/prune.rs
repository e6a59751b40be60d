//! `ferry repo prune [--dry-run] [--max-clock-skew DUR]`: deletes the packs no snapshot
//! uses, under an exclusive lock; refuses (deleting nothing) when another process holds
//! a lock, the clocks disagree, or a listing failed.

use std::time::Duration;

use clap::Args;
use ferry_repo::{PruneOptions, PruneReport};
use serde::Serialize;

use super::Ctx;
use crate::error::Result;
use crate::format::duration_arg;
use crate::output::{bytes, print, print_json};

/// Arguments of `ferry repo prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Say what would be deleted, without locking or deleting anything.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub limits: PruneLimits,
}

/// Prune's safety limits, shared with `forget --prune`.
#[derive(Debug, Args)]
pub struct PruneLimits {
    /// Refuse when this machine's clock and the repository store's differ by more.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration_arg)]
    pub max_clock_skew: Duration,

    /// Keep packs no index names while they are younger than this: they may belong to
    /// a backup whose lock lapsed while it still runs.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration_arg)]
    pub keep_unindexed_for: Duration,

    /// Repack kept packs with more than this share unused (their used data is copied
    /// into new packs); 100% never repacks.
    #[arg(long, value_name = "PERCENT", default_value = "20%", value_parser = percent_arg)]
    pub max_unused: f64,
}

/// "20%" or "20" → 0.2.
fn percent_arg(s: &str) -> std::result::Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage; write it like 20%"))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("{s:?} is not between 0% and 100%"));
    }
    Ok(n / 100.0)
}

impl PruneLimits {
    pub(crate) fn options(&self, dry_run: bool, ctx: &Ctx) -> PruneOptions {
        PruneOptions {
            dry_run,
            max_clock_skew: self.max_clock_skew,
            keep_unindexed_for: self.keep_unindexed_for,
            max_unused: self.max_unused,
            cancel: ctx.cancel.clone(),
            ..PruneOptions::default()
        }
    }
}

/// `--json` form of a prune report.
#[derive(Debug, Serialize)]
pub(crate) struct PruneJson {
    dry_run: bool,
    snapshots: u64,
    restore_points: u64,
    blobs_used: u64,
    packs_total: u64,
    bytes_total: u64,
    packs_deleted: u64,
    bytes_deleted: u64,
    unindexed_packs_deleted: u64,
    unindexed_packs_kept: u64,
    packs_kept: u64,
    bytes_kept: u64,
    packs_repacked: u64,
    bytes_repacked: u64,
    packs_partly_used: u64,
    bytes_unused_in_kept_packs: u64,
    index_files_written: u64,
    index_files_deleted: u64,
    stale_locks_removed: u64,
    clock_skew_seconds: f64,
}

impl From<&PruneReport> for PruneJson {
    fn from(r: &PruneReport) -> Self {
        PruneJson {
            dry_run: r.dry_run,
            snapshots: r.snapshots,
            restore_points: r.restore_points,
            blobs_used: r.blobs_used,
            packs_total: r.packs_total,
            bytes_total: r.bytes_total,
            packs_deleted: r.packs_deleted,
            bytes_deleted: r.bytes_deleted,
            unindexed_packs_deleted: r.unindexed_packs_deleted,
            unindexed_packs_kept: r.unindexed_packs_kept,
            packs_kept: r.packs_kept,
            bytes_kept: r.bytes_kept,
            packs_repacked: r.packs_repacked,
            bytes_repacked: r.bytes_repacked,
            packs_partly_used: r.packs_partly_used,
            bytes_unused_in_kept_packs: r.bytes_unused_in_kept_packs,
            index_files_written: r.index_files_written,
            index_files_deleted: r.index_files_deleted,
            stale_locks_removed: r.stale_locks_removed,
            clock_skew_seconds: r.clock_skew_ms as f64 / 1000.0,
        }
    }
}

/// The text summary of a prune.
pub(crate) fn summary(r: &PruneReport) -> String {
    let (delete, deleted) = if r.dry_run {
        ("would delete", "would be deleted")
    } else {
        ("deleted", "deleted")
    };
    let mut out = format!(
        "Kept data of: {} snapshot(s), {} restore point(s), {} blobs in use\n\
         Packs:        {} {} of {} ({} of {}), {} kept ({})\n",
        r.snapshots,
        r.restore_points,
        r.blobs_used,
        delete,
        r.packs_deleted,
        r.packs_total,
        bytes(r.bytes_deleted),
        bytes(r.bytes_total),
        r.packs_kept,
        bytes(r.bytes_kept),
    );
    if r.packs_repacked > 0 {
        out.push_str(&format!(
            "Repacked:     {} mostly unused pack(s): {} of used data {}copied into new packs\n",
            r.packs_repacked,
            bytes(r.bytes_repacked),
            if r.dry_run { "would be " } else { "" }
        ));
    }
    if r.packs_partly_used > 0 {
        out.push_str(&format!(
            "Partly used:  {} kept pack(s) also hold {} no snapshot uses\n",
            r.packs_partly_used,
            bytes(r.bytes_unused_in_kept_packs)
        ));
    }
    if r.unindexed_packs_deleted + r.unindexed_packs_kept > 0 {
        out.push_str(&format!(
            "Unindexed:    {} pack(s) {deleted}, {} kept (too recent)\n",
            r.unindexed_packs_deleted, r.unindexed_packs_kept
        ));
    }
    out.push_str(&format!(
        "Index:        {} file(s) replaced by {}\n",
        r.index_files_deleted, r.index_files_written
    ));
    if r.stale_locks_removed > 0 {
        out.push_str(&format!(
            "Locks:        {} stale lock(s) removed\n",
            r.stale_locks_removed
        ));
    }
    if !r.dry_run {
        out.push_str(&format!(
            "Clock skew:   {:.1} s (repository store minus this machine)\n",
            r.clock_skew_ms as f64 / 1000.0
        ));
    }
    out.push_str(if r.dry_run {
        "dry run: nothing was locked or deleted\n"
    } else {
        "prune done\n"
    });
    out
}

pub(crate) async fn run(args: PruneArgs, ctx: &Ctx) -> Result<()> {
    let repo = ctx.open().await?;
    // Not dropped on Ctrl-C: the token stops prune between steps, so it releases its
    // lock rather than leaving it to block writers until it expires.
    let report = repo
        .prune(&args.limits.options(args.dry_run, ctx))
        .await
        .map_err(|e| ctx.interrupted_or(e))?;
    if ctx.json {
        return print_json(&PruneJson::from(&report));
    }
    print(&summary(&report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(percent_arg("20%"), Ok(0.2));
        assert_eq!(percent_arg("100"), Ok(1.0));
        assert!(percent_arg("120%").is_err());
        assert!(percent_arg("lots").is_err());
    }
}
