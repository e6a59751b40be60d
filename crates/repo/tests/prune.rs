//! Retention against real stores (a local directory and the test environment's MinIO):
//! forget and prune remove exactly what nothing uses, refuse when they cannot be sure,
//! survive a crash, and never lose data to a backup running at the same time.

// The helpers below are test code too: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferry_repo::backend::{
    Backend, DynBackend, FaultRule, FaultyBackend, LocalBackend, Op, S3Backend,
};
use ferry_repo::{
    BackupOptions, ContentPart, Error, ForgetPolicy, Id, NodeKind, PruneOptions, PruneReport,
    Repository, RestoreOptions,
};
use serde::Serialize;

/// Prune options for tests: packs no index names are fair game at once, so only the
/// locks protect a concurrent backup.
fn prune_now() -> PruneOptions {
    PruneOptions {
        keep_unindexed_for: Duration::ZERO,
        ..PruneOptions::default()
    }
}

/// Files read one at a time, so each file's chunks land in packs of their own (but for
/// the packs at file boundaries) and a forgotten file's packs become wholly unused.
fn sequential() -> BackupOptions {
    BackupOptions {
        read_concurrency: 1,
        ..BackupOptions::default()
    }
}

fn keep_last(n: usize) -> ForgetPolicy {
    ForgetPolicy {
        keep_last: Some(n),
        ..ForgetPolicy::default()
    }
}

/// Relative path -> content hash (or symlink target) of every file under `root`.
fn content(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &p, out);
            } else if md.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", fs::read_link(&p).unwrap().display()));
            } else {
                out.insert(
                    rel,
                    blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Restores `id` into a fresh directory and returns its content.
async fn restored(repo: &Repository, id: &Id, tmp: &Path) -> BTreeMap<PathBuf, String> {
    let dst = tmp.join(format!("restore-{}-{}", id.short(), rand::random::<u32>()));
    repo.restore(id, &dst, RestoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("restoring {id}: {e}"));
    let c = content(&dst);
    fs::remove_dir_all(&dst).unwrap();
    c
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        total += if md.is_dir() {
            dir_size(&e.path())
        } else {
            md.len()
        };
    }
    total
}

/// Every key and size in the store except locks: what "nothing was deleted" compares.
async fn objects(b: &dyn Backend) -> BTreeSet<(String, u64)> {
    b.list("")
        .await
        .unwrap()
        .into_iter()
        .filter(|o| !o.key.starts_with("locks/"))
        .map(|o| (o.key, o.size))
        .collect()
}

/// The data chunk ids of one file of a snapshot.
async fn chunks_of(repo: &Repository, snapshot: &Id, name: &str) -> Vec<Id> {
    let snap = repo.load_snapshot(snapshot).await.unwrap();
    let tree = repo.load_tree(&snap.tree).await.unwrap();
    let node = tree
        .nodes
        .iter()
        .find(|n| n.name.lossy() == name && n.kind == NodeKind::File)
        .unwrap_or_else(|| panic!("no file {name} in {snapshot}"));
    node.content
        .iter()
        .filter_map(|p| match p {
            ContentPart::Chunk { id, .. } => Some(*id),
            ContentPart::Hole { .. } => None,
        })
        .collect()
}

#[derive(Serialize)]
struct Volume {
    pvc: String,
    snapshot_id: String,
}

/// The shape of ferry-kube's restore point manifest, as far as the engine reads it.
#[derive(Serialize)]
struct Manifest {
    created_at: String,
    job_id: String,
    volumes: Vec<Volume>,
}

fn manifest(day: u32, snapshot: &Id) -> Manifest {
    Manifest {
        created_at: format!("2025-01-{day:02}T00:00:00Z"),
        job_id: format!("job-{day}"),
        volumes: vec![Volume {
            pvc: "data".into(),
            snapshot_id: snapshot.to_hex(),
        }],
    }
}

/// A small source: shared text and binary, plus one file unique to `seed`.
fn write_source(dir: &Path, seed: u64) {
    write_source_sized(dir, seed, 400_000);
}

fn write_source_sized(dir: &Path, seed: u64, unique_len: usize) {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("shared.bin"), random_bytes(200_000, 1)).unwrap();
    fs::write(dir.join("sub/notes.txt"), "shared notes\n".repeat(2000)).unwrap();
    fs::write(
        dir.join(format!("unique-{seed}.bin")),
        random_bytes(unique_len, 1000 + seed),
    )
    .unwrap();
    fs::write(dir.join("sub/round.txt"), format!("seed {seed}\n")).unwrap();
}

/// Three volumes' snapshots; restore points of "shop" name the first two, the third is
/// a plain backup no restore point names.
struct ThreeVolumes {
    tmp: tempfile::TempDir,
    root: PathBuf,
    backend: DynBackend,
    repo: Repository,
    /// Each snapshot's content.
    expected: BTreeMap<Id, BTreeMap<PathBuf, String>>,
    ids: Vec<Id>,
    rp1: Id,
    rp2: Id,
    /// Chunks of the first volume's own file, and of a file every volume holds.
    unique1: Vec<Id>,
    shared: Vec<Id>,
}

async fn three_volumes() -> ThreeVolumes {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    let backend: DynBackend = Arc::new(LocalBackend::new(&root));
    let repo = init(backend.clone()).await;

    let mut expected = BTreeMap::new();
    let mut ids = Vec::new();
    for seed in 1..=3 {
        let src = tmp.path().join(format!("src{seed}"));
        write_source(&src, seed);
        let r = repo.backup(&src, sequential()).await.unwrap();
        expected.insert(r.snapshot_id, content(&src));
        ids.push(r.snapshot_id);
    }
    let rp1 = repo
        .save_restore_point("shop", &manifest(1, &ids[0]))
        .await
        .unwrap();
    let rp2 = repo
        .save_restore_point("shop", &manifest(2, &ids[1]))
        .await
        .unwrap();
    let unique1 = chunks_of(&repo, &ids[0], "unique-1.bin").await;
    let shared = chunks_of(&repo, &ids[0], "shared.bin").await;
    assert!(!unique1.is_empty() && !shared.is_empty());

    ThreeVolumes {
        tmp,
        root,
        backend,
        repo,
        expected,
        ids,
        rp1,
        rp2,
        unique1,
        shared,
    }
}

/// A dry run says what would go and changes nothing; returns its prune report.
async fn dry_run_changes_nothing(v: &ThreeVolumes, policy: &ForgetPolicy) -> PruneReport {
    let (repo, backend, ids, rp1) = (&v.repo, &v.backend, &v.ids, v.rp1);
    let before = objects(backend.as_ref()).await;
    let (forgot, pruned) = repo
        .forget_and_prune(
            policy,
            &PruneOptions {
                dry_run: true,
                ..prune_now()
            },
        )
        .await
        .unwrap();
    assert!(forgot.dry_run && pruned.dry_run);
    assert_eq!(
        forgot
            .restore_points_removed
            .iter()
            .map(|p| p.id)
            .collect::<Vec<_>>(),
        vec![rp1]
    );
    assert_eq!(
        forgot
            .snapshots_removed
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        vec![ids[0]]
    );
    // Scoped to "shop": the plain backup is not even looked at.
    assert_eq!(
        forgot
            .snapshots_kept
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        vec![ids[1]]
    );
    assert!(pruned.packs_deleted > 0, "{pruned:?}");
    assert_eq!(
        objects(backend.as_ref()).await,
        before,
        "a dry run deletes nothing"
    );

    pruned
}

/// Forget, then prune, for real: they remove what the dry run said.
async fn forget_then_prune(
    v: &ThreeVolumes,
    policy: &ForgetPolicy,
    dry_run: &PruneReport,
) -> PruneReport {
    let (repo, root, ids, rp2, pruned) = (&v.repo, &v.root, &v.ids, v.rp2, dry_run);
    let size_before = dir_size(root);
    let forgot = repo.forget(policy, false).await.unwrap();
    assert_eq!(forgot.restore_points_removed.len(), 1);
    assert_eq!(
        repo.restore_point_ids(None).await.unwrap(),
        vec![("shop".to_string(), rp2)]
    );
    let mut left: Vec<Id> = repo.snapshot_ids().await.unwrap();
    left.sort();
    let mut want = vec![ids[1], ids[2]];
    want.sort();
    assert_eq!(left, want);
    let report = repo.prune(&prune_now()).await.unwrap();
    assert_eq!(
        report.packs_deleted, pruned.packs_deleted,
        "{report:?} vs dry run {pruned:?}"
    );
    assert_eq!(report.bytes_deleted, pruned.bytes_deleted);
    assert!(
        report.index_files_deleted > 0 && report.snapshots == 2,
        "{report:?}"
    );
    let size_after = dir_size(root);
    assert!(
        size_after + 200_000 < size_before,
        "the repository shrank only from {size_before} to {size_after}: {report:?}"
    );

    report
}

/// The unused data went: the first volume's unique chunks are gone (but for a few
/// sharing a pack with used ones), the shared ones are still there, and a second prune
/// finds nothing. Returns that second prune's report.
async fn unused_data_is_gone(v: &ThreeVolumes, report: &PruneReport) -> PruneReport {
    let (repo, backend, unique1, shared) = (&v.repo, &v.backend, &v.unique1, &v.shared);
    let reopened = Repository::open(backend.clone(), KEY).await.unwrap();
    let mut survived = 0;
    for id in unique1 {
        if reopened.read_blob(id).await.is_ok() {
            survived += 1;
        }
    }
    assert!(
        survived * 2 < unique1.len(),
        "{survived} of {} unused chunks survived: {report:?}",
        unique1.len()
    );
    assert!(
        report.bytes_unused_in_kept_packs > 0 || survived == 0,
        "{report:?}"
    );
    for id in shared {
        reopened.read_blob(id).await.unwrap();
    }
    let again = repo.prune(&prune_now()).await.unwrap();
    assert_eq!(
        (
            again.packs_deleted,
            again.index_files_written,
            again.index_files_deleted
        ),
        (0, 0, 0),
        "{again:?}"
    );
    again
}

/// Repacking every pack with anything unused leaves exactly the used data.
async fn repacking_leaves_only_used_data(v: &ThreeVolumes, again: &PruneReport) {
    let (repo, backend, unique1, ids, expected) =
        (&v.repo, &v.backend, &v.unique1, &v.ids, &v.expected);
    let exact = repo
        .prune(&PruneOptions {
            max_unused: 0.0,
            ..prune_now()
        })
        .await
        .unwrap();
    assert_eq!(exact.packs_partly_used, 0, "{exact:?}");
    assert_eq!(exact.packs_repacked, again.packs_partly_used, "{exact:?}");
    let after_repack = repo
        .prune(&PruneOptions {
            max_unused: 0.0,
            ..prune_now()
        })
        .await
        .unwrap();
    assert_eq!(
        (
            after_repack.packs_deleted,
            after_repack.bytes_unused_in_kept_packs
        ),
        (0, 0)
    );
    let reopened = Repository::open(backend.clone(), KEY).await.unwrap();
    for id in unique1 {
        assert!(
            reopened.read_blob(id).await.is_err(),
            "unused chunk {id} survived"
        );
    }
    let check = reopened.check(true).await.unwrap();
    assert!(check.is_ok(), "{check}");
    assert!(check.unindexed_packs.is_empty(), "{check:?}");
    for id in [ids[1], ids[2]] {
        assert_eq!(restored(&reopened, &id, v.tmp.path()).await, expected[&id]);
    }
    assert!(
        backend.list("locks/").await.unwrap().is_empty(),
        "locks left behind"
    );
}

/// Unscoped, plain backups of one path follow the policy too, and restore points keep
/// the snapshots they name.
async fn unscoped_backups_follow_the_policy(v: &mut ThreeVolumes) {
    let (repo, ids) = (&v.repo, &v.ids);
    let src = v.tmp.path().join("src3");
    write_source(&src, 4);
    let newest = repo.backup(&src, sequential()).await.unwrap();
    v.expected.insert(newest.snapshot_id, content(&src));
    let (forgot, pruned) = repo
        .forget_and_prune(&keep_last(1), &prune_now())
        .await
        .unwrap();
    assert_eq!(
        forgot
            .snapshots_removed
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        vec![ids[2]],
        "the older backup of src3 goes"
    );
    assert!(forgot.restore_points_removed.is_empty());
    assert!(pruned.packs_deleted > 0, "{pruned:?}");
    let check = repo.check(true).await.unwrap();
    assert!(check.is_ok(), "{check}");
    for id in [ids[1], newest.snapshot_id] {
        assert_eq!(restored(repo, &id, v.tmp.path()).await, v.expected[&id]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_and_prune_remove_exactly_the_unused_data() {
    let mut v = three_volumes().await;
    let policy = ForgetPolicy {
        keep_last: Some(1),
        application: Some("shop".into()),
        ..ForgetPolicy::default()
    };
    let dry_run = dry_run_changes_nothing(&v, &policy).await;
    let report = forget_then_prune(&v, &policy, &dry_run).await;
    let again = unused_data_is_gone(&v, &report).await;
    repacking_leaves_only_used_data(&v, &again).await;
    unscoped_backups_follow_the_policy(&mut v).await;
}

/// A repository with something to prune: two backups of one path, the older forgotten.
async fn with_garbage(
    backend: DynBackend,
    tmp: &Path,
) -> (Repository, Id, BTreeMap<PathBuf, String>) {
    let repo = init(backend).await;
    let src = tmp.join("src");
    write_source(&src, 1);
    repo.backup(&src, sequential()).await.unwrap();
    write_source(&src, 2);
    let kept = repo.backup(&src, sequential()).await.unwrap();
    let forgot = repo.forget(&keep_last(1), false).await.unwrap();
    assert_eq!(forgot.snapshots_removed.len(), 1);
    (repo, kept.snapshot_id, content(&src))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_refuses_when_it_cannot_be_sure_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let inner: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("repo")));
    let faulty = FaultyBackend::wrap(inner.clone());
    let (_, kept, want) = with_garbage(faulty.clone(), tmp.path()).await;
    let repo = Repository::open(faulty.clone(), KEY).await.unwrap();
    let before = objects(inner.as_ref()).await;

    // Every listing prune needs, failing; then listings that silently leave objects out.
    let mut cases: Vec<(String, FaultRule)> =
        ["locks/", "index/", "snapshots/", "restorepoints/", "packs/"]
            .into_iter()
            .map(|p| {
                (
                    format!("failing list of {p}"),
                    FaultRule::on(Op::List).key_contains(p),
                )
            })
            .collect();
    cases.push((
        "partial list of packs/".into(),
        FaultRule::on(Op::List).key_contains("packs/").truncate(2),
    ));
    cases.push((
        "partial list of locks/".into(),
        FaultRule::on(Op::List).key_contains("locks/").truncate(0),
    ));
    cases.push((
        "index/ listed differently the second time".into(),
        FaultRule::on(Op::List)
            .key_contains("index/")
            .nth(2)
            .truncate(1),
    ));
    cases.push((
        "an unreadable index file".into(),
        FaultRule::on(Op::Get).key_contains("index/"),
    ));
    for (what, rule) in cases {
        faulty.add_rule(rule);
        let err = repo.prune(&prune_now()).await.expect_err(&what);
        faulty.clear_rules();
        let text = err.to_string();
        assert!(
            matches!(err, Error::Refused { .. }) || text.contains("injected"),
            "{what}: {text}"
        );
        // Prune may have added index files (repeating entries); it deleted nothing.
        let now = objects(inner.as_ref()).await;
        assert!(before.is_subset(&now), "{what}: something was deleted");
        assert!(
            inner.list("locks/").await.unwrap().is_empty(),
            "{what}: lock left behind"
        );
    }

    // A live lock of another process: refused, naming the holder.
    let foreign = serde_json::json!({
        "hostname": "other-host", "pid": 4242, "purpose": "backup", "exclusive": false,
        "created": "2025-01-01T00:00:00Z", "expires": "2999-01-01T00:00:00Z", "ttl_ms": 1_800_000
    });
    inner
        .put(
            "locks/foreign",
            serde_json::to_vec(&foreign).unwrap().into(),
        )
        .await
        .unwrap();
    let err = repo.prune(&prune_now()).await.expect_err("foreign lock");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("other-host") && text.contains("4242") && text.contains("2999"),
        "{text}"
    );
    assert!(before.is_subset(&objects(inner.as_ref()).await));
    assert_eq!(
        inner.list("locks/").await.unwrap().len(),
        1,
        "only the foreign lock"
    );
    // `unlock` leaves a live lock alone; `remove_all` removes it.
    let report = repo.unlock(false).await.unwrap();
    assert!(
        report.removed.is_empty() && report.kept.len() == 1,
        "{report:?}"
    );
    repo.unlock(true).await.unwrap();

    // The store's clock is ten minutes behind: refused, saying by how much.
    faulty.set_clock_offset(time::Duration::minutes(-10));
    let err = repo.prune(&prune_now()).await.expect_err("skew");
    assert!(matches!(err, Error::ClockSkew { .. }), "{err}");
    assert!(err.to_string().contains("s ahead of"), "{err}");
    assert!(before.is_subset(&objects(inner.as_ref()).await));
    // A looser limit lets it run.
    let loose = PruneOptions {
        max_clock_skew: Duration::from_secs(3600),
        ..prune_now()
    };
    let report = repo.prune(&loose).await.unwrap();
    assert!(report.packs_deleted > 0, "{report:?}");
    assert!((report.clock_skew_ms + 600_000).abs() < 5_000, "{report:?}");
    faulty.set_clock_offset(time::Duration::ZERO);
    let check = repo.check(true).await.unwrap();
    assert!(check.is_ok(), "{check}");
    assert_eq!(restored(&repo, &kept, tmp.path()).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_prune_leaves_a_repository_that_checks_clean() {
    // Each failure point of the delete phase, a failing index write before it, and
    // failing uploads and downloads of a repack.
    let repack_all = PruneOptions {
        max_unused: 0.0,
        ..prune_now()
    };
    let cases = [
        (FaultRule::on(Op::Put).key_contains("index/"), prune_now()),
        (
            FaultRule::on(Op::Delete).key_contains("index/").nth(1),
            prune_now(),
        ),
        (
            FaultRule::on(Op::Delete).key_contains("packs/").nth(1),
            prune_now(),
        ),
        (
            FaultRule::on(Op::Delete).key_contains("packs/").from_nth(3),
            prune_now(),
        ),
        (
            FaultRule::on(Op::Put).key_contains("packs/"),
            repack_all.clone(),
        ),
        (
            FaultRule::on(Op::Put).key_contains("index/"),
            repack_all.clone(),
        ),
        (
            FaultRule::on(Op::Get).key_contains("packs/").nth(1),
            repack_all.clone(),
        ),
        (
            FaultRule::on(Op::Delete).key_contains("packs/").nth(2),
            repack_all,
        ),
    ];
    for (rule, options) in cases {
        let what = format!("{rule:?}");
        let tmp = tempfile::tempdir().unwrap();
        let inner: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("repo")));
        let faulty = FaultyBackend::wrap(inner.clone());
        let (repo, kept, want) = with_garbage(faulty.clone(), tmp.path()).await;
        let plan = repo
            .prune(&PruneOptions {
                dry_run: true,
                ..options.clone()
            })
            .await
            .unwrap();
        assert!(
            plan.index_files_written > 0 && plan.packs_deleted > 3,
            "the fault must have something to hit: {plan:?}"
        );
        if options.max_unused == 0.0 {
            assert!(plan.packs_repacked > 0, "{what}: {plan:?}");
        }
        faulty.add_rule(rule);
        let err = repo.prune(&options).await.expect_err(&what);
        assert!(err.to_string().contains("injected"), "{what}: {err}");
        faulty.clear_rules();

        let fresh = Repository::open(inner.clone(), KEY).await.unwrap();
        let check = fresh.check(true).await.unwrap();
        assert!(check.is_ok(), "{what}: {check}");
        assert_eq!(restored(&fresh, &kept, tmp.path()).await, want, "{what}");
        assert!(
            inner.list("locks/").await.unwrap().is_empty(),
            "{what}: lock left behind"
        );

        // The next prune finishes the job: nothing unused and nothing unindexed is left.
        fresh.prune(&prune_now()).await.unwrap();
        let again = fresh.prune(&prune_now()).await.unwrap();
        assert_eq!(again.packs_deleted, 0, "{what}: {again:?}");
        let check = fresh.check(true).await.unwrap();
        assert!(
            check.is_ok() && check.unindexed_packs.is_empty(),
            "{what}: {check:?}"
        );
        assert_eq!(restored(&fresh, &kept, tmp.path()).await, want, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_opened_before_a_prune_does_not_reuse_pruned_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let backend: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("repo")));
    let repo = init(backend.clone()).await;
    let src = tmp.path().join("src");
    write_source(&src, 1);
    repo.backup(&src, BackupOptions::default()).await.unwrap();
    // A second process opens the repository now: its index knows unique-1's chunks.
    let early = Repository::open(backend.clone(), KEY).await.unwrap();
    write_source(&src, 2);
    repo.backup(&src, BackupOptions::default()).await.unwrap();
    let (_, pruned) = repo
        .forget_and_prune(&keep_last(1), &prune_now())
        .await
        .unwrap();
    assert!(pruned.packs_deleted > 0, "{pruned:?}");

    // unique-1 comes back; the early process must upload its chunks again.
    write_source(&src, 1);
    let r = early.backup(&src, BackupOptions::default()).await.unwrap();
    assert!(
        r.snapshot.summary.chunks_new > 0,
        "{:?}",
        r.snapshot.summary
    );
    let check = repo.check(true).await.unwrap();
    assert!(check.is_ok(), "{check}");
    assert_eq!(
        restored(&repo, &r.snapshot_id, tmp.path()).await,
        content(&src)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_point_is_not_committed_after_forget_removed_its_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let backend: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("repo")));
    let repo = init(backend).await;
    let src = tmp.path().join("src");
    write_source(&src, 1);
    let first = repo.backup(&src, BackupOptions::default()).await.unwrap();
    write_source(&src, 2);
    repo.backup(&src, BackupOptions::default()).await.unwrap();
    // An export backed `first` up but had not committed; forget removes it meanwhile.
    repo.forget(&keep_last(1), false).await.unwrap();
    let err = repo
        .save_restore_point("shop", &manifest(1, &first.snapshot_id))
        .await
        .expect_err("snapshot gone");
    assert!(err.is_not_found(), "{err}");
    assert!(repo.restore_point_ids(None).await.unwrap().is_empty());
}

/// Rounds of a backup and a forget+prune started together, with varying offsets. Each
/// side either succeeds or refuses with the lock error; after every round the
/// repository checks clean and every snapshot restores byte for byte.
async fn backup_races_prune(backend: DynBackend, tmp: &Path, rounds: u64) {
    let writer = init(backend.clone()).await;
    let pruner = Repository::open(backend.clone(), KEY).await.unwrap();
    let src = tmp.join("src");
    let mut expected: BTreeMap<Id, BTreeMap<PathBuf, String>> = BTreeMap::new();
    let (mut backups_ok, mut prunes_ok, mut refused) = (0, 0, 0);
    for round in 0..rounds {
        // Big enough that a backup takes a while, so the two overlap.
        write_source_sized(&src, round, 3 << 20);
        let want = content(&src);
        // Offsets from 0 to 150 ms either way: both orders, mostly overlapping.
        let offset = (round as i64 % 7 - 3) * 50;
        let backup = async {
            tokio::time::sleep(Duration::from_millis(offset.max(0) as u64)).await;
            writer.backup(&src, BackupOptions::default()).await
        };
        let prune = async {
            tokio::time::sleep(Duration::from_millis((-offset).max(0) as u64)).await;
            pruner.forget_and_prune(&keep_last(2), &prune_now()).await
        };
        let (b, p) = tokio::join!(backup, prune);
        match b {
            Ok(r) => {
                backups_ok += 1;
                expected.insert(r.snapshot_id, want);
            }
            Err(Error::Locked { .. }) => refused += 1,
            Err(e) => panic!("round {round}: backup failed with {e}"),
        }
        match p {
            Ok(_) => prunes_ok += 1,
            Err(Error::Locked { .. }) => refused += 1,
            Err(e) => panic!("round {round}: prune failed with {e}"),
        }
        let check = writer.check(true).await.unwrap();
        assert!(check.is_ok(), "round {round}: {check}");
        let present: BTreeSet<Id> = writer.snapshot_ids().await.unwrap().into_iter().collect();
        expected.retain(|id, _| present.contains(id));
        assert_eq!(
            present,
            expected.keys().copied().collect(),
            "round {round}: every snapshot is one a backup reported"
        );
        for (id, want) in &expected {
            assert_eq!(
                &restored(&writer, id, tmp).await,
                want,
                "round {round}: snapshot {id}"
            );
        }
        assert!(
            backend.list("locks/").await.unwrap().is_empty(),
            "round {round}: locks left"
        );
    }
    eprintln!(
        "{backups_ok} backups and {prunes_ok} prunes succeeded, {refused} refused on the lock"
    );
    assert!(backups_ok > 0 && prunes_ok > 0);
    // Whatever the rounds did, a last prune leaves a clean, complete repository.
    pruner.prune(&prune_now()).await.unwrap();
    let check = writer.check(true).await.unwrap();
    assert!(
        check.is_ok() && check.unindexed_packs.is_empty(),
        "{check:?}"
    );
    for (id, want) in &expected {
        assert_eq!(&restored(&writer, id, tmp).await, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_prune_at_the_same_time_lose_nothing_local() {
    let tmp = tempfile::tempdir().unwrap();
    let backend: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("repo")));
    backup_races_prune(backend, tmp.path(), 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_prune_at_the_same_time_lose_nothing_s3() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().expect("S3 server");
    let prefix = ferry_testenv::unique_name("ferry-prune-race");
    let backend: DynBackend = Arc::new(S3Backend::new(common::s3_options(s3, &s3.bucket, &prefix)));
    let tmp = tempfile::tempdir().unwrap();
    backup_races_prune(backend, tmp.path(), 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_and_prune_on_s3_and_refusals_there() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().expect("S3 server");
    let prefix = ferry_testenv::unique_name("ferry-prune");
    let inner: DynBackend = Arc::new(S3Backend::new(common::s3_options(s3, &s3.bucket, &prefix)));
    let faulty = FaultyBackend::wrap(inner.clone());
    let tmp = tempfile::tempdir().unwrap();
    let (repo, kept, want) = with_garbage(faulty.clone(), tmp.path()).await;
    let before = objects(inner.as_ref()).await;

    faulty.add_rule(FaultRule::on(Op::List).key_contains("packs/"));
    let err = repo.prune(&prune_now()).await.expect_err("failing list");
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    faulty.clear_rules();
    faulty.set_clock_offset(time::Duration::minutes(7));
    let err = repo.prune(&prune_now()).await.expect_err("skew");
    assert!(err.to_string().contains("behind"), "{err}");
    faulty.set_clock_offset(time::Duration::ZERO);
    assert_eq!(objects(inner.as_ref()).await, before);

    // MinIO reports write times close to this machine's clock: no skew to speak of.
    let report = repo.prune(&prune_now()).await.unwrap();
    assert!(report.clock_skew_ms.abs() < 60_000, "{report:?}");
    assert!(
        report.packs_deleted > 0 && report.bytes_deleted > 200_000,
        "{report:?}"
    );
    let after: u64 = objects(inner.as_ref()).await.iter().map(|(_, s)| s).sum();
    let before_bytes: u64 = before.iter().map(|(_, s)| s).sum();
    assert!(after < before_bytes, "{after} >= {before_bytes}");
    let check = repo.check(true).await.unwrap();
    assert!(
        check.is_ok() && check.unindexed_packs.is_empty(),
        "{check:?}"
    );
    assert_eq!(restored(&repo, &kept, tmp.path()).await, want);
}
