//! The binary form of format 2 tree blobs.
//!
//! JSON spends most of a tree blob on field names and on ids written as 64 hex
//! characters, which compress to little better than 34 bytes. This form writes ids as
//! their 32 bytes, integers as LEB128 varints, and each node's mtime and inode as the
//! difference from the entry before it (entries of one directory were mostly written
//! together), so a rewritten run costs about half as much. Layout: FORMAT.md, "Binary
//! tree blobs".
//!
//! Decoding never trusts a count: every list is bounded by the bytes left, and any
//! malformed input is an error naming what was wrong, never a panic.

use super::{StoredContent, StoredTree, TreeRef};
use crate::id::Id;
use crate::tree::{ContentPart, ContentRef, Name, Node, NodeKind};

/// First byte of a binary tree blob. JSON blobs start with `{`.
pub(crate) const TREE_MAGIC: u8 = 0xF2;
/// First byte of a binary content-run blob.
pub(crate) const CONTENT_MAGIC: u8 = 0xF3;

const HAS_CONTENT: u8 = 1;
const HAS_CONTENT_RUNS: u8 = 2;
const HAS_SUBTREE: u8 = 4;
const HAS_SYMLINK_TARGET: u8 = 8;
const HAS_LINK_TARGET: u8 = 16;
const KNOWN_FLAGS: u8 = 31;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn kind_code(kind: NodeKind) -> u8 {
    match kind {
        NodeKind::File => 0,
        NodeKind::Dir => 1,
        NodeKind::Symlink => 2,
        NodeKind::Hardlink => 3,
        NodeKind::DeviceImage => 4,
    }
}

fn put_parts(out: &mut Vec<u8>, parts: &[ContentPart]) {
    put_varint(out, parts.len() as u64);
    for p in parts {
        match p {
            ContentPart::Chunk { id, len } => {
                put_varint(out, u64::from(*len) << 1);
                out.extend_from_slice(id.as_bytes());
            }
            ContentPart::Hole { hole } => put_varint(out, (hole << 1) | 1),
        }
    }
}

fn put_content_refs(out: &mut Vec<u8>, refs: &[ContentRef]) {
    put_varint(out, refs.len() as u64);
    for r in refs {
        out.extend_from_slice(r.id.as_bytes());
        put_varint(out, r.parts);
        put_varint(out, r.bytes);
    }
}

/// Encodes a tree blob: its runs, then its entries (one of the two is empty).
pub(crate) fn encode_tree(tree: &StoredTree) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + tree.runs.len() * 34 + tree.nodes.len() * 96);
    out.push(TREE_MAGIC);
    put_varint(&mut out, tree.runs.len() as u64);
    for r in &tree.runs {
        out.extend_from_slice(r.id.as_bytes());
        put_varint(&mut out, r.nodes);
    }
    put_varint(&mut out, tree.nodes.len() as u64);
    let (mut prev_mtime, mut prev_inode) = (0i64, 0u64);
    for n in &tree.nodes {
        put_bytes(&mut out, n.name.as_bytes());
        out.push(kind_code(n.kind));
        let flags = [
            (!n.content.is_empty(), HAS_CONTENT),
            (!n.content_runs.is_empty(), HAS_CONTENT_RUNS),
            (n.subtree.is_some(), HAS_SUBTREE),
            (n.symlink_target.is_some(), HAS_SYMLINK_TARGET),
            (n.link_target.is_some(), HAS_LINK_TARGET),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |acc, (_, bit)| acc | bit);
        out.push(flags);
        put_varint(&mut out, u64::from(n.mode));
        put_varint(&mut out, u64::from(n.uid));
        put_varint(&mut out, u64::from(n.gid));
        put_signed(&mut out, n.mtime_ns.wrapping_sub(prev_mtime));
        put_signed(&mut out, n.ctime_ns.wrapping_sub(n.mtime_ns));
        put_varint(&mut out, n.size);
        put_signed(&mut out, n.inode.wrapping_sub(prev_inode) as i64);
        put_varint(&mut out, n.dev);
        prev_mtime = n.mtime_ns;
        prev_inode = n.inode;
        if !n.content.is_empty() {
            put_parts(&mut out, &n.content);
        }
        if !n.content_runs.is_empty() {
            put_content_refs(&mut out, &n.content_runs);
        }
        if let Some(s) = &n.subtree {
            out.extend_from_slice(s.as_bytes());
        }
        if let Some(t) = &n.symlink_target {
            put_bytes(&mut out, t.as_bytes());
        }
        if let Some(t) = &n.link_target {
            put_bytes(&mut out, t.as_bytes());
        }
    }
    out
}

/// Encodes a content-run blob: its runs, then its parts (one of the two is empty).
pub(crate) fn encode_content(content: &StoredContent) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + content.runs.len() * 40 + content.parts.len() * 36);
    out.push(CONTENT_MAGIC);
    put_content_refs(&mut out, &content.runs);
    put_parts(&mut out, &content.parts);
    out
}

/// A cursor over a blob being decoded.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.left() < n {
            return Err(format!("ends inside {what}"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn varint(&mut self, what: &str) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(format!("{what} overflows 64 bits"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("{what} overflows 64 bits"))
    }

    fn signed(&mut self, what: &str) -> Result<i64, String> {
        let v = self.varint(what)?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| format!("{what} {v} does not fit 32 bits"))
    }

    fn id(&mut self, what: &str) -> Result<Id, String> {
        let b = self.take(32, what)?;
        let mut a = [0u8; 32];
        a.copy_from_slice(b);
        Ok(Id::from_bytes(a))
    }

    fn bytes(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let n = self.varint(what)?;
        let n = usize::try_from(n).map_err(|_| format!("{what} length {n} is too large"))?;
        Ok(self.take(n, what)?.to_vec())
    }

    /// A list length, checked against the bytes left (every item takes at least
    /// `min_item` bytes), so a hostile count cannot reserve memory.
    fn count(&mut self, min_item: usize, what: &str) -> Result<usize, String> {
        let n = self.varint(what)?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(min_item) <= self.left() => Ok(n),
            _ => Err(format!(
                "{what} says {n} items, more than the {} bytes left hold",
                self.left()
            )),
        }
    }

    /// A counted list of items that take at least `min_item` bytes each.
    fn list<T>(
        &mut self,
        min_item: usize,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let n = self.count(min_item, what)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }

    fn parts(&mut self) -> Result<Vec<ContentPart>, String> {
        self.list(1, "a content list", |r| {
            let v = r.varint("a content part")?;
            if v & 1 == 1 {
                return Ok(ContentPart::Hole { hole: v >> 1 });
            }
            let len = u32::try_from(v >> 1)
                .map_err(|_| format!("chunk length {} does not fit 32 bits", v >> 1))?;
            Ok(ContentPart::Chunk {
                id: r.id("a chunk id")?,
                len,
            })
        })
    }

    fn content_refs(&mut self) -> Result<Vec<ContentRef>, String> {
        self.list(34, "a list of content runs", |r| {
            Ok(ContentRef {
                id: r.id("a content run id")?,
                parts: r.varint("a content run's part count")?,
                bytes: r.varint("a content run's byte count")?,
            })
        })
    }

    fn finish(&self) -> Result<(), String> {
        match self.left() {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the end")),
        }
    }
}

fn kind_of(code: u8) -> Result<NodeKind, String> {
    Ok(match code {
        0 => NodeKind::File,
        1 => NodeKind::Dir,
        2 => NodeKind::Symlink,
        3 => NodeKind::Hardlink,
        4 => NodeKind::DeviceImage,
        other => return Err(format!("unknown entry kind {other}")),
    })
}

/// Decodes a blob [`encode_tree`] wrote. The error says what is malformed.
pub(crate) fn decode_tree(buf: &[u8]) -> Result<StoredTree, String> {
    let mut r = Reader { buf, pos: 0 };
    if r.byte("the header")? != TREE_MAGIC {
        return Err("not a binary tree blob".into());
    }
    let runs = r.list(33, "the list of runs", |r| {
        Ok(TreeRef {
            id: r.id("a tree run id")?,
            nodes: r.varint("a tree run's entry count")?,
        })
    })?;
    let (mut prev_mtime, mut prev_inode) = (0i64, 0u64);
    // An entry takes at least 11 bytes: name length, kind, flags and 8 varints.
    let nodes = r.list(11, "the list of entries", |r| {
        let name = Name::new(r.bytes("an entry name")?);
        let kind = kind_of(r.byte("an entry kind")?)?;
        let flags = r.byte("an entry's flags")?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(format!("entry {name:?} has unknown flags {flags:#x}"));
        }
        let mut node = Node::new(name, kind);
        node.mode = r.u32("a mode")?;
        node.uid = r.u32("a uid")?;
        node.gid = r.u32("a gid")?;
        node.mtime_ns = prev_mtime.wrapping_add(r.signed("an mtime")?);
        node.ctime_ns = node.mtime_ns.wrapping_add(r.signed("a ctime")?);
        node.size = r.varint("a size")?;
        node.inode = prev_inode.wrapping_add(r.signed("an inode")? as u64);
        node.dev = r.varint("a device")?;
        prev_mtime = node.mtime_ns;
        prev_inode = node.inode;
        if flags & HAS_CONTENT != 0 {
            node.content = r.parts()?;
        }
        if flags & HAS_CONTENT_RUNS != 0 {
            node.content_runs = r.content_refs()?;
        }
        if flags & HAS_SUBTREE != 0 {
            node.subtree = Some(r.id("a subtree id")?);
        }
        if flags & HAS_SYMLINK_TARGET != 0 {
            node.symlink_target = Some(Name::new(r.bytes("a symlink target")?));
        }
        if flags & HAS_LINK_TARGET != 0 {
            node.link_target = Some(Name::new(r.bytes("a hard link target")?));
        }
        Ok(node)
    })?;
    r.finish()?;
    Ok(StoredTree { nodes, runs })
}

/// Decodes a blob [`encode_content`] wrote.
pub(crate) fn decode_content(buf: &[u8]) -> Result<StoredContent, String> {
    let mut r = Reader { buf, pos: 0 };
    if r.byte("the header")? != CONTENT_MAGIC {
        return Err("not a binary content-run blob".into());
    }
    let runs = r.content_refs()?;
    let parts = r.parts()?;
    r.finish()?;
    Ok(StoredContent { parts, runs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> Id {
        Id::from_bytes([n; 32])
    }

    fn sample() -> StoredTree {
        let mut file = Node::new("a file", NodeKind::File);
        file.mode = 0o100644;
        file.uid = 1000;
        file.gid = u32::MAX;
        file.mtime_ns = 1_795_627_597_148_646_724;
        file.ctime_ns = 1_795_627_597_148_646_724;
        file.size = 12_000 + 4096;
        file.inode = 10_768_403;
        file.dev = 65_024;
        file.content = vec![
            ContentPart::Chunk {
                id: id(1),
                len: 12_000,
            },
            ContentPart::Hole { hole: 4096 },
        ];
        let mut image = Node::new(Name::new(vec![0xff, 0xfe, b'x']), NodeKind::DeviceImage);
        image.mtime_ns = -5;
        image.ctime_ns = i64::MAX;
        image.inode = 3;
        image.size = u64::MAX;
        image.content_runs = vec![ContentRef {
            id: id(2),
            parts: 1 << 40,
            bytes: u64::MAX,
        }];
        let mut dir = Node::new("d", NodeKind::Dir);
        dir.subtree = Some(id(3));
        dir.inode = u64::MAX;
        let mut link = Node::new("l", NodeKind::Symlink);
        link.symlink_target = Some(Name::new(vec![b'/', 0x80]));
        let mut hard = Node::new("h", NodeKind::Hardlink);
        hard.link_target = Some("d/a file".into());
        StoredTree {
            nodes: vec![file, image, dir, link, hard],
            runs: Vec::new(),
        }
    }

    fn same_tree(a: &StoredTree, b: &StoredTree) {
        assert_eq!(a.nodes, b.nodes);
        assert_eq!(a.runs, b.runs);
    }

    #[test]
    fn every_field_round_trips() {
        let t = sample();
        let bytes = encode_tree(&t);
        same_tree(&decode_tree(&bytes).unwrap(), &t);
        let runs = StoredTree {
            nodes: Vec::new(),
            runs: vec![
                TreeRef {
                    id: id(9),
                    nodes: 4,
                },
                TreeRef {
                    id: id(8),
                    nodes: u64::MAX,
                },
            ],
        };
        same_tree(&decode_tree(&encode_tree(&runs)).unwrap(), &runs);
        let c = StoredContent {
            parts: vec![
                ContentPart::Hole {
                    hole: u64::MAX >> 1,
                },
                ContentPart::Chunk {
                    id: id(4),
                    len: u32::MAX,
                },
            ],
            runs: vec![ContentRef {
                id: id(5),
                parts: 7,
                bytes: 70,
            }],
        };
        let back = decode_content(&encode_content(&c)).unwrap();
        assert_eq!((back.parts, back.runs), (c.parts, c.runs));
    }

    #[test]
    fn smaller_than_json() {
        let t = sample();
        let json = serde_json::to_vec(&t).unwrap();
        let bin = encode_tree(&t);
        assert!(
            bin.len() * 2 < json.len(),
            "{} vs {}",
            bin.len(),
            json.len()
        );
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_an_error() {
        let bytes = encode_tree(&sample());
        for cut in 0..bytes.len() {
            assert!(decode_tree(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode_tree(&long).unwrap_err(), "1 bytes after the end");
        let c = encode_content(&StoredContent {
            parts: vec![ContentPart::Chunk { id: id(1), len: 5 }],
            runs: Vec::new(),
        });
        for cut in 0..c.len() {
            assert!(decode_content(&c[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_counts_and_fields_are_refused() {
        // A list claiming 2^60 runs in a 12-byte blob.
        let mut b = vec![TREE_MAGIC];
        put_varint(&mut b, 1 << 60);
        b.extend_from_slice(&[0; 10]);
        assert!(decode_tree(&b).unwrap_err().contains("more than the"));
        // A varint longer than 64 bits.
        let mut b = vec![CONTENT_MAGIC];
        b.extend_from_slice(&[0xff; 11]);
        assert!(decode_content(&b).unwrap_err().contains("overflows"));
        // Unknown kind and flags.
        let mut t = encode_tree(&StoredTree {
            nodes: vec![Node::new("x", NodeKind::File)],
            runs: Vec::new(),
        });
        // magic, runs 0, entries 1, name len 1, 'x', then the kind byte.
        t[5] = 9;
        assert_eq!(decode_tree(&t).unwrap_err(), "unknown entry kind 9");
        t[5] = 0;
        t[6] = 0x40;
        assert!(decode_tree(&t).unwrap_err().contains("unknown flags"));
        // A content blob is not a tree, nor the other way round.
        assert!(decode_tree(&encode_content(&StoredContent::default())).is_err());
        assert!(decode_content(&encode_tree(&StoredTree::default())).is_err());
    }

    fn node_strategy() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(any::<u8>(), 1..20),
            0u8..5,
            any::<(u32, u32, u32, i64, i64, u64, u64, u64)>(),
            proptest::collection::vec((any::<bool>(), any::<u32>(), any::<u8>()), 0..5),
            any::<(bool, bool, bool)>(),
        )
            .prop_map(|(name, kind, m, parts, (sub, sym, link))| {
                let mut n = Node::new(Name::new(name), kind_of(kind).unwrap());
                (
                    n.mode, n.uid, n.gid, n.mtime_ns, n.ctime_ns, n.size, n.inode, n.dev,
                ) = m;
                n.content = parts
                    .into_iter()
                    .map(|(hole, len, b)| {
                        if hole {
                            ContentPart::Hole {
                                hole: u64::from(len),
                            }
                        } else {
                            ContentPart::Chunk { id: id(b), len }
                        }
                    })
                    .collect();
                n.subtree = sub.then(|| id(7));
                n.symlink_target = sym.then(|| Name::new(vec![1, 2, 3]));
                n.link_target = link.then(|| "a/b".into());
                n
            })
    }

    proptest! {
        #[test]
        fn random_entries_round_trip(nodes in proptest::collection::vec(node_strategy(), 0..30)) {
            let t = StoredTree { nodes, runs: Vec::new() };
            let back = decode_tree(&encode_tree(&t)).unwrap();
            prop_assert_eq!(back.nodes, t.nodes);
        }

        #[test]
        fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_content(&bytes);
            if let Some(b) = bytes.first_mut() {
                *b = TREE_MAGIC;
            }
            let _ = decode_tree(&bytes);
        }
    }
}
