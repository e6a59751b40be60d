//! Locks (`locks/<id>`): plaintext JSON with an expiry, refreshed while the holder runs.
//!
//! The protocol is restic's. Writers (backup, restore-point commits, anything that adds
//! data) take a *shared* lock; prune and forget take an *exclusive* one. Each first
//! writes its own lock object and only then lists `locks/`: a writer that sees a live
//! exclusive lock, or prune that sees any other live lock, removes its own and fails.
//! With a store whose listings show every completed write (S3 since 2020, MinIO, a
//! local file system), two conflicting holders can never both miss each other: whoever
//! lists second sees the first one's lock. A listing that does not even show the
//! caller's own, just-written lock proves the store's listing unreliable, and the call
//! fails rather than trusting it.
//!
//! A lock is *stale* once both its `expires` (the holder's clock) has passed and, when
//! the store reports when the lock was last written, that time plus the lock's `ttl_ms`
//! has passed by the store's clock. Judging by the store's clock means a holder whose
//! own clock runs behind does not look dead early. The holder, for its part, keeps a
//! [`Lease`] measured on its monotonic clock from *before* each successful write, so it
//! always believes its lock lapsed no later than anyone else will; before it commits
//! anything (an index file, a snapshot, a restore point, a deletion) it checks the lease
//! and fails if the lock could have looked stale to a prune in the meantime.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, DynBackend, ObjectInfo};
use crate::error::{Error, Result};
use crate::id::Id;

/// Lifetime of a lock between refreshes, unless the caller sets another.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(30 * 60);

/// How far this machine's clock may differ from the store's before prune refuses.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Prefix of lock objects.
const PREFIX: &str = "locks/";

/// Lock objects read at once.
const READ_CONCURRENCY: usize = 8;

/// Contents of a lock object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub hostname: String,
    pub pid: u32,
    /// What the holder is doing ("backup", "prune", …).
    pub purpose: String,
    pub exclusive: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Refreshed with the lock; by the holder's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// The lock's lifetime from its last write, so others can judge it by the store's
    /// clock. Absent in locks of older writers, which are judged by `expires` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl LockInfo {
    /// Whether the lock has lapsed at `now` (this machine's clock), given when the store
    /// last wrote it (`modified`) and the store's current time (`store_now`).
    pub fn is_stale(
        &self,
        modified: Option<OffsetDateTime>,
        now: OffsetDateTime,
        store_now: OffsetDateTime,
    ) -> bool {
        let by_holder_clock = self.expires <= now;
        let by_store_clock = match (self.ttl_ms, modified) {
            (Some(ms), Some(m)) => m + Duration::from_millis(ms) <= store_now,
            _ => true,
        };
        by_holder_clock && by_store_clock
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) by {} pid {}, created {}, expires {}",
            self.purpose,
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.hostname,
            self.pid,
            rfc3339(self.created),
            rfc3339(self.expires),
        )
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// One object found under `locks/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundLock {
    /// The object's key (`locks/<id>`).
    pub key: String,
    /// Its contents; `None` when the object does not parse as a lock.
    pub info: Option<LockInfo>,
    /// When the store last wrote it.
    pub modified: Option<OffsetDateTime>,
    /// Whether it has lapsed. An unreadable lock counts as stale once the store's time
    /// is a default lifetime past its last write.
    pub stale: bool,
}

impl fmt::Display for FoundLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.info {
            Some(info) => write!(f, "{}: {info}", self.key),
            None => write!(f, "{}: unreadable lock object", self.key),
        }
    }
}

/// What [`crate::Repository::unlock`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnlockReport {
    /// Locks removed.
    pub removed: Vec<FoundLock>,
    /// Live locks left in place (only without `remove_all`).
    pub kept: Vec<FoundLock>,
}

/// Shared or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// Writers: many at once, never alongside an exclusive lock.
    Shared,
    /// Prune and forget: alone.
    Exclusive,
}

/// The host's name, for snapshots and locks.
pub(crate) fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn encode(info: &LockInfo) -> Result<Bytes> {
    serde_json::to_vec(info)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(format!("serializing a lock: {e}")))
}

/// The store's clock minus this machine's, measured on an object written between `t0`
/// and `t1` (local times) that the store says it wrote at `modified`. Zero when the
/// store's time falls inside the window.
fn clock_offset(
    t0: OffsetDateTime,
    t1: OffsetDateTime,
    modified: OffsetDateTime,
) -> time::Duration {
    // S3 reports times truncated to the second (or millisecond): allow for it.
    let slack = time::Duration::seconds(1);
    if modified < t0 - slack {
        modified - t0
    } else if modified > t1 + slack {
        modified - t1
    } else {
        time::Duration::ZERO
    }
}

/// Reads every listed lock object. A lock removed between the listing and the read is
/// skipped: its holder released it.
async fn read_locks(
    backend: &DynBackend,
    listed: Vec<ObjectInfo>,
    now: OffsetDateTime,
    store_now: OffsetDateTime,
) -> Result<Vec<FoundLock>> {
    let results: Vec<Result<Option<FoundLock>>> = futures::stream::iter(listed)
        .map(|o| async move {
            let raw = match backend
                .get_at_most(&o.key, crate::limits::MAX_LOCK_BYTES)
                .await
            {
                Ok(raw) => raw,
                Err(BackendError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(Error::from(e)),
            };
            let info: Option<LockInfo> = serde_json::from_slice(&raw).ok();
            let stale = match &info {
                Some(info) => info.is_stale(o.modified, now, store_now),
                None => o
                    .modified
                    .is_some_and(|m| m + DEFAULT_LOCK_TTL <= store_now),
            };
            Ok(Some(FoundLock {
                key: o.key,
                info,
                modified: o.modified,
                stale,
            }))
        })
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    for r in results {
        if let Some(found) = r? {
            out.push(found);
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Every lock in the store, judged by this machine's clock (unlock, listings).
pub(crate) async fn list_locks(backend: &DynBackend) -> Result<Vec<FoundLock>> {
    let listed = backend.list(PREFIX).await?;
    let now = OffsetDateTime::now_utc();
    read_locks(backend, listed, now, now).await
}

/// Removes stale locks, or with `remove_all` every lock, except `keep` (the caller's own).
pub(crate) async fn remove_locks(
    backend: &DynBackend,
    found: Vec<FoundLock>,
    remove_all: bool,
    keep: Option<&str>,
) -> Result<UnlockReport> {
    let mut report = UnlockReport::default();
    for lock in found {
        if Some(lock.key.as_str()) == keep {
            continue;
        }
        if lock.stale || remove_all {
            backend.delete(&lock.key).await?;
            tracing::info!(lock = %lock, "removed lock");
            report.removed.push(lock);
        } else {
            report.kept.push(lock);
        }
    }
    Ok(report)
}

/// The holder's view of its lock: valid until a time on the monotonic clock, measured
/// from before the last successful write of the lock object.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    inner: Arc<LeaseInner>,
}

#[derive(Debug)]
struct LeaseInner {
    key: String,
    purpose: String,
    ttl: Duration,
    valid_until: parking_lot::Mutex<Instant>,
}

impl Lease {
    /// Fails when less than a quarter of the lock's lifetime is left: the refreshes have
    /// been failing, so a prune elsewhere may already take the lock for stale. Call
    /// before making anything visible that relies on data the lock protects.
    pub fn ensure_live(&self) -> Result<()> {
        let until = *self.inner.valid_until.lock();
        if Instant::now() + self.inner.ttl / 4 < until {
            return Ok(());
        }
        Err(Error::LockLost {
            purpose: self.inner.purpose.clone(),
            key: self.inner.key.clone(),
        })
    }
}

/// A held lock; call [`LockGuard::release`] when done. Dropping it stops the refresh,
/// and the lock then lapses at its expiry.
#[derive(Debug)]
pub(crate) struct LockGuard {
    backend: DynBackend,
    key: String,
    lease: Lease,
    /// The store's clock minus this machine's, measured on the lock object.
    store_offset: time::Duration,
    /// Other locks seen when acquiring (all of them stale, or shared ones for a writer).
    pub others: Vec<FoundLock>,
    stop: CancellationToken,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Takes a lock: writes it, then lists the others. Fails with [`Error::Locked`] when
    /// a conflicting live lock exists, and, when `max_skew` is given, with
    /// [`Error::ClockSkew`] when this machine's clock and the store's disagree by more.
    /// On failure the lock object written is removed again.
    pub async fn acquire(
        backend: DynBackend,
        purpose: &str,
        kind: LockKind,
        ttl: Duration,
        max_skew: Option<Duration>,
    ) -> Result<Self> {
        let key = format!("{PREFIX}{}", Id::random()?);
        let t0 = OffsetDateTime::now_utc();
        let info = LockInfo {
            hostname: hostname(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
            exclusive: kind == LockKind::Exclusive,
            created: t0,
            expires: t0 + ttl,
            ttl_ms: Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        };
        let written = Instant::now();
        backend.put(&key, encode(&info)?).await?;
        let lease = Lease {
            inner: Arc::new(LeaseInner {
                key: key.clone(),
                purpose: purpose.to_string(),
                ttl,
                valid_until: parking_lot::Mutex::new(written + ttl),
            }),
        };
        match Self::check_others(&backend, &key, kind, t0, max_skew).await {
            Ok((store_offset, others)) => {
                let (stop, refresher) =
                    spawn_refresher(backend.clone(), key.clone(), info, lease.clone());
                tracing::debug!(%key, purpose, ?kind, "lock taken");
                Ok(LockGuard {
                    backend,
                    key,
                    lease,
                    store_offset,
                    others,
                    stop,
                    refresher: Some(refresher),
                })
            }
            Err(e) => {
                if let Err(de) = backend.delete(&key).await {
                    tracing::warn!(%key, error = %de, "could not remove our lock after failing to lock; it expires by itself");
                }
                Err(e)
            }
        }
    }

    async fn check_others(
        backend: &DynBackend,
        own: &str,
        kind: LockKind,
        t0: OffsetDateTime,
        max_skew: Option<Duration>,
    ) -> Result<(time::Duration, Vec<FoundLock>)> {
        // A failed listing is an error, never "no other locks".
        let listed = backend.list(PREFIX).await?;
        let t1 = OffsetDateTime::now_utc();
        let Some(mine) = listed.iter().find(|o| o.key == own) else {
            return Err(Error::Refused {
                action: "locking",
                reason: format!(
                    "the lock just written ({own}) is missing from the listing of {PREFIX} in \
                     {}: the store's listings are incomplete or not consistent, so other \
                     writers' locks cannot be trusted to show either",
                    backend.describe()
                ),
            });
        };
        let offset = match mine.modified {
            Some(m) => clock_offset(t0, t1, m),
            None if max_skew.is_some() => {
                return Err(Error::Refused {
                    action: "locking",
                    reason: format!(
                        "{} does not report when objects were written, so this machine's \
                         clock cannot be compared with the store's",
                        backend.describe()
                    ),
                });
            }
            None => time::Duration::ZERO,
        };
        if let Some(max) = max_skew
            && offset.unsigned_abs() > max
        {
            return Err(Error::ClockSkew {
                repo: backend.describe(),
                store_minus_local_ms: i64::try_from(offset.whole_milliseconds())
                    .unwrap_or(i64::MAX),
                max,
            });
        }
        let others: Vec<ObjectInfo> = listed.into_iter().filter(|o| o.key != own).collect();
        let now = OffsetDateTime::now_utc();
        let found = read_locks(backend, others, now, now + offset).await?;
        let conflict = found.iter().find(|l| {
            !l.stale
                && match kind {
                    LockKind::Exclusive => true,
                    // An unreadable lock might be exclusive.
                    LockKind::Shared => l.info.as_ref().is_none_or(|i| i.exclusive),
                }
        });
        if let Some(l) = conflict {
            return Err(Error::Locked {
                repo: backend.describe(),
                key: l.key.clone(),
                holder: l.info.clone().map(Box::new),
            });
        }
        Ok((offset, found))
    }

    /// The holder's lease, to check before committing.
    pub fn lease(&self) -> Lease {
        self.lease.clone()
    }

    /// See [`Lease::ensure_live`].
    pub fn ensure_live(&self) -> Result<()> {
        self.lease.ensure_live()
    }

    /// The store's current time, by this machine's clock corrected for the skew
    /// measured when locking.
    pub fn store_now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.store_offset
    }

    /// The store's clock minus this machine's.
    pub fn store_offset(&self) -> time::Duration {
        self.store_offset
    }

    /// The lock object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops refreshing and removes the lock object.
    pub async fn release(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(h) = self.refresher.take() {
            let _ = h.await;
        }
        self.backend.delete(&self.key).await?;
        tracing::debug!(key = %self.key, "lock released");
        Ok(())
    }

    /// Releases, logging instead of failing: the lock lapses by itself anyway.
    pub async fn release_quietly(self) {
        let key = self.key.clone();
        if let Err(e) = self.release().await {
            tracing::warn!(%key, error = %e, "could not remove our lock; it expires by itself");
        }
    }
}

fn spawn_refresher(
    backend: DynBackend,
    key: String,
    mut info: LockInfo,
    lease: Lease,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    let ttl = lease.inner.ttl;
    let handle = {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(ttl / 3) => {}
                }
                let started = Instant::now();
                info.expires = OffsetDateTime::now_utc() + ttl;
                let Ok(bytes) = encode(&info) else { break };
                match backend.put(&key, bytes).await {
                    Ok(()) => *lease.inner.valid_until.lock() = started + ttl,
                    Err(e) => tracing::warn!(%key, error = %e, "could not refresh lock"),
                }
            }
        })
    };
    (stop, handle)
}

impl crate::repository::Repository {
    /// Every lock object in the repository, judged stale or live by this machine's clock
    /// and the store's write times.
    pub async fn locks(&self) -> Result<Vec<FoundLock>> {
        list_locks(self.backend()).await
    }

    /// Removes stale locks, or with `remove_all` every lock (only when no other ferry
    /// process uses the repository: a live writer's lock removed lets a prune run under
    /// it).
    pub async fn unlock(&self, remove_all: bool) -> Result<UnlockReport> {
        let found = list_locks(self.backend()).await?;
        remove_locks(self.backend(), found, remove_all, None).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{FaultRule, FaultyBackend, MemoryBackend, Op};

    fn foreign(exclusive: bool, expires_in: time::Duration) -> LockInfo {
        let now = OffsetDateTime::now_utc();
        LockInfo {
            hostname: "elsewhere".into(),
            pid: 4242,
            purpose: "backup".into(),
            exclusive,
            created: now - time::Duration::hours(1),
            expires: now + expires_in,
            ttl_ms: Some(60_000),
        }
    }

    async fn put(b: &DynBackend, key: &str, info: &LockInfo) {
        b.put(key, encode(info).unwrap()).await.unwrap();
    }

    #[tokio::test]
    async fn shared_locks_coexist_and_exclusive_excludes() {
        let b: DynBackend = Arc::new(MemoryBackend::new());
        let ttl = Duration::from_secs(60);
        let w1 = LockGuard::acquire(b.clone(), "backup", LockKind::Shared, ttl, None)
            .await
            .unwrap();
        let w2 = LockGuard::acquire(b.clone(), "backup", LockKind::Shared, ttl, None)
            .await
            .unwrap();
        let err = LockGuard::acquire(b.clone(), "prune", LockKind::Exclusive, ttl, Some(ttl))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains("backup (shared)"), "{err}");
        // The refused prune removed its own lock.
        assert_eq!(b.list(PREFIX).await.unwrap().len(), 2);
        w1.release().await.unwrap();
        w2.release().await.unwrap();

        let p = LockGuard::acquire(b.clone(), "prune", LockKind::Exclusive, ttl, Some(ttl))
            .await
            .unwrap();
        let err = LockGuard::acquire(b.clone(), "backup", LockKind::Shared, ttl, None)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("prune (exclusive)") && text.contains("expires"),
            "{text}"
        );
        assert!(text.contains(&hostname()), "{text}");
        p.release().await.unwrap();
        assert!(b.list(PREFIX).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn stale_locks_are_ignored_and_unreadable_ones_conflict() {
        let b: DynBackend = Arc::new(MemoryBackend::new());
        let ttl = Duration::from_secs(60);
        // Expired by its holder's clock, but written just now by the store's clock with
        // a one-minute lifetime: still live.
        put(&b, "locks/a", &foreign(true, time::Duration::hours(-1))).await;
        let err = LockGuard::acquire(b.clone(), "backup", LockKind::Shared, ttl, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("elsewhere"), "{err}");
        // Without a lifetime the expiry alone counts: stale.
        let mut old = foreign(true, time::Duration::hours(-1));
        old.ttl_ms = None;
        put(&b, "locks/a", &old).await;
        let w = LockGuard::acquire(b.clone(), "backup", LockKind::Shared, ttl, None)
            .await
            .unwrap();
        assert_eq!(w.others.len(), 1);
        assert!(w.others[0].stale);
        w.release().await.unwrap();

        b.put("locks/b", Bytes::from_static(b"not json"))
            .await
            .unwrap();
        let err = LockGuard::acquire(b.clone(), "backup", LockKind::Shared, ttl, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("locks/b"), "{err}");

        let report = remove_locks(&b, list_locks(&b).await.unwrap(), false, None)
            .await
            .unwrap();
        assert_eq!(report.removed.len(), 1, "{report:?}");
        assert_eq!(report.kept.len(), 1, "{report:?}");
        let report = remove_locks(&b, list_locks(&b).await.unwrap(), true, None)
            .await
            .unwrap();
        assert_eq!(report.removed.len(), 1);
        assert!(b.list(PREFIX).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn skew_is_measured_on_the_lock_object() {
        let faulty = FaultyBackend::wrap(Arc::new(MemoryBackend::new()));
        let b: DynBackend = faulty.clone();
        let ttl = Duration::from_secs(60);
        faulty.set_clock_offset(time::Duration::minutes(-10));
        let err = LockGuard::acquire(
            b.clone(),
            "prune",
            LockKind::Exclusive,
            ttl,
            Some(Duration::from_secs(300)),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::ClockSkew { .. }), "{err}");
        assert!(err.to_string().contains("ahead"), "{err}");
        assert!(b.list(PREFIX).await.unwrap().is_empty(), "lock left behind");
        // Writers do not refuse on skew; they judge others by the store's clock.
        let w = LockGuard::acquire(b.clone(), "backup", LockKind::Shared, ttl, None)
            .await
            .unwrap();
        assert!(
            (w.store_offset() + time::Duration::minutes(10)).abs() < time::Duration::seconds(5)
        );
        w.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_listing_fails_the_lock() {
        let faulty = FaultyBackend::wrap(Arc::new(MemoryBackend::new()));
        let b: DynBackend = faulty.clone();
        faulty.add_rule(FaultRule::on(Op::List).key_contains(PREFIX));
        let err = LockGuard::acquire(
            b.clone(),
            "prune",
            LockKind::Exclusive,
            DEFAULT_LOCK_TTL,
            None,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        faulty.clear_rules();
        assert!(b.list(PREFIX).await.unwrap().is_empty());

        // A listing that leaves out our own lock is not trusted.
        faulty.add_rule(FaultRule::on(Op::List).key_contains(PREFIX).truncate(0));
        let err = LockGuard::acquire(
            b.clone(),
            "prune",
            LockKind::Exclusive,
            DEFAULT_LOCK_TTL,
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err}");
    }

    #[tokio::test]
    async fn the_lease_lapses_when_refreshes_fail() {
        let faulty = FaultyBackend::wrap(Arc::new(MemoryBackend::new()));
        let b: DynBackend = faulty.clone();
        let ttl = Duration::from_millis(600);
        let g = LockGuard::acquire(b.clone(), "backup", LockKind::Shared, ttl, None)
            .await
            .unwrap();
        g.ensure_live().unwrap();
        // Refreshes keep it alive past its first lifetime.
        tokio::time::sleep(Duration::from_millis(800)).await;
        g.ensure_live().unwrap();
        faulty.add_rule(FaultRule::on(Op::Put).key_contains(PREFIX));
        tokio::time::sleep(Duration::from_millis(800)).await;
        let err = g.ensure_live().unwrap_err();
        assert!(matches!(err, Error::LockLost { .. }), "{err}");
        faulty.clear_rules();
        g.release().await.unwrap();
    }
}
