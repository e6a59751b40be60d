//! Backup: walk → read → chunk → hash → compress → encrypt → pack → upload.
//!
//! The walk records metadata for every entry (memory grows with the entry count, not
//! with bytes). Unchanged files are then matched against the parent snapshot. Files
//! left to read are chunked by a few blocking readers; chunks are hashed, compressed
//! and sealed on the blocking pool under a semaphore sized to the cores; sealed blobs
//! flow through bounded channels into the packer, which keeps several uploads in flight.
//! Trees are written bottom-up after the files, the snapshot last.
//!
//! `walk.rs` walks the source and matches the parent snapshot, `read.rs` reads, chunks
//! and seals file contents; trees and the snapshot are built here.

mod read;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::chunker;
use crate::error::{Error, Result};

use crate::id::Id;
use crate::lock::{Lease, LockGuard, LockKind, hostname};
use crate::pack::{BlobType, BufPool, EncodedBlob, encode_blob};
use crate::packer::{Dedup, Packer};
use crate::progress::{BackupProgress, Counters, Reporter};
use crate::repository::Repository;
use crate::snapshot::{RootMeta, Snapshot, SnapshotSummary};
use crate::stored_tree::encode_tree;
use crate::tree::{ContentPart, Node, NodeKind, Tree};

use read::{BATCH_BYTES, BATCH_FILES, Ctx, FileJob, INLINE_FILE_MAX, PACKER_GONE, ReadJob};
use walk::{Entry, Walk, match_parent, walk};

/// Settings of one backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Snapshot to compare against: files with the same size, mtime, ctime and inode
    /// reuse its chunk lists without being read.
    pub parent: Option<Id>,
    pub tags: Vec<String>,
    /// Recorded host name; defaults to this machine's.
    pub hostname: Option<String>,
    /// Receives progress about five times a second and a final update.
    pub progress: Option<watch::Sender<BackupProgress>>,
    /// Cancels the backup; nothing visible (no snapshot) is left behind.
    pub cancel: CancellationToken,
    /// Files read at once.
    pub read_concurrency: usize,
    /// Chunks hashed, compressed and sealed at once.
    pub cpu_concurrency: usize,
    /// Packs uploaded at once.
    pub upload_concurrency: usize,
    /// Lifetime of the writer lock between refreshes.
    pub lock_ttl: Duration,
}

impl Default for BackupOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BackupOptions {
            parent: None,
            tags: Vec::new(),
            hostname: None,
            progress: None,
            cancel: CancellationToken::new(),
            read_concurrency: 2,
            cpu_concurrency: cores,
            upload_concurrency: 4,
            lock_ttl: Duration::from_secs(30 * 60),
        }
    }
}

/// What a backup produced.
#[derive(Debug, Clone)]
pub struct BackupResult {
    pub snapshot_id: Id,
    pub snapshot: Snapshot,
}

// Counter slots.
const FILES_TOTAL: usize = 0;
const FILES_DONE: usize = 1;
const FILES_UNCHANGED: usize = 2;
const BYTES_TOTAL: usize = 3;
const BYTES_READ: usize = 4;
const BYTES_NEW: usize = 5;
const CHUNKS_NEW: usize = 6;
const CHUNKS_REUSED: usize = 7;
const TREES_NEW: usize = 8;
/// Files the parent snapshot has under the same name whose content had to be re-read.
const FILES_CHANGED: usize = 9;
/// Plaintext bytes of new tree blobs (directories and content runs).
const TREE_BYTES_NEW: usize = 10;
type BackupCounters = Counters<11>;

/// Blocking: serializes trees bottom-up and sends the new ones to the packer.
fn build_trees(
    entries: &mut [Entry],
    repo: &Repository,
    dedup: &Dedup,
    counters: &BackupCounters,
    tx: &mpsc::Sender<Vec<EncodedBlob>>,
) -> Result<Id> {
    for idx in (0..entries.len()).rev() {
        if entries[idx].node.kind != NodeKind::Dir {
            continue;
        }
        let nodes: Vec<Node> = entries[idx]
            .children
            .iter()
            .map(|&c| entries[c].node.clone())
            .collect();
        let tree = Tree { nodes };
        let encoded = encode_tree(&tree, repo.crypto(), repo.config().stores_runs())?;
        let mut new = Vec::new();
        for (blob_id, bytes) in &encoded.blobs {
            if dedup.claim(blob_id) {
                counters.add(TREES_NEW, 1);
                counters.add(TREE_BYTES_NEW, bytes.len() as u64);
                let blob = encode_blob(
                    repo.crypto(),
                    BlobType::Tree,
                    *blob_id,
                    bytes,
                    repo.config().compression_level,
                )?;
                new.push(blob);
            }
        }
        if !new.is_empty() {
            tx.blocking_send(new)
                .map_err(|_| Error::Internal(PACKER_GONE.into()))?;
        }
        let id = encoded.root;
        entries[idx].node.subtree = Some(id);
        // Children are no longer needed once their parent's tree is built.
        entries[idx].children = Vec::new();
    }
    entries[0]
        .node
        .subtree
        .ok_or_else(|| Error::Internal("root tree missing".into()))
}

/// A source walked before its backup starts, so the walk can run while the repository
/// is opened: `ferry repo backup` walks while the key is derived, which otherwise keeps
/// one core busy alone for a tenth of a second or more.
pub struct WalkedSource {
    path: PathBuf,
    walk: Walk,
}

impl std::fmt::Debug for WalkedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalkedSource")
            .field("path", &self.path)
            .field("entries", &self.walk.entries.len())
            .finish()
    }
}

impl WalkedSource {
    /// Walks `source` (a directory tree, a file or a block device) on the blocking pool.
    pub async fn walk(source: &Path, cancel: &CancellationToken) -> Result<Self> {
        let (src, cancel) = (source.to_path_buf(), cancel.clone());
        let walk = tokio::task::spawn_blocking(move || walk(&src, &cancel))
            .await
            .map_err(Error::join)??;
        Ok(WalkedSource {
            path: source.to_path_buf(),
            walk,
        })
    }
}

impl Repository {
    /// Backs up a directory tree or a single file (a block device is read as an
    /// image). The snapshot becomes visible only after every pack and index it needs.
    pub async fn backup(&self, source: &Path, options: BackupOptions) -> Result<BackupResult> {
        let walked = WalkedSource::walk(source, &options.cancel).await?;
        self.backup_walked(walked, options).await
    }

    /// [`Repository::backup`] of a source walked beforehand.
    pub async fn backup_walked(
        &self,
        source: WalkedSource,
        options: BackupOptions,
    ) -> Result<BackupResult> {
        let WalkedSource { path, walk } = source;
        let source = path.as_path();
        let span = tracing::info_span!("backup", source = %source.display());
        async move {
            let lock = LockGuard::acquire(
                self.backend().clone(),
                "backup",
                LockKind::Shared,
                options.lock_ttl,
                None,
            )
            .await?;
            let result = async {
                // The index loaded at open may predate a prune; deduplicating against
                // it could reference deleted packs.
                self.sync_index().await?;
                crate::packer::adopt_unindexed_packs(self).await?;
                self.backup_locked(source, walk, &options, &lock.lease())
                    .await
            }
            .await;
            lock.release_quietly().await;
            result
        }
        .instrument(span)
        .await
    }

    async fn backup_locked(
        &self,
        source: &Path,
        walk: Walk,
        options: &BackupOptions,
        lease: &Lease,
    ) -> Result<BackupResult> {
        let counters: Arc<BackupCounters> = BackupCounters::new();
        let cancel = options.cancel.clone();
        let packer = Packer::spawn(
            self.clone(),
            options.upload_concurrency,
            cancel.child_token(),
            Some(lease.clone()),
        );
        let reporter = {
            let (c, p) = (counters.clone(), packer.counters.clone());
            Reporter::spawn(options.progress.clone(), move |done| BackupProgress {
                files_total: c.get(FILES_TOTAL),
                files_done: c.get(FILES_DONE),
                files_unchanged: c.get(FILES_UNCHANGED),
                bytes_total: c.get(BYTES_TOTAL),
                bytes_read: c.get(BYTES_READ),
                bytes_new: c.get(BYTES_NEW),
                bytes_uploaded: p.bytes.load(Ordering::Relaxed),
                chunks_new: c.get(CHUNKS_NEW),
                chunks_reused: c.get(CHUNKS_REUSED),
                packs_uploaded: p.packs.load(Ordering::Relaxed),
                elapsed: c.elapsed(),
                done,
            })
        };
        let ctx = Arc::new(Ctx {
            repo: self.clone(),
            dedup: Dedup::new(self.clone()),
            cpu: Semaphore::new(options.cpu_concurrency.max(1)),
            cpu_concurrency: options.cpu_concurrency.max(1),
            packer_tx: packer.sender(),
            counters: counters.clone(),
            cancel: cancel.clone(),
            // About the blocks in flight: one being read and a few being sealed per
            // file read at once.
            read_blocks: BufPool::new(
                2 * options.read_concurrency.max(1),
                chunker::block_size(&self.config().chunker),
            ),
            root: std::sync::OnceLock::new(),
        });
        let packer_counters = packer.counters.clone();
        // `produce` consumes the context so every sender to the packer is gone before
        // `finish` waits for the channel to close.
        let produced = self.produce(walk, options, ctx).await;
        // The packer flushes what it has either way, so packs already uploaded are
        // indexed for the next run; its error is the root cause when it stopped first.
        let packed = packer.finish().await;
        let outcome = match (produced, packed) {
            (Ok(v), Ok(())) => Ok(v),
            (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
            (Err(e), Err(pe)) => match &e {
                Error::Internal(m) if m == PACKER_GONE => Err(pe),
                _ => Err(e),
            },
        };
        let result = match outcome {
            Ok(_) if cancel.is_cancelled() => Err(Error::Cancelled),
            Ok((tree, mut summary, root_meta)) => {
                summary.files_read = counters.get(FILES_DONE) - counters.get(FILES_UNCHANGED);
                summary.files_unchanged = counters.get(FILES_UNCHANGED);
                summary.files_changed = counters.get(FILES_CHANGED);
                summary.bytes_read = counters.get(BYTES_READ);
                summary.bytes_new = counters.get(BYTES_NEW);
                summary.chunks_new = counters.get(CHUNKS_NEW);
                summary.chunks_reused = counters.get(CHUNKS_REUSED);
                summary.trees_new = counters.get(TREES_NEW);
                summary.tree_bytes_new = counters.get(TREE_BYTES_NEW);
                summary.bytes_uploaded = packer_counters.bytes.load(Ordering::Relaxed);
                summary.packs_uploaded = packer_counters.packs.load(Ordering::Relaxed);
                summary.duration_ms = counters.elapsed().as_millis() as u64;
                let path = std::path::absolute(source).unwrap_or_else(|_| source.to_path_buf());
                let snapshot = Snapshot {
                    time: OffsetDateTime::now_utc(),
                    hostname: options.hostname.clone().unwrap_or_else(hostname),
                    paths: vec![path.to_string_lossy().into_owned()],
                    tags: options.tags.clone(),
                    parent: options.parent,
                    tree,
                    root: root_meta,
                    summary,
                };
                // The snapshot is the commit: only while no prune can have run.
                lease.ensure_live()?;
                let snapshot_id = self.save_snapshot_unlocked(&snapshot).await?;
                tracing::info!(
                    snapshot = %snapshot_id.short(),
                    files = snapshot.summary.files,
                    bytes_new = snapshot.summary.bytes_new,
                    bytes_uploaded = snapshot.summary.bytes_uploaded,
                    "backup complete"
                );
                Ok(BackupResult {
                    snapshot_id,
                    snapshot,
                })
            }
            Err(e) => Err(e),
        };
        reporter.finish().await;
        result
    }

    async fn produce(
        &self,
        walk: Walk,
        options: &BackupOptions,
        ctx: Arc<Ctx>,
    ) -> Result<(Id, SnapshotSummary, Option<RootMeta>)> {
        let Walk {
            mut entries,
            root_meta,
            skipped,
            root,
        } = walk;
        let _ = ctx.root.set(root);
        if skipped > 0 {
            tracing::warn!(skipped, "special files were not backed up");
        }
        let mut summary = SnapshotSummary::default();
        for e in &entries[1..] {
            match e.node.kind {
                NodeKind::File | NodeKind::DeviceImage => {
                    summary.files += 1;
                    ctx.counters.add(BYTES_TOTAL, e.node.size);
                }
                NodeKind::Dir => summary.dirs += 1,
                NodeKind::Symlink => summary.symlinks += 1,
                NodeKind::Hardlink => summary.hardlinks += 1,
            }
        }
        ctx.counters.add(FILES_TOTAL, summary.files);

        if let Some(parent) = options.parent {
            let snap = self.load_snapshot(&parent).await?;
            match_parent(self, snap.tree, &mut entries, &ctx.counters).await?;
        }

        // Small files go in batches, large ones one by one through the shared CPU
        // stage; as many batches or files are in flight as there are cores.
        let mut jobs: Vec<ReadJob> = Vec::new();
        let mut batch: Vec<FileJob> = Vec::new();
        let mut batch_bytes = 0u64;
        for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.needs_read) {
            let job = FileJob {
                idx: i,
                path: e.path.clone(),
                rel: e.rel.clone(),
                kind: e.node.kind,
            };
            if e.node.kind == NodeKind::File && e.node.size <= INLINE_FILE_MAX {
                batch.push(job);
                batch_bytes += e.node.size;
                if batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_FILES {
                    jobs.push(ReadJob::Small(std::mem::take(&mut batch)));
                    batch_bytes = 0;
                }
            } else {
                jobs.push(ReadJob::Large(job));
            }
        }
        if !batch.is_empty() {
            jobs.push(ReadJob::Small(batch));
        }
        let in_flight = options.read_concurrency.max(options.cpu_concurrency).max(1);
        let read: Vec<Vec<(usize, Vec<ContentPart>)>> = futures::stream::iter(jobs)
            .map(|job| {
                let ctx = ctx.clone();
                async move {
                    match job {
                        ReadJob::Small(batch) => ctx.read_small_files(batch).await,
                        ReadJob::Large(job) => Ok(vec![ctx.read_file(job).await?]),
                    }
                }
            })
            .buffer_unordered(in_flight)
            .try_collect()
            .await?;
        let read = read.into_iter().flatten();
        for (idx, parts) in read {
            let node = &mut entries[idx].node;
            node.size = parts.iter().map(ContentPart::len).sum();
            node.content = parts;
        }
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        summary.bytes_total = entries
            .iter()
            .filter(|e| matches!(e.node.kind, NodeKind::File | NodeKind::DeviceImage))
            .map(|e| e.node.size)
            .sum();

        let tree = tokio::task::spawn_blocking(move || {
            build_trees(
                &mut entries,
                &ctx.repo,
                &ctx.dedup,
                &ctx.counters,
                &ctx.packer_tx,
            )
        })
        .await
        .map_err(Error::join)??;
        Ok((tree, summary, root_meta))
    }
}
