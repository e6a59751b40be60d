//! Trees: one per directory, listing its entries with metadata and content. Stored as
//! deduplicated tree blobs, so an unchanged directory costs nothing in a new snapshot.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::id::Id;

/// A file name or symlink target as raw bytes. Serialized as a JSON string when it is
/// UTF-8 and as `{"b64": …}` otherwise, because Linux names are bytes, not text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(Vec<u8>);

impl Name {
    /// Wraps raw bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Name(bytes.into())
    }

    /// From an OS string.
    pub fn from_os(s: &OsStr) -> Self {
        Name(s.as_bytes().to_vec())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As an OS string, for file system calls.
    pub fn to_os(&self) -> OsString {
        OsString::from_vec(self.0.clone())
    }

    /// Lossy text for messages.
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.lossy())
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(s.as_bytes().to_vec())
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "b64",
                    &base64::engine::general_purpose::STANDARD.encode(&self.0),
                )?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Bytes { b64: String },
        }
        match Form::deserialize(d)? {
            Form::Text(t) => Ok(Name(t.into_bytes())),
            Form::Bytes { b64 } => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Name)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Why a name is unsafe to create inside a restore target, if it is.
pub fn unsafe_name_reason(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name == b"." || name == b".." {
        Some("dot entry")
    } else if name.contains(&b'/') {
        Some("contains '/'")
    } else if name.contains(&0) {
        Some("contains NUL")
    } else {
        None
    }
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// A later name of a file already in the snapshot (same device and inode);
    /// `link_target` holds the first name's path from the snapshot root.
    Hardlink,
    /// A block device read as an image: restored as a regular file.
    DeviceImage,
}

/// A run of file content: a stored chunk, or a hole that reads as zeros.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ContentPart {
    Chunk { id: Id, len: u32 },
    Hole { hole: u64 },
}

impl ContentPart {
    /// Bytes this part covers.
    pub fn len(&self) -> u64 {
        match self {
            ContentPart::Chunk { len, .. } => u64::from(*len),
            ContentPart::Hole { hole } => *hole,
        }
    }

    /// True for zero-length parts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stored run of a file's content list (format 2): see `stored_tree`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRef {
    pub id: Id,
    /// Content parts the run holds, nested runs included.
    pub parts: u64,
    /// Bytes those parts cover.
    pub bytes: u64,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: Name,
    pub kind: NodeKind,
    /// Permission bits and file type bits as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    #[serde(default)]
    pub ctime_ns: i64,
    /// Logical size in bytes (holes included).
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub inode: u64,
    #[serde(default)]
    pub dev: u64,
    /// File and device-image content, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentPart>,
    /// Where a long content list is stored instead of `content` (format 2). Only in
    /// stored trees: trees loaded through the repository have every run resolved
    /// into `content` and this empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_runs: Vec<ContentRef>,
    /// A directory's own tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<Name>,
    /// For hard links: '/'-separated path of the first name, from the snapshot root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<Name>,
}

impl Node {
    /// A node with zeroed metadata; callers fill in what they know.
    pub fn new(name: impl Into<Name>, kind: NodeKind) -> Self {
        Node {
            name: name.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            size: 0,
            inode: 0,
            dev: 0,
            content: Vec::new(),
            content_runs: Vec::new(),
            subtree: None,
            symlink_target: None,
            link_target: None,
        }
    }
}

/// The entries of one directory, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The format 1 tree blob (JSON). Format 2 repositories store trees through
    /// `stored_tree`, which also reads both forms back.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Internal(format!("serializing a tree: {e}")))
    }

    /// Checks what restore relies on: safe, unique, sorted names and the fields each
    /// kind needs. `id` names the tree in the error.
    pub fn validate(&self, id: &Id) -> Result<()> {
        let unsafe_name = |name: &Name| Error::UnsafeName {
            name: name.lossy(),
            tree: id.to_hex(),
        };
        let mut prev: Option<&Name> = None;
        for n in &self.nodes {
            if unsafe_name_reason(n.name.as_bytes()).is_some() {
                return Err(unsafe_name(&n.name));
            }
            if prev.is_some_and(|p| p >= &n.name) {
                return Err(Error::corrupt(
                    format!("tree {id}"),
                    format!("entries not sorted or duplicated at {:?}", n.name),
                ));
            }
            prev = Some(&n.name);
            let missing = |field: &str| {
                Error::corrupt(
                    format!("tree {id}"),
                    format!("{:?} entry {:?} has no {field}", n.kind, n.name),
                )
            };
            match n.kind {
                NodeKind::Dir if n.subtree.is_none() => return Err(missing("subtree")),
                NodeKind::Symlink if n.symlink_target.is_none() => {
                    return Err(missing("symlink target"));
                }
                NodeKind::Hardlink => {
                    let target = n
                        .link_target
                        .as_ref()
                        .ok_or_else(|| missing("link target"))?;
                    if target
                        .as_bytes()
                        .split(|b| *b == b'/')
                        .any(|c| unsafe_name_reason(c).is_some())
                    {
                        return Err(unsafe_name(target));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_including_non_utf8() {
        for raw in [b"plain.txt".to_vec(), vec![0xff, b'a', 0xfe]] {
            let n = Name::new(raw.clone());
            let json = serde_json::to_string(&n).unwrap();
            let back: Name = serde_json::from_str(&json).unwrap();
            assert_eq!(back.as_bytes(), &raw[..]);
        }
        assert_eq!(serde_json::to_string(&Name::from("a")).unwrap(), "\"a\"");
    }

    #[test]
    fn content_parts_serialize_compactly() {
        let parts = vec![
            ContentPart::Chunk {
                id: Id::of_content(b"x"),
                len: 7,
            },
            ContentPart::Hole { hole: 4096 },
        ];
        let json = serde_json::to_string(&parts).unwrap();
        let back: Vec<ContentPart> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, parts);
        assert!(json.contains("{\"hole\":4096}"), "{json}");
    }

    #[test]
    fn validate_rejects_unsafe_and_unsorted() {
        let id = Id::of_content(b"t");
        for bad in ["..", ".", "", "a/b", "x\0y"] {
            let t = Tree {
                nodes: vec![Node::new(bad, NodeKind::File)],
            };
            assert!(
                matches!(t.validate(&id), Err(Error::UnsafeName { .. })),
                "{bad:?} accepted"
            );
        }
        let t = Tree {
            nodes: vec![
                Node::new("b", NodeKind::File),
                Node::new("a", NodeKind::File),
            ],
        };
        assert!(matches!(t.validate(&id), Err(Error::Corrupt { .. })));
        let mut link = Node::new("l", NodeKind::Hardlink);
        link.link_target = Some(Name::from("d/../../etc/passwd"));
        let t = Tree { nodes: vec![link] };
        assert!(matches!(t.validate(&id), Err(Error::UnsafeName { .. })));
        let mut ok = Node::new("d", NodeKind::Dir);
        ok.subtree = Some(id);
        Tree { nodes: vec![ok] }.validate(&id).unwrap();
    }
}
