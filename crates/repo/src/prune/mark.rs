//! The index as prune loads it, and the marking of every blob the kept snapshots use.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::{LOAD_CONCURRENCY, cancelled, refuse};
use crate::error::Result;
use crate::id::Id;
use crate::index::{BlobLocation, IndexFile};
use crate::pack::PackEntry;
use crate::repository::Repository;
use crate::stored_tree::TreeReader;
use crate::tree::{ContentPart, NodeKind};

/// One indexed pack.
#[derive(Debug)]
pub(super) struct PackRec {
    pub id: Id,
    pub size: u64,
    pub entries: Vec<PackEntry>,
    /// Index files naming it.
    pub files: Vec<Id>,
}

/// Every index file's content, keyed for marking.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub packs: Vec<PackRec>,
    pub pack_pos: HashMap<Id, usize>,
    /// Blob -> (pack position, entry position) of its first copy.
    pub first: HashMap<Id, (usize, usize)>,
    /// Blob -> further packs holding a copy.
    pub dups: HashMap<Id, Vec<usize>>,
}

impl Loaded {
    pub fn add(&mut self, file: Id, index: &IndexFile) {
        for p in &index.packs {
            if let Some(&pos) = self.pack_pos.get(&p.id) {
                self.packs[pos].files.push(file);
                continue;
            }
            let pos = self.packs.len();
            let entries = p.entries();
            for (ei, e) in entries.iter().enumerate() {
                match self.first.get(&e.id) {
                    None => {
                        self.first.insert(e.id, (pos, ei));
                    }
                    Some(&(other, _)) if other != pos => {
                        self.dups.entry(e.id).or_default().push(pos);
                    }
                    Some(_) => {}
                }
            }
            self.packs.push(PackRec {
                id: p.id,
                size: p.size,
                entries,
                files: vec![file],
            });
            self.pack_pos.insert(p.id, pos);
        }
    }

    pub fn locate(&self, blob: &Id) -> Option<BlobLocation> {
        let &(pos, ei) = self.first.get(blob)?;
        let p = &self.packs[pos];
        let e = &p.entries[ei];
        Some(BlobLocation {
            pack: p.id,
            pack_size: p.size,
            kind: e.kind,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        })
    }
}

impl Repository {
    /// The blobs the given snapshots use (trees and chunks); refuses when any of them
    /// cannot be read or names a blob no index lists.
    pub(super) async fn mark(
        &self,
        loaded: &Loaded,
        snapshots: &[Id],
        cancel: &CancellationToken,
    ) -> Result<HashSet<Id>> {
        let roots: Vec<(Id, Id)> = futures::stream::iter(snapshots.iter().copied())
            .map(|id| async move {
                self.load_snapshot(&id)
                    .await
                    .map(|s| (s.tree, id))
                    .map_err(|e| {
                        refuse(format!(
                            "snapshot {id} could not be read ({e}); prune cannot tell what it \
                         uses; run `ferry repo check`"
                        ))
                    })
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut live: HashSet<Id> = HashSet::new();
        let reader = &TreeReader::new(
            self.clone(),
            loaded
                .first
                .keys()
                .filter_map(|id| loaded.locate(id).map(|l| (*id, l))),
        );
        let mut frontier = roots;
        while !frontier.is_empty() {
            cancelled(cancel)?;
            let mut todo = Vec::new();
            for (tree, snap) in frontier {
                if !live.insert(tree) {
                    continue;
                }
                let loc = loaded.locate(&tree).ok_or_else(|| {
                    refuse(format!(
                        "snapshot {snap} needs tree {tree}, which no index lists; run \
                         `ferry repo check`"
                    ))
                })?;
                todo.push((tree, snap, loc));
            }
            let trees: Vec<_> = futures::stream::iter(todo)
                .map(|(tree, snap, loc)| async move {
                    self.load_tree_at(reader, &tree, &loc)
                        .await
                        .map(|t| (snap, t))
                        .map_err(|e| {
                            refuse(format!(
                                "tree {tree} of snapshot {snap} could not be read ({e}); run \
                                 `ferry repo check`"
                            ))
                        })
                })
                .buffer_unordered(LOAD_CONCURRENCY)
                .try_collect()
                .await?;
            let mut next = Vec::new();
            for (snap, loaded_tree) in trees {
                // Runs are tree blobs too: their packs must stay.
                live.extend(loaded_tree.runs.iter().copied());
                let tree = loaded_tree.tree;
                for node in &tree.nodes {
                    if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                        next.push((sub, snap));
                    }
                    for part in &node.content {
                        if let ContentPart::Chunk { id, .. } = part {
                            if !loaded.first.contains_key(id) {
                                return Err(refuse(format!(
                                    "snapshot {snap} uses chunk {id} ({}), which no index \
                                     lists; run `ferry repo check`",
                                    node.name.lossy()
                                )));
                            }
                            live.insert(*id);
                        }
                    }
                }
            }
            frontier = next;
        }
        Ok(live)
    }
}
