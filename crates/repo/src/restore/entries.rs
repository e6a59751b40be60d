//! The entries a restore makes besides file contents (directories, symlinks, hard
//! links), and the metadata every entry gets, always through descriptors opened beneath
//! the target.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid};

use super::io_err;
use super::plan::Plan;
use crate::error::Result;
use crate::fsutil::{Beneath, mtime_only};
use crate::snapshot::RootMeta;
use crate::tree::Node;

/// Metadata to give one restored entry.
#[derive(Clone, Copy, Debug)]
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime_ns: i64,
}

/// How metadata is applied in this restore.
#[derive(Clone, Copy, Debug)]
pub(super) struct MetaPolicy {
    pub(super) ownership: bool,
    pub(super) keep_setuid_setgid: bool,
}

impl MetaPolicy {
    /// The permission bits to set: setuid and setgid dropped unless asked for, setgid
    /// kept on directories.
    pub(super) fn mode(&self, mode: u32, dir: bool) -> u32 {
        let mode = mode & 0o7777;
        match (self.keep_setuid_setgid, dir) {
            (true, _) => mode,
            (false, true) => mode & !0o4000,
            (false, false) => mode & !0o6000,
        }
    }

    /// Owner first (chown clears setuid bits), then mode, then mtime, all on an open
    /// descriptor: nothing is looked up by name, so nothing can be swapped in between.
    pub(super) fn apply_fd(
        &self,
        fd: BorrowedFd<'_>,
        m: Meta,
        dir: bool,
        path: &Path,
    ) -> Result<()> {
        if self.ownership {
            rustix::fs::fchown(fd, Some(uid(m.uid)), Some(gid(m.gid)))
                .map_err(|e| io_err("chown", path)(e.into()))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(self.mode(m.mode, dir)))
            .map_err(|e| io_err("chmod", path)(e.into()))?;
        rustix::fs::futimens(fd, &mtime_only(m.mtime_ns))
            .map_err(|e| io_err("set mtime", path)(e.into()))
    }
}

pub(super) fn uid(n: u32) -> Uid {
    Uid::from_raw(n)
}

pub(super) fn gid(n: u32) -> Gid {
    Gid::from_raw(n)
}

impl Meta {
    pub(super) fn of(node: &Node) -> Self {
        Meta {
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            mtime_ns: node.mtime_ns,
        }
    }
}

/// Creates a file for writing: never through a link, never over something there.
pub(super) fn create_file(root: &Beneath, path: &Path) -> Result<fs::File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
    root.open(root.rel(path), flags, Mode::from_raw_mode(0o600))
        .map(fs::File::from)
        .map_err(io_err("create file", path))
}

/// Deletes a file being restored unless it was finished, so a failed or cancelled
/// restore never leaves a file of the right size with wrong or missing content
/// (ranges arrive out of order, and a sibling's failure drops this future mid-way).
pub(super) struct Unfinished<'a> {
    pub(super) root: &'a Beneath,
    pub(super) path: &'a Path,
    pub(super) done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            // One unlink, by name in its own directory; the restore is failing anyway.
            let _ = self.root.at_parent(self.root.rel(self.path), |dir, name| {
                rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into)
            });
        }
    }
}

/// A file being restored: where, and the metadata it gets once written.
pub(super) struct Target<'a> {
    pub(super) root: &'a Beneath,
    pub(super) path: &'a Path,
    pub(super) meta: Meta,
    pub(super) policy: MetaPolicy,
}

/// Blocking: creates the plan's directories (private until their metadata is applied
/// at the end) and symlinks. `existing_dirs_ok`: a directory already there is used as
/// it is (a sync restore, which removed whatever else stood at the plan's paths).
pub(super) fn create_dirs_and_symlinks(
    plan: &Plan,
    root: &Beneath,
    existing_dirs_ok: bool,
) -> Result<()> {
    let private = Mode::from_raw_mode(0o700);
    for (path, _) in &plan.dirs {
        root.at_parent(root.rel(path), |dir, name| {
            match rustix::fs::mkdirat(dir, name, private) {
                Err(rustix::io::Errno::EXIST) if existing_dirs_ok => {
                    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                    match rustix::fs::FileType::from_raw_mode(st.st_mode) {
                        rustix::fs::FileType::Directory => Ok(()),
                        _ => Err(rustix::io::Errno::EXIST),
                    }
                }
                r => r,
            }
            .map_err(Into::into)
        })
        .map_err(io_err("create directory", path))?;
    }
    for (path, node) in &plan.symlinks {
        let link = node
            .symlink_target
            .as_ref()
            .map(|t| t.to_os())
            .unwrap_or_default();
        root.at_parent(root.rel(path), |dir, name| {
            rustix::fs::symlinkat(&link, dir, name).map_err(Into::into)
        })
        .map_err(io_err("create symlink", path))?;
    }
    Ok(())
}

/// Blocking, once every file is written: makes the hard links, then gives symlinks,
/// directories (deepest first) and the target itself their metadata.
pub(super) fn link_and_finish_metadata(
    plan: &Plan,
    root: &Beneath,
    policy: MetaPolicy,
    root_meta: Option<RootMeta>,
    target: &Path,
) -> Result<()> {
    for (path, first, _) in &plan.hardlinks {
        root.at_parent(root.rel(first), |from_dir, from| {
            root.at_parent(root.rel(path), |to_dir, to| {
                rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty()).map_err(Into::into)
            })
        })
        .map_err(io_err("create hard link", path))?;
    }
    // Files got theirs when written. Symlinks: owner and mtime only (Linux has no mode
    // of their own for them). Then directories deepest first, so creating children no
    // longer changes a parent's mtime.
    for (path, node) in &plan.symlinks {
        root.at_parent(root.rel(path), |dir, name| {
            if policy.ownership {
                rustix::fs::chownat(
                    dir,
                    name,
                    Some(uid(node.uid)),
                    Some(gid(node.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            let times = mtime_only(node.mtime_ns);
            rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
            Ok(())
        })
        .map_err(io_err("set owner and mtime of", path))?;
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    for (path, node) in plan.dirs.iter().rev() {
        let dir = root
            .open(root.rel(path), flags, Mode::empty())
            .map_err(io_err("open directory", path))?;
        policy.apply_fd(dir.as_fd(), Meta::of(node), true, path)?;
    }
    if let Some(RootMeta {
        mode,
        uid,
        gid,
        mtime_ns,
    }) = root_meta
    {
        let m = Meta {
            mode,
            uid,
            gid,
            mtime_ns,
        };
        policy.apply_fd(root.fd(), m, true, target)?;
    }
    Ok(())
}
