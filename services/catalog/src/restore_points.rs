//! Restore points as the catalog shows them: the engine's manifest
//! (`ferry_kube::RestorePointManifest`) reduced to what a listing needs, kept in the
//! index, and mapped to `ferry.v1.RestorePoint`.

use std::collections::{BTreeMap, BTreeSet};

use ferry_kube::{RestorePointManifest, UnsupportedFormat};
use ferry_proto::v1::{ApplicationSelector, RestorePoint, SourceClusterFacts, VolumeSnapshotRef};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::quantity::parse_quantity;

/// What the index keeps of one restore point: enough to list it without reading the
/// repository, and its volumes for GetRestorePoint's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexedRestorePoint {
    /// The restore point's id in the repository (64 hex digits).
    pub id: String,
    /// The source namespace, as the repository files it.
    pub application: String,
    /// Creation time in Unix nanoseconds, the listing's sort key.
    pub created_at_ns: i64,
    pub job_id: String,
    pub volumes: Vec<IndexedVolume>,
    pub tags: BTreeMap<String, String>,
    pub detail: RestorePointDetail,
    /// Labels this catalog keeps beside the repository (LabelRestorePoint); filled when
    /// read from the database, never stored with the index row.
    pub local_labels: BTreeMap<String, String>,
}

/// The rest of a restore point, stored as one JSON column.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RestorePointDetail {
    #[serde(default)]
    pub label_selector: String,
    #[serde(default)]
    pub object_count: u64,
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub storage_classes: Vec<String>,
    #[serde(default)]
    pub zones: Vec<String>,
}

/// One volume snapshot of a restore point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexedVolume {
    pub pvc: String,
    pub snapshot_id: String,
    #[serde(default)]
    pub storage_class: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub capacity_bytes: u64,
    #[serde(default)]
    pub data_bytes: u64,
}

impl IndexedRestorePoint {
    /// Reduces a manifest read from `restorepoints/<application>/<id>`.
    pub fn from_manifest(
        id: &str,
        application: &str,
        m: &RestorePointManifest,
    ) -> Result<Self, UnsupportedFormat> {
        m.check_format()?;
        let created_at_ns = OffsetDateTime::parse(&m.created_at, &Rfc3339)
            .map(|t| i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX))
            .unwrap_or_else(|e| {
                // Listed last rather than hidden: the rest of the restore point is fine.
                tracing::warn!(restore_point = id, created_at = %m.created_at, error = %e,
                    "restore point has an unreadable creation time");
                0
            });
        let volumes: Vec<IndexedVolume> = m
            .volumes
            .iter()
            .map(|v| {
                let captured = m.captured.volumes.iter().find(|c| c.pvc == v.pvc);
                IndexedVolume {
                    pvc: v.pvc.clone(),
                    snapshot_id: v.snapshot_id.clone(),
                    storage_class: captured
                        .and_then(|c| c.storage_class.clone())
                        .unwrap_or_default(),
                    zone: captured.and_then(|c| c.zone.clone()).unwrap_or_default(),
                    capacity_bytes: captured
                        .and_then(|c| c.capacity.as_deref())
                        .and_then(parse_quantity)
                        .unwrap_or(0),
                    data_bytes: v.bytes,
                }
            })
            .collect();
        // Facts about the claims captured, not about every class the source has: that
        // is what a destination must be able to map.
        let storage_classes: BTreeSet<String> = m
            .captured
            .volumes
            .iter()
            .filter_map(|c| c.storage_class.clone())
            .collect();
        let zones: BTreeSet<String> = m
            .captured
            .volumes
            .iter()
            .filter_map(|c| c.zone.clone())
            .collect();
        Ok(IndexedRestorePoint {
            id: id.to_string(),
            application: application.to_string(),
            created_at_ns,
            job_id: m.job_id.clone(),
            volumes,
            tags: m.tags.clone(),
            local_labels: BTreeMap::new(),
            detail: RestorePointDetail {
                label_selector: m.captured.label_selector.clone().unwrap_or_default(),
                object_count: m.captured.objects.len() as u64,
                cluster_name: m.captured.cluster.clone(),
                storage_classes: storage_classes.into_iter().collect(),
                zones: zones.into_iter().collect(),
            },
        })
    }

    /// The API's form; `with_volumes` is false for listings (see ListRestorePointsResponse).
    pub fn to_proto(&self, with_volumes: bool) -> RestorePoint {
        RestorePoint {
            id: self.id.clone(),
            application: Some(ApplicationSelector {
                namespace: self.application.clone(),
                label_selector: self.detail.label_selector.clone(),
                include_resources: Vec::new(),
                exclude_resources: Vec::new(),
            }),
            created_at: Some(timestamp(self.created_at_ns)),
            source: Some(SourceClusterFacts {
                cluster_name: self.detail.cluster_name.clone(),
                cluster_id: String::new(),
                kubernetes_version: String::new(),
                storage_classes: self.detail.storage_classes.clone(),
                zones: self.detail.zones.clone(),
            }),
            object_count: self.detail.object_count,
            volumes: if with_volumes {
                self.volumes
                    .iter()
                    .map(|v| VolumeSnapshotRef {
                        pvc_name: v.pvc.clone(),
                        snapshot_id: v.snapshot_id.clone(),
                        storage_class: v.storage_class.clone(),
                        zone: v.zone.clone(),
                        capacity_bytes: v.capacity_bytes,
                        data_bytes: v.data_bytes,
                        files: 0,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            job_id: self.job_id.clone(),
            tags: self.tags.clone().into_iter().collect(),
            local_labels: self.local_labels.clone().into_iter().collect(),
        }
    }
}

/// A protobuf timestamp from Unix nanoseconds.
pub(crate) fn timestamp(ns: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_kube::{Captured, CapturedVolume, ClusterFacts, NamespaceMetadata, VolumeSnapshot};

    fn manifest() -> RestorePointManifest {
        RestorePointManifest {
            format: ferry_kube::RESTORE_POINT_FORMAT,
            created_at: "2025-03-01T10:00:00.5Z".into(),
            job_id: "job-1".into(),
            tags: BTreeMap::from([("schedule".into(), "nightly".into())]),
            captured: Captured {
                cluster: "prod".into(),
                namespace: "shop".into(),
                label_selector: Some("app=db".into()),
                namespace_metadata: NamespaceMetadata::default(),
                objects: Vec::new(),
                resources: Vec::new(),
                excluded: Vec::new(),
                dependencies: Vec::new(),
                volumes: vec![CapturedVolume {
                    pvc: "data-db-0".into(),
                    pv: Some("pv-1".into()),
                    storage_class: Some("fast".into()),
                    capacity: Some("1Gi".into()),
                    access_modes: vec!["ReadWriteOnce".into()],
                    volume_mode: None,
                    zone: Some("z1".into()),
                }],
                facts: ClusterFacts::default(),
            },
            volumes: vec![VolumeSnapshot {
                pvc: "data-db-0".into(),
                snapshot_id: "ab".repeat(32),
                bytes: 42,
            }],
        }
    }

    #[test]
    fn manifests_map_to_the_api() {
        let rp = IndexedRestorePoint::from_manifest("cd", "shop", &manifest()).expect("map");
        let p = rp.to_proto(true);
        assert_eq!(
            p.created_at,
            Some(prost_types::Timestamp {
                seconds: 1_740_823_200,
                nanos: 500_000_000
            })
        );
        let source = p.source.expect("source");
        assert_eq!(source.cluster_name, "prod");
        assert_eq!(source.storage_classes, vec!["fast".to_string()]);
        assert_eq!(source.zones, vec!["z1".to_string()]);
        assert_eq!(p.volumes.len(), 1);
        assert_eq!(p.volumes[0].capacity_bytes, 1 << 30);
        assert_eq!(p.volumes[0].data_bytes, 42);
        assert_eq!(p.volumes[0].zone, "z1");
        assert_eq!(
            p.application.map(|a| a.label_selector),
            Some("app=db".into())
        );
        assert_eq!(p.tags.get("schedule").map(String::as_str), Some("nightly"));
        assert!(rp.to_proto(false).volumes.is_empty());

        let mut newer = manifest();
        newer.format = ferry_kube::RESTORE_POINT_FORMAT + 1;
        assert!(IndexedRestorePoint::from_manifest("cd", "shop", &newer).is_err());
    }
}
