//! Snapshot manifests (`snapshots/<id>`), written last so a snapshot that is visible
//! names only packs and indexes that already exist.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::Id;

/// One backup of a directory tree or a single file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub hostname: String,
    /// The source paths as given.
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The snapshot this one was made incrementally from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// Root tree: the source directory's entries, or one entry for a single file.
    pub tree: Id,
    /// Metadata of the source directory itself (absent for single files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<RootMeta>,
    #[serde(default)]
    pub summary: SnapshotSummary,
}

/// Mode, owner and mtime of the backed-up directory, applied to the restore target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
}

/// Counts recorded with a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Regular files and device images whose content was read this time.
    pub files_read: u64,
    /// Files whose content list came from the parent snapshot unread.
    pub files_unchanged: u64,
    /// Of `files_read`, those the parent snapshot had under the same path (so
    /// `files_read - files_changed` were new).
    #[serde(default)]
    pub files_changed: u64,
    /// Logical bytes of all file content (holes included).
    pub bytes_total: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes of data chunks that were new to the repository.
    pub bytes_new: u64,
    /// Bytes of packs uploaded.
    pub bytes_uploaded: u64,
    pub chunks_new: u64,
    pub chunks_reused: u64,
    /// New tree blobs: directories and (format 2) runs of entries and content.
    pub trees_new: u64,
    /// Their plaintext bytes.
    #[serde(default)]
    pub tree_bytes_new: u64,
    pub packs_uploaded: u64,
    pub duration_ms: u64,
}

/// Key of a snapshot object.
pub fn snapshot_key(id: &Id) -> String {
    format!("snapshots/{id}")
}
