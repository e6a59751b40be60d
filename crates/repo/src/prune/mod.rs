//! Prune: deletes packs no snapshot needs and rewrites the index files that named them.
//!
//! The work is a plan ([`plan::PrunePlan`], after rustic's): each step below is one of its
//! methods, deciding before anything is deleted; `mark.rs` loads the index and marks
//! what snapshots use, `repack.rs` copies the used blobs out of mostly unused packs.
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

mod mark;
mod plan;
mod repack;

use std::collections::HashSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::ObjectInfo;
use crate::error::{Error, Result};
use crate::forget::{ForgetPolicy, ForgetReport};
use crate::id::Id;
use crate::lock::{DEFAULT_LOCK_TTL, DEFAULT_MAX_CLOCK_SKEW, LockGuard, LockKind};
use crate::repository::Repository;
use plan::PrunePlan;

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
    /// `prune/mod.rs` for the order and the safety argument). Fails with [`Error::Locked`]
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
        let mut plan = PrunePlan::new(self, options, lock);
        plan.remove_stale_locks().await?;
        plan.list().await?;
        plan.load(gone).await?;
        plan.mark_used().await?;
        plan.decide_packs();
        plan.check_existing_packs()?;
        plan.repack().await?;
        plan.decide_deletions();
        plan.decide_index_rewrite();
        plan.execute().await
    }
}
