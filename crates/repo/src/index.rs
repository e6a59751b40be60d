//! The in-memory index (blob id -> pack, offset, length) and its stored form,
//! `index/<id>` files written only after the packs they describe.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::pack::{BlobType, PackEntry};

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub pack_size: u64,
    pub kind: BlobType,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

#[derive(Clone, Copy, Debug)]
struct Loc {
    pack: u32,
    kind: BlobType,
    offset: u32,
    length: u32,
    raw_length: u32,
}

/// Every known blob. Pack ids are interned so a blob costs ~60 bytes of memory.
#[derive(Debug, Default)]
pub(crate) struct Index {
    packs: Vec<(Id, u64)>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, Loc>,
    /// The index files loaded or written, so a writer can tell after locking whether a
    /// prune replaced any of them since (see `Repository::sync_index`).
    files: HashSet<Id>,
}

impl Index {
    /// Records a pack and its blobs. A blob already known keeps its first location
    /// (duplicates appear when a crashed backup's packs are uploaded again).
    pub fn add_pack(&mut self, pack: Id, size: u64, entries: &[PackEntry]) {
        let pos = *self.pack_pos.entry(pack).or_insert_with(|| {
            self.packs.push((pack, size));
            (self.packs.len() - 1) as u32
        });
        for e in entries {
            self.blobs.entry(e.id).or_insert(Loc {
                pack: pos,
                kind: e.kind,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            });
        }
    }

    /// Records that index file `id` is part of this index.
    pub fn add_file(&mut self, id: Id) {
        self.files.insert(id);
    }

    /// The index files this index was built from.
    pub fn files(&self) -> &HashSet<Id> {
        &self.files
    }

    /// Location of a blob.
    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        let l = self.blobs.get(id)?;
        let (pack, pack_size) = self.packs[l.pack as usize];
        Some(BlobLocation {
            pack,
            pack_size,
            kind: l.kind,
            offset: l.offset,
            length: l.length,
            raw_length: l.raw_length,
        })
    }

    /// Whether a blob is known.
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    /// Bytes of every known pack.
    pub fn pack_bytes(&self) -> u64 {
        self.packs.iter().map(|(_, size)| size).sum()
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Every blob with its location.
    pub fn blobs(&self) -> impl Iterator<Item = (Id, BlobLocation)> + '_ {
        self.blobs.iter().map(|(id, l)| {
            let (pack, pack_size) = self.packs[l.pack as usize];
            (
                *id,
                BlobLocation {
                    pack,
                    pack_size,
                    kind: l.kind,
                    offset: l.offset,
                    length: l.length,
                    raw_length: l.raw_length,
                },
            )
        })
    }

    /// True when some index file lists the pack.
    pub fn has_pack(&self, pack: &Id) -> bool {
        self.pack_pos.contains_key(pack)
    }

    /// Every indexed pack with its recorded size.
    pub fn packs(&self) -> impl Iterator<Item = (Id, u64)> + '_ {
        self.packs.iter().copied()
    }
}

/// Stored form of an index file (JSON, then compressed and sealed).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct IndexFile {
    pub packs: Vec<IndexFilePack>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IndexFilePack {
    pub id: Id,
    pub size: u64,
    pub blobs: Vec<IndexFileBlob>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IndexFileBlob {
    pub id: Id,
    #[serde(rename = "type")]
    pub kind: BlobType,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

impl IndexFilePack {
    pub fn new(id: Id, size: u64, entries: &[PackEntry]) -> Self {
        IndexFilePack {
            id,
            size,
            blobs: entries
                .iter()
                .map(|e| IndexFileBlob {
                    id: e.id,
                    kind: e.kind,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                })
                .collect(),
        }
    }

    pub fn entries(&self) -> Vec<PackEntry> {
        self.blobs
            .iter()
            .map(|b| PackEntry {
                id: b.id,
                kind: b.kind,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
            })
            .collect()
    }
}

/// Key of an index file.
pub fn index_key(id: &Id) -> String {
    format!("index/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_location_wins() {
        let blob = Id::of_content(b"b");
        let e = |offset| PackEntry {
            id: blob,
            kind: BlobType::Data,
            offset,
            length: 10,
            raw_length: 12,
        };
        let mut idx = Index::default();
        let p1 = Id::of_content(b"p1");
        let p2 = Id::of_content(b"p2");
        idx.add_pack(p1, 100, &[e(0)]);
        idx.add_pack(p2, 200, &[e(50)]);
        let loc = idx.get(&blob).unwrap();
        assert_eq!((loc.pack, loc.pack_size, loc.offset), (p1, 100, 0));
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.packs().count(), 2);
        let f = IndexFilePack::new(p1, 100, &[e(0)]);
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains("\"type\":\"data\""), "{json}");
        let back: IndexFilePack = serde_json::from_str(&json).unwrap();
        assert_eq!(back.entries(), vec![e(0)]);
    }
}
