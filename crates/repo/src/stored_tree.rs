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
//! Long lists of runs are split again the same way. Loading resolves every run, so
//! the rest of the engine only ever sees complete [`Tree`]s.
//!
//! Loading prefetches: the tree blobs a backup writes sit next to each other in its
//! packs, so [`TreeReader`] fetches each such neighbourhood with one range request and
//! serves the runs inside from memory, instead of one request per run.

use std::collections::HashMap;
use std::sync::Arc;

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

fn to_json<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("serializing {what}: {e}")))
}

/// A tree ready to store: the root's id and every blob it needs (plaintext), the root
/// last. Blobs the repository already holds are deduplicated by the caller.
#[derive(Debug)]
pub(crate) struct EncodedTree {
    pub root: Id,
    pub blobs: Vec<(Id, Vec<u8>)>,
}

/// Whether the id of a content part or run ends a run, given `avg`.
fn id_ends_run(id: &Id, avg: u32) -> bool {
    let b = id.as_bytes();
    u32::from(u16::from_le_bytes([b[0], b[1]])) % avg == 0
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

/// Serializes a tree for storage. `split` is false for format 1 repositories, whose
/// readers know no runs: the blob is then exactly the format 1 tree.
pub(crate) fn encode_tree(tree: &Tree, keys: &Keys, split: bool) -> Result<EncodedTree> {
    let mut blobs = Vec::new();
    let mut put = |bytes: Vec<u8>, blobs: &mut Vec<(Id, Vec<u8>)>| {
        let id = keys.blob_id(&bytes);
        blobs.push((id, bytes));
        id
    };
    if !split {
        let bytes = tree.to_bytes()?;
        let root = put(bytes, &mut blobs);
        return Ok(EncodedTree { root, blobs });
    }
    let mut nodes = Vec::with_capacity(tree.nodes.len());
    for node in &tree.nodes {
        nodes.push(store_node(node, &mut blobs, &mut put)?);
    }
    let root_tree = if nodes.len() <= TREE_INLINE_MAX {
        StoredTree {
            nodes,
            runs: Vec::new(),
        }
    } else {
        let runs = split_runs(nodes, TREE_RUN_MAX, |n: &Node| {
            id_ends_run(&keys.blob_id(n.name.as_bytes()), TREE_RUN_AVG)
        });
        let mut refs = Vec::with_capacity(runs.len());
        for run in runs {
            let count = run.len() as u64;
            let bytes = to_json(
                &StoredTree {
                    nodes: run,
                    runs: Vec::new(),
                },
                "a tree run",
            )?;
            refs.push(TreeRef {
                id: put(bytes, &mut blobs),
                nodes: count,
            });
        }
        while refs.len() > REFS_INLINE_MAX {
            let mut upper = Vec::new();
            for group in split_runs(refs, REFS_RUN_MAX, |r: &TreeRef| {
                id_ends_run(&r.id, REFS_RUN_AVG)
            }) {
                let count = group.iter().map(|r| r.nodes).sum();
                let bytes = to_json(
                    &StoredTree {
                        nodes: Vec::new(),
                        runs: group,
                    },
                    "a tree run",
                )?;
                upper.push(TreeRef {
                    id: put(bytes, &mut blobs),
                    nodes: count,
                });
            }
            refs = upper;
        }
        StoredTree {
            nodes: Vec::new(),
            runs: refs,
        }
    };
    let root = put(to_json(&root_tree, "a tree")?, &mut blobs);
    Ok(EncodedTree { root, blobs })
}

/// A node as stored: a long content list moves into runs.
fn store_node(
    node: &Node,
    blobs: &mut Vec<(Id, Vec<u8>)>,
    put: &mut impl FnMut(Vec<u8>, &mut Vec<(Id, Vec<u8>)>) -> Id,
) -> Result<Node> {
    if node.content.len() <= CONTENT_INLINE_MAX {
        return Ok(node.clone());
    }
    let runs = split_runs(node.content.clone(), CONTENT_RUN_MAX, |p| match p {
        ContentPart::Chunk { id, .. } => id_ends_run(id, CONTENT_RUN_AVG),
        ContentPart::Hole { .. } => false,
    });
    let mut refs = Vec::with_capacity(runs.len());
    for run in runs {
        let parts = run.len() as u64;
        let bytes_covered = run.iter().map(ContentPart::len).sum();
        let bytes = to_json(
            &StoredContent {
                parts: run,
                runs: Vec::new(),
            },
            "a content run",
        )?;
        refs.push(ContentRef {
            id: put(bytes, blobs),
            parts,
            bytes: bytes_covered,
        });
    }
    while refs.len() > REFS_INLINE_MAX {
        let mut upper = Vec::new();
        for group in split_runs(refs, REFS_RUN_MAX, |r: &ContentRef| {
            id_ends_run(&r.id, REFS_RUN_AVG)
        }) {
            let parts = group.iter().map(|r| r.parts).sum();
            let bytes_covered = group.iter().map(|r| r.bytes).sum();
            let bytes = to_json(
                &StoredContent {
                    parts: Vec::new(),
                    runs: group,
                },
                "a content run",
            )?;
            upper.push(ContentRef {
                id: put(bytes, blobs),
                parts,
                bytes: bytes_covered,
            });
        }
        refs = upper;
    }
    let mut stored = node.clone();
    stored.content = Vec::new();
    stored.content_runs = refs;
    Ok(stored)
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
    ready: Mutex<HashMap<Id, Arc<Vec<u8>>>>,
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
    async fn blob(&self, id: &Id) -> Result<Arc<Vec<u8>>> {
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
        Ok(Arc::new(self.repo.read_blob_at(id, &loc).await?))
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
                    .map(|plain| (id, Arc::new(plain)))
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
        let root: StoredTree = parse(&self.blob(id).await?, id, "tree")?;
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
                    let t: StoredTree = parse(&self.blob(&r.id).await?, &r.id, "tree run")?;
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
                    let c: StoredContent = parse(&self.blob(&id).await?, &id, "content run")?;
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

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], id: &Id, what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::corrupt(format!("{what} {id}"), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::NodeKind;

    fn keys() -> Keys {
        Keys::from_master(&[7u8; 32]).unwrap()
    }

    fn file(name: &str, parts: usize, seed: u8) -> Node {
        let mut n = Node::new(name, NodeKind::File);
        n.content = (0..parts)
            .map(|i| ContentPart::Chunk {
                id: Id::of_content(&[seed, (i % 251) as u8, (i / 251) as u8, (i / 63001) as u8]),
                len: 1000 + i as u32 % 7,
            })
            .collect();
        n.size = n.content.iter().map(ContentPart::len).sum();
        n
    }

    fn big_tree(files: usize) -> Tree {
        Tree {
            nodes: (0..files)
                .map(|i| file(&format!("f{i:05}"), 1 + i % 3, i as u8))
                .collect(),
        }
    }

    #[test]
    fn format_1_trees_are_stored_as_before() {
        let t = big_tree(100);
        let enc = encode_tree(&t, &keys(), false).unwrap();
        assert_eq!(enc.blobs.len(), 1);
        assert_eq!(enc.blobs[0].1, t.to_bytes().unwrap());
    }

    #[test]
    fn small_trees_stay_one_blob() {
        let t = big_tree(TREE_INLINE_MAX);
        let enc = encode_tree(&t, &keys(), true).unwrap();
        assert_eq!(enc.blobs.len(), 1);
    }

    #[test]
    fn one_changed_entry_rewrites_one_run() {
        let k = keys();
        let mut t = big_tree(1000);
        let before = encode_tree(&t, &k, true).unwrap();
        t.nodes[500].mtime_ns += 1;
        let after = encode_tree(&t, &k, true).unwrap();
        let old: std::collections::HashSet<Id> = before.blobs.iter().map(|b| b.0).collect();
        let new: Vec<&(Id, Vec<u8>)> = after.blobs.iter().filter(|b| !old.contains(&b.0)).collect();
        // The changed run, the runs of runs above it (about 250 runs are more than
        // one list holds), and the root.
        assert!(new.len() <= 4, "{} new blobs", new.len());
        let new_bytes: usize = new.iter().map(|b| b.1.len()).sum();
        let all: usize = after.blobs.iter().map(|b| b.1.len()).sum();
        assert!(new_bytes * 5 < all, "{new_bytes} of {all} bytes rewritten");
    }

    #[test]
    fn a_change_in_a_long_file_rewrites_a_few_content_runs() {
        let k = keys();
        let mut t = Tree {
            nodes: vec![file("image", 20_000, 1)],
        };
        let before = encode_tree(&t, &k, true).unwrap();
        t.nodes[0].content[10_000] = ContentPart::Chunk {
            id: Id::of_content(b"changed"),
            len: 1003,
        };
        let after = encode_tree(&t, &k, true).unwrap();
        let old: std::collections::HashSet<Id> = before.blobs.iter().map(|b| b.0).collect();
        let new: usize = after
            .blobs
            .iter()
            .filter(|b| !old.contains(&b.0))
            .map(|b| b.1.len())
            .sum();
        let all: usize = after.blobs.iter().map(|b| b.1.len()).sum();
        // 20,000 parts: ~625 runs, more than one level of refs.
        assert!(new * 20 < all, "{new} of {all} bytes rewritten");
    }

    #[test]
    fn split_runs_cuts_at_boundaries_and_max() {
        let runs = split_runs((0..10).collect(), 4, |x| *x == 2);
        assert_eq!(runs, vec![vec![0, 1, 2], vec![3, 4, 5, 6], vec![7, 8, 9]]);
    }
}
