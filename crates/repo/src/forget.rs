//! Forget: removes restore points and snapshots by a retention policy. Only metadata
//! goes; the data they alone used stays until [`Repository::prune`].
//!
//! Restore points are grouped by application; in each group the newest `keep_last` and
//! every one newer than `keep_within` stay (an item stays when any rule keeps it). A
//! snapshot a removed restore point named goes with it unless a remaining restore point
//! (of any application) names it too. Without an application scope, snapshots no
//! restore point names (plain `ferry repo backup`s, or a volume backup whose export did
//! not commit) are grouped by host and paths and kept by the same rules.
//!
//! Restore points are deleted before their snapshots, so a crash in between leaves a
//! snapshot nobody names (removed by a later forget) and never a restore point naming
//! a missing snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::lock::{DEFAULT_LOCK_TTL, DEFAULT_MAX_CLOCK_SKEW, LockGuard, LockKind};
use crate::repository::Repository;
use crate::restorepoint::{check_application, restore_point_key};
use crate::snapshot::{Snapshot, snapshot_key};

/// Objects deleted at once.
const DELETE_CONCURRENCY: usize = 8;

/// What to keep. At least one rule must be given: forget never removes everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForgetPolicy {
    /// Keep the newest N restore points of each application (and snapshots of each
    /// host and paths). At least 1 when given.
    pub keep_last: Option<usize>,
    /// Keep everything newer than this, measured back from now (a maximum age).
    pub keep_within: Option<Duration>,
    /// Only this application's restore points (and the snapshots they alone name);
    /// snapshots no restore point names are then left alone.
    pub application: Option<String>,
}

impl ForgetPolicy {
    /// Checks that the policy keeps something and names a valid application.
    pub fn validate(&self) -> Result<()> {
        if self.keep_last == Some(0) {
            return Err(Error::invalid(
                "retention policy",
                "keep_last must be at least 1 (forget never removes every restore point)",
            ));
        }
        if self.keep_last.is_none() && self.keep_within.is_none() {
            return Err(Error::invalid(
                "retention policy",
                "no keep rule given: set keep_last (--keep-last N) and/or keep_within \
                 (--keep-within DURATION)",
            ));
        }
        if let Some(app) = &self.application {
            check_application(app)?;
        }
        Ok(())
    }

    /// For items of one group, whether each stays. Items without a time always stay
    /// and do not count towards `keep_last`.
    fn keep(&self, times: &[Option<OffsetDateTime>], now: OffsetDateTime) -> Vec<bool> {
        let mut order: Vec<usize> = (0..times.len()).filter(|&i| times[i].is_some()).collect();
        // Newest first.
        order.sort_by(|&a, &b| times[b].cmp(&times[a]));
        let mut keep = vec![true; times.len()];
        let cutoff = self.keep_within.map(|d| now - d);
        for (rank, &i) in order.iter().enumerate() {
            let by_count = self.keep_last.is_some_and(|n| rank < n);
            let by_age = cutoff.is_some_and(|c| times[i].is_some_and(|t| t >= c));
            keep[i] = by_count || by_age;
        }
        keep
    }
}

/// A restore point forget looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePointEntry {
    pub application: String,
    pub id: Id,
    /// Its `created_at`, else when the store wrote it.
    pub time: Option<OffsetDateTime>,
    /// The snapshots it names.
    pub snapshots: Vec<Id>,
}

/// A snapshot forget looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub id: Id,
    pub time: OffsetDateTime,
    pub hostname: String,
    pub paths: Vec<String>,
    /// Whether some restore point names it.
    pub in_restore_point: bool,
}

/// What forget removed (or with `dry_run`, would remove) and kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub restore_points_removed: Vec<RestorePointEntry>,
    pub restore_points_kept: Vec<RestorePointEntry>,
    pub snapshots_removed: Vec<SnapshotEntry>,
    /// Snapshots in the policy's scope that stay.
    pub snapshots_kept: Vec<SnapshotEntry>,
}

impl Repository {
    /// Removes restore points and snapshots the policy does not keep, under an
    /// exclusive lock (refusing, like prune, when this machine's clock is more than
    /// the default skew off the store's: `keep_within` is measured by it). With
    /// `dry_run` nothing is locked or removed and the report says what would go.
    pub async fn forget(&self, policy: &ForgetPolicy, dry_run: bool) -> Result<ForgetReport> {
        policy.validate()?;
        let never = CancellationToken::new();
        if dry_run {
            return self.forget_locked(policy, None, &never).await;
        }
        let lock = LockGuard::acquire(
            self.backend().clone(),
            "forget",
            LockKind::Exclusive,
            DEFAULT_LOCK_TTL,
            Some(DEFAULT_MAX_CLOCK_SKEW),
        )
        .await?;
        let result = self.forget_locked(policy, Some(&lock), &never).await;
        lock.release_quietly().await;
        result
    }

    /// Forget's work; `lock` is `None` for a dry run. `cancel` stops it before it
    /// deletes anything.
    pub(crate) async fn forget_locked(
        &self,
        policy: &ForgetPolicy,
        lock: Option<&LockGuard>,
        cancel: &CancellationToken,
    ) -> Result<ForgetReport> {
        let now = OffsetDateTime::now_utc();
        let points = self.restore_point_entries().await?;
        let snapshots = self.snapshots().await?;
        let mut report = decide(policy, points, &snapshots, now);
        report.dry_run = lock.is_none();
        let Some(lock) = lock else {
            return Ok(report);
        };
        self.delete_forgotten(&report, lock, cancel).await?;
        Ok(report)
    }

    /// Every restore point with its time and the snapshots it names.
    async fn restore_point_entries(&self) -> Result<Vec<RestorePointEntry>> {
        let listed = self.list_restore_points().await?;
        let refs = self.load_restore_point_refs(&listed).await?;
        let mut points = Vec::with_capacity(listed.len());
        for p in &listed {
            let key = (p.application.clone(), p.id);
            let Some(r) = refs.get(&key) else {
                return Err(Error::Internal(format!(
                    "restore point {} was listed but not loaded",
                    restore_point_key(&p.application, &p.id)
                )));
            };
            points.push(RestorePointEntry {
                application: p.application.clone(),
                id: p.id,
                time: r.created_at().or(p.modified),
                snapshots: r.snapshots(&restore_point_key(&p.application, &p.id))?,
            });
        }
        Ok(points)
    }

    /// Deletes what `report` removes: restore points first, then snapshots.
    async fn delete_forgotten(
        &self,
        report: &ForgetReport,
        lock: &LockGuard,
        cancel: &CancellationToken,
    ) -> Result<()> {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        lock.ensure_live()?;
        let point_keys: Vec<String> = report
            .restore_points_removed
            .iter()
            .map(|p| restore_point_key(&p.application, &p.id))
            .collect();
        self.delete_all(point_keys).await?;
        lock.ensure_live()?;
        let snapshot_keys: Vec<String> = report
            .snapshots_removed
            .iter()
            .map(|s| snapshot_key(&s.id))
            .collect();
        self.delete_all(snapshot_keys).await?;
        tracing::info!(
            restore_points = report.restore_points_removed.len(),
            snapshots = report.snapshots_removed.len(),
            "forget done"
        );
        Ok(())
    }

    /// Deletes objects with bounded concurrency, stopping at the first failure.
    pub(crate) async fn delete_all(&self, keys: Vec<String>) -> Result<()> {
        futures::stream::iter(keys)
            .map(|key| async move {
                self.backend().delete(&key).await?;
                tracing::debug!(%key, "deleted");
                Ok::<(), Error>(())
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<()>()
            .await
    }
}

/// Forget's decisions, made before anything is deleted: the restore points the policy
/// does not keep (per application, within its scope), the snapshots only those name,
/// and without a scope the snapshots no restore point names (per host and paths).
fn decide(
    policy: &ForgetPolicy,
    points: Vec<RestorePointEntry>,
    snapshots: &[(Id, Snapshot)],
    now: OffsetDateTime,
) -> ForgetReport {
    // Restore points: by application, within the scope.
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in points.iter().enumerate() {
        if policy
            .application
            .as_deref()
            .is_none_or(|a| a == p.application)
        {
            groups.entry(p.application.as_str()).or_default().push(i);
        }
    }
    let mut remove_point = vec![false; points.len()];
    for members in groups.values() {
        let times: Vec<_> = members.iter().map(|&i| points[i].time).collect();
        for (&i, keep) in members.iter().zip(policy.keep(&times, now)) {
            remove_point[i] = !keep;
        }
    }
    let named_by_kept: HashSet<Id> = points
        .iter()
        .zip(&remove_point)
        .filter(|(_, removed)| !**removed)
        .flat_map(|(p, _)| p.snapshots.iter().copied())
        .collect();
    let named_by_removed: HashSet<Id> = points
        .iter()
        .zip(&remove_point)
        .filter(|(_, removed)| **removed)
        .flat_map(|(p, _)| p.snapshots.iter().copied())
        .collect();
    let named: HashSet<Id> = named_by_kept.union(&named_by_removed).copied().collect();
    let in_scope_of_app: HashSet<Id> = points
        .iter()
        .filter(|p| policy.application.as_deref() == Some(p.application.as_str()))
        .flat_map(|p| p.snapshots.iter().copied())
        .collect();

    // Snapshots: those only removed restore points name go; without a scope, the
    // ones no restore point names follow the policy per host and paths.
    let mut remove_snapshot: HashMap<Id, bool> = HashMap::new();
    let mut standalone: BTreeMap<(&str, &[String]), Vec<usize>> = BTreeMap::new();
    for (i, (id, s)) in snapshots.iter().enumerate() {
        if named.contains(id) {
            remove_snapshot.insert(*id, !named_by_kept.contains(id));
        } else if policy.application.is_none() {
            standalone
                .entry((s.hostname.as_str(), s.paths.as_slice()))
                .or_default()
                .push(i);
        }
    }
    for members in standalone.values() {
        let times: Vec<_> = members.iter().map(|&i| Some(snapshots[i].1.time)).collect();
        for (&i, keep) in members.iter().zip(policy.keep(&times, now)) {
            remove_snapshot.insert(snapshots[i].0, !keep);
        }
    }

    let mut report = ForgetReport::default();
    for (p, removed) in points.into_iter().zip(remove_point) {
        let in_scope = policy
            .application
            .as_deref()
            .is_none_or(|a| a == p.application);
        if removed {
            report.restore_points_removed.push(p);
        } else if in_scope {
            report.restore_points_kept.push(p);
        }
    }
    for (id, s) in snapshots {
        let entry = SnapshotEntry {
            id: *id,
            time: s.time,
            hostname: s.hostname.clone(),
            paths: s.paths.clone(),
            in_restore_point: named.contains(id),
        };
        match remove_snapshot.get(id) {
            Some(true) => report.snapshots_removed.push(entry),
            Some(false) if policy.application.is_none() || in_scope_of_app.contains(id) => {
                report.snapshots_kept.push(entry)
            }
            _ => {}
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: i64) -> Option<OffsetDateTime> {
        Some(OffsetDateTime::UNIX_EPOCH + time::Duration::days(day))
    }

    #[test]
    fn rules_keep_the_union() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(10);
        let times = [t(1), t(9), None, t(5), t(8)];
        let last2 = ForgetPolicy {
            keep_last: Some(2),
            ..Default::default()
        };
        assert_eq!(last2.keep(&times, now), [false, true, true, false, true]);
        let within = ForgetPolicy {
            keep_within: Some(Duration::from_secs(3 * 86_400)),
            ..Default::default()
        };
        assert_eq!(within.keep(&times, now), [false, true, true, false, true]);
        let both = ForgetPolicy {
            keep_last: Some(1),
            keep_within: Some(Duration::from_secs(6 * 86_400)),
            ..Default::default()
        };
        assert_eq!(both.keep(&times, now), [false, true, true, true, true]);
    }

    #[test]
    fn a_policy_must_keep_something() {
        assert!(ForgetPolicy::default().validate().is_err());
        let zero = ForgetPolicy {
            keep_last: Some(0),
            ..Default::default()
        };
        assert!(zero.validate().is_err());
        let bad_app = ForgetPolicy {
            keep_last: Some(1),
            application: Some("Not_A_Namespace".into()),
            ..Default::default()
        };
        assert!(bad_app.validate().is_err());
    }
}
