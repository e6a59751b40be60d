//! The walk: every entry's metadata recorded, opened beneath the source without
//! following links, and unchanged files matched against the parent snapshot.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::fsutil::{Beneath, fs_error, node_from_metadata, node_from_stat};

use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::RootMeta;
use crate::stored_tree::TreeReader;
use crate::tree::{ContentPart, Name, Node, NodeKind, Tree};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};

use super::{BackupCounters, FILES_CHANGED, FILES_DONE, FILES_UNCHANGED};

/// One walked entry. Index 0 is the (virtual) root; children always come after their
/// parent, so walking the arena backwards visits children before parents.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) path: PathBuf,
    /// '/'-joined names from the snapshot root.
    pub(super) rel: Vec<u8>,
    pub(super) node: Node,
    pub(super) children: Vec<usize>,
    pub(super) needs_read: bool,
}

pub(super) struct Walk {
    pub(super) entries: Vec<Entry>,
    pub(super) root_meta: Option<RootMeta>,
    pub(super) skipped: u64,
    /// The source directory, under which every entry is opened without following links
    /// (`None` for a single file or device).
    pub(super) root: Option<Arc<Beneath>>,
}

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| fs_error("backup", op, path, e)
}

pub(super) fn rustix_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> Error + 'a {
    move |e| fs_error("backup", op, path, e.into())
}

/// An entry's '/'-joined name from the snapshot root as a relative path.
pub(super) fn rel_path(rel: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(rel))
}

/// Makes the entry for `name` in the open directory `dir` (at `path` for messages);
/// `None` for kinds a snapshot does not hold. The entry itself is never followed.
pub(super) fn make_child_entry(
    dir: &OwnedFd,
    path: PathBuf,
    name: &OsStr,
    parent_rel: &[u8],
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<Option<Entry>> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(rustix_err("stat", &path))?;
    let rel = join_rel(parent_rel, name.as_bytes());
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        FileType::RegularFile => NodeKind::File,
        _ => {
            tracing::warn!(path = %path.display(), "skipping special file (socket, fifo or device)");
            return Ok(None);
        }
    };
    let mut node = node_from_stat(Name::from_os(name), kind, &st);
    if kind == NodeKind::Symlink {
        let target =
            rustix::fs::readlinkat(dir, name, Vec::new()).map_err(rustix_err("readlink", &path))?;
        node.symlink_target = Some(Name::new(target.into_bytes()));
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between architectures
    let (dev, ino, nlink) = (st.st_dev as u64, st.st_ino as u64, st.st_nlink as u64);
    if kind == NodeKind::File && nlink > 1 {
        match links.get(&(dev, ino)) {
            Some(first) => {
                node.kind = NodeKind::Hardlink;
                node.link_target = Some(Name::new(first.clone()));
            }
            None => {
                links.insert((dev, ino), rel.clone());
            }
        }
    }
    let needs_read = node.kind == NodeKind::File;
    Ok(Some(Entry {
        path,
        rel,
        node,
        children: Vec::new(),
        needs_read,
    }))
}

pub(super) fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut v = parent.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

/// Makes the entry for one path; `None` for kinds a snapshot does not hold.
pub(super) fn make_entry(
    path: PathBuf,
    name: Name,
    parent_rel: &[u8],
    top_level_file: bool,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<Option<Entry>> {
    let md = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
    let ft = md.file_type();
    let rel = join_rel(parent_rel, name.as_bytes());
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_file() {
        NodeKind::File
    } else if ft.is_block_device() && top_level_file {
        NodeKind::DeviceImage
    } else {
        tracing::warn!(path = %path.display(), "skipping special file (socket, fifo or device)");
        return Ok(None);
    };
    let mut node = node_from_metadata(name, kind, &md);
    if kind == NodeKind::Symlink {
        let target = fs::read_link(&path).map_err(io_err("readlink", &path))?;
        node.symlink_target = Some(Name::from_os(target.as_os_str()));
    }
    if kind == NodeKind::File && md.nlink() > 1 {
        match links.get(&(md.dev(), md.ino())) {
            Some(first) => {
                node.kind = NodeKind::Hardlink;
                node.link_target = Some(Name::new(first.clone()));
            }
            None => {
                links.insert((md.dev(), md.ino()), rel.clone());
            }
        }
    }
    let needs_read = matches!(node.kind, NodeKind::File | NodeKind::DeviceImage);
    Ok(Some(Entry {
        path,
        rel,
        node,
        children: Vec::new(),
        needs_read,
    }))
}

pub(super) fn walk(source: &Path, cancel: &CancellationToken) -> Result<Walk> {
    // The source itself is followed when it is a symlink: /dev/disk/by-id/… names
    // are symlinks to the block device users mean.
    let md = fs::metadata(source).map_err(io_err("stat", source))?;
    let mut links = HashMap::new();
    let mut entries = vec![Entry {
        path: source.to_path_buf(),
        rel: Vec::new(),
        node: Node::new("", NodeKind::Dir),
        children: Vec::new(),
        needs_read: false,
    }];
    let mut skipped = 0;
    if !md.is_dir() {
        let name = source.file_name().ok_or_else(|| {
            Error::invalid("source", format!("{} has no file name", source.display()))
        })?;
        let resolved = fs::canonicalize(source).map_err(io_err("resolve", source))?;
        match make_entry(resolved, Name::from_os(name), b"", true, &mut links)? {
            Some(e) => {
                entries.push(e);
                entries[0].children.push(1);
            }
            None => {
                return Err(Error::invalid(
                    "source",
                    format!(
                        "{} is not a regular file, directory or block device",
                        source.display()
                    ),
                ));
            }
        }
        return Ok(Walk {
            entries,
            root_meta: None,
            skipped,
            root: None,
        });
    }
    // The directory itself is not followed either: a volume is never a link.
    let root = Beneath::open_dir(source).map_err(io_err("open", source))?;
    let root_meta = RootMeta {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
    };
    let mut stack = vec![0usize];
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
    while let Some(dir_idx) = stack.pop() {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let dir_path = entries[dir_idx].path.clone();
        let parent_rel = entries[dir_idx].rel.clone();
        // Opened from the root by its relative name, refusing any link on the way: a
        // directory swapped for a link after it was listed is an error, not a way out.
        let dir = root
            .open(
                rel_path(&parent_rel),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .map_err(io_err("open directory", &dir_path))?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut listing = RawDir::new(dir.as_fd(), &mut buf);
        while let Some(e) = listing.next() {
            let e = e.map_err(rustix_err("list directory", &dir_path))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let name = OsStr::from_bytes(&name);
            let path = dir_path.join(name);
            let Some(entry) = make_child_entry(&dir, path, name, &parent_rel, &mut links)? else {
                skipped += 1;
                continue;
            };
            let is_dir = entry.node.kind == NodeKind::Dir;
            entries.push(entry);
            let idx = entries.len() - 1;
            entries[dir_idx].children.push(idx);
            if is_dir {
                subdirs.push(idx);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(Walk {
        entries,
        root_meta: Some(root_meta),
        skipped,
        root: Some(Arc::new(root)),
    })
}

/// Takes content from the parent snapshot for files that did not change.
pub(super) async fn match_parent(
    repo: &Repository,
    parent_tree: Id,
    entries: &mut [Entry],
    counters: &BackupCounters,
) -> Result<()> {
    let reader = &TreeReader::for_repository(repo);
    let mut frontier = vec![(0usize, parent_tree)];
    while !frontier.is_empty() {
        let loaded: Vec<(usize, Tree)> = futures::stream::iter(frontier)
            .map(|(idx, tree_id)| async move { reader.load(&tree_id).await.map(|t| (idx, t.tree)) })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for (dir_idx, tree) in loaded {
            let by_name: HashMap<&Name, &Node> = tree.nodes.iter().map(|n| (&n.name, n)).collect();
            for &child in &entries[dir_idx].children.clone() {
                let e = &mut entries[child];
                let Some(old) = by_name.get(&e.node.name) else {
                    continue;
                };
                match e.node.kind {
                    NodeKind::Dir => {
                        if let (NodeKind::Dir, Some(sub)) = (old.kind, old.subtree) {
                            next.push((child, sub));
                        }
                    }
                    NodeKind::File => {
                        let unchanged = old.kind == NodeKind::File
                            && old.size == e.node.size
                            && old.mtime_ns == e.node.mtime_ns
                            && old.ctime_ns == e.node.ctime_ns
                            && old.inode == e.node.inode
                            && old.content.iter().all(|p| match p {
                                ContentPart::Chunk { id, .. } => repo.index_contains(id),
                                ContentPart::Hole { .. } => true,
                            });
                        if unchanged {
                            e.node.content = old.content.clone();
                            e.needs_read = false;
                            counters.add(FILES_UNCHANGED, 1);
                            counters.add(FILES_DONE, 1);
                        } else if old.kind == NodeKind::File {
                            counters.add(FILES_CHANGED, 1);
                        }
                    }
                    _ => {}
                }
            }
        }
        frontier = next;
    }
    Ok(())
}
