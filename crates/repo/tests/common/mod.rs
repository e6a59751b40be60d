//! Helpers shared by the integration tests: generated source trees and a byte-for-byte
//! comparison of two trees (content and metadata).

// Each test binary uses a different subset; a failed setup step is a failed test.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_repo::backend::{DynBackend, MemoryBackend, S3Options};
use ferry_repo::{InitOptions, Repository};

pub const KEY: &[u8] = b"test key file contents";

pub use ferry_testenv::random_bytes;

pub fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
    File::open(path)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(t))
        .unwrap();
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Sparse file: 64 MiB logical, two 8 KiB data islands.
pub const SPARSE_LEN: u64 = 64 << 20;

/// A tree with text, random, empty and sparse files, nested dirs, symlinks, a hard
/// link pair, and distinct modes and mtimes.
pub fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::create_dir_all(root.join("empty_dir")).unwrap();
    fs::write(
        root.join("text.txt"),
        "hello ferry\n".repeat(5000).as_bytes(),
    )
    .unwrap();
    fs::write(root.join("dir/random.bin"), random_bytes(300_000, 1)).unwrap();
    fs::write(root.join("dir/sub/small"), b"x").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    {
        let mut f = File::create(root.join("sparse.img")).unwrap();
        f.set_len(SPARSE_LEN).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&random_bytes(8192, 2)).unwrap();
        f.seek(SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(&random_bytes(8192, 3)).unwrap();
    }
    fs::write(root.join("dir/linked_a"), b"shared inode content").unwrap();
    fs::hard_link(root.join("dir/linked_a"), root.join("linked_b")).unwrap();
    symlink("text.txt", root.join("link_to_text")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();

    set_mode(&root.join("text.txt"), 0o640);
    set_mode(&root.join("dir/random.bin"), 0o600);
    set_mode(&root.join("dir/sub/small"), 0o755);
    set_mode(&root.join("empty_dir"), 0o750);
    let mut secs = 1_600_000_000;
    for p in [
        "text.txt",
        "dir/random.bin",
        "dir/sub/small",
        "empty",
        "sparse.img",
        "dir/linked_a",
        "dir/sub",
        "dir",
        "empty_dir",
    ] {
        secs += 1000;
        set_mtime(&root.join(p), secs, 123_456_789);
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: Option<i64>,
    pub size: u64,
    pub content_hash: Option<String>,
    pub link: Option<PathBuf>,
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (Seen, u64)>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "file"
        };
        let seen = Seen {
            kind,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            // Symlink mtimes are restored too, but setting them on the source needs
            // utimensat; directory mtimes are compared like files'.
            mtime_ns: (kind != "symlink").then(|| md.mtime() * 1_000_000_000 + md.mtime_nsec()),
            size: if kind == "dir" { 0 } else { md.size() },
            content_hash: (kind == "file")
                .then(|| blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string()),
            link: (kind == "symlink").then(|| fs::read_link(&p).unwrap()),
        };
        out.insert(rel, (seen, md.ino()));
        if kind == "dir" {
            walk(root, &p, out);
        }
    }
}

pub fn describe(root: &Path) -> BTreeMap<PathBuf, (Seen, u64)> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts that two trees have the same entries, content and metadata.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let da = describe(a);
    let db = describe(b);
    let ka: Vec<_> = da.keys().collect();
    let kb: Vec<_> = db.keys().collect();
    assert_eq!(ka, kb, "entry lists differ");
    for (path, (sa, _)) in &da {
        let (sb, _) = &db[path];
        assert_eq!(sa, sb, "metadata/content differ for {}", path.display());
    }
    let ra = fs::metadata(a).unwrap();
    let rb = fs::metadata(b).unwrap();
    assert_eq!(ra.mode(), rb.mode(), "root mode");
}

pub fn memory() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::new())
}

pub async fn init(backend: DynBackend) -> Repository {
    Repository::init(backend, KEY, InitOptions::small_for_tests())
        .await
        .unwrap()
}

/// Settings for the test environment's S3 server (MinIO) under `prefix` of `bucket`:
/// its credentials, a few quick attempts, and parts small enough to go multipart soon.
pub fn s3_options(s3: &ferry_testenv::S3Info, bucket: &str, prefix: &str) -> S3Options {
    let mut o = S3Options::new(Some(s3.endpoint.clone()), bucket, prefix, &s3.region);
    o.access_key_id = s3.access_key.clone();
    o.secret_access_key = s3.secret_key.clone();
    o.max_attempts = 5;
    o.attempt_timeout = Duration::from_secs(30);
    o
}
