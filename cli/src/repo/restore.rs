//! `ferry repo restore SNAPSHOT|latest --target DIR`.

use std::path::PathBuf;

use clap::Args;
use ferry_repo::RestoreOptions;
use serde::Serialize;

use super::Ctx;
use crate::error::Result;
use crate::output::{bytes, print, print_json, rate};
use crate::progress::{StatusLine, restore_line};
use crate::signal::or_interrupted;

/// Arguments of `ferry repo restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, a unique prefix of one, or "latest".
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,

    /// Directory to restore into; it must not exist or be empty, unless --sync.
    #[arg(short, long, value_name = "DIR")]
    pub target: PathBuf,

    /// Restore over what the directory holds (an earlier restore): remove what the
    /// snapshot lacks, keep unchanged files, write only the changed chunks of the rest.
    /// Refused, naming them, when files there changed since the last restore.
    #[arg(long)]
    pub sync: bool,

    /// With --sync: replace files changed in the directory since the last restore.
    #[arg(long, requires = "sync")]
    pub overwrite_changes: bool,

    /// Do not flush the restored files to disk before reporting success. By default
    /// the restore ends with one sync of the target's file system, so a power loss
    /// right after cannot lose what it wrote; without it the kernel writes the data
    /// back in its own time (as restic, rustic and kopia leave it).
    #[arg(long)]
    pub no_fsync: bool,
}

#[derive(Serialize)]
struct RestoreJson {
    snapshot_id: String,
    target: String,
    files: u64,
    dirs: u64,
    symlinks: u64,
    hardlinks: u64,
    bytes_written: u64,
    bytes_downloaded: u64,
    duration_seconds: f64,
}

pub(crate) async fn run(args: RestoreArgs, ctx: &Ctx) -> Result<()> {
    let repo = ctx.open().await?;
    let id = or_interrupted(&ctx.cancel, async {
        Ok(repo.resolve_snapshot(&args.snapshot).await?)
    })
    .await?;
    let (progress, line) = StatusLine::start(restore_line);
    let options = RestoreOptions {
        progress,
        cancel: ctx.cancel.clone(),
        sync: args.sync,
        overwrite_changes: args.overwrite_changes,
        fsync: !args.no_fsync,
        ..RestoreOptions::default()
    };
    let result = repo.restore(&id, &args.target, options).await;
    line.finish().await;
    let s = result.map_err(|e| ctx.interrupted_or(e))?;
    let out = RestoreJson {
        snapshot_id: id.to_hex(),
        target: args.target.display().to_string(),
        files: s.files,
        dirs: s.dirs,
        symlinks: s.symlinks,
        hardlinks: s.hardlinks,
        bytes_written: s.bytes_written,
        bytes_downloaded: s.bytes_downloaded,
        duration_seconds: s.duration.as_secs_f64(),
    };
    if ctx.json {
        return print_json(&out);
    }
    print(&format!(
        "restored snapshot {} to {}\n\
         Files:      {} files, {} dirs, {} symlinks, {} hard links\n\
         Data:       {} written, {} downloaded\n\
         Duration:   {:.2} s ({})\n",
        id.short(),
        out.target,
        s.files,
        s.dirs,
        s.symlinks,
        s.hardlinks,
        bytes(s.bytes_written),
        bytes(s.bytes_downloaded),
        out.duration_seconds,
        rate(s.bytes_written, s.duration),
    ))
}
