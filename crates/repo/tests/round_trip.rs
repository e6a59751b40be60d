//! Round-trip property tests: random trees are backed up and restored, then edited at
//! random and backed up again with the first snapshot as parent. Every restore must give
//! the source back byte for byte with its metadata: kinds, modes (setuid and sticky
//! included), mtimes (symlinks' too, pre-1970 ones too), symlink targets, hard-link
//! identity, sparse files still sparse, and owners (other uids/gids only when root).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{init, random_bytes};
use ferry_repo::backend::{DynBackend, LocalBackend};
use ferry_repo::{BackupOptions, Id, Repository, RestoreOptions};
use proptest::prelude::*;

// ---- what a test tree is made of ----

/// Picks one of the things that exist when it is used (`n` of them): entry `i % n`.
/// Shrinks towards the first.
#[derive(Debug, Clone, Copy)]
struct Index(usize);

impl Index {
    fn index(self, n: usize) -> usize {
        self.0 % n
    }
}

fn any_index() -> impl Strategy<Value = Index> {
    any::<usize>().prop_map(Index)
}

#[derive(Debug, Clone)]
enum Content {
    Random {
        len: usize,
        seed: u64,
    },
    /// Text that compresses, so blobs take zstd's path.
    Text {
        len: usize,
        seed: u64,
    },
    /// Zeros written out (allocated): stored as holes, restored sparse, same bytes.
    Zeros {
        len: usize,
    },
    /// A logical size with data islands at (per-mille of size, length, seed).
    Sparse {
        size: u64,
        islands: Vec<(u32, usize, u64)>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    mtime: (i64, u32),
    owner: (u32, u32),
}

#[derive(Debug, Clone)]
struct TreeSpec {
    root: Meta,
    /// Parent (among the root and earlier dirs), name, metadata.
    dirs: Vec<(Index, Vec<u8>, Meta)>,
    files: Vec<(Index, Vec<u8>, Content, Meta)>,
    symlinks: Vec<(Index, Vec<u8>, Vec<u8>, Meta)>,
    /// Directory, name, which file to link to.
    hardlinks: Vec<(Index, Vec<u8>, Index)>,
}

#[derive(Debug, Clone)]
enum Edit {
    Append {
        file: Index,
        content: Content,
    },
    /// In place, size unchanged when it fits; optionally with the old mtime put back,
    /// so only the ctime tells the backup the file changed.
    Overwrite {
        file: Index,
        at_permille: u32,
        len: usize,
        seed: u64,
        keep_mtime: bool,
    },
    Truncate {
        file: Index,
        permille: u32,
    },
    Delete {
        entry: Index,
    },
    Rename {
        entry: Index,
        to_dir: Index,
        name: Vec<u8>,
    },
    AddFile {
        dir: Index,
        name: Vec<u8>,
        content: Content,
        meta: Meta,
    },
    AddHardlink {
        file: Index,
        dir: Index,
        name: Vec<u8>,
    },
    Chmod {
        entry: Index,
        mode: u32,
    },
    Touch {
        entry: Index,
        mtime: (i64, u32),
    },
}

// ---- strategies ----

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn sanitize(mut name: Vec<u8>) -> Vec<u8> {
    for b in &mut name {
        if *b == b'/' || *b == 0 {
            *b = b'_';
        }
    }
    if name.is_empty() || name == b"." || name == b".." {
        name = b"dot".to_vec();
    }
    name
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => "[a-z0-9]{1,8}".prop_map(String::into_bytes),
        2 => prop::sample::select(vec![
            "with space", "ünïcødé", "-dash", ".hidden", "new\nline", "*?[glob]", "UPPER",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        // Any bytes a Linux name may hold, mostly not UTF-8.
        1 => prop::collection::vec(any::<u8>(), 1..16).prop_map(sanitize),
        1 => Just(vec![b'L'; 255]),
    ]
}

fn symlink_target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}".prop_map(String::into_bytes),
        1 => Just(b"/nonexistent/absolute".to_vec()),
        // Must be restored verbatim, never followed.
        1 => Just(b"../../../../etc/passwd".to_vec()),
        1 => prop::collection::vec(1u8..=255, 1..300),
    ]
}

/// Sizes around the test chunker's limits (1 KiB / 4 KiB / 16 KiB) and pack size (64 KiB).
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0usize, 1, 1023, 1024, 1025, 4095, 4096, 4097, 16383, 16384, 16385, 65535, 65536,
            65537,
        ]),
        3 => 0usize..40_000,
        1 => 40_000usize..140_000,
    ]
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        5 => (length(), any::<u64>()).prop_map(|(len, seed)| Content::Random { len, seed }),
        2 => (length(), any::<u64>()).prop_map(|(len, seed)| Content::Text { len, seed }),
        1 => (0usize..50_000).prop_map(|len| Content::Zeros { len }),
        2 => (
            64 * 1024u64..(3 << 20),
            prop::collection::vec((0u32..1000, 1usize..20_000, any::<u64>()), 0..4),
        )
            .prop_map(|(size, islands)| Content::Sparse { size, islands }),
    ]
}

fn mtime() -> impl Strategy<Value = (i64, u32)> {
    (
        prop_oneof![
            1 => Just(0i64),
            1 => -2_000_000_000i64..0,
            6 => 1i64..4_000_000_000,
        ],
        0u32..1_000_000_000,
    )
}

fn owner() -> impl Strategy<Value = (u32, u32)> {
    let ids = || prop::sample::select(vec![0u32, 1, 1000, 65534, 123_456]);
    (ids(), ids())
}

fn file_mode() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![
        0o600, 0o644, 0o755, 0o4755, 0o2755, 0o6755, 0o1644, 0o400, 0o640, 0o000,
    ])
}

fn dir_mode() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![0o755, 0o700, 0o750, 0o1777, 0o2775, 0o711, 0o555])
}

fn meta(mode: impl Strategy<Value = u32>) -> impl Strategy<Value = Meta> {
    (mode, mtime(), owner()).prop_map(|(mode, mtime, owner)| Meta { mode, mtime, owner })
}

fn tree_spec() -> impl Strategy<Value = TreeSpec> {
    (
        meta(dir_mode()),
        prop::collection::vec((any_index(), name(), meta(dir_mode())), 0..6),
        prop::collection::vec((any_index(), name(), content(), meta(file_mode())), 0..12),
        prop::collection::vec(
            (any_index(), name(), symlink_target(), meta(Just(0o777))),
            0..4,
        ),
        prop::collection::vec((any_index(), name(), any_index()), 0..4),
    )
        .prop_map(|(root, dirs, files, symlinks, hardlinks)| TreeSpec {
            root,
            dirs,
            files,
            symlinks,
            hardlinks,
        })
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => (any_index(), content()).prop_map(|(file, content)| Edit::Append { file, content }),
        3 => (any_index(), 0u32..1000, 1usize..10_000, any::<u64>(), any::<bool>()).prop_map(
            |(file, at_permille, len, seed, keep_mtime)| Edit::Overwrite {
                file,
                at_permille,
                len,
                seed,
                keep_mtime,
            }
        ),
        1 => (any_index(), 0u32..1000)
            .prop_map(|(file, permille)| Edit::Truncate { file, permille }),
        2 => any_index().prop_map(|entry| Edit::Delete { entry }),
        2 => (any_index(), any_index(), name())
            .prop_map(|(entry, to_dir, name)| Edit::Rename { entry, to_dir, name }),
        2 => (any_index(), name(), content(), meta(file_mode()))
            .prop_map(|(dir, name, content, meta)| Edit::AddFile { dir, name, content, meta }),
        1 => (any_index(), any_index(), name())
            .prop_map(|(file, dir, name)| Edit::AddHardlink { file, dir, name }),
        1 => (any_index(), prop_oneof![file_mode(), dir_mode()])
            .prop_map(|(entry, mode)| Edit::Chmod { entry, mode }),
        1 => (any_index(), mtime()).prop_map(|(entry, mtime)| Edit::Touch { entry, mtime }),
    ]
}

// ---- building and editing trees on disk ----

fn join(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

fn set_times(path: &Path, (secs, nanos): (i64, u32)) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: i64::from(nanos),
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    // Not following symlinks: their own mtime is restored too.
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Owner first (chown clears setuid bits), then mode. Without root only the mode: the
/// owner stays the current user, which is what a non-root restore gives back too.
fn apply(path: &Path, meta: &Meta, symlink: bool) {
    if is_root() {
        std::os::unix::fs::lchown(path, Some(meta.owner.0), Some(meta.owner.1))
            .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
    }
    if !symlink {
        // Without root an unreadable file or unwritable dir would stop the test itself.
        let mode = if is_root() {
            meta.mode
        } else {
            meta.mode | 0o600
        };
        set_mode(path, mode);
    }
}

fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("line {i} of document {seed}: ferry moves data\n").as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Writes `content` into `f` at `at` (sparse: extends the size, writes the islands).
fn write_content(f: &File, at: u64, content: &Content) {
    match content {
        Content::Random { len, seed } => f.write_all_at(&random_bytes(*len, *seed), at),
        Content::Text { len, seed } => f.write_all_at(&text(*len, *seed), at),
        Content::Zeros { len } => f.write_all_at(&vec![0u8; *len], at),
        Content::Sparse { size, islands } => {
            f.set_len(at + size).expect("extend");
            for (permille, len, seed) in islands {
                let off = size * u64::from(*permille) / 1000;
                let len = (*len as u64).min(size - off) as usize;
                f.write_all_at(&random_bytes(len, *seed), at + off)
                    .expect("write island");
            }
            Ok(())
        }
    }
    .expect("write content");
}

fn create_file(path: &Path, content: &Content, meta: &Meta) {
    let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    write_content(&f, 0, content);
    drop(f);
    apply(path, meta, false);
    set_times(path, meta.mtime);
}

fn build(root: &Path, spec: &TreeSpec) {
    fs::create_dir(root).expect("mkdir root");
    let mut dirs: Vec<(PathBuf, Meta)> = vec![(root.to_path_buf(), spec.root)];
    for (parent, name, meta) in &spec.dirs {
        let path = join(&dirs[parent.index(dirs.len())].0, name);
        if fs::create_dir(&path).is_ok() {
            dirs.push((path, *meta));
        }
    }
    let mut files = Vec::new();
    for (dir, name, content, meta) in &spec.files {
        let path = join(&dirs[dir.index(dirs.len())].0, name);
        if fs::symlink_metadata(&path).is_err() {
            create_file(&path, content, meta);
            files.push(path);
        }
    }
    for (dir, name, target, meta) in &spec.symlinks {
        let path = join(&dirs[dir.index(dirs.len())].0, name);
        if std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).is_ok() {
            apply(&path, meta, true);
            set_times(&path, meta.mtime);
        }
    }
    if !files.is_empty() {
        for (dir, name, file) in &spec.hardlinks {
            let path = join(&dirs[dir.index(dirs.len())].0, name);
            let _ = fs::hard_link(&files[file.index(files.len())], &path);
        }
    }
    // Directories last, deepest first: creating entries changes a directory's mtime.
    for (path, meta) in dirs.iter().rev() {
        apply(path, meta, false);
        set_times(path, meta.mtime);
    }
}

/// Every entry under `root` (not `root` itself), parents before children.
fn entries(root: &Path) -> Vec<(PathBuf, fs::FileType)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for p in names {
            let ft = fs::symlink_metadata(&p).expect("lstat").file_type();
            if ft.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, ft));
        }
    }
    out
}

fn apply_edit(root: &Path, edit: &Edit) {
    let all = entries(root);
    let files: Vec<&PathBuf> = all
        .iter()
        .filter(|(_, t)| t.is_file())
        .map(|(p, _)| p)
        .collect();
    let mut dirs: Vec<&Path> = vec![root];
    dirs.extend(
        all.iter()
            .filter(|(_, t)| t.is_dir())
            .map(|(p, _)| p.as_path()),
    );
    let pick_file = |i: &Index| (!files.is_empty()).then(|| files[i.index(files.len())].clone());
    let pick_entry = |i: &Index| (!all.is_empty()).then(|| all[i.index(all.len())].clone());
    let open = |p: &Path| {
        OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
    };
    match edit {
        Edit::Append { file, content } => {
            if let Some(p) = pick_file(file) {
                let f = open(&p);
                let len = f.metadata().expect("stat").len();
                write_content(&f, len, content);
            }
        }
        Edit::Overwrite {
            file,
            at_permille,
            len,
            seed,
            keep_mtime,
        } => {
            if let Some(p) = pick_file(file) {
                let md = fs::metadata(&p).expect("stat");
                if md.len() > 0 {
                    let at = md.len() * u64::from(*at_permille) / 1000;
                    let len = (*len as u64).min(md.len() - at).max(1) as usize;
                    open(&p)
                        .write_all_at(&random_bytes(len, *seed), at)
                        .expect("overwrite");
                    if *keep_mtime {
                        set_times(&p, (md.mtime(), md.mtime_nsec() as u32));
                    }
                }
            }
        }
        Edit::Truncate { file, permille } => {
            if let Some(p) = pick_file(file) {
                let f = open(&p);
                let len = f.metadata().expect("stat").len();
                f.set_len(len * u64::from(*permille) / 1000)
                    .expect("truncate");
            }
        }
        Edit::Delete { entry } => {
            if let Some((p, t)) = pick_entry(entry) {
                if t.is_dir() {
                    fs::remove_dir_all(&p).expect("rm -r");
                } else {
                    fs::remove_file(&p).expect("rm");
                }
            }
        }
        Edit::Rename {
            entry,
            to_dir,
            name,
        } => {
            if let Some((p, _)) = pick_entry(entry) {
                let dir = dirs[to_dir.index(dirs.len())];
                let to = join(dir, name);
                // Not into itself, not over something.
                if !dir.starts_with(&p) && fs::symlink_metadata(&to).is_err() {
                    fs::rename(&p, &to).expect("rename");
                }
            }
        }
        Edit::AddFile {
            dir,
            name,
            content,
            meta,
        } => {
            let path = join(dirs[dir.index(dirs.len())], name);
            if fs::symlink_metadata(&path).is_err() {
                create_file(&path, content, meta);
            }
        }
        Edit::AddHardlink { file, dir, name } => {
            if let Some(p) = pick_file(file) {
                let path = join(dirs[dir.index(dirs.len())], name);
                let _ = fs::hard_link(&p, &path);
            }
        }
        Edit::Chmod { entry, mode } => {
            if let Some((p, t)) = pick_entry(entry)
                && !t.is_symlink()
            {
                let mode = if is_root() { *mode } else { mode | 0o700 };
                set_mode(&p, mode);
            }
        }
        Edit::Touch { entry, mtime } => {
            if let Some((p, _)) = pick_entry(entry) {
                set_times(&p, *mtime);
            }
        }
    }
}

// ---- capturing and comparing trees ----

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    nlink: u64,
    hash: Option<String>,
    target: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Captured {
    root: (u32, u32, u32, (i64, i64)),
    entries: BTreeMap<Vec<u8>, Seen>,
    /// Paths sharing an inode, for every inode with several names.
    link_groups: BTreeSet<Vec<Vec<u8>>>,
    /// Allocated bytes of regular files.
    allocated: BTreeMap<Vec<u8>, u64>,
    /// Inode and ctime of regular files: what tells a backup a file is unchanged.
    identity: BTreeMap<Vec<u8>, (u64, i64, i64)>,
}

fn capture(root: &Path) -> Captured {
    let rmd = fs::symlink_metadata(root).expect("stat root");
    let mut out = Captured {
        root: (
            rmd.mode(),
            rmd.uid(),
            rmd.gid(),
            (rmd.mtime(), rmd.mtime_nsec()),
        ),
        entries: BTreeMap::new(),
        link_groups: BTreeSet::new(),
        allocated: BTreeMap::new(),
        identity: BTreeMap::new(),
    };
    let mut by_inode: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    for (path, ft) in entries(root) {
        let md = fs::symlink_metadata(&path).expect("lstat");
        let rel = path
            .strip_prefix(root)
            .expect("under root")
            .as_os_str()
            .as_bytes()
            .to_vec();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else {
            'f'
        };
        if kind == 'f' {
            by_inode.entry(md.ino()).or_default().push(rel.clone());
            out.allocated.insert(rel.clone(), md.blocks() * 512);
            out.identity
                .insert(rel.clone(), (md.ino(), md.ctime(), md.ctime_nsec()));
        }
        let seen = Seen {
            kind,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
            size: if kind == 'd' { 0 } else { md.size() },
            nlink: if kind == 'f' { md.nlink() } else { 0 },
            hash: (kind == 'f').then(|| {
                blake3::hash(&fs::read(&path).expect("read"))
                    .to_hex()
                    .to_string()
            }),
            target: (kind == 'l').then(|| {
                fs::read_link(&path)
                    .expect("readlink")
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }),
        };
        out.entries.insert(rel, seen);
    }
    out.link_groups = by_inode
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    out
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Holes bigger than this in a source file must stay holes after restore.
const SPARSE_SLACK: u64 = 64 * 1024;

fn assert_restored(want: &Captured, got: &Captured, what: &str) {
    let missing: Vec<String> = want
        .entries
        .keys()
        .filter(|k| !got.entries.contains_key(*k))
        .map(|k| show(k))
        .collect();
    let extra: Vec<String> = got
        .entries
        .keys()
        .filter(|k| !want.entries.contains_key(*k))
        .map(|k| show(k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, extra {extra:?}"
    );
    for (path, w) in &want.entries {
        assert_eq!(w, &got.entries[path], "{what}: {} differs", show(path));
    }
    assert_eq!(want.root, got.root, "{what}: root directory metadata");
    assert_eq!(
        want.link_groups, got.link_groups,
        "{what}: hard-link groups"
    );
    for (path, &src_alloc) in &want.allocated {
        let size = want.entries[path].size;
        if src_alloc + SPARSE_SLACK < size {
            let dst_alloc = got.allocated[path];
            assert!(
                dst_alloc <= src_alloc + SPARSE_SLACK,
                "{what}: sparse {} ({size} bytes, {src_alloc} allocated) restored with \
                 {dst_alloc} bytes allocated",
                show(path)
            );
        }
    }
}

/// Upper bound of what an incremental backup may read: every file whose path, inode,
/// size, mtime or ctime changed, and every hard-linked one (its first name may move).
fn changed_bytes(before: &Captured, after: &Captured) -> u64 {
    after
        .identity
        .iter()
        .filter(|(path, id)| {
            let (b, a) = (before.entries.get(*path), &after.entries[*path]);
            !(before.identity.get(*path) == Some(id)
                && b.is_some_and(|b| b.size == a.size && b.mtime == a.mtime && b.nlink == 1)
                && a.nlink == 1)
        })
        .map(|(path, _)| after.entries[path].size)
        .sum()
}

// ---- the property ----

async fn restore(repo: &Repository, snap: &Id, dst: &Path) -> Captured {
    restore_with(repo, snap, dst, false).await.0
}

/// `sync`: over what `dst` holds. The tree, and how many bytes were written.
async fn restore_with(repo: &Repository, snap: &Id, dst: &Path, sync: bool) -> (Captured, u64) {
    // Every bit round-trips when asked for; setuid files are among the corner cases.
    let options = RestoreOptions {
        keep_setuid_setgid: true,
        sync,
        ..RestoreOptions::default()
    };
    let s = repo
        .restore(snap, dst, options)
        .await
        .unwrap_or_else(|e| panic!("restore {snap}: {e}"));
    (capture(dst), s.bytes_written)
}

/// Bytes a sync restore from `before` to `after` may write: files whose content,
/// size or mtime changed, or that are hard-linked.
fn rewritten_bytes(before: &Captured, after: &Captured) -> u64 {
    after
        .entries
        .iter()
        .filter(|(path, a)| {
            a.kind == 'f'
                && !before.entries.get(*path).is_some_and(|b| {
                    b.kind == 'f'
                        && b.hash == a.hash
                        && b.size == a.size
                        && b.mtime == a.mtime
                        && b.nlink == 1
                        && a.nlink == 1
                })
        })
        .map(|(_, a)| a.size)
        .sum()
}

async fn round_trip(spec: TreeSpec, edits: Vec<Edit>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    build(&src, &spec);
    let backend: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("repo")));
    let repo = init(backend).await;

    let state1 = capture(&src);
    let first = repo
        .backup(&src, BackupOptions::default())
        .await
        .expect("first backup");
    let got = restore(&repo, &first.snapshot_id, &tmp.path().join("dst1")).await;
    assert_restored(&state1, &got, "first snapshot");

    for e in &edits {
        apply_edit(&src, e);
    }
    let state2 = capture(&src);
    let second = repo
        .backup(
            &src,
            BackupOptions {
                parent: Some(first.snapshot_id),
                ..Default::default()
            },
        )
        .await
        .expect("second backup");
    let s = &second.snapshot.summary;
    // Unchanged files come from the parent unread.
    let bound = changed_bytes(&state1, &state2);
    assert!(
        s.bytes_read <= bound,
        "incremental backup read {} bytes; only {bound} bytes of files changed ({s:?})",
        s.bytes_read
    );
    let got = restore(&repo, &second.snapshot_id, &tmp.path().join("dst2")).await;
    assert_restored(&state2, &got, "second snapshot");

    // Over the first restore, a sync restore makes the same tree, writing only files
    // that changed; run again, it writes nothing but hard-linked files.
    let dst1 = tmp.path().join("dst1");
    let (got, written) = restore_with(&repo, &second.snapshot_id, &dst1, true).await;
    assert_restored(&state2, &got, "second snapshot synced over the first");
    let bound = rewritten_bytes(&state1, &state2);
    assert!(
        written <= bound,
        "the sync restore wrote {written} bytes; only {bound} bytes of files changed"
    );
    let (got, written) = restore_with(&repo, &second.snapshot_id, &dst1, true).await;
    assert_restored(&state2, &got, "second snapshot synced again");
    let hardlinked: u64 = state2
        .entries
        .values()
        .filter(|e| e.kind == 'f' && e.nlink > 1)
        .map(|e| e.size)
        .sum();
    assert!(written <= hardlinked, "a second sync wrote {written} bytes");

    // The first snapshot is untouched by the second backup.
    let got = restore(&repo, &first.snapshot_id, &tmp.path().join("dst1-again")).await;
    assert_restored(&state1, &got, "first snapshot after the second backup");

    let report = repo.check(true).await.expect("check");
    assert!(report.is_ok(), "{report}");
}

proptest! {
    // Each case backs up twice and restores three times; a few dozen cases keep the
    // debug-build run within seconds.
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES runs more by hand.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(16),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]
    #[test]
    fn backup_restore_round_trip_with_edits(
        spec in tree_spec(),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(round_trip(spec, edits));
    }
}

/// The hand-picked corners: each chunker size boundary, an empty file, a file of only
/// zeros, a hole-only file, setuid and sticky modes, pre-1970 mtimes, a non-UTF-8 name
/// and symlink target, and hard links across directories.
fn corner_spec() -> TreeSpec {
    let m = |mode, secs| Meta {
        mode,
        mtime: (secs, 123_456_789),
        owner: (1000, 65534),
    };
    let idx = Index;
    let mut files = Vec::new();
    for (i, len) in [
        0usize, 1, 1023, 1024, 1025, 4095, 4096, 4097, 16383, 16384, 16385, 65537,
    ]
    .into_iter()
    .enumerate()
    {
        files.push((
            idx(i % 3),
            format!("len-{len}").into_bytes(),
            Content::Random {
                len,
                seed: i as u64,
            },
            m(0o644, 1_600_000_000 + i as i64),
        ));
    }
    files.push((
        idx(1),
        b"zeros".to_vec(),
        Content::Zeros { len: 40_000 },
        m(0o4755, -86_400),
    ));
    files.push((
        idx(2),
        b"holes-only".to_vec(),
        Content::Sparse {
            size: 2 << 20,
            islands: vec![],
        },
        m(0o1644, 0),
    ));
    files.push((
        idx(0),
        vec![0xff, 0xfe, b'n', b'a', b'm', b'e'],
        Content::Sparse {
            size: 3 << 20,
            islands: vec![(0, 5000, 1), (500, 100, 2), (999, 20_000, 3)],
        },
        m(0o2755, 2_000_000_000),
    ));
    TreeSpec {
        root: m(0o711, 1_700_000_000),
        dirs: vec![
            (idx(0), b"a".to_vec(), m(0o1777, 1_500_000_000)),
            (idx(1), b"b".to_vec(), m(0o2775, -1)),
        ],
        files,
        symlinks: vec![
            (
                idx(0),
                b"to-len-1".to_vec(),
                b"len-1".to_vec(),
                m(0o777, 1_234),
            ),
            (
                idx(2),
                b"raw".to_vec(),
                vec![0xc3, 0x28, b'/', 0xff],
                m(0o777, -5),
            ),
        ],
        hardlinks: vec![
            (idx(2), b"hard".to_vec(), idx(0)),
            (idx(0), b"hard2".to_vec(), idx(13)),
        ],
    }
}

/// The corners every run, whatever the random cases drew; the edits include an
/// in-place overwrite that keeps size and mtime (only the ctime shows it).
#[test]
fn fixed_corner_cases_round_trip() {
    let idx = Index;
    let edits = vec![
        Edit::Overwrite {
            file: idx(3),
            at_permille: 500,
            len: 10,
            seed: 9,
            keep_mtime: true,
        },
        Edit::Append {
            file: idx(5),
            content: Content::Sparse {
                size: 1 << 20,
                islands: vec![(999, 10, 4)],
            },
        },
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(round_trip(corner_spec(), edits));
}

/// The comparison is what makes the properties mean anything: each kind of difference
/// a restore could get wrong must fail it.
#[test]
fn comparison_notices_each_kind_of_difference() {
    type Mutation = (&'static str, fn(&Path));
    let mutations: Vec<Mutation> = vec![
        ("one byte", |r| {
            let f = OpenOptions::new()
                .write(true)
                .open(r.join("len-4096"))
                .expect("open");
            f.write_all_at(b"!", 100).expect("write");
        }),
        ("setuid bit", |r| set_mode(&r.join("a/zeros"), 0o755)),
        ("file mtime nanoseconds", |r| {
            set_times(&r.join("a/len-1"), (1_600_000_001, 1))
        }),
        ("symlink's own mtime", |r| {
            set_times(&r.join("to-len-1"), (99, 0))
        }),
        ("symlink target", |r| {
            fs::remove_file(r.join("to-len-1")).expect("rm");
            std::os::unix::fs::symlink("len-0", r.join("to-len-1")).expect("symlink");
        }),
        ("directory mtime", |r| set_times(&r.join("a"), (5, 5))),
        ("root mode", |r| set_mode(r, 0o755)),
        ("hard link split into copies", |r| {
            let p = r.join("a/b/hard");
            let data = fs::read(&p).expect("read");
            let md = fs::metadata(&p).expect("stat");
            fs::remove_file(&p).expect("rm");
            fs::write(&p, data).expect("write");
            fs::set_permissions(&p, md.permissions()).expect("chmod");
            set_times(&p, (md.mtime(), md.mtime_nsec() as u32));
        }),
        ("hole filled with zeros", |r| {
            let p = r.join("a/b/holes-only");
            let md = fs::metadata(&p).expect("stat");
            let f = OpenOptions::new().write(true).open(&p).expect("open");
            f.write_all_at(&vec![0u8; 1 << 20], 4096).expect("write");
            set_times(&p, (md.mtime(), md.mtime_nsec() as u32));
        }),
    ];
    for (what, mutate) in mutations {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("t");
        build(&root, &corner_spec());
        let before = capture(&root);
        assert_restored(&before, &capture(&root), "unchanged");
        mutate(&root);
        let after = capture(&root);
        let caught = std::panic::catch_unwind(|| assert_restored(&before, &after, what));
        assert!(caught.is_err(), "the comparison missed: {what}");
    }
}
