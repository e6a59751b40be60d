//! PruneRepository: a retention policy applied to a repository through a profile that may
//! write, and the data nothing needs any more deleted.
//!
//! The work is the engine's ([`Repository::forget`], [`Repository::forget_and_prune`]):
//! restore points beyond the limits go first (with the volume snapshots only they name),
//! then the packs no remaining snapshot uses, under the repository's exclusive lock.
//! Writers (exports, migrations, `ferry repo backup`) hold shared locks from before they
//! read the index until they have committed, so a prune either waits for nobody and
//! fails with "locked", or runs while nobody writes: a concurrent export never loses data.
//! The engine also refuses on a listing that failed or looks incomplete and on a clock
//! too far from the store's; those come back as FAILED_PRECONDITION with its reason.
//!
//! The request's limits both apply (as a schedule's `Retention` says): a restore point
//! stays only while it is among the newest `keep_last` of its application AND younger
//! than `max_age`. The engine's policy keeps the union of its rules instead, so with both
//! limits the count limit is applied by a forget of its own first, and the age limit
//! with the prune; each pass decides under its own lock, so an export committing in
//! between is counted, never deleted by a stale decision.
//!
//! The work runs apart from the call: a caller that goes away cancels it between the
//! engine's steps (never halfway through one), which releases the lock.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ferry_proto::v1::{
    ApplicationSelector, ProfileKind, PruneRepositoryRequest, PruneRepositoryResponse, RestorePoint,
};
use ferry_repo::{
    ForgetPolicy, ForgetReport, PruneOptions, PruneReport, Repository, RestorePointEntry,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::CatalogError;
use crate::profile::{self, Patience};
use crate::restore_points::timestamp;
use crate::service::{CatalogService, open_checked, validate_namespace};

/// The shortest `max_age`: anything shorter would race the export that just committed.
pub(crate) const MIN_MAX_AGE: Duration = Duration::from_secs(60);

/// A request's limits, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Limits {
    keep_last: Option<usize>,
    max_age: Option<Duration>,
    application: Option<String>,
}

impl Limits {
    fn of(req: &PruneRepositoryRequest) -> Result<Limits, CatalogError> {
        let application = (!req.namespace.is_empty()).then(|| req.namespace.clone());
        if let Some(ns) = &application {
            validate_namespace(ns)?;
        }
        let max_age = match &req.max_age {
            None => None,
            Some(d) => {
                let valid = d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos);
                let age =
                    valid.then(|| Duration::new(d.seconds.unsigned_abs(), d.nanos.unsigned_abs()));
                match age {
                    Some(age) if age >= MIN_MAX_AGE => Some(age),
                    _ => {
                        return Err(CatalogError::invalid(
                            "max_age",
                            format!(
                                "{}s {}ns; give at least {}s (such as 604800s, a week), or leave \
                                 it out for no age limit",
                                d.seconds,
                                d.nanos,
                                MIN_MAX_AGE.as_secs()
                            ),
                        ));
                    }
                }
            }
        };
        let keep_last = (req.keep_last > 0).then_some(req.keep_last as usize);
        if keep_last.is_none() && max_age.is_none() {
            return Err(CatalogError::invalid(
                "keep_last",
                "0 and no max_age: give keep_last (keep the newest N restore points of each \
                 application) and/or max_age (delete restore points older than it); a prune \
                 never removes every restore point by default",
            ));
        }
        Ok(Limits {
            keep_last,
            max_age,
            application,
        })
    }

    /// The engine's policies, in the order they run: with both limits, the count limit's
    /// forget, then the age limit's forget and prune. Alone, either is one forget and prune.
    fn passes(&self) -> (Option<ForgetPolicy>, ForgetPolicy) {
        let count = self.keep_last.map(|n| ForgetPolicy {
            keep_last: Some(n),
            keep_within: None,
            application: self.application.clone(),
        });
        match (count, self.max_age) {
            (Some(count), Some(age)) => (
                Some(count),
                ForgetPolicy {
                    keep_last: None,
                    keep_within: Some(age),
                    application: self.application.clone(),
                },
            ),
            (Some(count), None) => (None, count),
            (None, age) => (
                None,
                ForgetPolicy {
                    keep_last: None,
                    keep_within: age,
                    application: self.application.clone(),
                },
            ),
        }
    }
}

/// What the engine did, merged over the passes.
#[derive(Debug, Default)]
struct Outcome {
    removed: Vec<RestorePointEntry>,
    kept: Vec<RestorePointEntry>,
    snapshots_removed: u64,
    snapshots_kept: u64,
    pruned: PruneReport,
}

impl Outcome {
    /// `first` (the count limit's forget, if any) and then `second` (forget and prune).
    /// In a dry run the second pass did not see the first one's removals: what the first
    /// removed is taken out of what the second kept.
    fn merge(first: Option<ForgetReport>, second: ForgetReport, pruned: PruneReport) -> Outcome {
        let first = first.unwrap_or_default();
        let key = |p: &RestorePointEntry| (p.application.clone(), p.id);
        let mut removed_keys: HashSet<_> = HashSet::new();
        let mut removed = Vec::new();
        for p in first
            .restore_points_removed
            .into_iter()
            .chain(second.restore_points_removed)
        {
            if removed_keys.insert(key(&p)) {
                removed.push(p);
            }
        }
        let kept: Vec<RestorePointEntry> = second
            .restore_points_kept
            .into_iter()
            .filter(|p| !removed_keys.contains(&key(p)))
            .collect();
        let snapshots_gone: HashSet<_> = first
            .snapshots_removed
            .iter()
            .chain(&second.snapshots_removed)
            .map(|s| s.id)
            .collect();
        // A dry run's prune still counted the snapshots the first pass would remove.
        let counted_twice = if second.dry_run {
            first
                .snapshots_removed
                .iter()
                .filter(|s| !second.snapshots_removed.iter().any(|t| t.id == s.id))
                .count() as u64
        } else {
            0
        };
        Outcome {
            removed,
            kept,
            snapshots_removed: snapshots_gone.len() as u64,
            snapshots_kept: pruned.snapshots.saturating_sub(counted_twice),
            pruned,
        }
    }
}

/// Runs the passes. Errors are the engine's; the caller names the profile.
async fn run(
    repo: Repository,
    limits: Limits,
    dry_run: bool,
    cancel: CancellationToken,
) -> Result<Outcome, ferry_repo::Error> {
    let (first, second) = limits.passes();
    let first = match first {
        Some(policy) => Some(repo.forget(&policy, dry_run).await?),
        None => None,
    };
    if cancel.is_cancelled() {
        return Err(ferry_repo::Error::Cancelled);
    }
    let options = PruneOptions {
        dry_run,
        cancel,
        ..PruneOptions::default()
    };
    let (forgot, pruned) = repo.forget_and_prune(&second, &options).await?;
    Ok(Outcome::merge(first, forgot, pruned))
}

impl CatalogService {
    /// PruneRepository: see the module docs.
    pub(crate) async fn prune_repository(
        &self,
        req: PruneRepositoryRequest,
    ) -> Result<PruneRepositoryResponse, CatalogError> {
        let started = Instant::now();
        let limits = Limits::of(&req)?;
        let r = req
            .repository
            .as_ref()
            .ok_or_else(|| CatalogError::invalid("repository", "missing; name a profile"))?;
        let record = self.profile_record(&r.profile).await?;
        if !r.repository_id.is_empty() && r.repository_id != record.repository_id {
            return Err(CatalogError::RepositoryMismatch {
                profile: record.name.clone(),
                expected: r.repository_id.clone(),
                found: record.repository_id.clone(),
            });
        }
        if record.kind == ProfileKind::Import as i32 {
            return Err(CatalogError::ReadOnlyProfile {
                profile: record.name.clone(),
                cluster: self.cluster().to_string(),
                location: profile::location(&record),
                action: "pruning",
            });
        }
        let material =
            profile::read_material(&self.inner.config.client, self.cluster(), &record).await?;
        // Its own handle, not the catalog's cached one: prune rewrites the index.
        let repo = open_checked(&record, &material, Patience::Normal).await?;

        // Driven apart from this call: a caller going away cancels it between the engine's
        // steps, and the engine releases its exclusive lock, rather than the work being
        // dropped at any await with the lock left to block writers until it expires. The
        // engine's forget future is not provably Send (a rustc limitation with borrowing
        // stream closures, rust-lang/rust#102211), so it cannot go to tokio::spawn; it
        // runs on a blocking thread of this runtime instead, built there and never moved.
        let cancel = CancellationToken::new();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let runtime = tokio::runtime::Handle::current();
        let span = tracing::Span::current();
        let dry_run = req.dry_run;
        let task = tokio::task::spawn_blocking(move || {
            runtime.block_on(run(repo, limits, dry_run, cancel).instrument(span))
        });
        let outcome = task
            .await
            .map_err(|e| CatalogError::Internal(format!("the prune task failed: {e}")))?
            .map_err(|e| profile::repo_error(&record, "pruning", e))?;

        let db = &self.inner.db;
        let mut removed = Vec::with_capacity(outcome.removed.len());
        for p in &outcome.removed {
            removed.push(self.shown(&record.repository_id, p).await?);
        }
        let mut kept = Vec::with_capacity(outcome.kept.len());
        for p in &outcome.kept {
            kept.push(self.shown(&record.repository_id, p).await?);
        }
        newest_first(&mut removed);
        newest_first(&mut kept);
        if !req.dry_run && !outcome.removed.is_empty() {
            let ids = outcome.removed.iter().map(|p| p.id.to_hex()).collect();
            // The repository changed already; the index is a cache the next listing mends.
            if let Err(e) = db.update_index(&record.repository_id, ids, &[]).await {
                tracing::warn!(error = %e, "removed restore points stay in the index until the \
                    next listing of the repository");
            }
        }
        let p = &outcome.pruned;
        let elapsed = started.elapsed();
        tracing::info!(
            repository = %record.repository_id,
            dry_run = req.dry_run,
            restore_points_removed = removed.len(),
            restore_points_kept = kept.len(),
            snapshots_removed = outcome.snapshots_removed,
            packs_deleted = p.packs_deleted,
            bytes_freed = p.bytes_deleted,
            ?elapsed,
            "repository pruned"
        );
        Ok(PruneRepositoryResponse {
            dry_run: req.dry_run,
            restore_points_removed: removed,
            restore_points_kept: kept,
            snapshots_removed: outcome.snapshots_removed,
            snapshots_kept: outcome.snapshots_kept,
            packs_deleted: p.packs_deleted,
            bytes_freed: p.bytes_deleted,
            packs_kept: p.packs_kept,
            bytes_kept: p.bytes_kept,
            packs_repacked: p.packs_repacked,
            bytes_repacked: p.bytes_repacked,
            unindexed_packs_kept: p.unindexed_packs_kept,
            stale_locks_removed: p.stale_locks_removed,
            clock_skew_ms: p.clock_skew_ms,
            duration: Some(prost_types::Duration {
                seconds: i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(elapsed.subsec_nanos()).unwrap_or(0),
            }),
        })
    }

    /// A restore point forget looked at, as the API shows it: from the index when the
    /// catalog has read it, else what the engine knows (id, application, time).
    async fn shown(
        &self,
        repository_id: &str,
        p: &RestorePointEntry,
    ) -> Result<RestorePoint, CatalogError> {
        if let Some(row) = self
            .inner
            .db
            .restore_point(repository_id, &p.id.to_hex())
            .await?
        {
            return Ok(row.to_proto(false));
        }
        Ok(RestorePoint {
            id: p.id.to_hex(),
            application: Some(ApplicationSelector {
                namespace: p.application.clone(),
                ..Default::default()
            }),
            created_at: p
                .time
                .and_then(|t| i64::try_from(t.unix_timestamp_nanos()).ok())
                .map(timestamp),
            ..Default::default()
        })
    }
}

fn newest_first(points: &mut [RestorePoint]) {
    points.sort_by(|a, b| {
        let t = |p: &RestorePoint| p.created_at.map(|t| (t.seconds, t.nanos));
        t(b).cmp(&t(a)).then_with(|| a.id.cmp(&b.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(keep_last: u32, max_age_s: Option<i64>, ns: &str) -> PruneRepositoryRequest {
        PruneRepositoryRequest {
            repository: None,
            namespace: ns.into(),
            keep_last,
            max_age: max_age_s.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            dry_run: false,
        }
    }

    #[test]
    fn refusals_come_back_as_statuses_a_caller_can_act_on() {
        use ferry_proto::v1::ErrorCode;
        use tonic::Code;
        let repo = |source: ferry_repo::Error| CatalogError::Repo {
            context: "pruning repository s3:http://s3/b/p (profile \"out\")".into(),
            source: Box::new(source),
        };
        let locked = repo(ferry_repo::Error::Locked {
            repo: "s3:http://s3/b/p".into(),
            key: "locks/1".into(),
            holder: None,
        });
        let d = locked.detail();
        assert_eq!(locked.code(), Code::Aborted);
        assert_eq!(d.code, ErrorCode::RepositoryLocked as i32);
        assert!(d.message.contains("is locked by locks/1"), "{d:?}");
        assert!(d.hint.contains("retry"), "{d:?}");

        let skew = repo(ferry_repo::Error::ClockSkew {
            repo: "s3:http://s3/b/p".into(),
            store_minus_local_ms: -400_000,
            max: Duration::from_secs(300),
        });
        assert_eq!(skew.code(), Code::FailedPrecondition);
        assert!(skew.detail().message.contains("ahead of"), "{skew}");
        let refused = repo(ferry_repo::Error::Refused {
            action: "prune",
            reason: "listing packs/ failed".into(),
        });
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(refused.detail().message.contains("listing packs/ failed"));

        let read_only = CatalogError::ReadOnlyProfile {
            profile: "in".into(),
            cluster: "b".into(),
            location: "s3:http://s3/b/p".into(),
            action: "pruning",
        };
        let d = read_only.detail();
        assert_eq!(read_only.code(), Code::FailedPrecondition);
        assert_eq!(d.code, ErrorCode::PermissionDenied as i32);
        assert_eq!(d.cluster, "b");
        assert!(d.message.contains("import profile"), "{d:?}");
    }

    #[test]
    fn limits_are_checked() {
        let l = Limits::of(&req(2, None, "shop")).expect("keep last");
        assert_eq!(l.keep_last, Some(2));
        assert_eq!(l.application.as_deref(), Some("shop"));
        assert!(Limits::of(&req(0, Some(3600), "")).is_ok());
        let none = Limits::of(&req(0, None, "shop")).expect_err("no limit");
        assert!(none.to_string().contains("keep_last"), "{none}");
        let short = Limits::of(&req(1, Some(59), "shop")).expect_err("too short");
        assert!(short.to_string().contains("max_age"), "{short}");
        assert!(Limits::of(&req(1, Some(-60), "shop")).is_err());
        assert!(Limits::of(&req(1, None, "Not_A_Namespace")).is_err());
    }

    #[test]
    fn both_limits_run_as_two_passes() {
        let l = Limits::of(&req(3, Some(7200), "shop")).expect("both");
        let (first, second) = l.passes();
        let first = first.expect("a count pass");
        assert_eq!((first.keep_last, first.keep_within), (Some(3), None));
        assert_eq!(
            (second.keep_last, second.keep_within),
            (None, Some(Duration::from_secs(7200)))
        );
        assert_eq!(second.application.as_deref(), Some("shop"));
        let (first, second) = Limits::of(&req(3, None, "")).expect("count").passes();
        assert!(first.is_none());
        assert_eq!(second.keep_last, Some(3));
        assert!(second.application.is_none());
    }

    #[test]
    fn passes_merge_without_counting_twice() {
        use ferry_repo::{Id, SnapshotEntry};
        let id = |n: u8| Id::from_bytes([n; 32]);
        let point = |n: u8| RestorePointEntry {
            application: "shop".into(),
            id: id(n),
            time: None,
            snapshots: vec![id(100 + n)],
        };
        let snap = |n: u8| SnapshotEntry {
            id: id(100 + n),
            time: time::OffsetDateTime::UNIX_EPOCH,
            hostname: String::new(),
            paths: Vec::new(),
            in_restore_point: true,
        };
        // Dry run: the count pass removes 1; the age pass (not seeing that) removes 2 and
        // keeps 1 and 3.
        let first = ForgetReport {
            dry_run: true,
            restore_points_removed: vec![point(1)],
            restore_points_kept: vec![point(2), point(3)],
            snapshots_removed: vec![snap(1)],
            snapshots_kept: vec![snap(2), snap(3)],
        };
        let second = ForgetReport {
            dry_run: true,
            restore_points_removed: vec![point(2)],
            restore_points_kept: vec![point(1), point(3)],
            snapshots_removed: vec![snap(2)],
            snapshots_kept: vec![snap(1), snap(3)],
        };
        let pruned = PruneReport {
            dry_run: true,
            snapshots: 2,
            ..Default::default()
        };
        let o = Outcome::merge(Some(first), second, pruned);
        let ids = |v: &[RestorePointEntry]| v.iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(ids(&o.removed), vec![id(1), id(2)]);
        assert_eq!(ids(&o.kept), vec![id(3)]);
        assert_eq!((o.snapshots_removed, o.snapshots_kept), (2, 1));
    }
}
