//! The restore plan: every tree loaded and validated before anything is written, and
//! the range requests that fetch each file's chunks, grouped by pack.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::sync::Kept;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::pack::BlobType;
use crate::repository::Repository;
use crate::stored_tree::TreeReader;
use crate::tree::{ContentPart, Node, NodeKind};

/// Largest range fetched in one request when neighbouring chunks share a pack.
pub(super) const MAX_RANGE: u64 = 8 * 1024 * 1024;
/// A file's chunks this close together in one pack are fetched with one request, the
/// bytes between them downloaded and dropped: to an S3 store a request costs about as
/// much as a few hundred KiB of transfer, and small chunks leave a file's chunks split
/// by other files' blobs and by chunks it shares with them. (Benchmark data set, 16 KiB
/// chunks: 5,100 requests for the large files with no gap, 560 with 64 KiB, 400 with
/// 256 KiB for 22% more bytes, 220 with 1 MiB for 41% more.)
pub(super) const RANGE_GAP: u64 = 256 * 1024;

/// Small files whose chunks lie close together in one pack, fetched together.
#[derive(Debug)]
pub(super) struct SmallBatch {
    pub(super) pack: Id,
    pub(super) start: u64,
    pub(super) end: u64,
    /// (index into `Plan::files`, its one range, its size)
    pub(super) files: Vec<(usize, Group, u64)>,
}

/// A small file's chunks may join a batch when they start within this many bytes of
/// the batch's end (the gap is downloaded and dropped).
pub(super) const BATCH_GAP: u64 = 64 * 1024;
/// Files whose chunks span at most this much of one pack are restored in batches.
pub(super) const SMALL_FILE_RANGE: u64 = 1024 * 1024;

#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Parents before children.
    pub(super) dirs: Vec<(PathBuf, Node)>,
    pub(super) files: Vec<(PathBuf, Node)>,
    pub(super) symlinks: Vec<(PathBuf, Node)>,
    pub(super) hardlinks: Vec<(PathBuf, PathBuf, Node)>,
}

/// One chunk to write.
#[derive(Debug)]
pub(super) struct Piece {
    pub(super) file_offset: u64,
    pub(super) id: Id,
    pub(super) loc: BlobLocation,
}

/// Chunks stored close together in one pack, fetched with one range request.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) pack: Id,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) pieces: Vec<Piece>,
}

/// Groups a file's chunks into range requests: in pack order, not file order (writes
/// are positional), so chunks the file repeats or that lie out of order in a pack
/// share a request, merging neighbours up to `gap` bytes apart and up to `MAX_RANGE`.
pub(super) fn group_pieces(mut pieces: Vec<Piece>, gap: u64) -> Vec<Group> {
    pieces.sort_by_key(|p| (p.loc.pack, p.loc.offset, p.file_offset));
    let mut groups: Vec<Group> = Vec::new();
    for piece in pieces {
        let start = u64::from(piece.loc.offset);
        let end = start + u64::from(piece.loc.length);
        match groups.last_mut() {
            Some(g)
                if g.pack == piece.loc.pack
                    && start <= g.end + gap
                    && end.max(g.end) - g.start <= MAX_RANGE =>
            {
                g.end = g.end.max(end);
                g.pieces.push(piece);
            }
            _ => groups.push(Group {
                pack: piece.loc.pack,
                start,
                end,
                pieces: vec![piece],
            }),
        }
    }
    groups
}

/// One file restored with its own range requests.
#[derive(Debug)]
pub(super) struct FileWork {
    /// Index into `Plan::files`.
    pub(super) index: usize,
    pub(super) groups: Vec<Group>,
    pub(super) size: u64,
    /// The file is there from the previous restore and only its missing chunks are
    /// written (a sync restore's patch); otherwise it is created.
    pub(super) patch: bool,
}

/// One unit of the fill phase: a batch of small files fetched with one request, or one
/// file with its own range requests.
#[derive(Debug)]
pub(super) enum Work {
    Batch(SmallBatch),
    File(FileWork),
}

impl Work {
    pub(super) fn requests(&self) -> usize {
        match self {
            Work::Batch(_) => 1,
            Work::File(f) => f.groups.len(),
        }
    }

    pub(super) fn download_bytes(&self) -> u64 {
        match self {
            Work::Batch(b) => b.end - b.start,
            Work::File(f) => f.groups.iter().map(|g| g.end - g.start).sum(),
        }
    }
}

impl Repository {
    /// Loads every tree, validating names and checking that every chunk is indexed,
    /// before anything is written.
    pub(super) async fn plan(
        &self,
        root: Id,
        target: &Path,
        cancel: &CancellationToken,
    ) -> Result<Plan> {
        let mut plan = Plan::default();
        let reader = &TreeReader::for_repository(self);
        let mut frontier = vec![(root, target.to_path_buf())];
        while !frontier.is_empty() {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let trees: Vec<_> = futures::stream::iter(frontier)
                .map(|(id, dir)| async move {
                    if self.locate(&id).is_some_and(|l| l.kind != BlobType::Tree) {
                        return Err(Error::corrupt(
                            format!("tree {id}"),
                            "indexed as a data blob",
                        ));
                    }
                    let tree = reader.load(&id).await?.tree;
                    tree.validate(&id)?;
                    Ok::<_, Error>((tree, dir))
                })
                .buffered(8)
                .try_collect()
                .await?;
            let mut next = Vec::new();
            for (tree, dir) in trees {
                for node in tree.nodes {
                    let path = dir.join(node.name.to_os());
                    match node.kind {
                        NodeKind::Dir => {
                            let sub = node.subtree.ok_or_else(|| {
                                Error::Internal("validated dir without subtree".into())
                            })?;
                            next.push((sub, path.clone()));
                            plan.dirs.push((path, node));
                        }
                        NodeKind::File | NodeKind::DeviceImage => {
                            for part in &node.content {
                                if let ContentPart::Chunk { id, .. } = part
                                    && self.locate(id).is_none()
                                {
                                    return Err(Error::NotFound {
                                        what: format!("chunk {id} of {}", path.display()),
                                        hint: "the repository is damaged; run `check`".into(),
                                    });
                                }
                            }
                            plan.files.push((path, node));
                        }
                        NodeKind::Symlink => plan.symlinks.push((path, node)),
                        NodeKind::Hardlink => {
                            let mut first = target.to_path_buf();
                            if let Some(t) = &node.link_target {
                                for c in t.as_bytes().split(|b| *b == b'/') {
                                    first.push(crate::tree::Name::new(c.to_vec()).to_os());
                                }
                            }
                            plan.hardlinks.push((path, first, node));
                        }
                    }
                }
            }
            frontier = next;
        }
        // A hard link may only point at a regular file this restore creates; otherwise
        // a crafted link through a restored symlink could pull in a file from outside.
        let files: std::collections::HashSet<&Path> =
            plan.files.iter().map(|(p, _)| p.as_path()).collect();
        for (path, first, node) in &plan.hardlinks {
            if !files.contains(first.as_path()) {
                return Err(Error::UnsafeName {
                    name: node
                        .link_target
                        .as_ref()
                        .map(|t| t.lossy())
                        .unwrap_or_default(),
                    tree: format!("hard link {}", path.display()),
                });
            }
        }
        Ok(plan)
    }

    /// The range requests for a file's chunks, but those `present` holds (each chunk at
    /// its offset), and the file's size.
    pub(super) fn groups_of(
        &self,
        path: &Path,
        node: &Node,
        present: Option<&HashSet<(u64, Id)>>,
    ) -> Result<(Vec<Group>, u64)> {
        let mut pieces = Vec::new();
        let mut offset = 0u64;
        for part in &node.content {
            if let ContentPart::Chunk { id, .. } = part
                && !present.is_some_and(|p| p.contains(&(offset, *id)))
            {
                let loc = self.locate(id).ok_or_else(|| Error::NotFound {
                    what: format!("chunk {id} of {}", path.display()),
                    hint: "the repository is damaged; run `check`".into(),
                })?;
                pieces.push(Piece {
                    file_offset: offset,
                    id: *id,
                    loc,
                });
            }
            offset += part.len();
        }
        Ok((group_pieces(pieces, RANGE_GAP), offset))
    }

    /// The fill phase's work: small files whose chunks sit in one stretch of a pack go
    /// in batches, one request per batch; the rest are restored file by file. Largest
    /// first: a big file started last would finish alone, long after the rest, with
    /// only its own few downloads in flight.
    pub(super) fn schedule(&self, plan: &Plan, kept: &Kept) -> Result<Vec<Work>> {
        let mut singles: Vec<FileWork> = Vec::new();
        let mut small: Vec<(usize, Group, u64)> = Vec::new();
        for (i, (path, node)) in plan.files.iter().enumerate() {
            if kept.files.contains(&i) {
                continue;
            }
            let present = kept.patched.get(&i);
            let (mut groups, size) = self.groups_of(path, node, present)?;
            // A batch creates its files; a patched file is written in place.
            if present.is_none()
                && let [g] = groups.as_slice()
                && g.end - g.start <= SMALL_FILE_RANGE
                && let Some(g) = groups.pop()
            {
                small.push((i, g, size));
            } else {
                singles.push(FileWork {
                    index: i,
                    groups,
                    size,
                    patch: present.is_some(),
                });
            }
        }
        small.sort_by_key(|(_, g, _)| (g.pack, g.start));
        let mut batches: Vec<SmallBatch> = Vec::new();
        for (i, g, size) in small {
            match batches.last_mut() {
                Some(b)
                    if b.pack == g.pack
                        && g.start <= b.end + BATCH_GAP
                        && g.end.max(b.end) - b.start <= MAX_RANGE =>
                {
                    b.end = b.end.max(g.end);
                    b.files.push((i, g, size));
                }
                _ => batches.push(SmallBatch {
                    pack: g.pack,
                    start: g.start,
                    end: g.end,
                    files: vec![(i, g, size)],
                }),
            }
        }
        let mut work: Vec<Work> = batches
            .into_iter()
            .map(Work::Batch)
            .chain(singles.into_iter().map(Work::File))
            .collect();
        work.sort_by_key(|w| std::cmp::Reverse(w.download_bytes()));
        Ok(work)
    }
}
