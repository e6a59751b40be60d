//! The prune plan: what stays, what is repacked and what goes, decided phase by phase
//! (the steps of the module docs of `prune`), then carried out by [`PrunePlan::execute`].

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use super::mark::{Loaded, PackRec};
use super::repack::plan_copies;
use super::{
    Gone, INDEX_PACKS_PER_FILE, LOAD_CONCURRENCY, PruneOptions, PruneReport, cancelled, refuse,
};
use crate::backend::ObjectInfo;
use crate::crypto::aad;
use crate::error::Result;
use crate::id::Id;
use crate::index::{IndexFile, IndexFilePack, index_key};
use crate::lock::{LockGuard, remove_locks};
use crate::pack::pack_key;
use crate::packer::{INDEX_FLUSH_PACKS, write_index_file};
use crate::repository::Repository;
use crate::restorepoint::{ListedRestorePoint, restore_point_key};

/// One prune, from its listings to the deletions it decided. Each phase is a method, run
/// in order by `Repository::prune_locked`; nothing is written or deleted before
/// [`PrunePlan::execute`] (and, with a lock, [`PrunePlan::repack`]).
#[derive(Debug)]
pub(super) struct PrunePlan<'a> {
    repo: &'a Repository,
    options: &'a PruneOptions,
    /// None for a dry run.
    lock: Option<&'a LockGuard>,
    pub report: PruneReport,
    /// Step 1: the listings.
    index_ids: Vec<Id>,
    snapshot_ids: HashSet<Id>,
    points: Vec<ListedRestorePoint>,
    packs_listed: HashMap<Id, ObjectInfo>,
    /// Step 2: every index file's content, and the snapshots kept.
    loaded: Loaded,
    live_snapshots: Vec<Id>,
    /// Step 3: the blobs the kept snapshots use.
    live: HashSet<Id>,
    /// Step 4: per pack of `loaded`, whether it stays.
    pack_live: Vec<bool>,
    /// Packs repacked (they go), the bytes copied and the index files written for them.
    repacked: Vec<usize>,
    bytes_copied: u64,
    repack_index_ids: Vec<Id>,
    /// Step 5: packs to delete, index files to delete, and those written in their place.
    delete_packs: Vec<Id>,
    affected: HashSet<Id>,
    new_files: Vec<IndexFile>,
}

impl<'a> PrunePlan<'a> {
    pub fn new(
        repo: &'a Repository,
        options: &'a PruneOptions,
        lock: Option<&'a LockGuard>,
    ) -> Self {
        PrunePlan {
            repo,
            options,
            lock,
            report: PruneReport {
                dry_run: lock.is_none(),
                clock_skew_ms: lock.map_or(0, |l| {
                    i64::try_from(l.store_offset().whole_milliseconds()).unwrap_or(i64::MAX)
                }),
                ..PruneReport::default()
            },
            index_ids: Vec::new(),
            snapshot_ids: HashSet::new(),
            points: Vec::new(),
            packs_listed: HashMap::new(),
            loaded: Loaded::default(),
            live_snapshots: Vec::new(),
            live: HashSet::new(),
            pack_live: Vec::new(),
            repacked: Vec::new(),
            bytes_copied: 0,
            repack_index_ids: Vec::new(),
            delete_packs: Vec::new(),
            affected: HashSet::new(),
            new_files: Vec::new(),
        }
    }

    /// Removes the expired locks of other holders: everything the lock's acquire saw
    /// besides our own lock is stale, or it would have failed.
    pub async fn remove_stale_locks(&mut self) -> Result<()> {
        if let Some(lock) = self.lock {
            let removed = remove_locks(
                self.repo.backend(),
                lock.others.clone(),
                false,
                Some(lock.key()),
            )
            .await?;
            self.report.stale_locks_removed = removed.removed.len() as u64;
        }
        Ok(())
    }

    /// Step 1: lists index files, snapshots, restore points and packs.
    pub async fn list(&mut self) -> Result<()> {
        let repo = self.repo;
        let index_listed = repo.list_for_prune("index/").await?;
        self.index_ids = index_listed
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
        self.snapshot_ids = repo
            .list_for_prune("snapshots/")
            .await?
            .iter()
            .filter_map(|o| Id::parse(o.key.trim_start_matches("snapshots/")).ok())
            .collect();
        self.points = repo.list_restore_points().await.map_err(|e| {
            refuse(format!(
                "listing restorepoints/ failed ({e}); nothing was deleted"
            ))
        })?;
        self.packs_listed = repo
            .list_for_prune("packs/")
            .await?
            .into_iter()
            .filter_map(|o| {
                let id = Id::parse(o.key.rsplit('/').next()?).ok()?;
                Some((id, o))
            })
            .collect();
        self.report.packs_total = self.packs_listed.len() as u64;
        self.report.bytes_total = self.packs_listed.values().map(|o| o.size).sum();
        Ok(())
    }

    /// Step 2: loads every index file, then every restore point not `gone`, and checks
    /// that each snapshot a restore point names is listed.
    pub async fn load(&mut self, gone: &Gone) -> Result<()> {
        let repo = self.repo;
        let files: Vec<(Id, IndexFile)> = futures::stream::iter(self.index_ids.iter().copied())
            .map(|id| async move {
                repo.load_object::<IndexFile>(&index_key(&id), aad::INDEX, &id)
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
        for (id, file) in &files {
            self.loaded.add(*id, file);
        }
        drop(files);

        self.points
            .retain(|p| !gone.points.contains(&(p.application.clone(), p.id)));
        let refs = repo
            .load_restore_point_refs(&self.points)
            .await
            .map_err(|e| {
                refuse(format!(
                    "a restore point could not be read ({e}); prune cannot tell which snapshots \
                 it needs; run `ferry repo check`"
                ))
            })?;
        self.report.restore_points = self.points.len() as u64;
        self.live_snapshots = self
            .snapshot_ids
            .iter()
            .filter(|id| !gone.snapshots.contains(id))
            .copied()
            .collect();
        let live_set: HashSet<Id> = self.live_snapshots.iter().copied().collect();
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
        Ok(())
    }

    /// Step 3: marks every blob the kept snapshots use.
    pub async fn mark_used(&mut self) -> Result<()> {
        cancelled(&self.options.cancel)?;
        self.live = self
            .repo
            .mark(&self.loaded, &self.live_snapshots, &self.options.cancel)
            .await?;
        self.report.snapshots = self.live_snapshots.len() as u64;
        self.report.blobs_used = self.live.len() as u64;
        Ok(())
    }

    /// Step 4: keeps each pack holding a used blob; a blob stored twice keeps one pack,
    /// preferring one kept anyway.
    pub fn decide_packs(&mut self) {
        let loaded = &self.loaded;
        let mut pack_live = vec![false; loaded.packs.len()];
        for id in &self.live {
            if !loaded.dups.contains_key(id)
                && let Some(&(pos, _)) = loaded.first.get(id)
            {
                pack_live[pos] = true;
            }
        }
        for id in &self.live {
            if let (Some(others), Some(&(pos, _))) = (loaded.dups.get(id), loaded.first.get(id))
                && !pack_live[pos]
                && !others.iter().any(|&p| pack_live[p])
            {
                pack_live[pos] = true;
            }
        }
        self.pack_live = pack_live;
    }

    /// Step 4: every indexed pack must be in the pack listing (a partial listing shows
    /// here).
    pub fn check_existing_packs(&self) -> Result<()> {
        for p in &self.loaded.packs {
            if !self.packs_listed.contains_key(&p.id) {
                return Err(refuse(format!(
                    "index files name {}, which the listing of packs/ does not show: the \
                     listing is incomplete or the pack is lost; nothing was deleted; run \
                     `ferry repo check`",
                    pack_key(&p.id)
                )));
            }
        }
        Ok(())
    }

    /// The bytes of a pack's blobs that no kept snapshot uses.
    fn unused_of(&self, p: &PackRec) -> u64 {
        p.entries
            .iter()
            .filter(|e| !self.live.contains(&e.id))
            .map(|e| u64::from(e.length))
            .sum()
    }

    /// Repacks kept packs that are mostly unused: copies their used blobs into new packs
    /// (indexed by new index files) first; the old packs then go like unused ones. A dry
    /// run only counts what it would copy.
    pub async fn repack(&mut self) -> Result<()> {
        let loaded = &self.loaded;
        let mut repack: Vec<usize> = (0..loaded.packs.len())
            .filter(|&i| {
                let p = &loaded.packs[i];
                self.pack_live[i]
                    && (self.unused_of(p) as f64) > self.options.max_unused * p.size as f64
            })
            .collect();
        let copies = plan_copies(loaded, &repack, &self.pack_live, &self.live);
        if let Some(lock) = self.lock
            && !copies.is_empty()
        {
            cancelled(&self.options.cancel)?;
            let done = self
                .repo
                .repack(loaded, &copies, lock, &self.options.cancel)
                .await?;
            repack.retain(|pos| !done.kept.contains(pos));
            self.repack_index_ids = done.index_ids;
        }
        self.bytes_copied = copies
            .iter()
            .filter(|(pos, _)| repack.contains(pos))
            .flat_map(|(pos, entries)| {
                entries
                    .iter()
                    .map(|&ei| u64::from(loaded.packs[*pos].entries[ei].length))
            })
            .sum();
        for &pos in &repack {
            self.pack_live[pos] = false;
        }
        self.report.packs_repacked = repack.len() as u64;
        self.report.bytes_repacked = self.bytes_copied;
        self.repacked = repack;
        Ok(())
    }

    /// Decides the packs to delete: those no longer kept, and those no index names that
    /// are older than `keep_unindexed_for` by the store's clock.
    pub fn decide_deletions(&mut self) {
        let store_now = self
            .lock
            .map_or_else(OffsetDateTime::now_utc, |l| l.store_now());
        let mut delete_packs: Vec<Id> = Vec::new();
        for (i, p) in self.loaded.packs.iter().enumerate() {
            if self.pack_live[i] {
                let unused = self.unused_of(p);
                if unused > 0 {
                    self.report.packs_partly_used += 1;
                    self.report.bytes_unused_in_kept_packs += unused;
                }
            } else {
                delete_packs.push(p.id);
            }
        }
        for (id, o) in &self.packs_listed {
            if self.loaded.pack_pos.contains_key(id) {
                continue;
            }
            let old = o
                .modified
                .is_some_and(|m| m + self.options.keep_unindexed_for <= store_now);
            if old {
                delete_packs.push(*id);
                self.report.unindexed_packs_deleted += 1;
            } else {
                self.report.unindexed_packs_kept += 1;
            }
        }
        let report = &mut self.report;
        report.packs_deleted = delete_packs.len() as u64;
        report.bytes_deleted = delete_packs
            .iter()
            .filter_map(|id| self.packs_listed.get(id))
            .map(|o| o.size)
            .sum();
        report.packs_kept = report.packs_total - report.packs_deleted;
        report.bytes_kept = report.bytes_total - report.bytes_deleted;
        self.delete_packs = delete_packs;
    }

    /// Step 5, planned: the kept packs of every index file naming a deleted pack go into
    /// new index files, unless a file that stays names them too.
    pub fn decide_index_rewrite(&mut self) {
        let loaded = &self.loaded;
        let affected: HashSet<Id> = loaded
            .packs
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.pack_live[*i])
            .flat_map(|(_, p)| p.files.iter().copied())
            .collect();
        let carried: Vec<&PackRec> = loaded
            .packs
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                self.pack_live[*i]
                    && p.files.iter().any(|f| affected.contains(f))
                    && p.files.iter().all(|f| affected.contains(f))
            })
            .map(|(_, p)| p)
            .collect();
        self.new_files = carried
            .chunks(INDEX_PACKS_PER_FILE)
            .map(|chunk| IndexFile {
                packs: chunk
                    .iter()
                    .map(|p| IndexFilePack::new(p.id, p.size, &p.entries))
                    .collect(),
            })
            .collect();
        // A dry run estimates the index files the repack would write.
        let repack_files = if self.lock.is_some() {
            self.repack_index_ids.len() as u64
        } else {
            let packs = self
                .bytes_copied
                .div_ceil(self.repo.config().pack_target_size.max(1));
            packs.div_ceil(INDEX_FLUSH_PACKS as u64)
        };
        self.report.index_files_written = self.new_files.len() as u64 + repack_files;
        self.report.index_files_deleted = affected.len() as u64;
        self.affected = affected;
    }

    /// Step 5, carried out (not for a dry run): writes the new index files, lists again
    /// to check nothing changed, deletes the superseded index files and then the packs.
    pub async fn execute(self) -> Result<PruneReport> {
        let Some(lock) = self.lock else {
            return Ok(self.report);
        };
        let (repo, cancel, report) = (self.repo, &self.options.cancel, self.report);
        if self.delete_packs.is_empty() && self.affected.is_empty() {
            tracing::info!("prune: nothing to delete");
            return Ok(report);
        }

        let mut new_ids = Vec::with_capacity(self.new_files.len());
        for file in &self.new_files {
            cancelled(cancel)?;
            lock.ensure_live()?;
            new_ids.push(write_index_file(repo, file).await?);
        }
        new_ids.extend(self.repack_index_ids);
        repo.check_unchanged(&self.index_ids, &new_ids, &self.snapshot_ids, &self.points)
            .await?;

        cancelled(cancel)?;
        lock.ensure_live()?;
        repo.delete_all(self.affected.iter().map(index_key).collect())
            .await?;
        // Stopping here is fine too: the packs are unindexed now, the next prune's.
        cancelled(cancel)?;
        lock.ensure_live()?;
        repo.delete_all(self.delete_packs.iter().map(pack_key).collect())
            .await?;
        tracing::info!(
            packs = report.packs_deleted,
            bytes = report.bytes_deleted,
            index_files = report.index_files_deleted,
            "prune deleted unused packs"
        );
        // Our own index names deleted packs now.
        repo.reload_index().await?;
        Ok(report)
    }
}

impl Repository {
    /// Lists again before deleting: the index must be the old files plus the new ones,
    /// and snapshots and restore points as they were. A difference means a writer that
    /// ignores locks, or listings that are not stable; either way deleting is unsafe.
    async fn check_unchanged(
        &self,
        old_index: &[Id],
        new_index: &[Id],
        snapshots: &HashSet<Id>,
        points: &[ListedRestorePoint],
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
