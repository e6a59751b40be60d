//! A tenant controls what is inside their volume, and may change it while Ferry works:
//! backup never follows a link inside the volume (not even one swapped in for a
//! directory after the walk saw it), restore never writes through one, and a restore
//! drops setuid and setgid bits unless an administrator asks to keep them.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use ferry_repo::backend::{Backend, BackendError, DynBackend, ObjectInfo};
use ferry_repo::{BackupOptions, Error, Repository, RestoreOptions};
use parking_lot::Mutex;

type Hook = Box<dyn FnMut(&str) + Send>;

/// A store that runs a hook (set by the test) before each read: the moment to change
/// the volume while Ferry is between two steps.
#[derive(Default)]
struct Hooked {
    inner: Arc<ferry_repo::backend::MemoryBackend>,
    hook: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

impl Hooked {
    fn run(&self, key: &str) {
        if let Some(h) = self.hook.lock().as_mut() {
            h(key);
        }
    }
}

#[async_trait]
impl Backend for Hooked {
    fn describe(&self) -> String {
        "hooked".into()
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.run(key);
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, BackendError> {
        self.run(key);
        self.inner.get_range(key, offset, length).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
        self.inner.head(key).await
    }
}

async fn repo() -> (Arc<Hooked>, Repository) {
    let hooked = Arc::new(Hooked::default());
    let backend: DynBackend = hooked.clone();
    (hooked, init(backend).await)
}

/// Replaces `victim` by a symbolic link to `to`, keeping nothing of it.
fn swap_for_link(victim: &Path, to: &Path) {
    if victim.is_dir() {
        fs::remove_dir_all(victim).unwrap();
    } else {
        fs::remove_file(victim).unwrap();
    }
    std::os::unix::fs::symlink(to, victim).unwrap();
}

/// The host's files, outside any volume.
fn host_dir(root: &Path) -> PathBuf {
    let host = root.join("host");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("f"), b"HOST SECRET").unwrap();
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_never_follows_a_symlink_swapped_in_for_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host_dir(tmp.path());
    let src = tmp.path().join("volume");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"first").unwrap();
    let (hooked, repo) = repo().await;
    let parent = repo
        .backup(&src, BackupOptions::default())
        .await
        .unwrap()
        .snapshot_id;

    // The tenant adds a directory; the walk sees it; then, while the backup reads the
    // parent snapshot (after the walk, before any file is read), the tenant swaps it
    // for a link to the host.
    for (victim, target) in [("dir", host.clone()), ("g", host.join("f"))] {
        let victim_path = src.join(victim);
        if victim == "dir" {
            fs::create_dir_all(&victim_path).unwrap();
            fs::write(victim_path.join("f"), b"tenant data").unwrap();
        } else {
            fs::write(&victim_path, b"tenant file").unwrap();
        }
        let armed = victim_path.clone();
        *hooked.hook.lock() = Some(Box::new(move |key: &str| {
            if key.starts_with("snapshots/") && !armed.is_symlink() {
                swap_for_link(&armed, &target);
            }
        }));
        let options = BackupOptions {
            parent: Some(parent),
            ..BackupOptions::default()
        };
        let err = repo.backup(&src, options).await.unwrap_err();
        *hooked.hook.lock() = None;
        let Error::Swapped {
            path, operation, ..
        } = &err
        else {
            panic!("{victim}: expected Swapped, got {err}");
        };
        assert_eq!(*operation, "backup");
        assert!(path.starts_with(&victim_path), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // Nothing of the host went into any snapshot.
        fs::remove_file(&victim_path).unwrap();
    }
    // The link itself, found by the walk, is stored as a link and never read through.
    std::os::unix::fs::symlink(&host, src.join("link")).unwrap();
    let done = repo.backup(&src, BackupOptions::default()).await.unwrap();
    assert_eq!(done.snapshot.summary.files, 1);
    assert_eq!(done.snapshot.summary.symlinks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_never_writes_through_a_symlink_swapped_in_for_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    fs::create_dir_all(&host).unwrap();
    fs::set_permissions(&host, fs::Permissions::from_mode(0o755)).unwrap();
    let src = tmp.path().join("volume");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/f"), b"restored into the volume only").unwrap();
    fs::set_permissions(src.join("dir"), fs::Permissions::from_mode(0o777)).unwrap();
    let (hooked, repo) = repo().await;
    let snap = repo
        .backup(&src, BackupOptions::default())
        .await
        .unwrap()
        .snapshot_id;

    // Once the restore made `dir` and starts fetching file data, the tenant (who can
    // write the volume being restored) swaps `dir` for a link to the host.
    let dst = tmp.path().join("restored");
    let victim = dst.join("dir");
    let to = host.clone();
    *hooked.hook.lock() = Some(Box::new(move |key: &str| {
        if key.starts_with("packs/") && victim.is_dir() && !victim.is_symlink() {
            swap_for_link(&victim, &to);
        }
    }));
    let err = repo
        .restore(&snap, &dst, RestoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Swapped { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(
        fs::read_dir(&host).unwrap().count(),
        0,
        "written into the host"
    );
    let mode = fs::metadata(&host).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "the host directory's mode was changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drops_setuid_and_device_files_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("volume");
    fs::create_dir_all(src.join("shared")).unwrap();
    let mode = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    fs::write(src.join("suid"), b"#!/bin/sh\n").unwrap();
    mode(&src.join("suid"), 0o4755);
    fs::write(src.join("sgid"), b"#!/bin/sh\n").unwrap();
    mode(&src.join("sgid"), 0o2755);
    mode(&src.join("shared"), 0o2775);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let (_, repo) = repo().await;
    let snap = repo
        .backup(&src, BackupOptions::default())
        .await
        .unwrap()
        .snapshot_id;

    let got = |dst: &Path, name: &str| {
        fs::metadata(dst.join(name)).unwrap().permissions().mode() & 0o7777
    };
    let dst = tmp.path().join("default");
    repo.restore(&snap, &dst, RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(got(&dst, "suid"), 0o755);
    assert_eq!(got(&dst, "sgid"), 0o755);
    // Setgid on a directory only sets the group of new entries: kept.
    assert_eq!(got(&dst, "shared"), 0o2775);
    // Nothing but files, directories and links is ever created.
    for e in fs::read_dir(&dst).unwrap() {
        let t = e.unwrap().file_type().unwrap();
        assert!(
            !(t.is_fifo() || t.is_block_device() || t.is_char_device() || t.is_socket()),
            "{t:?}"
        );
    }

    // An administrator restoring a system image asks for them.
    let dst = tmp.path().join("admin");
    let options = RestoreOptions {
        keep_setuid_setgid: true,
        ..RestoreOptions::default()
    };
    repo.restore(&snap, &dst, options).await.unwrap();
    assert_eq!(got(&dst, "suid"), 0o4755);
    assert_eq!(got(&dst, "sgid"), 0o2755);
}
