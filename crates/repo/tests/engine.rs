//! End-to-end tests of the engine: backup, restore, incremental, faults, check.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use ferry_repo::backend::{
    Backend, DynBackend, FaultRule, FaultyBackend, LocalBackend, MemoryBackend, Op,
};
use ferry_repo::{
    BackupOptions, BackupProgress, Error, InitOptions, Node, NodeKind, Repository, RestoreOptions,
    Snapshot, SnapshotSummary, Tree, pack_key,
};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_preserves_content_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    common::set_mode(&src, 0o711);

    let backend: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("repo")));
    let repo = init(backend.clone()).await;
    let result = repo.backup(&src, BackupOptions::default()).await.unwrap();
    let s = &result.snapshot.summary;
    assert_eq!(s.files, 6, "{s:?}");
    assert_eq!(s.hardlinks, 1, "{s:?}");
    assert_eq!(s.symlinks, 2, "{s:?}");
    assert_eq!(s.dirs, 3, "{s:?}");
    assert!(s.bytes_uploaded > 0);
    // The sparse file's holes are neither read as data nor uploaded.
    assert!(s.bytes_new < 1 << 20, "{s:?}");
    assert!(
        backend.list("locks/").await.unwrap().is_empty(),
        "lock left behind"
    );

    // A fresh handle sees the same snapshot.
    let repo = Repository::open(backend.clone(), KEY).await.unwrap();
    let snaps = repo.snapshots().await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].0, result.snapshot_id);

    let dst = tmp.path().join("dst");
    let restored = repo
        .restore(&result.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(restored.files, 6);
    assert_same_tree(&src, &dst);

    // Hard links come back as links.
    let a = fs::metadata(dst.join("dir/linked_a")).unwrap();
    let b = fs::metadata(dst.join("linked_b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);

    // The sparse file stays sparse.
    let sparse = fs::metadata(dst.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), SPARSE_LEN);
    assert!(
        sparse.blocks() * 512 < 4 << 20,
        "sparse file restored with {} blocks",
        sparse.blocks()
    );

    // Restoring into a non-empty directory is refused.
    let err = repo
        .restore(&result.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");

    let report = repo.check(true).await.unwrap();
    assert!(report.is_ok(), "{report}");
    assert!(report.blobs_read > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_file_backup_restores_as_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("disk.img");
    let mut data = random_bytes(200_000, 9);
    data.extend(std::iter::repeat_n(0u8, 100_000));
    data.extend(random_bytes(50_000, 10));
    fs::write(&img, &data).unwrap();

    // Given through a symlink (as /dev/disk/by-id/… names are): the target is read.
    let via = tmp.path().join("by-id-link");
    std::os::unix::fs::symlink(&img, &via).unwrap();
    let repo = init(memory()).await;
    let r = repo.backup(&via, BackupOptions::default()).await.unwrap();
    assert!(r.snapshot.root.is_none());
    // 100 000 zero bytes are recorded as a hole, not stored.
    assert!(
        r.snapshot.summary.bytes_new <= 250_000 + 2 * 16 * 1024,
        "{:?}",
        r.snapshot.summary
    );
    assert_eq!(r.snapshot.summary.files, 1);
    let dst = tmp.path().join("out");
    repo.restore(&r.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(fs::read(dst.join("by-id-link")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_tree_is_not_read_or_uploaded_again() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let backend = memory();
    let repo = init(backend.clone()).await;
    let first = repo.backup(&src, BackupOptions::default()).await.unwrap();
    assert!(first.snapshot.summary.bytes_read > 300_000);
    let packs_before = backend.list("packs/").await.unwrap().len();

    let (tx, rx) = watch::channel(BackupProgress::default());
    let second = repo
        .backup(
            &src,
            BackupOptions {
                parent: Some(first.snapshot_id),
                progress: Some(tx),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = &second.snapshot.summary;
    assert_eq!(s.bytes_read, 0, "{s:?}");
    assert_eq!(s.files_unchanged, s.files, "{s:?}");
    assert_eq!(s.bytes_uploaded, 0, "{s:?}");
    assert_eq!(s.chunks_new, 0, "{s:?}");
    assert_eq!(s.trees_new, 0, "{s:?}");
    assert_eq!(second.snapshot.tree, first.snapshot.tree);
    assert_eq!(second.snapshot.parent, Some(first.snapshot_id));
    assert_eq!(backend.list("packs/").await.unwrap().len(), packs_before);

    // The progress channel carries the same story, with a final update.
    let p = rx.borrow().clone();
    assert!(p.done, "{p:?}");
    assert_eq!(p.bytes_read, 0);
    assert_eq!(p.files_total, 6);
    assert_eq!(p.files_done, 6);
    assert_eq!(p.files_unchanged, 6);
    assert_eq!(p.bytes_uploaded, 0);

    // Without a parent every file is read again, but nothing new is uploaded.
    let third = repo.backup(&src, BackupOptions::default()).await.unwrap();
    let s = &third.snapshot.summary;
    assert!(s.bytes_read > 300_000, "{s:?}");
    assert_eq!(s.bytes_uploaded, 0, "{s:?}");
    assert!(s.chunks_reused > 10, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modified_large_file_uploads_only_a_few_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut data = random_bytes(2 << 20, 42);
    fs::write(src.join("big.bin"), &data).unwrap();
    let repo = init(memory()).await;
    let first = repo.backup(&src, BackupOptions::default()).await.unwrap();
    let chunks_first = first.snapshot.summary.chunks_new;
    assert!(chunks_first > 100, "{:?}", first.snapshot.summary);

    // Overwrite 100 bytes in the middle, keeping the size.
    data[1_000_000..1_000_100].copy_from_slice(&[0xAB; 100]);
    fs::write(src.join("big.bin"), &data).unwrap();
    let second = repo
        .backup(
            &src,
            BackupOptions {
                parent: Some(first.snapshot_id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = &second.snapshot.summary;
    assert_eq!(s.files_unchanged, 0, "{s:?}");
    assert_eq!(s.bytes_read, 2 << 20, "{s:?}");
    assert!(s.chunks_new >= 1 && s.chunks_new <= 3, "{s:?}");
    assert!(s.bytes_new < 64 * 1024, "{s:?}");

    let dst = tmp.path().join("dst");
    repo.restore(&second.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(fs::read(dst.join("big.bin")).unwrap(), data);

    // Restored over the first snapshot's restore, the file is patched: only the changed
    // chunks are written, the way a re-sync of a database's volume must go.
    let synced = tmp.path().join("synced");
    repo.restore(&first.snapshot_id, &synced, RestoreOptions::default())
        .await
        .unwrap();
    let sync = || RestoreOptions {
        sync: true,
        ..Default::default()
    };
    let r = repo
        .restore(&second.snapshot_id, &synced, sync())
        .await
        .unwrap();
    assert_eq!(fs::read(synced.join("big.bin")).unwrap(), data);
    assert!(r.bytes_written < 64 * 1024, "{r:?}");
    assert!(
        r.bytes_written >= 100,
        "the change itself is written: {r:?}"
    );
    assert_eq!(r.files_unchanged, 0, "{r:?}");

    // Someone writes to the destination since (the file's mtime moves) and adds a file:
    // the next sync stops before touching anything and names both.
    let stray = synced.join("big.bin");
    let mut other = fs::read(&stray).unwrap();
    other[10] ^= 0xff;
    fs::write(&stray, &other).unwrap();
    fs::write(synced.join("notes.txt"), b"written on the destination").unwrap();
    let err = repo
        .restore(&first.snapshot_id, &synced, sync())
        .await
        .expect_err("a destination changed out of band is refused");
    match &err {
        Error::DestinationChanged { changed, more, .. } => {
            assert_eq!(changed, &["big.bin", "notes.txt"], "{err}");
            assert_eq!(*more, 0);
        }
        other => panic!("not DestinationChanged: {other:?}"),
    }
    assert_eq!(fs::read(&stray).unwrap(), other, "nothing was touched");
    assert!(synced.join("notes.txt").exists());

    // Asked to, it replaces them: the changed file is not trusted to hold the earlier
    // restore, so it is written whole.
    let overwrite = RestoreOptions {
        overwrite_changes: true,
        ..sync()
    };
    let r = repo
        .restore(&first.snapshot_id, &synced, overwrite)
        .await
        .unwrap();
    assert_eq!(r.bytes_written, 2 << 20, "{r:?}");
    assert!(!synced.join("notes.txt").exists());
    let first_data = {
        let mut d = data.clone();
        d[1_000_000..1_000_100].copy_from_slice(&random_bytes(2 << 20, 42)[1_000_000..1_000_100]);
        d
    };
    assert_eq!(fs::read(&stray).unwrap(), first_data);
}

#[tokio::test]
async fn wrong_key_and_missing_and_existing_repositories() {
    let backend = memory();
    let err = Repository::open(backend.clone(), KEY).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    init(backend.clone()).await;
    let err = Repository::open(backend.clone(), b"another key")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert!(!err.is_transient());

    let err = Repository::init(backend.clone(), KEY, InitOptions::small_for_tests())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");

    let repo = Repository::open(backend.clone(), KEY).await.unwrap();
    assert_eq!(repo.config().chunker.avg_size, 4096);
    // The config is plaintext JSON holding no key material in the clear.
    let raw = backend.get("config").await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(json["version"], 2);
    assert_eq!(json["kdf"]["algorithm"], "argon2id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_backup_leaves_no_snapshot_and_rerun_reuses_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let data = random_bytes(1 << 20, 5);
    fs::write(src.join("data.bin"), &data).unwrap();

    let inner = memory();
    let faulty = FaultyBackend::wrap(inner.clone());
    let repo = init(faulty.clone()).await;
    faulty.add_rule(FaultRule::on(Op::Put).key_contains("packs/").nth(10));
    let err = repo
        .backup(
            &src,
            BackupOptions {
                upload_concurrency: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("packs/"), "{err}");
    assert!(repo.snapshots().await.unwrap().is_empty());
    assert!(inner.list("snapshots/").await.unwrap().is_empty());
    let packs_after_failure = inner.list("packs/").await.unwrap();
    assert!(
        packs_after_failure.len() >= 9,
        "{}",
        packs_after_failure.len()
    );
    let failed_run_bytes: u64 = packs_after_failure.iter().map(|o| o.size).sum();
    // The packs that made it were indexed on the way out.
    assert!(!inner.list("index/").await.unwrap().is_empty());
    assert!(inner.list("locks/").await.unwrap().is_empty());

    faulty.clear_rules();
    let repo = Repository::open(faulty.clone(), KEY).await.unwrap();
    let r = repo.backup(&src, BackupOptions::default()).await.unwrap();
    let s = &r.snapshot.summary;
    assert!(s.chunks_reused > 100, "{s:?}");
    // What the re-run uploads plus what the failed run left is about one full upload:
    // nothing uploaded before the failure was uploaded again.
    let control = init(memory())
        .await
        .backup(&src, BackupOptions::default())
        .await
        .unwrap()
        .snapshot
        .summary
        .bytes_uploaded;
    assert!(
        s.bytes_uploaded + failed_run_bytes < control + control / 20,
        "re-run uploaded {} after {failed_run_bytes}; a clean run uploads {control}",
        s.bytes_uploaded
    );
    assert!(s.bytes_uploaded < control * 6 / 10, "{s:?}");
    // Every pack of the failed run is indexed and used.
    assert!(repo.check(false).await.unwrap().unindexed_packs.is_empty());
    let dst = tmp.path().join("dst");
    repo.restore(&r.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(fs::read(dst.join("data.bin")).unwrap(), data);
    let report = repo.check(true).await.unwrap();
    assert!(report.is_ok(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_data_check_names_a_corrupted_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(400_000, 7)).unwrap();
    let backend = memory();
    let repo = init(backend.clone()).await;
    repo.backup(&src, BackupOptions::default()).await.unwrap();
    assert!(repo.check(true).await.unwrap().is_ok());

    let packs = backend.list("packs/").await.unwrap();
    assert!(packs.len() > 2);
    let victim = &packs[1];
    let mut bytes = backend.get(&victim.key).await.unwrap().to_vec();
    bytes[100] ^= 0x55;
    backend.overwrite_raw(&victim.key, Bytes::from(bytes));
    let victim_id: ferry_repo::Id = victim.key.rsplit('/').next().unwrap().parse().unwrap();

    // Same size, so the structural check cannot see it; reading the data does.
    let report = repo.check(true).await.unwrap();
    assert!(!report.is_ok());
    assert_eq!(
        report.broken_packs(),
        [victim_id].into_iter().collect(),
        "{report}"
    );
    assert!(
        report.to_string().contains(&pack_key(&victim_id)),
        "{report}"
    );

    // A truncated pack is found without reading data.
    backend.overwrite_raw(&victim.key, Bytes::from_static(b"short"));
    let report = repo.check(false).await.unwrap();
    assert!(report.broken_packs().contains(&victim_id), "{report}");
}

#[tokio::test]
async fn restore_rejects_names_that_escape_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init(memory()).await;
    for bad in ["../x", "..", "a/b", ""] {
        let mut node = Node::new(bad, NodeKind::File);
        node.mode = 0o100644;
        let tree = Tree { nodes: vec![node] };
        let snap_id = crafted_snapshot(&repo, &tree).await;
        let target = tmp.path().join("target").join("inner");
        let err = repo
            .restore(&snap_id, &target, RestoreOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnsafeName { .. }), "{bad:?}: {err}");
        assert!(!tmp.path().join("target/x").exists());
        assert!(!tmp.path().join("x").exists());
        // check reports the crafted tree too.
        let report = repo.check(false).await.unwrap();
        assert!(!report.is_ok(), "{bad:?} passed check");
    }
}

#[tokio::test]
async fn cancelled_backup_leaves_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let backend = memory();
    let repo = init(backend.clone()).await;
    let opts = BackupOptions::default();
    opts.cancel.cancel();
    let err = repo.backup(&src, opts).await.unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(backend.list("snapshots/").await.unwrap().is_empty());
    assert!(backend.list("locks/").await.unwrap().is_empty());
}

#[tokio::test]
async fn snapshot_lookup_by_prefix_and_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"one").unwrap();
    let repo = init(memory()).await;
    let a = repo.backup(&src, BackupOptions::default()).await.unwrap();
    fs::write(src.join("f"), b"two").unwrap();
    let b = repo.backup(&src, BackupOptions::default()).await.unwrap();
    assert_eq!(
        repo.resolve_snapshot("latest").await.unwrap(),
        b.snapshot_id
    );
    let prefix = &a.snapshot_id.to_hex()[..12];
    assert_eq!(repo.resolve_snapshot(prefix).await.unwrap(), a.snapshot_id);
    assert!(
        repo.resolve_snapshot("zz")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn memory_backend_is_usable_directly() {
    let b = MemoryBackend::new();
    b.put("snapshots/x", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(b.list("snap").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_verifies_chunks_and_reports_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let data = random_bytes(300_000, 11);
    fs::write(src.join("f.bin"), &data).unwrap();
    let inner = memory();
    let faulty = FaultyBackend::wrap(inner.clone());
    let repo = init(faulty.clone()).await;
    let r = repo.backup(&src, BackupOptions::default()).await.unwrap();

    let (tx, rx) = watch::channel(ferry_repo::RestoreProgress::default());
    let ok = repo
        .restore(
            &r.snapshot_id,
            &tmp.path().join("good"),
            RestoreOptions {
                progress: Some(tx),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ok.bytes_written, data.len() as u64);
    let p = rx.borrow().clone();
    assert!(p.done);
    assert_eq!((p.files_total, p.files_done), (1, 1));
    assert_eq!(p.bytes_written, data.len() as u64);
    assert!(p.bytes_downloaded > 0);

    // Truncated range reads must fail verification, never produce a wrong file.
    // The first range read loads the root tree; the second fetches file data.
    faulty.add_rule(
        FaultRule::on(Op::GetRange)
            .key_contains("packs/")
            .nth(2)
            .truncate(10),
    );
    let err = repo
        .restore(
            &r.snapshot_id,
            &tmp.path().join("bad"),
            RestoreOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("range read returned 10 bytes"),
        "{err}"
    );
    faulty.clear_rules();

    // A flipped byte inside a data blob is caught by the tag and named.
    let packs = inner.list("packs/").await.unwrap();
    for p in &packs {
        let mut bytes = inner.get(&p.key).await.unwrap().to_vec();
        bytes[20] ^= 1;
        inner.overwrite_raw(&p.key, Bytes::from(bytes));
    }
    let err = repo
        .restore(
            &r.snapshot_id,
            &tmp.path().join("bad2"),
            RestoreOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("pack"), "{err}");
}

#[tokio::test]
async fn restore_rejects_hard_links_to_anything_but_restored_files() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = init(memory()).await;
    let mut sym = Node::new("etc", NodeKind::Symlink);
    sym.symlink_target = Some("/etc".into());
    let mut link = Node::new("stolen", NodeKind::Hardlink);
    link.link_target = Some("etc/hostname".into());
    let tree = Tree {
        nodes: vec![sym, link],
    };
    let snap_id = crafted_snapshot(&repo, &tree).await;
    let target = tmp.path().join("t");
    let err = repo
        .restore(&snap_id, &target, RestoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsafeName { .. }), "{err}");
    assert!(!target.join("stolen").exists());
}

/// A snapshot of `tree` as written, however hostile: what a tampered repository holds.
async fn crafted_snapshot(repo: &Repository, tree: &Tree) -> ferry_repo::Id {
    let snap = Snapshot {
        time: time::OffsetDateTime::now_utc(),
        hostname: "test".into(),
        paths: vec!["/crafted".into()],
        tags: vec![],
        parent: None,
        tree: repo.save_tree(tree).await.expect("save the tree"),
        root: None,
        summary: SnapshotSummary::default(),
    };
    repo.save_snapshot(&snap).await.expect("save the snapshot")
}

/// A re-sync after 1% of a volume's bytes changed in place (contiguous regions, as a
/// database rewrites its pages in runs) writes under 2% of the volume on the
/// destination, and leaves it byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_after_a_one_percent_change_writes_under_two_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let size = 16 << 20;
    let mut data = random_bytes(size, 7);
    fs::write(src.join("table.0"), &data).unwrap();
    fs::write(src.join("small.conf"), b"unchanged").unwrap();
    let repo = Repository::init(memory(), KEY, InitOptions::default())
        .await
        .unwrap();
    let first = repo.backup(&src, BackupOptions::default()).await.unwrap();
    let dst = tmp.path().join("dst");
    repo.restore(&first.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap();

    // Three runs of 56 KiB, 1% of the bytes, at scattered places.
    let run = size / 100 / 3;
    for (i, at) in [size / 7, size / 2, size - size / 5]
        .into_iter()
        .enumerate()
    {
        data[at..at + run].copy_from_slice(&random_bytes(run, 100 + i as u64));
    }
    fs::write(src.join("table.0"), &data).unwrap();
    let second = repo
        .backup(
            &src,
            BackupOptions {
                parent: Some(first.snapshot_id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let options = RestoreOptions {
        sync: true,
        ..Default::default()
    };
    let r = repo
        .restore(&second.snapshot_id, &dst, options)
        .await
        .unwrap();
    let volume = (size + b"unchanged".len()) as u64;
    let ratio = r.bytes_written as f64 / volume as f64;
    eprintln!(
        "re-sync wrote {} of {volume} bytes ({:.2}%)",
        r.bytes_written,
        ratio * 100.0
    );
    assert!(ratio < 0.02, "{r:?}");
    assert_eq!(r.files_unchanged, 1, "{r:?}");
    assert_eq!(fs::read(dst.join("table.0")).unwrap(), data);
    assert_eq!(fs::read(dst.join("small.conf")).unwrap(), b"unchanged");
}
