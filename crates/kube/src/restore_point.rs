//! The restore point manifest: what the transfer service commits to a repository
//! after an application's volumes are backed up, and what a restore reads back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::capture::Captured;

/// Version of the manifest layout; readers refuse newer ones.
pub const RESTORE_POINT_FORMAT: u32 = 1;

/// An application's captured objects plus one snapshot per volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestorePointManifest {
    pub format: u32,
    /// RFC 3339 time the capture finished.
    pub created_at: String,
    /// The job that made it.
    pub job_id: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Objects, exclusions, dependencies and the source's facts.
    pub captured: Captured,
    /// One entry per captured volume, in the order of `captured.volumes`.
    pub volumes: Vec<VolumeSnapshot>,
}

/// The snapshot holding one PVC's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    /// PVC name in the source namespace.
    pub pvc: String,
    /// Snapshot id in the repository.
    pub snapshot_id: String,
    /// Logical bytes of the volume's files.
    pub bytes: u64,
}

/// A manifest written by a newer Ferry, in a layout this one cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("restore point format {found} is newer than this Ferry reads ({supported}); upgrade Ferry")]
pub struct UnsupportedFormat {
    pub found: u32,
    pub supported: u32,
}

impl RestorePointManifest {
    /// Whether this Ferry reads the manifest's layout: the one check every reader makes.
    pub fn check_format(&self) -> Result<(), UnsupportedFormat> {
        if self.format > RESTORE_POINT_FORMAT {
            return Err(UnsupportedFormat {
                found: self.format,
                supported: RESTORE_POINT_FORMAT,
            });
        }
        Ok(())
    }

    /// The snapshot of `pvc`, if the restore point has one.
    pub fn volume(&self, pvc: &str) -> Option<&VolumeSnapshot> {
        self.volumes.iter().find(|v| v.pvc == pvc)
    }
}
