//! Restore: trees are loaded and validated first (every name must stay inside the
//! target), then directories and symlinks are created, files are filled in parallel
//! from verified chunks (holes left unwritten, so sparse files stay sparse), hard links
//! are made, and metadata is applied last, deepest directories first.
//!
//! `plan.rs` loads and checks the trees and plans the range requests, `fill.rs` fills
//! files from them, and `entries.rs` makes the other entries and applies metadata.

mod entries;
mod fill;
mod plan;
mod sync;
#[cfg(test)]
mod tests;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::fsutil::{Beneath, fs_error, is_root};
use crate::id::Id;
use crate::progress::{Counters, Reporter, RestoreProgress};
use crate::repository::Repository;
use entries::{Meta, MetaPolicy, Target};
use fill::{Budget, MAX_BYTES_IN_FLIGHT};
use plan::Work;

/// Settings of one restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub progress: Option<watch::Sender<RestoreProgress>>,
    pub cancel: CancellationToken,
    /// Files filled at once.
    pub file_concurrency: usize,
    /// Range downloads in flight per file.
    pub download_concurrency: usize,
    /// Restore uid/gid; `None` means "when running as root".
    pub restore_ownership: Option<bool>,
    /// Flush every restored file to disk before reporting success (one `syncfs` of
    /// the target's file system at the end, not an fsync per file: tens of thousands
    /// of small files would each wait for the disk).
    pub fsync: bool,
    /// Keep setuid and setgid bits on restored files. Off by default: a snapshot is
    /// data from whoever could write the volume (or the repository), and a setuid
    /// program restored by a root agent would run as its owner on the node. For an
    /// administrator restoring a system image on purpose. Setgid on directories is
    /// always kept: it only sets the group of entries created inside. Restore never
    /// makes device nodes, FIFOs or sockets (backups do not record them; a device
    /// image is restored as a regular file holding its bytes).
    pub keep_setuid_setgid: bool,
    /// Restore over what the target holds (an earlier restore of this repository)
    /// instead of requiring it empty: entries the snapshot lacks are removed, files the
    /// snapshot restored there last left unchanged (same content by chunk ids, size and
    /// mtime as then) are kept, files changed since are patched (only the chunks they
    /// lack written), and the rest is downloaded and written (`sync.rs`).
    pub sync: bool,
    /// With `sync`: go ahead even when files of the target changed since the snapshot
    /// restored there last (someone else wrote there), replacing them. Without it such
    /// a restore is refused, naming them, before anything changes.
    pub overwrite_changes: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            progress: None,
            cancel: CancellationToken::new(),
            // Small files are mostly waiting on the store's latency, so many at once.
            file_concurrency: 16,
            download_concurrency: 4,
            restore_ownership: None,
            fsync: true,
            keep_setuid_setgid: false,
            sync: false,
            overwrite_changes: false,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes_written: u64,
    pub bytes_downloaded: u64,
    /// Files (and their bytes) a sync restore found unchanged and did not write.
    pub files_unchanged: u64,
    pub bytes_unchanged: u64,
    pub duration: Duration,
}

const FILES_TOTAL: usize = 0;
const FILES_DONE: usize = 1;
const BYTES_TOTAL: usize = 2;
const BYTES_WRITTEN: usize = 3;
const BYTES_DOWNLOADED: usize = 4;
type RestoreCounters = Counters<5>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| fs_error("restore", op, path, e)
}

impl Repository {
    /// Restores a snapshot into `target`, which must be absent or an empty directory.
    pub async fn restore(
        &self,
        snapshot: &Id,
        target: &Path,
        options: RestoreOptions,
    ) -> Result<RestoreSummary> {
        let span = tracing::info_span!("restore", snapshot = %snapshot.short(), target = %target.display());
        async move {
            let counters: Arc<RestoreCounters> = RestoreCounters::new();
            let reporter = {
                let c = counters.clone();
                Reporter::spawn(options.progress.clone(), move |done| RestoreProgress {
                    files_total: c.get(FILES_TOTAL),
                    files_done: c.get(FILES_DONE),
                    bytes_total: c.get(BYTES_TOTAL),
                    bytes_written: c.get(BYTES_WRITTEN),
                    bytes_downloaded: c.get(BYTES_DOWNLOADED),
                    elapsed: c.elapsed(),
                    done,
                })
            };
            let result = self
                .restore_inner(snapshot, target, &options, &counters)
                .await;
            reporter.finish().await;
            if let Ok(s) = &result {
                tracing::info!(files = s.files, bytes = s.bytes_written, "restore complete");
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn restore_inner(
        &self,
        snapshot_id: &Id,
        target: &Path,
        options: &RestoreOptions,
        counters: &Arc<RestoreCounters>,
    ) -> Result<RestoreSummary> {
        // A handle opened before another process wrote this snapshot, or before a prune
        // replaced index files, would look blobs up in an outdated index.
        self.sync_index().await?;
        let snapshot = self.load_snapshot(snapshot_id).await?;
        if options.sync {
            fs::create_dir_all(target).map_err(io_err("create directory", target))?;
        } else {
            prepare_target(target)?;
        }
        // Every path below is resolved from this descriptor without following links.
        let root = Arc::new(Beneath::open_dir(target).map_err(io_err("open", target))?);
        let plan = Arc::new(self.plan(snapshot.tree, target, &options.cancel).await?);
        let policy = MetaPolicy {
            ownership: options.restore_ownership.unwrap_or_else(is_root),
            keep_setuid_setgid: options.keep_setuid_setgid,
        };
        let kept = match options.sync {
            true => {
                self.prune_target(&plan, &root, target, policy, options)
                    .await?
            }
            false => sync::Kept::default(),
        };

        let mut summary = RestoreSummary {
            files: plan.files.len() as u64,
            dirs: plan.dirs.len() as u64,
            symlinks: plan.symlinks.len() as u64,
            hardlinks: plan.hardlinks.len() as u64,
            files_unchanged: kept.files.len() as u64,
            bytes_unchanged: kept.bytes,
            ..Default::default()
        };
        counters.add(FILES_TOTAL, summary.files);
        counters.add(FILES_DONE, summary.files_unchanged);
        let all_bytes: u64 = plan.files.iter().map(|(_, n)| n.size).sum();
        counters.add(BYTES_TOTAL, all_bytes - kept.bytes);

        {
            let (plan, root) = (plan.clone(), root.clone());
            let existing_dirs_ok = options.sync;
            tokio::task::spawn_blocking(move || {
                entries::create_dirs_and_symlinks(&plan, &root, existing_dirs_ok)
            })
            .await
            .map_err(Error::join)??;
        }

        let work = self.schedule(&plan, &kept)?;
        tracing::debug!(
            requests = work.iter().map(Work::requests).sum::<usize>(),
            bytes = work.iter().map(Work::download_bytes).sum::<u64>(),
            "range requests planned"
        );
        let budget = &Budget::new(MAX_BYTES_IN_FLIGHT);
        futures::stream::iter(work)
            .map(|w| {
                let (plan, root) = (plan.clone(), root.clone());
                async move {
                    match w {
                        Work::Batch(b) => {
                            self.restore_batch(&plan, &root, policy, b, options, counters, budget)
                                .await
                        }
                        Work::File(f) => {
                            let (path, node) = &plan.files[f.index];
                            let file = Target {
                                root: &root,
                                path,
                                meta: Meta::of(node),
                                policy,
                            };
                            self.restore_file(file, f, options, counters, budget).await
                        }
                    }
                }
            })
            .buffer_unordered(options.file_concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        if options.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }

        {
            let (root, root_meta, target) = (root.clone(), snapshot.root, target.to_path_buf());
            tokio::task::spawn_blocking(move || {
                entries::link_and_finish_metadata(&plan, &root, policy, root_meta, &target)
            })
            .await
            .map_err(Error::join)??;
        }

        // Every complete restore, so that the next sync into it can keep what is unchanged.
        sync::record(&root, target, snapshot_id);
        if options.fsync {
            let target = target.to_path_buf();
            tokio::task::spawn_blocking(move || -> Result<()> {
                rustix::fs::syncfs(root.fd()).map_err(|e| Error::io("sync", &target, e.into()))
            })
            .await
            .map_err(Error::join)??;
        }

        summary.bytes_written = counters.get(BYTES_WRITTEN);
        summary.bytes_downloaded = counters.get(BYTES_DOWNLOADED);
        summary.duration = counters.elapsed();
        Ok(summary)
    }
}

impl Repository {
    /// Sync restores: forgets the target's recorded snapshot, loads its files (none
    /// when it is gone from the repository, or was never recorded), and prunes the
    /// target against the plan.
    async fn prune_target(
        &self,
        plan: &Arc<plan::Plan>,
        root: &Arc<Beneath>,
        target: &Path,
        policy: MetaPolicy,
        options: &RestoreOptions,
    ) -> Result<sync::Kept> {
        let recorded = sync::recorded(root);
        let previous = match &recorded {
            Some(id) => match self.restored(id, target, options).await {
                Ok(previous) => Some(previous),
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                Err(e) => {
                    tracing::info!(previous = %id.short(), error = %e, "earlier restore unreadable; writing every file");
                    None
                }
            },
            None => None,
        };
        let previous = Arc::new(previous.unwrap_or_default());
        if let Some(id) = recorded.filter(|_| !options.overwrite_changes) {
            let (previous, root, target_owned) =
                (previous.clone(), root.clone(), target.to_path_buf());
            let (changed, more) =
                tokio::task::spawn_blocking(move || sync::changes(&previous, &root, &target_owned))
                    .await
                    .map_err(Error::join)??;
            if !changed.is_empty() {
                return Err(Error::DestinationChanged {
                    target: target.to_path_buf(),
                    snapshot: id.short(),
                    changed,
                    more,
                });
            }
        }
        sync::forget(root, target)?;
        let (plan, root, target) = (plan.clone(), root.clone(), target.to_path_buf());
        tokio::task::spawn_blocking(move || sync::prune(&plan, &previous, &root, &target, policy))
            .await
            .map_err(Error::join)?
    }

    /// What snapshot `id` restored into `target`.
    async fn restored(
        &self,
        id: &Id,
        target: &Path,
        options: &RestoreOptions,
    ) -> Result<sync::Previous> {
        let snapshot = self.load_snapshot(id).await?;
        let plan = self.plan(snapshot.tree, target, &options.cancel).await?;
        let others = plan
            .dirs
            .into_iter()
            .map(|(p, _)| p)
            .chain(plan.symlinks.into_iter().map(|(p, _)| p))
            .chain(plan.hardlinks.into_iter().map(|(p, _, _)| p))
            .collect();
        Ok(sync::Previous {
            files: plan.files.into_iter().collect(),
            others,
        })
    }
}

fn prepare_target(target: &Path) -> Result<()> {
    match fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::invalid(
                    "restore target",
                    format!(
                        "{} is not empty; restore into an empty or new directory",
                        target.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(target).map_err(io_err("create directory", target))
        }
        Err(e) => Err(Error::io("open restore target", target, e)),
    }
}
