//! `ferry repo backup PATH`: with no `--parent`, the latest snapshot of the same path
//! and host is the parent (restic's habit), so unchanged files are not read again.

use std::path::{Path, PathBuf};

use clap::Args;
use ferry_repo::{BackupOptions, Id, WalkedSource};
use serde::Serialize;

use super::Ctx;
use crate::error::{Error, Result};
use crate::output::{bytes, print, print_json, rate};
use crate::progress::{StatusLine, backup_line};
use crate::signal::or_interrupted;

/// Arguments of `ferry repo backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Directory, file or block device to back up.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Snapshot to compare against (id, unique id prefix or "latest"); by default the
    /// latest snapshot of the same absolute path and host.
    #[arg(long, value_name = "SNAPSHOT")]
    pub parent: Option<String>,

    /// Tag the snapshot; repeat for several.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<String>,

    /// Host name to record, and to pick the parent by (default: this machine's).
    #[arg(long = "host", value_name = "NAME")]
    pub host: Option<String>,
}

fn parse_tag(s: &str) -> std::result::Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not KEY=VALUE (e.g. --tag app=postgres)")),
    }
}

/// The numbers of a finished backup, in `--json` and (formatted) in the summary.
#[derive(Debug, Serialize)]
struct BackupJson {
    snapshot_id: String,
    short_id: String,
    parent: Option<String>,
    path: String,
    hostname: String,
    tags: Vec<String>,
    files_new: u64,
    files_changed: u64,
    files_unmodified: u64,
    dirs: u64,
    symlinks: u64,
    hardlinks: u64,
    bytes_total: u64,
    bytes_read: u64,
    bytes_new: u64,
    bytes_uploaded: u64,
    chunks_new: u64,
    chunks_reused: u64,
    trees_new: u64,
    tree_bytes_new: u64,
    packs_uploaded: u64,
    duration_seconds: f64,
}

/// This machine's name, as the engine records it when none is given.
fn this_host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The absolute path without `.` components or a trailing slash, so `data/` and
/// `./data` find the same parent.
fn normalize(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| {
        Error::Usage(format!(
            "cannot resolve the backup path {}: {e}",
            path.display()
        ))
    })?;
    Ok(abs.components().collect())
}

pub(crate) async fn run(args: BackupArgs, ctx: &Ctx) -> Result<()> {
    let source = normalize(&args.path)?;
    let source_str = source.to_string_lossy().into_owned();
    let host = args.host.clone().unwrap_or_else(this_host);
    // The walk needs no key: it runs while the repository's key is derived.
    let walk = async {
        let walked = WalkedSource::walk(&source, &ctx.cancel).await;
        walked.map_err(|e| ctx.interrupted_or(e))
    };
    let (repo, walked) = tokio::try_join!(ctx.open(), walk)?;

    let parent: Option<Id> = or_interrupted(&ctx.cancel, async {
        match &args.parent {
            Some(spec) => Ok(Some(repo.resolve_snapshot(spec).await?)),
            None => Ok(repo
                .snapshots()
                .await?
                .into_iter()
                .rev()
                .find(|(_, s)| s.hostname == host && s.paths == [source_str.as_str()])
                .map(|(id, _)| id)),
        }
    })
    .await?;
    if let Some(id) = &parent {
        tracing::debug!(parent = %id.short(), "using parent snapshot");
    }

    let (progress, line) = StatusLine::start(backup_line);
    let options = BackupOptions {
        parent,
        tags: args.tags.clone(),
        hostname: Some(host.clone()),
        progress,
        cancel: ctx.cancel.clone(),
        ..BackupOptions::default()
    };
    let result = repo.backup_walked(walked, options).await;
    line.finish().await;
    let done = result.map_err(|e| ctx.interrupted_or(e))?;

    let s = &done.snapshot.summary;
    // Every file read was either changed (the parent had it) or new.
    let files_new = s.files_read.saturating_sub(s.files_changed);
    let out = BackupJson {
        snapshot_id: done.snapshot_id.to_hex(),
        short_id: done.snapshot_id.short(),
        parent: parent.map(|id| id.to_hex()),
        path: source_str,
        hostname: done.snapshot.hostname.clone(),
        tags: done.snapshot.tags.clone(),
        files_new,
        files_changed: s.files_changed,
        files_unmodified: s.files_unchanged,
        dirs: s.dirs,
        symlinks: s.symlinks,
        hardlinks: s.hardlinks,
        bytes_total: s.bytes_total,
        bytes_read: s.bytes_read,
        bytes_new: s.bytes_new,
        bytes_uploaded: s.bytes_uploaded,
        chunks_new: s.chunks_new,
        chunks_reused: s.chunks_reused,
        trees_new: s.trees_new,
        tree_bytes_new: s.tree_bytes_new,
        packs_uploaded: s.packs_uploaded,
        duration_seconds: s.duration_ms as f64 / 1000.0,
    };
    if ctx.json {
        return print_json(&out);
    }
    print(&summary(&out))
}

fn summary(o: &BackupJson) -> String {
    let parent = match &o.parent {
        Some(p) => format!("parent {}", &p[..8.min(p.len())]),
        None => "no parent".into(),
    };
    format!(
        "Files:      {} new, {} changed, {} unmodified\n\
         Dirs:       {} ({} symlinks, {} hard links)\n\
         Read:       {} of {}\n\
         Added:      {} new in {} chunks, {} of trees in {} blobs, {} uploaded in {} pack(s)\n\
         Duration:   {:.2} s ({})\n\
         snapshot {} saved ({parent})\n",
        o.files_new,
        o.files_changed,
        o.files_unmodified,
        o.dirs,
        o.symlinks,
        o.hardlinks,
        bytes(o.bytes_read),
        bytes(o.bytes_total),
        bytes(o.bytes_new),
        o.chunks_new,
        bytes(o.tree_bytes_new),
        o.trees_new,
        bytes(o.bytes_uploaded),
        o.packs_uploaded,
        o.duration_seconds,
        rate(
            o.bytes_read,
            std::time::Duration::from_secs_f64(o.duration_seconds)
        ),
        o.short_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_paths() {
        assert_eq!(parse_tag("app=pg").unwrap(), "app=pg");
        assert_eq!(parse_tag("note=").unwrap(), "note=");
        assert!(parse_tag("app").is_err());
        assert!(parse_tag("=x").is_err());
        assert_eq!(normalize(Path::new("/a/./b/")).unwrap(), Path::new("/a/b"));
    }
}
