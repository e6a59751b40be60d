//! Small file-system helpers shared by backup and restore.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags, SeekFrom, Timespec, Timestamps, UTIME_OMIT};
use rustix::io::Errno;

use crate::error::Error;
use crate::tree::{Name, Node, NodeKind};

/// Set once openat2 is found missing (kernels before 5.6, some sandboxes); paths are
/// then walked one component at a time instead.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// A directory opened once, under which every path is resolved without following a
/// symbolic link anywhere along it and without leaving the directory. A tenant who
/// swaps a directory of their volume for a link to the host while Ferry works gets an
/// error, never the host's files. One openat2 per path, as many system calls as
/// opening the path by name.
#[derive(Debug)]
pub(crate) struct Beneath {
    dir: OwnedFd,
    path: PathBuf,
}

impl Beneath {
    /// Opens `path`, which must be a directory and not itself a symbolic link.
    pub fn open_dir(path: &Path) -> std::io::Result<Self> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(Beneath {
            dir,
            path: path.to_path_buf(),
        })
    }

    /// The directory's own descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// `shown` relative to the directory. A path outside it stays absolute, which
    /// every call here then refuses.
    pub fn rel<'a>(&self, shown: &'a Path) -> &'a Path {
        shown.strip_prefix(&self.path).unwrap_or(shown)
    }

    /// Opens `rel` (empty: the directory itself) with `flags`; O_NOFOLLOW and O_CLOEXEC
    /// are always added.
    pub fn open(&self, rel: &Path, flags: OFlags, mode: Mode) -> std::io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
            match rustix::fs::openat2(&self.dir, rel, flags, mode, how) {
                Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                // Only RESOLVE_CACHED asks to be retried; retry anyway rather than fail.
                Err(Errno::AGAIN) => {
                    return rustix::fs::openat2(&self.dir, rel, flags, mode, how)
                        .map_err(Into::into);
                }
                r => return r.map_err(Into::into),
            }
        }
        let (parent, name) = self.walk_parent(rel)?;
        let at = parent.as_ref().map_or(self.dir.as_fd(), |p| p.as_fd());
        rustix::fs::openat(at, name, flags, mode).map_err(Into::into)
    }

    /// Runs `f` with the directory holding `rel` and `rel`'s last name, for the calls
    /// that act on a name in a directory (mkdirat, symlinkat, linkat, unlinkat, and the
    /// AT_SYMLINK_NOFOLLOW ones).
    pub fn at_parent<T>(
        &self,
        rel: &Path,
        f: impl FnOnce(BorrowedFd<'_>, &OsStr) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let name = rel
            .file_name()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => f(self.dir.as_fd(), name),
            Some(parent) => {
                let flags = OFlags::PATH | OFlags::DIRECTORY;
                let p = self.open(parent, flags, Mode::empty())?;
                f(p.as_fd(), name)
            }
        }
    }

    /// Without openat2: the directory holding `rel`'s last name, opened one component
    /// at a time with O_NOFOLLOW (`None`: this directory), and that name.
    fn walk_parent<'a>(&self, rel: &'a Path) -> std::io::Result<(Option<OwnedFd>, &'a OsStr)> {
        let mut names = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n),
                Component::CurDir => {}
                // Names come from validated trees and directory listings; anything
                // else would leave the directory.
                _ => return Err(Errno::XDEV.into()),
            }
        }
        let Some(last) = names.pop() else {
            return Ok((None, OsStr::new(".")));
        };
        let mut cur: Option<OwnedFd> = None;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for n in names {
            let at = cur.as_ref().map_or(self.dir.as_fd(), |p| p.as_fd());
            cur = Some(rustix::fs::openat(at, n, flags, Mode::empty())?);
        }
        Ok((cur, last))
    }
}

/// The error for a failed file-system call on `path` during `operation` ("backup",
/// "restore"): a symbolic link or an escape met on the way is named as such.
pub(crate) fn fs_error(
    operation: &'static str,
    op: &'static str,
    path: &Path,
    e: std::io::Error,
) -> Error {
    let found = match e.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::LOOP) => "a symbolic link (or passes through one)",
        Some(Errno::XDEV) => "a path leading outside the volume",
        _ => return Error::io(op, path, e),
    };
    Error::Swapped {
        operation,
        path: path.to_path_buf(),
        found,
    }
}

/// Timestamps that set the modification time and leave the access time.
pub(crate) fn mtime_only(mtime_ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
        },
    }
}

/// Nanoseconds since the epoch from a (seconds, nanoseconds) pair.
pub(crate) fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A node with the metadata `lstat` gives; content is filled in later.
pub(crate) fn node_from_metadata(name: Name, kind: NodeKind, md: &Metadata) -> Node {
    let mut n = Node::new(name, kind);
    n.mode = md.mode();
    n.uid = md.uid();
    n.gid = md.gid();
    n.mtime_ns = ns(md.mtime(), md.mtime_nsec());
    n.ctime_ns = ns(md.ctime(), md.ctime_nsec());
    n.size = if kind == NodeKind::File { md.size() } else { 0 };
    n.inode = md.ino();
    n.dev = md.dev();
    n
}

/// A node from a `statat(AT_SYMLINK_NOFOLLOW)`; content is filled in later.
#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
pub(crate) fn node_from_stat(name: Name, kind: NodeKind, st: &rustix::fs::Stat) -> Node {
    let mut n = Node::new(name, kind);
    n.mode = st.st_mode as u32;
    n.uid = st.st_uid as u32;
    n.gid = st.st_gid as u32;
    n.mtime_ns = ns(st.st_mtime as i64, st.st_mtime_nsec as i64);
    n.ctime_ns = ns(st.st_ctime as i64, st.st_ctime_nsec as i64);
    n.size = if kind == NodeKind::File {
        st.st_size as u64
    } else {
        0
    };
    n.inode = st.st_ino as u64;
    n.dev = st.st_dev as u64;
    n
}

/// Byte ranges holding data, from SEEK_DATA/SEEK_HOLE. File systems (and block
/// devices) without hole support report the whole file as data, which is still right.
pub(crate) fn data_regions(file: &File, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // ENXIO: no data past `pos`; the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return vec![(0, size)],
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(_) => return vec![(0, size)],
        };
        if end <= start {
            return vec![(0, size)];
        }
        out.push((start, end));
        pos = end;
    }
    out
}

/// Whether this process may restore ownership.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, Write};

    use super::*;

    #[test]
    fn finds_data_regions_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let mut f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.seek(std::io::SeekFrom::Start(4 << 20)).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&p).unwrap();
        let regions = data_regions(&f, 8 << 20);
        let data: u64 = regions.iter().map(|(s, e)| e - s).sum();
        // Either the file system reports holes (a small data region) or it does not
        // (one region covering everything); both are correct.
        assert!(
            regions
                .iter()
                .any(|(s, e)| *s <= 4 << 20 && *e >= (4 << 20) + 4096)
        );
        assert!(data == 8 << 20 || data <= 1 << 20, "{regions:?}");
    }
}
