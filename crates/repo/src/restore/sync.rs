//! Restoring over an earlier restore (`RestoreOptions::sync`): what the snapshot lacks
//! is removed, files unchanged since the snapshot restored there last are kept, files
//! that changed since then are patched (only the chunks not already at their offsets
//! are written, as a database's file changed in a few pages needs), and everything else
//! is written as into an empty directory.
//!
//! A file is kept only when the snapshot restored last (recorded on the target
//! directory as the extended attribute [`MARKER`]) had the same content at that path,
//! by chunk ids, and the file on disk still has that snapshot's size and mtime, with no
//! other name. Size and mtime alone would keep a file whose content changed in place
//! with its mtime restored (the source's backup sees such a change by inode and
//! ctime, the destination cannot). The marker is removed before anything changes and
//! written again only when the restore completes, so an interrupted one leaves none
//! and the next writes every file.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::entries::{Meta, MetaPolicy};
use super::io_err;
use super::plan::Plan;
use crate::error::Result;
use crate::fsutil::Beneath;
use crate::id::Id;
use crate::tree::{ContentPart, Node, NodeKind};

/// The extended attribute naming the snapshot last restored into a directory.
pub(super) const MARKER: &str = "user.ferry.restored-snapshot";

/// The snapshot recorded on the target, if any (and if the file system keeps
/// extended attributes at all).
pub(super) fn recorded(root: &Beneath) -> Option<Id> {
    let mut buf = [0u8; 128];
    let n = rustix::fs::fgetxattr(root.fd(), MARKER, &mut buf[..]).ok()?;
    let text = std::str::from_utf8(buf.get(..n)?).ok()?;
    Id::parse(text.trim()).ok()
}

/// Forgets the recorded snapshot, before the target changes.
pub(super) fn forget(root: &Beneath, target: &Path) -> Result<()> {
    match rustix::fs::fremovexattr(root.fd(), MARKER) {
        Ok(()) | Err(Errno::NODATA | Errno::NOTSUP) => Ok(()),
        Err(e) => Err(io_err("remove the restore marker of", target)(e.into())),
    }
}

/// Records `snapshot` as restored into the target. Best effort: where the file system
/// keeps no extended attributes (or refuses this one), nothing is recorded and the
/// next sync restore writes every file again.
pub(super) fn record(root: &Beneath, target: &Path, snapshot: &Id) {
    let value = snapshot.to_string();
    let flags = rustix::fs::XattrFlags::empty();
    if let Err(e) = rustix::fs::fsetxattr(root.fd(), MARKER, value.as_bytes(), flags)
        && e != Errno::NOTSUP
    {
        tracing::warn!(target = %target.display(), error = %e, "cannot record the restored snapshot; the next sync restore writes every file");
    }
}

/// What the walk found to keep.
#[derive(Debug, Default)]
pub(super) struct Kept {
    /// Indexes into `Plan::files`.
    pub(super) files: HashSet<usize>,
    pub(super) bytes: u64,
    /// Files on disk as the previous restore left them whose content changed since: kept
    /// and patched. By index into `Plan::files`, the chunks already there, each at its
    /// offset.
    pub(super) patched: HashMap<usize, HashSet<(u64, Id)>>,
}

/// How a file of the plan stands on disk.
enum OnDisk {
    /// As the plan wants it: kept.
    Unchanged,
    /// As the previous restore left it, with other content than the plan's: patched,
    /// these chunks (offset, id) being there already.
    Patchable(HashSet<(u64, Id)>),
    /// Anything else: removed and written again.
    Other,
}

/// What a path of the plan is.
enum Want {
    Dir,
    File(usize),
    /// A symlink or hard link: always made again.
    Remake,
}

/// Blocking: walks the target, removing every entry the plan does not have as it is
/// there, and keeping the files that `previous` (the recorded snapshot's files by
/// path) shows unchanged, with the plan's metadata applied. Nothing is followed: every
/// directory is opened beneath the target without symbolic links.
pub(super) fn prune(
    plan: &Plan,
    previous: &Previous,
    root: &Beneath,
    target: &Path,
    policy: MetaPolicy,
) -> Result<Kept> {
    let mut want: HashMap<&Path, Want> = HashMap::new();
    for (p, _) in &plan.dirs {
        want.insert(p, Want::Dir);
    }
    for (i, (p, _)) in plan.files.iter().enumerate() {
        want.insert(p, Want::File(i));
    }
    for (p, _) in &plan.symlinks {
        want.insert(p, Want::Remake);
    }
    for (p, _, _) in &plan.hardlinks {
        want.insert(p, Want::Remake);
    }
    let mut kept = Kept::default();
    walk(root, target, |dir, name, path, st| {
        let kind = FileType::from_raw_mode(st.st_mode);
        let on_disk = match want.get(path) {
            Some(Want::Dir) if kind == FileType::Directory => return Ok(true),
            Some(Want::File(i)) if kind == FileType::RegularFile => {
                Some((*i, on_disk(plan, previous, *i, st)))
            }
            _ => None,
        };
        match on_disk {
            Some((i, OnDisk::Unchanged)) => {
                let node = &plan.files[i].1;
                let file = root
                    .open(root.rel(path), OFlags::RDONLY, Mode::empty())
                    .map_err(io_err("open", path))?;
                policy.apply_fd(file.as_fd(), Meta::of(node), false, path)?;
                kept.files.insert(i);
                kept.bytes += node.size;
            }
            Some((i, OnDisk::Patchable(present))) => {
                kept.patched.insert(i, present);
            }
            Some((_, OnDisk::Other)) | None => {
                remove(dir, name, kind == FileType::Directory).map_err(io_err("remove", path))?
            }
        }
        Ok(false)
    })?;
    Ok(kept)
}

/// How file `i` of the plan stands on disk (`st`), against the file the previous restore
/// wrote at its path. Only a file the previous restore left as it was (same size and
/// mtime, no other name) is trusted to hold that restore's content; it is patched when
/// the plan's content has no holes (a hole must read as zeros, and old data may lie
/// there) and this process may write it.
#[allow(clippy::unnecessary_cast)] // the stat field types differ between architectures
fn on_disk(plan: &Plan, previous: &Previous, i: usize, st: &rustix::fs::Stat) -> OnDisk {
    let (path, node) = &plan.files[i];
    let Some(prev) = previous.files.get(path) else {
        return OnDisk::Other;
    };
    let mtime_ns = crate::fsutil::ns(st.st_mtime as i64, st.st_mtime_nsec as i64);
    let file = |k: NodeKind| matches!(k, NodeKind::File | NodeKind::DeviceImage);
    let as_left = file(prev.kind)
        && st.st_size as u64 == prev.size
        && st.st_nlink as u64 == 1
        && mtime_ns == prev.mtime_ns;
    if !as_left || !file(node.kind) {
        return OnDisk::Other;
    }
    if prev.kind == node.kind && prev.content == node.content && prev.size == node.size {
        return OnDisk::Unchanged;
    }
    let holes = node
        .content
        .iter()
        .any(|p| matches!(p, ContentPart::Hole { .. }));
    let writable = rustix::process::geteuid().is_root() || st.st_mode & 0o200 != 0;
    if holes || !writable {
        return OnDisk::Other;
    }
    let mut present = HashSet::new();
    let mut offset = 0u64;
    for part in &prev.content {
        if let ContentPart::Chunk { id, .. } = part {
            present.insert((offset, *id));
        }
        offset += part.len();
    }
    OnDisk::Patchable(present)
}

/// What the snapshot restored last put into the target, by path.
#[derive(Debug, Default)]
pub(super) struct Previous {
    pub(super) files: HashMap<PathBuf, Node>,
    /// Its directories, symbolic links and hard links.
    pub(super) others: HashSet<PathBuf>,
}

/// How many changed paths an error names.
const CHANGES_NAMED: usize = 10;

/// Blocking, and read-only: the files of the target that are not as `previous` left
/// them (another size or mtime), were added beside them, or are gone; the first few
/// (relative to the target) and how many more. Directories and links are not compared:
/// a restore sets their metadata again anyway.
#[allow(clippy::unnecessary_cast)] // the stat field types differ between architectures
pub(super) fn changes(
    previous: &Previous,
    root: &Beneath,
    target: &Path,
) -> Result<(Vec<String>, usize)> {
    let mut changed = Vec::new();
    let mut seen = HashSet::new();
    walk(root, target, |_, _, path, st| {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => return Ok(true),
            FileType::RegularFile => match previous.files.get(path) {
                Some(prev) => {
                    seen.insert(path.to_path_buf());
                    let mtime_ns = crate::fsutil::ns(st.st_mtime as i64, st.st_mtime_nsec as i64);
                    if st.st_size as u64 != prev.size || mtime_ns != prev.mtime_ns {
                        changed.push(path.to_path_buf());
                    }
                }
                None if !previous.others.contains(path) => changed.push(path.to_path_buf()),
                None => {}
            },
            _ => {}
        }
        Ok(false)
    })?;
    changed.extend(
        previous
            .files
            .keys()
            .filter(|p| !seen.contains(*p))
            .cloned(),
    );
    let mut changed: Vec<&Path> = changed
        .iter()
        .map(|p| p.strip_prefix(target).unwrap_or(p))
        .collect();
    changed.sort();
    let more = changed.len().saturating_sub(CHANGES_NAMED);
    let named = changed
        .iter()
        .take(CHANGES_NAMED)
        .map(|p| p.display().to_string())
        .collect();
    Ok((named, more))
}

/// Blocking: visits every entry beneath the target, never following a link: `visit`
/// gets the entry's directory, its name there, its path (under `target`) and its stat,
/// and says whether to go into it.
fn walk(
    root: &Beneath,
    target: &Path,
    mut visit: impl FnMut(BorrowedFd<'_>, &OsStr, &Path, &rustix::fs::Stat) -> Result<bool>,
) -> Result<()> {
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let shown = target.join(&rel);
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let dir = root
            .open(&rel, flags, Mode::empty())
            .map_err(io_err("open directory", &shown))?;
        for name in names(dir.as_fd()).map_err(io_err("list directory", &shown))? {
            let path = shown.join(&name);
            let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err("stat", &path)(e.into()))?;
            if visit(dir.as_fd(), &name, &path, &st)? {
                dirs.push(rel.join(&name));
            }
        }
    }
    Ok(())
}

/// The names in a directory, without `.` and `..`.
fn names(dir: BorrowedFd<'_>) -> std::io::Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(out)
}

/// Removes `name` in `dir`, a directory with everything under it, never following a
/// link.
fn remove(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> std::io::Result<()> {
    if !is_dir {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into);
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let sub = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    for child in names(sub.as_fd())? {
        let st = rustix::fs::statat(&sub, &child, AtFlags::SYMLINK_NOFOLLOW)?;
        let child_is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        remove(sub.as_fd(), &child, child_is_dir)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(Into::into)
}
