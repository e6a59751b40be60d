//! Format 2 stores large directories and long content lists as runs, so a small change
//! stores little metadata; format 1 repositories keep being written in format 1's form.

// A failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ferry_repo::backend::{DynBackend, LocalBackend};
use ferry_repo::{
    BackupOptions, Error, ForgetPolicy, InitOptions, PruneOptions, Repository, RestoreOptions,
};

/// 300 small files in one directory, 40 in another, and one 3 MiB file of ~750 test
/// chunks (1/4/16 KiB): more entries and parts than format 2 keeps inline.
fn write_source(root: &Path) {
    fs::create_dir_all(root.join("many")).unwrap();
    fs::create_dir_all(root.join("some")).unwrap();
    for i in 0..300u64 {
        fs::write(
            root.join(format!("many/f{i:04}.txt")),
            format!("file {i}\n").repeat(20 + i as usize % 50),
        )
        .unwrap();
    }
    for i in 0..40u64 {
        fs::write(
            root.join(format!("some/g{i:03}.bin")),
            random_bytes(500 + i as usize, i),
        )
        .unwrap();
    }
    fs::write(root.join("image.img"), random_bytes(3 << 20, 99)).unwrap();
}

/// One small file and 8 KiB in the middle of the image change.
fn change_source(root: &Path) {
    fs::write(root.join("many/f0150.txt"), b"changed\n").unwrap();
    let mut img = fs::read(root.join("image.img")).unwrap();
    img[1 << 20..(1 << 20) + 8192].copy_from_slice(&random_bytes(8192, 7));
    fs::write(root.join("image.img"), img).unwrap();
}

/// The test's source tree under `dir`, written, and an empty local store beside it.
fn source_and_store(dir: &Path) -> (PathBuf, DynBackend) {
    let src = dir.join("src");
    write_source(&src);
    (src, Arc::new(LocalBackend::new(dir.join("repo"))))
}

async fn restored_equals(repo: &Repository, snapshot: &ferry_repo::Id, src: &Path, dst: &Path) {
    let _ = fs::remove_dir_all(dst);
    repo.restore(snapshot, dst, RestoreOptions::default())
        .await
        .unwrap();
    assert_same_tree(src, dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_change_stores_little_metadata_and_everything_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, backend) = source_and_store(tmp.path());
    let repo = init(backend.clone()).await;
    assert_eq!(repo.config().version, 2);

    let first = repo.backup(&src, BackupOptions::default()).await.unwrap();
    let s1 = first.snapshot.summary.clone();
    // Runs: many more tree blobs than the 3 directories.
    assert!(s1.trees_new > 30, "{s1:?}");

    change_source(&src);
    let second = repo.backup(&src, BackupOptions::default()).await.unwrap();
    let s2 = second.snapshot.summary.clone();
    // The changed run of `many`, the list of its runs, the image's changed content
    // run(s) and the lists above them, and the root: a handful of blobs and a small
    // fraction of the first backup's tree bytes, where format 1 stored every entry
    // of `many` and all ~750 parts of the image again. Where content-defined cuts fall
    // moves the second's size a little: one CI run measured 1/6.5, so the bound is 1/5.
    assert!(s2.trees_new <= 10, "{s2:?}");
    assert!(
        s2.tree_bytes_new * 5 < s1.tree_bytes_new,
        "second backup stored {} tree bytes, the first {}",
        s2.tree_bytes_new,
        s1.tree_bytes_new
    );

    // Loading resolves every run: the loaded tree lists all 300 entries.
    let root = repo.load_tree(&second.snapshot.tree).await.unwrap();
    let many = root
        .nodes
        .iter()
        .find(|n| n.name.as_bytes() == b"many")
        .unwrap();
    let many = repo.load_tree(&many.subtree.unwrap()).await.unwrap();
    assert_eq!(many.nodes.len(), 300);
    assert!(many.nodes.iter().all(|n| n.content_runs.is_empty()));
    let image = root
        .nodes
        .iter()
        .find(|n| n.name.as_bytes() == b"image.img")
        .unwrap();
    assert!(image.content.len() > 100 && image.content_runs.is_empty());
    assert_eq!(
        image
            .content
            .iter()
            .map(ferry_repo::ContentPart::len)
            .sum::<u64>(),
        3 << 20
    );

    restored_equals(&repo, &second.snapshot_id, &src, &tmp.path().join("dst")).await;
    let report = repo.check(true).await.unwrap();
    assert!(report.is_ok(), "{report}");

    // Prune after forgetting the first snapshot must keep every run the second uses,
    // including runs it shares with the first.
    repo.forget_and_prune(
        &ForgetPolicy {
            keep_last: Some(1),
            ..ForgetPolicy::default()
        },
        &PruneOptions {
            keep_unindexed_for: Duration::ZERO,
            ..PruneOptions::default()
        },
    )
    .await
    .unwrap();
    let reopened = Repository::open(backend.clone(), KEY).await.unwrap();
    let report = reopened.check(true).await.unwrap();
    assert!(report.is_ok(), "{report}");
    restored_equals(
        &reopened,
        &second.snapshot_id,
        &src,
        &tmp.path().join("dst2"),
    )
    .await;
}

/// Rewrites the plaintext config's version.
async fn set_version(backend: &DynBackend, version: u32) {
    let raw = backend.get("config").await.unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    json["version"] = version.into();
    backend
        .put("config", Bytes::from(serde_json::to_vec(&json).unwrap()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_repositories_are_read_and_written_in_format_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, backend) = source_and_store(tmp.path());
    Repository::init(backend.clone(), KEY, InitOptions::small_for_tests())
        .await
        .unwrap();
    set_version(&backend, 1).await;

    let repo = Repository::open(backend.clone(), KEY).await.unwrap();
    assert_eq!(repo.config().version, 1);
    let first = repo.backup(&src, BackupOptions::default()).await.unwrap();
    // One tree blob per directory (the root, many, some) and nothing else: what
    // format 1 readers expect.
    let s = &first.snapshot.summary;
    assert_eq!(s.trees_new, 3, "{s:?}");
    let root = repo.load_tree(&first.snapshot.tree).await.unwrap();
    assert!(root.nodes.iter().all(|n| n.content_runs.is_empty()));
    restored_equals(&repo, &first.snapshot_id, &src, &tmp.path().join("dst")).await;
    let report = repo.check(true).await.unwrap();
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn a_newer_format_is_refused_with_the_fix() {
    let backend: DynBackend = memory();
    init(backend.clone()).await;
    set_version(&backend, 3).await;
    let err = Repository::open(backend.clone(), KEY).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 3,
                supported: 2
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade ferry"), "{err}");
}
