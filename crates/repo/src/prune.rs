//! Prune: deletes packs no snapshot needs and rewrites the index files that named them.
//!
//! Under an exclusive lock (see `lock.rs`), after checking that this machine's clock
//! agrees with the store's:
//! 1. list `index/`, `snapshots/`, `restorepoints/` and `packs/`: a listing that fails
//!    stops prune, which never takes a failed listing for an empty one;
//! 2. load every index file (one that does not load stops prune: its packs would look
//!    unused) and every restore point, each of whose snapshots must be listed;
//! 3. mark every blob reachable from every listed snapshot; a blob no index lists stops
//!    prune (the index is incomplete, so "unused" cannot be told from "unknown");
//! 4. keep each pack holding a used blob (a blob stored twice keeps one pack), and check
//!    that every indexed pack is in the pack listing (a partial listing shows here);
//! 5. write new index files for the kept packs of every index file that names a
//!    deleted pack; list again and check that nothing changed meanwhile; then delete
//!    the superseded index files, and only then the packs.
//!
//! Crash safety: until step 5 deletes, nothing is lost (new index files only repeat
//! entries). After the old index files are gone, a crash leaves packs no index names,
//! which `check` reports as harmless and the next prune deletes.
//!
//! Why the lock suffices, and the one age rule added. A writer holds a shared lock from
//! before it reads the index (it re-syncs the index after locking) until it has written
//! its snapshot or restore point, and prune cannot hold its exclusive lock at the same
//! time; so no data a writer relies on can be deleted under it, as long as every lock
//! stays live. The gap is a writer whose lock lapsed (its refreshes failed for a whole
//! lifetime, or the process was frozen) while it still runs: prune then takes the lock
//! for stale. Such a writer checks its lease before writing each index file and before
//! its snapshot, so it commits nothing after its lock may have looked stale, and its
//! index files written before that name only packs prune can see as indexed. What is
//! left is a pack it uploaded but had not yet indexed: prune keeps packs that no index
//! names while they are younger than `keep_unindexed_for` (by the store's clock), so a
//! writer that stalled right after uploading cannot later index a deleted pack. Packs
//! an index names but no snapshot uses are deleted at once: a lapsed writer fails its
//! lease check before it could make a snapshot that uses them.
//!
//! Readers (restore, check) take no lock, since destination profiles are read-only: a
//! restore running during a prune never loses data (prune keeps everything a snapshot
//! uses) but can fail reading a duplicate copy of a blob that prune just removed, and
//! then succeeds when run again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::backend::ObjectInfo;
use crate::crypto::aad;
use crate::error::{Error, Result};
use crate::forget::{ForgetPolicy, ForgetReport};
use crate::id::Id;
use crate::index::{BlobLocation, IndexFile, IndexFilePack, index_key};
use crate::lock::{DEFAULT_LOCK_TTL, DEFAULT_MAX_CLOCK_SKEW, LockGuard, LockKind, remove_locks};
use crate::pack::{EncodedBlob, PackEntry, decode_blob, pack_key};
use crate::packer::{INDEX_FLUSH_PACKS, Packer, write_index_file};
use crate::repository::Repository;
use crate::restorepoint::restore_point_key;
use crate::stored_tree::TreeReader;
use crate::tree::{ContentPart, NodeKind};

/// Objects read at once while planning.
const LOAD_CONCURRENCY: usize = 8;

/// Packs per rewritten index file (the packer writes 8; fewer, larger files load faster).
const INDEX_PACKS_PER_FILE: usize = 64;

/// Settings of one prune.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Plan and report only: no lock is taken and nothing is written or deleted.
    pub dry_run: bool,
    /// Refuse when this machine's clock and the store's differ by more.
    pub max_clock_skew: Duration,
    /// Packs no index names are kept while younger than this (by the store's clock):
    /// they may belong to a writer whose lock lapsed while it ran. See the module docs.
    pub keep_unindexed_for: Duration,
    /// Kept packs whose unused share of bytes is above this fraction (0.0 to 1.0) are
    /// repacked: their used blobs are copied, verified, into new packs and the old
    /// packs deleted. 1.0 never repacks.
    pub max_unused: f64,
    /// Lifetime of prune's lock between refreshes.
    pub lock_ttl: Duration,
    /// Stops prune between its steps (never halfway through one), releasing its lock;
    /// the repository is then as a crash at that point would leave it: consistent.
    pub cancel: CancellationToken,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            keep_unindexed_for: Duration::from_secs(60 * 60),
            max_unused: 0.2,
            lock_ttl: DEFAULT_LOCK_TTL,
            cancel: CancellationToken::new(),
        }
    }
}

/// What prune deleted (or with `dry_run`, would delete) and kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Snapshots whose data was kept.
    pub snapshots: u64,
    /// Restore points found (each names only kept snapshots).
    pub restore_points: u64,
    /// Blobs (chunks and trees) the snapshots use.
    pub blobs_used: u64,
    /// Packs in the store before pruning, and their bytes.
    pub packs_total: u64,
    pub bytes_total: u64,
    /// Packs deleted (unused indexed ones and old unindexed ones), and their bytes.
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    /// Of `packs_deleted`, packs no index named.
    pub unindexed_packs_deleted: u64,
    /// Packs no index names, kept because they are younger than `keep_unindexed_for`.
    pub unindexed_packs_kept: u64,
    /// Packs kept, and their bytes.
    pub packs_kept: u64,
    pub bytes_kept: u64,
    /// Packs whose used blobs were copied into new packs (they count as deleted), and
    /// the bytes copied.
    pub packs_repacked: u64,
    pub bytes_repacked: u64,
    /// Kept packs that also hold unused blobs, and the bytes of those blobs.
    pub packs_partly_used: u64,
    pub bytes_unused_in_kept_packs: u64,
    /// Index files written (for rewritten index files and repacked packs; a dry run
    /// estimates the latter) in place of `index_files_deleted`.
    pub index_files_written: u64,
    pub index_files_deleted: u64,
    /// Expired locks of other holders removed.
    pub stale_locks_removed: u64,
    /// The store's clock minus this machine's, as measured on prune's lock (0 for a
    /// dry run, which writes no lock).
    pub clock_skew_ms: i64,
}

/// Snapshots and restore points to treat as already gone (a dry run after a dry-run
/// forget).
#[derive(Debug, Default)]
struct Gone {
    snapshots: HashSet<Id>,
    points: HashSet<(String, Id)>,
}

/// One indexed pack.
#[derive(Debug)]
struct PackRec {
    id: Id,
    size: u64,
    entries: Vec<PackEntry>,
    /// Index files naming it.
    files: Vec<Id>,
}

/// Every index file's content, keyed for marking.
#[derive(Debug, Default)]
struct Loaded {
    packs: Vec<PackRec>,
    pack_pos: HashMap<Id, usize>,
    /// Blob -> (pack position, entry position) of its first copy.
    first: HashMap<Id, (usize, usize)>,
    /// Blob -> further packs holding a copy.
    dups: HashMap<Id, Vec<usize>>,
}

impl Loaded {
    fn add(&mut self, file: Id, index: &IndexFile) {
        for p in &index.packs {
            if let Some(&pos) = self.pack_pos.get(&p.id) {
                self.packs[pos].files.push(file);
                continue;
            }
            let pos = self.packs.len();
            let entries = p.entries();
            for (ei, e) in entries.iter().enumerate() {
                match self.first.get(&e.id) {
                    None => {
                        self.first.insert(e.id, (pos, ei));
                    }
                    Some(&(other, _)) if other != pos => {
                        self.dups.entry(e.id).or_default().push(pos);
                    }
                    Some(_) => {}
                }
            }
            self.packs.push(PackRec {
                id: p.id,
                size: p.size,
                entries,
                files: vec![file],
            });
            self.pack_pos.insert(p.id, pos);
        }
    }

    fn locate(&self, blob: &Id) -> Option<BlobLocation> {
        let &(pos, ei) = self.first.get(blob)?;
        let p = &self.packs[pos];
        let e = &p.entries[ei];
        Some(BlobLocation {
            pack: p.id,
            pack_size: p.size,
            kind: e.kind,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        })
    }
}

/// For each pack to repack, the entries to copy: used blobs not kept in another pack
/// that stays, each copied once.
fn plan_copies(
    loaded: &Loaded,
    repack: &[usize],
    pack_live: &[bool],
    live: &HashSet<Id>,
) -> Vec<(usize, Vec<usize>)> {
    let repacking: HashSet<usize> = repack.iter().copied().collect();
    let stays_elsewhere = |id: &Id| {
        let first = loaded.first.get(id).map(|&(p, _)| p);
        first
            .into_iter()
            .chain(loaded.dups.get(id).into_iter().flatten().copied())
            .any(|p| pack_live[p] && !repacking.contains(&p))
    };
    let mut copied: HashSet<Id> = HashSet::new();
    repack
        .iter()
        .map(|&pos| {
            let entries = loaded.packs[pos]
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| live.contains(&e.id) && !stays_elsewhere(&e.id))
                .filter(|(_, e)| copied.insert(e.id))
                .map(|(i, _)| i)
                .collect();
            (pos, entries)
        })
        .collect()
}

/// What a repack did.
#[derive(Debug, Default)]
struct Repacked {
    /// Packs left as they were because they did not verify.
    kept: HashSet<usize>,
    /// Index files written for the new packs.
    index_ids: Vec<Id>,
}

fn cancelled(cancel: &CancellationToken) -> Result<()> {
    if cancel.is_cancelled() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

fn refuse(reason: String) -> Error {
    Error::Refused {
        action: "prune",
        reason,
    }
}

impl Repository {
    /// Deletes packs no snapshot uses and rewrites the index (see the module docs of
    /// `prune.rs` for the order and the safety argument). Fails with [`Error::Locked`]
    /// when another process holds a live lock, [`Error::ClockSkew`] when the clocks
    /// disagree, and [`Error::Refused`] when a listing failed or the repository is not
    /// consistent enough to tell unused data from unknown data; in each of these cases
    /// nothing was deleted.
    pub async fn prune(&self, options: &PruneOptions) -> Result<PruneReport> {
        if options.dry_run {
            return self.prune_locked(options, None, &Gone::default()).await;
        }
        let lock = self.exclusive_lock("prune", options).await?;
        let result = self
            .prune_locked(options, Some(&lock), &Gone::default())
            .await;
        lock.release_quietly().await;
        result
    }

    /// Forget, then prune, under one exclusive lock. With `options.dry_run` neither
    /// changes anything, and prune's report counts what forget would remove as gone.
    pub async fn forget_and_prune(
        &self,
        policy: &ForgetPolicy,
        options: &PruneOptions,
    ) -> Result<(ForgetReport, PruneReport)> {
        policy.validate()?;
        if options.dry_run {
            let forgot = self.forget_locked(policy, None, &options.cancel).await?;
            let gone = Gone {
                snapshots: forgot.snapshots_removed.iter().map(|s| s.id).collect(),
                points: forgot
                    .restore_points_removed
                    .iter()
                    .map(|p| (p.application.clone(), p.id))
                    .collect(),
            };
            let pruned = self.prune_locked(options, None, &gone).await?;
            return Ok((forgot, pruned));
        }
        let lock = self.exclusive_lock("forget and prune", options).await?;
        let result = async {
            let forgot = self
                .forget_locked(policy, Some(&lock), &options.cancel)
                .await?;
            let pruned = self
                .prune_locked(options, Some(&lock), &Gone::default())
                .await?;
            Ok((forgot, pruned))
        }
        .await;
        lock.release_quietly().await;
        result
    }

    async fn exclusive_lock(&self, purpose: &str, options: &PruneOptions) -> Result<LockGuard> {
        LockGuard::acquire(
            self.backend().clone(),
            purpose,
            LockKind::Exclusive,
            options.lock_ttl,
            Some(options.max_clock_skew),
        )
        .await
    }

    async fn list_for_prune(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.backend().list(prefix).await.map_err(|e| {
            refuse(format!(
                "listing {prefix} failed ({e}); a failed listing is never taken for an \
                 empty one, so nothing was deleted; run prune again when the store is reachable"
            ))
        })
    }

    async fn prune_locked(
        &self,
        options: &PruneOptions,
        lock: Option<&LockGuard>,
        gone: &Gone,
    ) -> Result<PruneReport> {
        let mut report = PruneReport {
            dry_run: lock.is_none(),
            clock_skew_ms: lock.map_or(0, |l| {
                i64::try_from(l.store_offset().whole_milliseconds()).unwrap_or(i64::MAX)
            }),
            ..PruneReport::default()
        };
        if let Some(lock) = lock {
            // Everything acquire saw besides our own lock is stale, or it would have failed.
            let removed =
                remove_locks(self.backend(), lock.others.clone(), false, Some(lock.key())).await?;
            report.stale_locks_removed = removed.removed.len() as u64;
        }

        // 1. Listings.
        let index_listed = self.list_for_prune("index/").await?;
        let index_ids: Vec<Id> = index_listed
            .iter()
            .map(|o| {
                Id::parse(o.key.trim_start_matches("index/")).map_err(|_| {
                    refuse(format!(
                        "{} is not an index file name; move it out of the repository and run \
                         `ferry repo check`",
                        o.key
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let snapshot_ids: HashSet<Id> = self
            .list_for_prune("snapshots/")
            .await?
            .iter()
            .filter_map(|o| Id::parse(o.key.trim_start_matches("snapshots/")).ok())
            .collect();
        let points = self.list_restore_points().await.map_err(|e| {
            refuse(format!(
                "listing restorepoints/ failed ({e}); nothing was deleted"
            ))
        })?;
        let packs_listed: HashMap<Id, ObjectInfo> = self
            .list_for_prune("packs/")
            .await?
            .into_iter()
            .filter_map(|o| {
                let id = Id::parse(o.key.rsplit('/').next()?).ok()?;
                Some((id, o))
            })
            .collect();
        report.packs_total = packs_listed.len() as u64;
        report.bytes_total = packs_listed.values().map(|o| o.size).sum();

        // 2. Index files and restore points.
        let files: Vec<(Id, IndexFile)> = futures::stream::iter(index_ids.iter().copied())
            .map(|id| async move {
                self.load_object::<IndexFile>(&index_key(&id), aad::INDEX, &id)
                    .await
                    .map(|f| (id, f))
                    .map_err(|e| {
                        refuse(format!(
                            "index/{id} could not be read ({e}); prune needs every index file, \
                             or the packs it names would look unused; run `ferry repo check`"
                        ))
                    })
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut loaded = Loaded::default();
        for (id, file) in &files {
            loaded.add(*id, file);
        }
        drop(files);

        let points: Vec<_> = points
            .into_iter()
            .filter(|p| !gone.points.contains(&(p.application.clone(), p.id)))
            .collect();
        let refs = self.load_restore_point_refs(&points).await.map_err(|e| {
            refuse(format!(
                "a restore point could not be read ({e}); prune cannot tell which snapshots \
                 it needs; run `ferry repo check`"
            ))
        })?;
        report.restore_points = points.len() as u64;
        let live_snapshots: Vec<Id> = snapshot_ids
            .iter()
            .filter(|id| !gone.snapshots.contains(id))
            .copied()
            .collect();
        let live_set: HashSet<Id> = live_snapshots.iter().copied().collect();
        for ((app, id), r) in &refs {
            let key = restore_point_key(app, id);
            for snap in r.snapshots(&key).map_err(|e| refuse(e.to_string()))? {
                if !live_set.contains(&snap) {
                    return Err(refuse(format!(
                        "restore point {key} names snapshot {snap}, which is not in the listing \
                         of snapshots/: the listing is incomplete or the snapshot is lost; run \
                         `ferry repo check`, or forget that restore point"
                    )));
                }
            }
        }

        // 3. Mark.
        cancelled(&options.cancel)?;
        let live = self.mark(&loaded, &live_snapshots, &options.cancel).await?;
        report.snapshots = live_snapshots.len() as u64;
        report.blobs_used = live.len() as u64;

        // 4. Which packs stay.
        let mut pack_live = vec![false; loaded.packs.len()];
        for id in &live {
            if !loaded.dups.contains_key(id)
                && let Some(&(pos, _)) = loaded.first.get(id)
            {
                pack_live[pos] = true;
            }
        }
        for id in &live {
            if let (Some(others), Some(&(pos, _))) = (loaded.dups.get(id), loaded.first.get(id))
                && !pack_live[pos]
                && !others.iter().any(|&p| pack_live[p])
            {
                pack_live[pos] = true;
            }
        }
        for p in &loaded.packs {
            if !packs_listed.contains_key(&p.id) {
                return Err(refuse(format!(
                    "index files name {}, which the listing of packs/ does not show: the \
                     listing is incomplete or the pack is lost; nothing was deleted; run \
                     `ferry repo check`",
                    pack_key(&p.id)
                )));
            }
        }

        // Repack kept packs that are mostly unused: copy their used blobs into new packs
        // (indexed by new index files) first; the old packs then go like unused ones.
        let unused_of = |p: &PackRec| -> u64 {
            p.entries
                .iter()
                .filter(|e| !live.contains(&e.id))
                .map(|e| u64::from(e.length))
                .sum()
        };
        let mut repack: Vec<usize> = (0..loaded.packs.len())
            .filter(|&i| {
                let p = &loaded.packs[i];
                pack_live[i] && (unused_of(p) as f64) > options.max_unused * p.size as f64
            })
            .collect();
        let copies = plan_copies(&loaded, &repack, &pack_live, &live);
        let mut repack_index_ids = Vec::new();
        if let Some(lock) = lock
            && !copies.is_empty()
        {
            cancelled(&options.cancel)?;
            let done = self.repack(&loaded, &copies, lock, &options.cancel).await?;
            repack.retain(|pos| !done.kept.contains(pos));
            repack_index_ids = done.index_ids;
        }
        let copied: u64 = copies
            .iter()
            .filter(|(pos, _)| repack.contains(pos))
            .flat_map(|(pos, entries)| {
                entries
                    .iter()
                    .map(|&ei| u64::from(loaded.packs[*pos].entries[ei].length))
            })
            .sum();
        for &pos in &repack {
            pack_live[pos] = false;
        }
        report.packs_repacked = repack.len() as u64;
        report.bytes_repacked = copied;

        let store_now = lock.map_or_else(OffsetDateTime::now_utc, |l| l.store_now());
        let mut delete_packs: Vec<Id> = Vec::new();
        for (i, p) in loaded.packs.iter().enumerate() {
            if pack_live[i] {
                let unused = unused_of(p);
                if unused > 0 {
                    report.packs_partly_used += 1;
                    report.bytes_unused_in_kept_packs += unused;
                }
            } else {
                delete_packs.push(p.id);
            }
        }
        for (id, o) in &packs_listed {
            if loaded.pack_pos.contains_key(id) {
                continue;
            }
            let old = o
                .modified
                .is_some_and(|m| m + options.keep_unindexed_for <= store_now);
            if old {
                delete_packs.push(*id);
                report.unindexed_packs_deleted += 1;
            } else {
                report.unindexed_packs_kept += 1;
            }
        }
        report.packs_deleted = delete_packs.len() as u64;
        report.bytes_deleted = delete_packs
            .iter()
            .filter_map(|id| packs_listed.get(id))
            .map(|o| o.size)
            .sum();
        report.packs_kept = report.packs_total - report.packs_deleted;
        report.bytes_kept = report.bytes_total - report.bytes_deleted;

        // 5. The index rewrite: the kept packs of every file naming a deleted pack,
        // unless a file that stays names them too.
        let affected: HashSet<Id> = loaded
            .packs
            .iter()
            .enumerate()
            .filter(|(i, _)| !pack_live[*i])
            .flat_map(|(_, p)| p.files.iter().copied())
            .collect();
        let carried: Vec<&PackRec> = loaded
            .packs
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                pack_live[*i]
                    && p.files.iter().any(|f| affected.contains(f))
                    && p.files.iter().all(|f| affected.contains(f))
            })
            .map(|(_, p)| p)
            .collect();
        let new_files: Vec<IndexFile> = carried
            .chunks(INDEX_PACKS_PER_FILE)
            .map(|chunk| IndexFile {
                packs: chunk
                    .iter()
                    .map(|p| IndexFilePack::new(p.id, p.size, &p.entries))
                    .collect(),
            })
            .collect();
        // A dry run estimates the index files the repack would write.
        let repack_files = if lock.is_some() {
            repack_index_ids.len() as u64
        } else {
            let packs = copied.div_ceil(self.config().pack_target_size.max(1));
            packs.div_ceil(INDEX_FLUSH_PACKS as u64)
        };
        report.index_files_written = new_files.len() as u64 + repack_files;
        report.index_files_deleted = affected.len() as u64;

        let Some(lock) = lock else {
            return Ok(report);
        };
        if delete_packs.is_empty() && affected.is_empty() {
            tracing::info!("prune: nothing to delete");
            return Ok(report);
        }

        let mut new_ids = Vec::with_capacity(new_files.len());
        for file in &new_files {
            cancelled(&options.cancel)?;
            lock.ensure_live()?;
            new_ids.push(write_index_file(self, file).await?);
        }
        new_ids.extend(repack_index_ids);
        self.check_unchanged(&index_ids, &new_ids, &snapshot_ids, &points)
            .await?;

        cancelled(&options.cancel)?;
        lock.ensure_live()?;
        self.delete_all(affected.iter().map(index_key).collect())
            .await?;
        // Stopping here is fine too: the packs are unindexed now, the next prune's.
        cancelled(&options.cancel)?;
        lock.ensure_live()?;
        self.delete_all(delete_packs.iter().map(pack_key).collect())
            .await?;
        tracing::info!(
            packs = report.packs_deleted,
            bytes = report.bytes_deleted,
            index_files = report.index_files_deleted,
            "prune deleted unused packs"
        );
        // Our own index names deleted packs now.
        self.reload_index().await?;
        Ok(report)
    }

    /// Copies the planned blobs into new packs, one old pack downloaded at a time; each
    /// blob is decrypted and checked against its id first, so damage is never copied
    /// (a pack that does not verify is kept as it is and named in the log). The new
    /// packs and their index files are stored before this returns.
    async fn repack(
        &self,
        loaded: &Loaded,
        copies: &[(usize, Vec<usize>)],
        lock: &LockGuard,
        cancel: &CancellationToken,
    ) -> Result<Repacked> {
        let packer = Packer::spawn(self.clone(), 2, cancel.child_token(), Some(lock.lease()));
        let counters = packer.counters.clone();
        let tx = packer.sender();
        let mut kept = HashSet::new();
        let mut failed: Option<Error> = None;
        for (pos, entries) in copies {
            if cancel.is_cancelled() {
                failed = Some(Error::Cancelled);
                break;
            }
            let p = &loaded.packs[*pos];
            let data = match (self.backend())
                .get_at_most(&pack_key(&p.id), crate::limits::MAX_PACK_BYTES)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    failed = Some(e.into());
                    break;
                }
            };
            let wanted: Vec<PackEntry> = entries.iter().map(|&i| p.entries[i].clone()).collect();
            let (repo, pack) = (self.clone(), p.id);
            // Hashing and decrypting a pack is CPU work.
            let verified = tokio::task::spawn_blocking(move || -> Result<Vec<EncodedBlob>> {
                if Id::of_content(&data) != pack {
                    return Err(Error::corrupt(
                        pack_key(&pack),
                        "content hash does not match its name",
                    ));
                }
                wanted
                    .into_iter()
                    .map(|e| {
                        let start = e.offset as usize;
                        let sealed =
                            data.get(start..start + e.length as usize).ok_or_else(|| {
                                Error::corrupt(
                                    pack_key(&pack),
                                    "an indexed blob lies outside the pack",
                                )
                            })?;
                        decode_blob(repo.crypto(), e.kind, &e.id, sealed, e.raw_length, &pack)?;
                        Ok(EncodedBlob {
                            id: e.id,
                            kind: e.kind,
                            raw_length: e.raw_length,
                            bytes: sealed.to_vec(),
                        })
                    })
                    .collect()
            })
            .await
            .map_err(Error::join)?;
            match verified {
                Ok(blobs) => {
                    if !blobs.is_empty() && tx.send(blobs).await.is_err() {
                        // The packer stopped; `finish` says why.
                    }
                }
                Err(e) => {
                    tracing::warn!(pack = %p.id, error = %e, "not repacking a pack that does not verify; run `ferry repo check --read-data`");
                    kept.insert(*pos);
                }
            }
        }
        drop(tx);
        let finished = packer.finish().await;
        if let Some(e) = failed {
            return Err(e);
        }
        finished?;
        let index_ids = counters.index_ids.lock().clone();
        tracing::info!(
            packs = copies.len() - kept.len(),
            new_packs = counters.packs.load(std::sync::atomic::Ordering::Relaxed),
            "repacked mostly unused packs"
        );
        Ok(Repacked { kept, index_ids })
    }

    /// The blobs the given snapshots use (trees and chunks); refuses when any of them
    /// cannot be read or names a blob no index lists.
    async fn mark(
        &self,
        loaded: &Loaded,
        snapshots: &[Id],
        cancel: &CancellationToken,
    ) -> Result<HashSet<Id>> {
        let roots: Vec<(Id, Id)> = futures::stream::iter(snapshots.iter().copied())
            .map(|id| async move {
                self.load_snapshot(&id)
                    .await
                    .map(|s| (s.tree, id))
                    .map_err(|e| {
                        refuse(format!(
                            "snapshot {id} could not be read ({e}); prune cannot tell what it \
                         uses; run `ferry repo check`"
                        ))
                    })
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut live: HashSet<Id> = HashSet::new();
        let reader = &TreeReader::new(
            self.clone(),
            loaded
                .first
                .keys()
                .filter_map(|id| loaded.locate(id).map(|l| (*id, l))),
        );
        let mut frontier = roots;
        while !frontier.is_empty() {
            cancelled(cancel)?;
            let mut todo = Vec::new();
            for (tree, snap) in frontier {
                if !live.insert(tree) {
                    continue;
                }
                let loc = loaded.locate(&tree).ok_or_else(|| {
                    refuse(format!(
                        "snapshot {snap} needs tree {tree}, which no index lists; run \
                         `ferry repo check`"
                    ))
                })?;
                todo.push((tree, snap, loc));
            }
            let trees: Vec<_> = futures::stream::iter(todo)
                .map(|(tree, snap, loc)| async move {
                    self.load_tree_at(reader, &tree, &loc)
                        .await
                        .map(|t| (snap, t))
                        .map_err(|e| {
                            refuse(format!(
                                "tree {tree} of snapshot {snap} could not be read ({e}); run \
                                 `ferry repo check`"
                            ))
                        })
                })
                .buffer_unordered(LOAD_CONCURRENCY)
                .try_collect()
                .await?;
            let mut next = Vec::new();
            for (snap, loaded_tree) in trees {
                // Runs are tree blobs too: their packs must stay.
                live.extend(loaded_tree.runs.iter().copied());
                let tree = loaded_tree.tree;
                for node in &tree.nodes {
                    if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                        next.push((sub, snap));
                    }
                    for part in &node.content {
                        if let ContentPart::Chunk { id, .. } = part {
                            if !loaded.first.contains_key(id) {
                                return Err(refuse(format!(
                                    "snapshot {snap} uses chunk {id} ({}), which no index \
                                     lists; run `ferry repo check`",
                                    node.name.lossy()
                                )));
                            }
                            live.insert(*id);
                        }
                    }
                }
            }
            frontier = next;
        }
        Ok(live)
    }

    /// Lists again before deleting: the index must be the old files plus the new ones,
    /// and snapshots and restore points as they were. A difference means a writer that
    /// ignores locks, or listings that are not stable; either way deleting is unsafe.
    async fn check_unchanged(
        &self,
        old_index: &[Id],
        new_index: &[Id],
        snapshots: &HashSet<Id>,
        points: &[crate::restorepoint::ListedRestorePoint],
    ) -> Result<()> {
        let index_now: HashSet<Id> = self
            .list_for_prune("index/")
            .await?
            .iter()
            .filter_map(|o| Id::parse(o.key.trim_start_matches("index/")).ok())
            .collect();
        let expected: HashSet<Id> = old_index.iter().chain(new_index).copied().collect();
        let snapshots_now: HashSet<Id> = self
            .list_for_prune("snapshots/")
            .await?
            .iter()
            .filter_map(|o| Id::parse(o.key.trim_start_matches("snapshots/")).ok())
            .collect();
        let points_now: HashSet<(String, Id)> = self
            .list_restore_points()
            .await
            .map_err(|e| {
                refuse(format!(
                    "listing restorepoints/ failed ({e}); nothing was deleted"
                ))
            })?
            .into_iter()
            .map(|p| (p.application, p.id))
            .collect();
        let points_then: HashSet<(String, Id)> = points
            .iter()
            .map(|p| (p.application.clone(), p.id))
            .collect();
        let changed = [
            ("index/", index_now != expected),
            ("snapshots/", snapshots_now != *snapshots),
            ("restorepoints/", points_now != points_then),
        ];
        if let Some((what, _)) = changed.iter().find(|(_, c)| *c) {
            return Err(refuse(format!(
                "the listing of {what} changed while prune held its exclusive lock (a writer \
                 that ignores locks, or a store whose listings are not stable); nothing was \
                 deleted, the index files prune wrote only repeat existing entries"
            )));
        }
        Ok(())
    }
}
