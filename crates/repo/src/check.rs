//! `check`: structure (indexes load, indexed packs exist with the right size,
//! snapshots and their trees load, every referenced blob is indexed) and, with
//! `read_data`, every pack downloaded and every blob decrypted and verified.

use std::collections::{HashMap, HashSet};
use std::fmt;

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BlobLocation, Index};
use crate::pack::{BlobType, decode_blob, pack_key, parse_pack_entries};
use crate::repository::Repository;
use crate::stored_tree::{LoadedTree, TreeReader};
use crate::tree::{ContentPart, NodeKind};

/// One thing `check` found wrong; each names the broken object.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckProblem {
    IndexUnreadable {
        index: Id,
        error: String,
    },
    PackMissing {
        pack: Id,
    },
    PackSizeMismatch {
        pack: Id,
        expected: u64,
        actual: u64,
    },
    SnapshotUnreadable {
        snapshot: Id,
        error: String,
    },
    TreeUnreadable {
        snapshot: Id,
        tree: Id,
        error: String,
    },
    BlobMissing {
        snapshot: Id,
        blob: Id,
        path: String,
    },
    PackUnreadable {
        pack: Id,
        error: String,
    },
    PackCorrupt {
        pack: Id,
        error: String,
    },
    BlobCorrupt {
        pack: Id,
        blob: Id,
        error: String,
    },
}

impl CheckProblem {
    /// The pack this problem is about, if any.
    pub fn pack(&self) -> Option<Id> {
        match self {
            CheckProblem::PackMissing { pack }
            | CheckProblem::PackSizeMismatch { pack, .. }
            | CheckProblem::PackUnreadable { pack, .. }
            | CheckProblem::PackCorrupt { pack, .. }
            | CheckProblem::BlobCorrupt { pack, .. } => Some(*pack),
            _ => None,
        }
    }
}

impl fmt::Display for CheckProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckProblem::IndexUnreadable { index, error } => {
                write!(f, "index/{index} unreadable: {error}")
            }
            CheckProblem::PackMissing { pack } => {
                write!(f, "{} is indexed but missing", pack_key(pack))
            }
            CheckProblem::PackSizeMismatch {
                pack,
                expected,
                actual,
            } => write!(
                f,
                "{} has {actual} bytes, the index says {expected}",
                pack_key(pack)
            ),
            CheckProblem::SnapshotUnreadable { snapshot, error } => {
                write!(f, "snapshots/{snapshot} unreadable: {error}")
            }
            CheckProblem::TreeUnreadable {
                snapshot,
                tree,
                error,
            } => write!(f, "tree {tree} of snapshot {snapshot} unreadable: {error}"),
            CheckProblem::BlobMissing {
                snapshot,
                blob,
                path,
            } => write!(
                f,
                "blob {blob} ({path}) of snapshot {snapshot} is not in the index"
            ),
            CheckProblem::PackUnreadable { pack, error } => {
                write!(f, "{} could not be read: {error}", pack_key(pack))
            }
            CheckProblem::PackCorrupt { pack, error } => {
                write!(f, "{} is corrupt: {error}", pack_key(pack))
            }
            CheckProblem::BlobCorrupt { pack, blob, error } => {
                write!(f, "blob {blob} in {} is corrupt: {error}", pack_key(pack))
            }
        }
    }
}

/// The outcome of a check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub problems: Vec<CheckProblem>,
    /// Packs no index lists: left by an interrupted backup, harmless, reclaimed by prune.
    pub unindexed_packs: Vec<Id>,
    pub snapshots_checked: u64,
    pub trees_checked: u64,
    pub packs_checked: u64,
    /// Packs downloaded and verified (with `read_data`).
    pub packs_read: u64,
    /// Blobs decrypted and verified (with `read_data`).
    pub blobs_read: u64,
    /// Chunk references of the checked snapshots looked up in the index.
    pub blobs_checked: u64,
    /// Pack bytes downloaded (with `read_data`).
    pub bytes_read: u64,
}

impl CheckReport {
    /// True when nothing is broken.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Every pack some problem names.
    pub fn broken_packs(&self) -> HashSet<Id> {
        self.problems
            .iter()
            .filter_map(CheckProblem::pack)
            .collect()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} snapshots, {} trees, {} packs ({} read, {} blobs verified): {} problem(s)",
            self.snapshots_checked,
            self.trees_checked,
            self.packs_checked,
            self.packs_read,
            self.blobs_read,
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Packs downloaded at once by `check --read-data`.
const READ_CONCURRENCY: usize = 4;

impl Repository {
    /// Checks the repository; `read_data` also downloads and verifies every pack.
    /// Problems are collected in the report; `Err` means the check itself could not
    /// run (for instance, the store was unreachable for listing).
    pub async fn check(&self, read_data: bool) -> Result<CheckReport> {
        self.check_scoped(None, read_data).await
    }

    /// Checks one snapshot: its trees load and every blob it references is indexed in a
    /// pack that exists with the right size; `read_data` also downloads and verifies
    /// the packs it uses (and only those). Problems elsewhere in the repository are not
    /// looked for.
    pub async fn check_snapshot(&self, snapshot: &Id, read_data: bool) -> Result<CheckReport> {
        self.check_scoped(Some(*snapshot), read_data).await
    }

    async fn check_scoped(&self, only: Option<Id>, read_data: bool) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let (index, bad_indexes) = self.load_index_files().await?;
        for (id, e) in bad_indexes {
            report.problems.push(CheckProblem::IndexUnreadable {
                index: id,
                error: e.to_string(),
            });
        }

        let snapshots = match only {
            Some(id) => vec![id],
            None => self.snapshot_ids().await?,
        };
        let used = self
            .check_snapshots(&index, &snapshots, &mut report)
            .await?;

        let listed: HashMap<Id, u64> = self
            .backend()
            .list("packs/")
            .await?
            .into_iter()
            .filter_map(|o| {
                let name = o.key.rsplit('/').next()?;
                Id::parse(name).ok().map(|id| (id, o.size))
            })
            .collect();
        // A whole-repository check looks at every indexed pack; a snapshot check only
        // at the packs that snapshot needs.
        let indexed: HashMap<Id, u64> = index
            .packs()
            .filter(|(p, _)| only.is_none() || used.contains(p))
            .collect();
        for (pack, expected) in &indexed {
            report.packs_checked += 1;
            match listed.get(pack) {
                None => report
                    .problems
                    .push(CheckProblem::PackMissing { pack: *pack }),
                Some(actual) if actual != expected => {
                    report.problems.push(CheckProblem::PackSizeMismatch {
                        pack: *pack,
                        expected: *expected,
                        actual: *actual,
                    })
                }
                Some(_) => {}
            }
        }
        if only.is_none() {
            report.unindexed_packs = listed
                .keys()
                .filter(|p| !indexed.contains_key(p))
                .copied()
                .collect();
            report.unindexed_packs.sort();
        }

        if read_data {
            self.check_pack_data(&index, &listed, &indexed, &mut report)
                .await;
        }
        report.problems.sort_by_key(|p| p.to_string());
        Ok(report)
    }

    /// Walks the given snapshots' trees; returns the packs holding their blobs.
    async fn check_snapshots(
        &self,
        index: &Index,
        snapshots: &[Id],
        report: &mut CheckReport,
    ) -> Result<HashSet<Id>> {
        let mut seen_trees: HashSet<Id> = HashSet::new();
        let mut used_packs: HashSet<Id> = HashSet::new();
        let reader = TreeReader::new(self.clone(), index.blobs());
        for &snap_id in snapshots {
            report.snapshots_checked += 1;
            let snap = match self.load_snapshot(&snap_id).await {
                Ok(s) => s,
                Err(e) => {
                    report.problems.push(CheckProblem::SnapshotUnreadable {
                        snapshot: snap_id,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            let mut stack = vec![(snap.tree, String::new())];
            while let Some((tree_id, dir)) = stack.pop() {
                if !seen_trees.insert(tree_id) {
                    continue;
                }
                report.trees_checked += 1;
                let Some(loc) = index.get(&tree_id) else {
                    report.problems.push(CheckProblem::BlobMissing {
                        snapshot: snap_id,
                        blob: tree_id,
                        path: format!("tree of /{dir}"),
                    });
                    continue;
                };
                used_packs.insert(loc.pack);
                let tree = match self.load_tree_at(&reader, &tree_id, &loc).await {
                    Ok(loaded) => {
                        for run in &loaded.runs {
                            if let Some(l) = index.get(run) {
                                used_packs.insert(l.pack);
                            }
                        }
                        loaded.tree
                    }
                    Err(e) => {
                        report.problems.push(CheckProblem::TreeUnreadable {
                            snapshot: snap_id,
                            tree: tree_id,
                            error: e.to_string(),
                        });
                        continue;
                    }
                };
                for node in &tree.nodes {
                    let path = if dir.is_empty() {
                        node.name.lossy()
                    } else {
                        format!("{dir}/{}", node.name.lossy())
                    };
                    if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                        stack.push((sub, path.clone()));
                    }
                    for part in &node.content {
                        if let ContentPart::Chunk { id, .. } = part {
                            report.blobs_checked += 1;
                            match index.get(id) {
                                Some(loc) => {
                                    used_packs.insert(loc.pack);
                                }
                                None => report.problems.push(CheckProblem::BlobMissing {
                                    snapshot: snap_id,
                                    blob: *id,
                                    path: path.clone(),
                                }),
                            }
                        }
                    }
                }
            }
        }
        Ok(used_packs)
    }

    /// Loads a tree with its runs through `reader` and validates it.
    pub(crate) async fn load_tree_at(
        &self,
        reader: &TreeReader,
        id: &Id,
        loc: &BlobLocation,
    ) -> Result<LoadedTree> {
        if loc.kind != BlobType::Tree {
            return Err(Error::corrupt(
                format!("tree {id}"),
                "indexed as a data blob",
            ));
        }
        let loaded = reader.load(id).await?;
        loaded.tree.validate(id)?;
        Ok(loaded)
    }

    async fn check_pack_data(
        &self,
        index: &Index,
        listed: &HashMap<Id, u64>,
        indexed: &HashMap<Id, u64>,
        report: &mut CheckReport,
    ) {
        // What the index claims each pack holds, to compare with the pack's own header.
        let mut claimed: HashMap<Id, Vec<(Id, BlobLocation)>> = HashMap::new();
        for (blob, loc) in index.blobs() {
            claimed.entry(loc.pack).or_default().push((blob, loc));
        }
        let packs: Vec<Id> = indexed
            .keys()
            .filter(|p| listed.contains_key(p))
            .copied()
            .collect();
        report.bytes_read += packs.iter().filter_map(|p| listed.get(p)).sum::<u64>();
        let results: Vec<(u64, Vec<CheckProblem>)> = futures::stream::iter(packs)
            .map(|pack| {
                let claims = claimed.remove(&pack).unwrap_or_default();
                async move { self.verify_pack(pack, claims).await }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
        for (blobs, problems) in results {
            report.packs_read += 1;
            report.blobs_read += blobs;
            report.problems.extend(problems);
        }
    }

    async fn verify_pack(
        &self,
        pack: Id,
        claims: Vec<(Id, BlobLocation)>,
    ) -> (u64, Vec<CheckProblem>) {
        let data = match (self.backend())
            .get_at_most(&pack_key(&pack), crate::limits::MAX_PACK_BYTES)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                return (
                    0,
                    vec![CheckProblem::PackUnreadable {
                        pack,
                        error: e.to_string(),
                    }],
                );
            }
        };
        let repo = self.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let mut problems = Vec::new();
            if Id::of_content(&data) != pack {
                problems.push(CheckProblem::PackCorrupt {
                    pack,
                    error: "content hash does not match its name".into(),
                });
            }
            let entries = match parse_pack_entries(repo.crypto(), &data, &pack) {
                Ok(e) => e,
                Err(e) => {
                    problems.push(CheckProblem::PackCorrupt {
                        pack,
                        error: e.to_string(),
                    });
                    return (0, problems);
                }
            };
            let mut ok = 0;
            let in_header: HashMap<Id, (u32, u32)> = entries
                .iter()
                .map(|e| (e.id, (e.offset, e.length)))
                .collect();
            for e in &entries {
                let sealed = &data[e.offset as usize..(e.offset + e.length) as usize];
                match decode_blob(repo.crypto(), e.kind, &e.id, sealed, e.raw_length, &pack) {
                    Ok(_) => ok += 1,
                    Err(err) => problems.push(CheckProblem::BlobCorrupt {
                        pack,
                        blob: e.id,
                        error: err.to_string(),
                    }),
                }
            }
            for (blob, loc) in claims {
                if in_header.get(&blob) != Some(&(loc.offset, loc.length)) {
                    problems.push(CheckProblem::BlobCorrupt {
                        pack,
                        blob,
                        error: "the index and the pack header disagree about this blob".into(),
                    });
                }
            }
            (ok, problems)
        })
        .await;
        match verified {
            Ok(r) => r,
            Err(e) => (
                0,
                vec![CheckProblem::PackUnreadable {
                    pack,
                    error: format!("verification task failed: {e}"),
                }],
            ),
        }
    }
}
