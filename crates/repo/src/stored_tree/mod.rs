//! How trees are stored, and loaded back.
//!
//! Format 1 stores each directory as one tree blob with every entry and every chunk
//! of every file inline. A one-byte change in a 512 MiB image or in one of 100 small
//! files then stores the whole list again, which cost more than the changed data.
//!
//! Format 2 splits what grows: a directory with many entries is stored as *runs* of
//! entries, and a file with many chunks as runs of its content list. Run boundaries
//! are content-defined (a keyed hash of the entry name, or the chunk id, picks them),
//! so a change rewrites only the runs it touches and the short list naming them.
//! Long lists of runs are split again the same way, at boundaries that a change inside
//! a run never moves (see [`Keyed`]). Loading resolves every run, so the rest of the
//! engine only ever sees complete [`Tree`]s. Blobs are written in a compact binary
//! form (`binary`); the JSON form is still read.
//!
//! Loading prefetches: the tree blobs a backup writes sit next to each other in its
//! packs, so [`TreeReader`] fetches each such neighbourhood with one range request and
//! serves the runs inside from memory, instead of one request per run.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::pack::{BlobType, decode_blob, pack_key};
use crate::repository::Repository;
use crate::tree::{ContentPart, ContentRef, Node, Tree};

mod binary;

/// Directories with more entries than this are stored as runs (format 2).
const TREE_INLINE_MAX: usize = 24;
/// An entry ends a run when its name's keyed hash is 0 modulo this: about this many
/// entries per run.
const TREE_RUN_AVG: u32 = 4;
/// Runs are cut after this many entries whatever the names say.
const TREE_RUN_MAX: usize = 64;
/// Files with more chunks than this store their content list as runs.
const CONTENT_INLINE_MAX: usize = 48;
/// A chunk ends a run when its id is 0 modulo this.
const CONTENT_RUN_AVG: u32 = 16;
const CONTENT_RUN_MAX: usize = 256;
/// Lists of runs longer than this are themselves split into runs.
const REFS_INLINE_MAX: usize = 4;
const REFS_RUN_AVG: u32 = 8;
const REFS_RUN_MAX: usize = 64;
/// Runs nest at most this deep; more means a damaged or hostile repository.
const MAX_DEPTH: usize = 12;

/// Tree blobs closer than this in a pack are fetched with one request.
const PREFETCH_GAP: u64 = 256 * 1024;
/// The largest range one prefetch asks for.
const PREFETCH_MAX: u64 = 16 * 1024 * 1024;
/// Tree blobs fetched at once while resolving runs.
const LOAD_CONCURRENCY: usize = 16;

/// A stored run of a directory's entries, in name order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeRef {
    pub id: Id,
    /// Entries the run holds, nested runs included.
    pub nodes: u64,
}

/// A tree blob as stored: entries, or (format 2) runs of entries. A format 1 tree is
/// `{"nodes": [...]}`, which reads as this with no runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredTree {
    #[serde(default)]
    nodes: Vec<Node>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    runs: Vec<TreeRef>,
}

/// A content-list blob (format 2): parts, or runs of parts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredContent {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<ContentPart>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    runs: Vec<ContentRef>,
}

/// A tree ready to store: the root's id and every blob it needs (plaintext), the root
/// last. Blobs the repository already holds are deduplicated by the caller.
#[derive(Debug)]
pub(crate) struct EncodedTree {
    pub root: Id,
    pub blobs: Vec<(Id, Vec<u8>)>,
}

/// Whether `key` ends a run at `level` (0: runs of entries or parts; 1 and up: runs
/// of runs), given `avg`. Each level reads its own two bytes of the key, so the levels
/// cut independently.
fn ends_run(key: &Id, level: usize, avg: u32) -> bool {
    let b = key.as_bytes();
    let i = (2 * level) % 32;
    u32::from(u16::from_le_bytes([b[i], b[i + 1]])) % avg == 0
}

/// Cuts `items` into runs: after every item `ends` accepts, and after `max` items.
fn split_runs<T>(items: Vec<T>, max: usize, ends: impl Fn(&T) -> bool) -> Vec<Vec<T>> {
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for item in items {
        let end = ends(&item);
        cur.push(item);
        if end || cur.len() >= max {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

/// A reference to a stored run, with the key that decides the boundaries of the runs
/// of runs above it: the keyed hash of the run's last entry name, or the run's last
/// chunk id. Unlike the run's own id, the key stays put when something inside the run
/// changes, so a change never moves a boundary above the run it is in.
struct Keyed<R> {
    r: R,
    key: Id,
}

/// Stores runs of `refs` (through `store`) until at most [`REFS_INLINE_MAX`] remain,
/// or until they would all go into one run (at most [`REFS_RUN_MAX`]).
fn nest<R>(mut refs: Vec<Keyed<R>>, mut store: impl FnMut(Vec<R>) -> R) -> Vec<R> {
    let mut level = 1;
    while refs.len() > REFS_INLINE_MAX {
        let ends = |k: &Keyed<R>| ends_run(&k.key, level, REFS_RUN_AVG);
        // Every key a boundary would make runs of one, and no progress.
        let all_end = refs.iter().all(ends);
        let groups = split_runs(refs, REFS_RUN_MAX, |k| !all_end && ends(k));
        if groups.len() == 1 {
            // One run of runs would be a blob holding what its parent could hold.
            refs = groups.into_iter().flatten().collect();
            break;
        }
        let mut upper = Vec::new();
        for group in groups {
            let key = group.last().map(|k| k.key).unwrap_or_default();
            let r = store(group.into_iter().map(|k| k.r).collect());
            upper.push(Keyed { r, key });
        }
        refs = upper;
        level += 1;
    }
    refs.into_iter().map(|k| k.r).collect()
}

/// Serializes a tree for storage. `split` is false for format 1 repositories, whose
/// readers know no runs: the blob is then exactly the format 1 tree.
pub(crate) fn encode_tree(tree: &Tree, keys: &Keys, split: bool) -> Result<EncodedTree> {
    let mut blobs = Vec::new();
    if !split {
        let bytes = tree.to_bytes()?;
        let root = keys.blob_id(&bytes);
        blobs.push((root, bytes));
        return Ok(EncodedTree { root, blobs });
    }
    let mut put = |bytes: Vec<u8>| {
        let id = keys.blob_id(&bytes);
        blobs.push((id, bytes));
        id
    };
    let mut nodes = Vec::with_capacity(tree.nodes.len());
    for node in &tree.nodes {
        nodes.push(store_node(node, &mut put));
    }
    let root_tree = if nodes.len() <= TREE_INLINE_MAX {
        StoredTree {
            nodes,
            runs: Vec::new(),
        }
    } else {
        let keyed: Vec<(Node, Id)> = nodes
            .into_iter()
            .map(|n| {
                let key = keys.blob_id(n.name.as_bytes());
                (n, key)
            })
            .collect();
        let mut refs = Vec::new();
        for run in split_runs(keyed, TREE_RUN_MAX, |(_, key)| {
            ends_run(key, 0, TREE_RUN_AVG)
        }) {
            let key = run.last().map(|(_, k)| *k).unwrap_or_default();
            let nodes: Vec<Node> = run.into_iter().map(|(n, _)| n).collect();
            let count = nodes.len() as u64;
            let id = put(binary::encode_tree(&StoredTree {
                nodes,
                runs: Vec::new(),
            }));
            refs.push(Keyed {
                r: TreeRef { id, nodes: count },
                key,
            });
        }
        let runs = nest(refs, |group| {
            let nodes = group.iter().map(|r| r.nodes).sum();
            let id = put(binary::encode_tree(&StoredTree {
                nodes: Vec::new(),
                runs: group,
            }));
            TreeRef { id, nodes }
        });
        StoredTree {
            nodes: Vec::new(),
            runs,
        }
    };
    let root = put(binary::encode_tree(&root_tree));
    Ok(EncodedTree { root, blobs })
}

/// A node as stored: a long content list moves into runs.
fn store_node(node: &Node, put: &mut impl FnMut(Vec<u8>) -> Id) -> Node {
    if node.content.len() <= CONTENT_INLINE_MAX {
        return node.clone();
    }
    let chunk_id = |p: &ContentPart| match p {
        ContentPart::Chunk { id, .. } => Some(*id),
        ContentPart::Hole { .. } => None,
    };
    let runs = split_runs(node.content.clone(), CONTENT_RUN_MAX, |p| {
        chunk_id(p).is_some_and(|id| ends_run(&id, 0, CONTENT_RUN_AVG))
    });
    let mut refs = Vec::with_capacity(runs.len());
    for run in runs {
        let key = run.iter().rev().find_map(chunk_id).unwrap_or_default();
        let parts = run.len() as u64;
        let bytes = run.iter().map(ContentPart::len).sum();
        let id = put(binary::encode_content(&StoredContent {
            parts: run,
            runs: Vec::new(),
        }));
        refs.push(Keyed {
            r: ContentRef { id, parts, bytes },
            key,
        });
    }
    let runs = nest(refs, |group| {
        let parts = group.iter().map(|r| r.parts).sum();
        let bytes = group.iter().map(|r| r.bytes).sum();
        let id = put(binary::encode_content(&StoredContent {
            parts: Vec::new(),
            runs: group,
        }));
        ContentRef { id, parts, bytes }
    });
    let mut stored = node.clone();
    stored.content = Vec::new();
    stored.content_runs = runs;
    stored
}

/// A tree with every run resolved, and the ids of the run blobs that took (which
/// prune and check count as used).
#[derive(Debug)]
pub(crate) struct LoadedTree {
    pub tree: Tree,
    pub runs: Vec<Id>,
}

/// Tree blobs of one pack that lie close together.
#[derive(Debug)]
struct Neighbourhood {
    pack: Id,
    start: u64,
    end: u64,
    members: Vec<(Id, BlobLocation)>,
    fetched: tokio::sync::OnceCell<()>,
}

/// Loads trees and resolves their runs, prefetching neighbouring tree blobs.
///
/// A reader belongs to one operation (a backup's parent scan, a restore's plan, a
/// check, a prune). Prefetched blobs are handed out once and then dropped, so memory
/// holds only what was fetched and not yet used; a blob asked for twice is read again.
pub(crate) struct TreeReader {
    repo: Repository,
    locations: HashMap<Id, (BlobLocation, Option<usize>)>,
    hoods: Vec<Neighbourhood>,
    ready: Mutex<HashMap<Id, Bytes>>,
    /// Blobs not in `locations` are looked up in the repository's index (see
    /// [`TreeReader::single`]).
    ask_index: bool,
}

impl std::fmt::Debug for TreeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeReader")
            .field("tree_blobs", &self.locations.len())
            .field("neighbourhoods", &self.hoods.len())
            .finish()
    }
}

impl TreeReader {
    /// A reader over the given tree blobs (every `BlobType::Tree` blob of the index
    /// the caller trusts; others are ignored).
    pub fn new(repo: Repository, blobs: impl IntoIterator<Item = (Id, BlobLocation)>) -> Self {
        let mut by_pack: HashMap<Id, Vec<(Id, BlobLocation)>> = HashMap::new();
        for (id, loc) in blobs {
            if loc.kind == BlobType::Tree {
                by_pack.entry(loc.pack).or_default().push((id, loc));
            }
        }
        let mut locations = HashMap::new();
        let mut hoods = Vec::new();
        for (pack, mut members) in by_pack {
            members.sort_by_key(|(_, l)| l.offset);
            let mut cur: Vec<(Id, BlobLocation)> = Vec::new();
            let flush =
                |cur: &mut Vec<(Id, BlobLocation)>,
                 hoods: &mut Vec<Neighbourhood>,
                 locations: &mut HashMap<Id, (BlobLocation, Option<usize>)>| {
                    if cur.is_empty() {
                        return;
                    }
                    let members = std::mem::take(cur);
                    if members.len() == 1 {
                        let (id, loc) = members[0];
                        locations.insert(id, (loc, None));
                        return;
                    }
                    let start = u64::from(members[0].1.offset);
                    let end = members
                        .iter()
                        .map(|(_, l)| u64::from(l.offset) + u64::from(l.length))
                        .max()
                        .unwrap_or(start);
                    for (id, loc) in &members {
                        locations.insert(*id, (*loc, Some(hoods.len())));
                    }
                    hoods.push(Neighbourhood {
                        pack,
                        start,
                        end,
                        members,
                        fetched: tokio::sync::OnceCell::new(),
                    });
                };
            for (id, loc) in members {
                let off = u64::from(loc.offset);
                let end = off + u64::from(loc.length);
                if let Some((_, first)) = cur.first() {
                    let last_end = cur
                        .last()
                        .map(|(_, l)| u64::from(l.offset) + u64::from(l.length))
                        .unwrap_or(off);
                    if off > last_end + PREFETCH_GAP || end - u64::from(first.offset) > PREFETCH_MAX
                    {
                        flush(&mut cur, &mut hoods, &mut locations);
                    }
                }
                cur.push((id, loc));
            }
            flush(&mut cur, &mut hoods, &mut locations);
        }
        TreeReader {
            repo,
            locations,
            hoods,
            ready: Mutex::new(HashMap::new()),
            ask_index: false,
        }
    }

    /// A reader for loading one tree: no prefetching, so it does not scan the whole
    /// index up front; each blob is looked up as it is needed.
    pub fn single(repo: &Repository) -> Self {
        let mut reader = TreeReader::new(repo.clone(), std::iter::empty());
        reader.ask_index = true;
        reader
    }

    /// A reader over the repository's loaded index.
    pub fn for_repository(repo: &Repository) -> Self {
        let blobs = repo.tree_blob_locations();
        TreeReader::new(repo.clone(), blobs)
    }

    /// Plaintext of one tree blob, verified.
    async fn blob(&self, id: &Id) -> Result<Bytes> {
        if let Some(b) = self.ready.lock().remove(id) {
            return Ok(b);
        }
        let found = self.locations.get(id).copied().or_else(|| {
            self.ask_index
                .then(|| self.repo.locate(id))
                .flatten()
                .filter(|l| l.kind == BlobType::Tree)
                .map(|l| (l, None))
        });
        let Some((loc, hood)) = found else {
            return Err(Error::NotFound {
                what: format!("tree blob {id}"),
                hint: "no index lists it as a tree; run `check`".into(),
            });
        };
        if let Some(h) = hood {
            let hood = &self.hoods[h];
            // A failed prefetch is not an error: the direct read below names the problem.
            let _ = hood.fetched.get_or_try_init(|| self.prefetch(hood)).await;
            if let Some(b) = self.ready.lock().remove(id) {
                return Ok(b);
            }
        }
        Ok(Bytes::from(self.repo.read_blob_at(id, &loc).await?))
    }

    /// Fetches a neighbourhood with one request and keeps every blob that verifies.
    async fn prefetch(&self, hood: &Neighbourhood) -> Result<()> {
        let raw = self
            .repo
            .backend()
            .get_range(&pack_key(&hood.pack), hood.start, hood.end - hood.start)
            .await?;
        let repo = self.repo.clone();
        let members = hood.members.clone();
        let start = hood.start;
        let decoded = tokio::task::spawn_blocking(move || {
            members
                .into_iter()
                .filter_map(|(id, loc)| {
                    let from = usize::try_from(u64::from(loc.offset) - start).ok()?;
                    let sealed = raw.get(from..from + loc.length as usize)?;
                    decode_blob(
                        repo.crypto(),
                        BlobType::Tree,
                        &id,
                        sealed,
                        loc.raw_length,
                        &loc.pack,
                    )
                    .ok()
                    .map(|plain| (id, plain))
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(Error::join)?;
        self.ready.lock().extend(decoded);
        Ok(())
    }

    /// Loads a tree and resolves every run in it.
    pub async fn load(&self, id: &Id) -> Result<LoadedTree> {
        let root = parse_tree(&self.blob(id).await?, id, "tree")?;
        let mut runs = Vec::new();
        let mut nodes = self.resolve_tree_runs(root, id, &mut runs).await?;
        self.resolve_content(&mut nodes, id, &mut runs).await?;
        Ok(LoadedTree {
            tree: Tree { nodes },
            runs,
        })
    }

    async fn resolve_tree_runs(
        &self,
        root: StoredTree,
        id: &Id,
        used: &mut Vec<Id>,
    ) -> Result<Vec<Node>> {
        if root.runs.is_empty() {
            return Ok(root.nodes);
        }
        if !root.nodes.is_empty() {
            return Err(Error::corrupt(
                format!("tree {id}"),
                "both entries and runs",
            ));
        }
        let mut level = root.runs;
        for _ in 0..MAX_DEPTH {
            let loaded: Vec<(TreeRef, StoredTree)> = futures::stream::iter(level)
                .map(|r| async move {
                    let t = parse_tree(&self.blob(&r.id).await?, &r.id, "tree run")?;
                    Ok::<_, Error>((r, t))
                })
                .buffered(LOAD_CONCURRENCY)
                .try_collect()
                .await?;
            used.extend(loaded.iter().map(|(r, _)| r.id));
            if loaded.iter().all(|(_, t)| t.runs.is_empty()) {
                let mut nodes = Vec::new();
                for (r, t) in loaded {
                    if t.nodes.len() as u64 != r.nodes {
                        return Err(Error::corrupt(
                            format!("tree run {} of tree {id}", r.id),
                            format!("holds {} entries, its tree says {}", t.nodes.len(), r.nodes),
                        ));
                    }
                    nodes.extend(t.nodes);
                }
                return Ok(nodes);
            }
            let mut next = Vec::new();
            for (r, t) in loaded {
                if !t.nodes.is_empty() {
                    return Err(Error::corrupt(
                        format!("tree run {} of tree {id}", r.id),
                        "entries at a level of runs",
                    ));
                }
                let sum: u64 = t.runs.iter().map(|x| x.nodes).sum();
                if sum != r.nodes {
                    return Err(Error::corrupt(
                        format!("tree run {} of tree {id}", r.id),
                        format!("its runs hold {sum} entries, its tree says {}", r.nodes),
                    ));
                }
                next.extend(t.runs);
            }
            level = next;
        }
        Err(Error::corrupt(format!("tree {id}"), "runs nested too deep"))
    }

    async fn resolve_content(
        &self,
        nodes: &mut [Node],
        tree: &Id,
        used: &mut Vec<Id>,
    ) -> Result<()> {
        // Every content run of every node, fetched together, level by level.
        let mut pending: Vec<(usize, Vec<ContentRef>)> = nodes
            .iter_mut()
            .enumerate()
            .filter(|(_, n)| !n.content_runs.is_empty())
            .map(|(i, n)| {
                if !n.content.is_empty() {
                    return Err(Error::corrupt(
                        format!("tree {tree}"),
                        format!("entry {:?} has both content and content runs", n.name),
                    ));
                }
                Ok((i, std::mem::take(&mut n.content_runs)))
            })
            .collect::<Result<_>>()?;
        for _ in 0..MAX_DEPTH {
            if pending.is_empty() {
                return Ok(());
            }
            let flat: Vec<(usize, ContentRef)> = pending
                .into_iter()
                .flat_map(|(i, refs)| refs.into_iter().map(move |r| (i, r)))
                .collect();
            // Each distinct run once: a disk image's repeated blocks name the same
            // runs many times over.
            let mut distinct: Vec<Id> = flat.iter().map(|(_, r)| r.id).collect();
            distinct.sort_unstable();
            distinct.dedup();
            let fetched: HashMap<Id, Arc<StoredContent>> = futures::stream::iter(distinct)
                .map(|id| async move {
                    let c = parse_content(&self.blob(&id).await?, &id)?;
                    Ok::<_, Error>((id, Arc::new(c)))
                })
                .buffer_unordered(LOAD_CONCURRENCY)
                .try_collect()
                .await?;
            let mut loaded: Vec<(usize, ContentRef, Arc<StoredContent>)> =
                Vec::with_capacity(flat.len());
            for (i, r) in flat {
                let c = fetched.get(&r.id).cloned().ok_or_else(|| {
                    Error::Internal(format!("content run {} was not fetched", r.id))
                })?;
                loaded.push((i, r, c));
            }
            let mut next: Vec<(usize, Vec<ContentRef>)> = Vec::new();
            // A node whose runs nest deeper waits for the next level; its parts are
            // appended in order because every level keeps the order of its runs.
            let mut deeper: HashMap<usize, Vec<ContentRef>> = HashMap::new();
            for (i, r, c) in loaded {
                used.push(r.id);
                let name = nodes[i].name.clone();
                let bad = |detail: String| {
                    Error::corrupt(
                        format!("content run {} of {name:?} in tree {tree}", r.id),
                        detail,
                    )
                };
                if !c.parts.is_empty() && !c.runs.is_empty() {
                    return Err(bad("both parts and runs".into()));
                }
                if c.runs.is_empty() {
                    let bytes: u64 = c.parts.iter().map(ContentPart::len).sum();
                    if c.parts.len() as u64 != r.parts || bytes != r.bytes {
                        return Err(bad(format!(
                            "holds {} parts of {bytes} bytes, its file says {} of {}",
                            c.parts.len(),
                            r.parts,
                            r.bytes
                        )));
                    }
                    if deeper.contains_key(&i) {
                        return Err(bad("runs of different depths".into()));
                    }
                    nodes[i].content.extend(c.parts.iter().cloned());
                } else {
                    let parts: u64 = c.runs.iter().map(|x| x.parts).sum();
                    let bytes: u64 = c.runs.iter().map(|x| x.bytes).sum();
                    if parts != r.parts || bytes != r.bytes {
                        return Err(bad(format!(
                            "its runs hold {parts} parts of {bytes} bytes, its file says {} of {}",
                            r.parts, r.bytes
                        )));
                    }
                    if !nodes[i].content.is_empty() {
                        return Err(bad("runs of different depths".into()));
                    }
                    deeper.entry(i).or_default().extend(c.runs.iter().cloned());
                }
            }
            next.extend(deeper);
            pending = next;
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(Error::corrupt(
                format!("tree {tree}"),
                "content runs nested too deep",
            ))
        }
    }
}

/// A tree blob in either form: binary (format 2 writers) or JSON (format 1, and the
/// first format 2 writers).
fn parse_tree(bytes: &[u8], id: &Id, what: &str) -> Result<StoredTree> {
    let parsed = match bytes.first() {
        Some(&binary::TREE_MAGIC) => binary::decode_tree(bytes),
        Some(&binary::CONTENT_MAGIC) => Err("a content run where a tree belongs".into()),
        _ => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| Error::corrupt(format!("{what} {id}"), e))
}

/// Entries and runs in a tree blob, after the checks restore makes on a loaded tree
/// (for the property tests of `crate::parse`).
pub(crate) fn tree_blob_entries(bytes: &[u8], id: &Id) -> Result<usize> {
    let t = parse_tree(bytes, id, "tree")?;
    let n = t.nodes.len() + t.runs.len();
    Tree { nodes: t.nodes }.validate(id)?;
    Ok(n)
}

/// Parts and runs in a content-run blob (for the property tests of `crate::parse`).
pub(crate) fn content_blob_parts(bytes: &[u8], id: &Id) -> Result<usize> {
    let c = parse_content(bytes, id)?;
    Ok(c.parts.len() + c.runs.len())
}

/// A content-run blob in either form.
fn parse_content(bytes: &[u8], id: &Id) -> Result<StoredContent> {
    let parsed = match bytes.first() {
        Some(&binary::CONTENT_MAGIC) => binary::decode_content(bytes),
        Some(&binary::TREE_MAGIC) => Err("a tree where a content run belongs".into()),
        _ => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| Error::corrupt(format!("content run {id}"), e))
}

#[cfg(test)]
mod tests;
