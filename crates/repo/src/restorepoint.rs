//! Restore points (`restorepoints/<application>/<id>`): an application's captured
//! objects and the snapshots of its volumes, stored sealed and written last, after
//! every snapshot they name, so a listed restore point is always complete.
//!
//! The manifest's shape belongs to the caller (ferry-kube's `RestorePointManifest`);
//! the engine reads two of its fields and ignores the rest:
//! - `volumes[].snapshot_id`: the snapshots the restore point needs. Saving checks they
//!   exist (under a writer lock, so no forget can remove them meanwhile); forget keeps
//!   them while the restore point stays; prune keeps their data.
//! - `created_at` (RFC 3339): the restore point's time for retention. Without it the
//!   time the store wrote the object counts.

use std::collections::HashMap;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::crypto::aad;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::snapshot_key;

const PREFIX: &str = "restorepoints";

/// Application names are Kubernetes namespace names: DNS labels.
pub(crate) fn check_application(app: &str) -> Result<()> {
    let ok = !app.is_empty()
        && app.len() <= 63
        && app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !app.starts_with('-')
        && !app.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "application name",
            format!(
                "{app:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
            ),
        ))
    }
}

/// Parses a manifest's engine fields and checks its snapshot ids; how many it names.
pub(crate) fn parse_refs(plain: &[u8]) -> Result<usize> {
    let refs: ManifestRefs = serde_json::from_slice(plain)
        .map_err(|e| Error::corrupt("restore point", e.to_string()))?;
    let _ = refs.created_at();
    refs.snapshots("restore point").map(|s| s.len())
}

/// The fields of a restore point manifest the engine reads.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ManifestRefs {
    #[serde(default)]
    created_at: Option<serde_json::Value>,
    #[serde(default)]
    volumes: Vec<VolumeRef>,
}

#[derive(Debug, Deserialize)]
struct VolumeRef {
    snapshot_id: String,
}

impl ManifestRefs {
    /// Reads the fields from a manifest about to be saved.
    fn of<T: Serialize>(manifest: &T) -> Result<Self> {
        let value = serde_json::to_value(manifest)
            .map_err(|e| Error::Internal(format!("serializing a restore point: {e}")))?;
        serde_json::from_value(value).map_err(|e| {
            Error::invalid(
                "restore point manifest",
                format!(
                    "{e}; the engine reads `volumes` as a list of objects with a \
                     `snapshot_id` (and an optional RFC 3339 `created_at`)"
                ),
            )
        })
    }

    /// The snapshots the restore point names; `what` names it in errors.
    pub fn snapshots(&self, what: &str) -> Result<Vec<Id>> {
        self.volumes
            .iter()
            .map(|v| {
                Id::parse(&v.snapshot_id).map_err(|_| {
                    Error::invalid(
                        what.to_string(),
                        format!(
                            "volume snapshot id {:?} is not a full snapshot id (64 hex characters)",
                            v.snapshot_id
                        ),
                    )
                })
            })
            .collect()
    }

    /// `created_at`, when present and RFC 3339.
    pub fn created_at(&self) -> Option<OffsetDateTime> {
        let text = self.created_at.as_ref()?.as_str()?;
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
    }
}

/// One listed restore point with what the engine knows about it.
#[derive(Debug)]
pub(crate) struct ListedRestorePoint {
    pub application: String,
    pub id: Id,
    /// When the store wrote it.
    pub modified: Option<OffsetDateTime>,
}

/// Restore points loaded at once.
const LOAD_CONCURRENCY: usize = 8;

/// Key of a restore point.
pub fn restore_point_key(app: &str, id: &Id) -> String {
    format!("{PREFIX}/{app}/{id}")
}

impl Repository {
    /// Stores a restore point of `app` under a writer lock, after checking that every
    /// snapshot it names (`volumes[].snapshot_id`) exists: a forget that removed one
    /// since it was written makes this fail with [`Error::NotFound`] rather than commit
    /// a restore point that cannot be restored.
    pub async fn save_restore_point<T: Serialize>(&self, app: &str, manifest: &T) -> Result<Id> {
        check_application(app)?;
        let snapshots = ManifestRefs::of(manifest)?.snapshots("restore point manifest")?;
        let lock = self.writer_lock("restore point").await?;
        let result = async {
            let missing: Vec<Id> = futures::stream::iter(snapshots)
                .map(|id| async move {
                    self.backend()
                        .exists(&snapshot_key(&id))
                        .await
                        .map(|there| (!there).then_some(id))
                })
                .buffer_unordered(LOAD_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<std::result::Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect();
            if let Some(id) = missing.first() {
                return Err(Error::NotFound {
                    what: format!(
                        "snapshot {id} named by the new restore point of {app} ({} missing)",
                        missing.len()
                    ),
                    hint: "it was removed (by forget) after the volume was backed up; \
                           back the volume up again and write the restore point then"
                        .into(),
                });
            }
            lock.ensure_live()?;
            self.save_object(&format!("{PREFIX}/{app}"), aad::RESTORE_POINT, manifest)
                .await
        }
        .await;
        lock.release_quietly().await;
        result
    }

    /// Every restore point, with the time the store wrote it.
    pub(crate) async fn list_restore_points(&self) -> Result<Vec<ListedRestorePoint>> {
        let listed = self.backend().list(&format!("{PREFIX}/")).await?;
        let mut out: Vec<ListedRestorePoint> = listed
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(&format!("{PREFIX}/"))?;
                let (a, id) = rest.split_once('/')?;
                Some(ListedRestorePoint {
                    application: a.to_string(),
                    id: Id::parse(id).ok()?,
                    modified: o.modified,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.application, a.id).cmp(&(&b.application, b.id)));
        Ok(out)
    }

    /// Loads the engine's view of the given restore points, failing on the first one
    /// that does not load or parse.
    pub(crate) async fn load_restore_point_refs(
        &self,
        points: &[ListedRestorePoint],
    ) -> Result<HashMap<(String, Id), ManifestRefs>> {
        let loaded: Vec<Result<((String, Id), ManifestRefs)>> = futures::stream::iter(points)
            .map(|p| async move {
                let refs: ManifestRefs = self
                    .load_object(
                        &restore_point_key(&p.application, &p.id),
                        aad::RESTORE_POINT,
                        &p.id,
                    )
                    .await?;
                Ok(((p.application.clone(), p.id), refs))
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .collect()
            .await;
        loaded.into_iter().collect()
    }

    /// Loads one restore point.
    pub async fn load_restore_point<T: DeserializeOwned + Send + 'static>(
        &self,
        app: &str,
        id: &Id,
    ) -> Result<T> {
        check_application(app)?;
        self.load_object(&restore_point_key(app, id), aad::RESTORE_POINT, id)
            .await
    }

    /// `(application, id)` of every restore point, or of one application's.
    pub async fn restore_point_ids(&self, app: Option<&str>) -> Result<Vec<(String, Id)>> {
        let prefix = match app {
            Some(a) => {
                check_application(a)?;
                format!("{PREFIX}/{a}/")
            }
            None => format!("{PREFIX}/"),
        };
        let listed = self.backend().list(&prefix).await?;
        let mut out: Vec<(String, Id)> = listed
            .iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(&format!("{PREFIX}/"))?;
                let (a, id) = rest.split_once('/')?;
                Some((a.to_string(), Id::parse(id).ok()?))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes a restore point (its snapshots stay until prune).
    pub async fn delete_restore_point(&self, app: &str, id: &Id) -> Result<()> {
        check_application(app)?;
        self.backend().delete(&restore_point_key(app, id)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde::Deserialize;

    use super::*;
    use crate::InitOptions;
    use crate::backend::MemoryBackend;
    use crate::snapshot::{Snapshot, SnapshotSummary};
    use crate::tree::Tree;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Volume {
        pvc: String,
        snapshot_id: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Manifest {
        objects: Vec<String>,
        volumes: Vec<Volume>,
    }

    async fn snapshot(repo: &Repository) -> Id {
        let tree = repo.save_tree(&Tree::default()).await.expect("tree");
        repo.save_snapshot(&Snapshot {
            time: OffsetDateTime::now_utc(),
            hostname: "h".into(),
            paths: vec!["/data".into()],
            tags: vec![],
            parent: None,
            tree,
            root: None,
            summary: SnapshotSummary::default(),
        })
        .await
        .expect("snapshot")
    }

    #[tokio::test]
    async fn restore_points_round_trip_per_application() {
        let repo = Repository::init(
            Arc::new(MemoryBackend::new()),
            b"k",
            InitOptions::small_for_tests(),
        )
        .await
        .expect("init");
        let snap = snapshot(&repo).await;
        let m = Manifest {
            objects: vec!["v1/ConfigMap/app".into()],
            volumes: vec![Volume {
                pvc: "data-db-0".into(),
                snapshot_id: snap.to_hex(),
            }],
        };
        let a = repo.save_restore_point("shop", &m).await.expect("save");
        let b = repo.save_restore_point("blog", &m).await.expect("save");
        assert_eq!(
            repo.restore_point_ids(Some("shop")).await.expect("list"),
            vec![("shop".to_string(), a)]
        );
        assert_eq!(repo.restore_point_ids(None).await.expect("list").len(), 2);
        let back: Manifest = repo.load_restore_point("shop", &a).await.expect("load");
        assert_eq!(back, m);
        assert!(
            repo.load_restore_point::<Manifest>("shop", &b)
                .await
                .is_err(),
            "wrong application"
        );
        let err = repo
            .save_restore_point("../x", &m)
            .await
            .expect_err("bad name");
        assert!(err.to_string().contains("namespace name"), "{err}");
        repo.delete_restore_point("shop", &a).await.expect("delete");
        assert!(
            repo.restore_point_ids(Some("shop"))
                .await
                .expect("list")
                .is_empty()
        );
        assert!(
            repo.backend()
                .list("locks/")
                .await
                .expect("list")
                .is_empty(),
            "writer locks are released"
        );
    }

    #[tokio::test]
    async fn a_restore_point_naming_a_missing_snapshot_is_refused() {
        let repo = Repository::init(
            Arc::new(MemoryBackend::new()),
            b"k",
            InitOptions::small_for_tests(),
        )
        .await
        .expect("init");
        let gone = Id::of_content(b"no such snapshot");
        let m = Manifest {
            objects: vec![],
            volumes: vec![Volume {
                pvc: "data".into(),
                snapshot_id: gone.to_hex(),
            }],
        };
        let err = repo
            .save_restore_point("shop", &m)
            .await
            .expect_err("missing");
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains(&gone.to_hex()), "{err}");

        let short = Manifest {
            objects: vec![],
            volumes: vec![Volume {
                pvc: "data".into(),
                snapshot_id: "abcd".into(),
            }],
        };
        let err = repo
            .save_restore_point("shop", &short)
            .await
            .expect_err("short id");
        assert!(err.to_string().contains("64 hex"), "{err}");

        #[derive(Serialize)]
        struct Odd {
            volumes: Vec<(String, String)>,
        }
        let err = repo
            .save_restore_point(
                "shop",
                &Odd {
                    volumes: vec![("a".into(), "b".into())],
                },
            )
            .await
            .expect_err("odd shape");
        assert!(err.to_string().contains("snapshot_id"), "{err}");
        assert!(repo.restore_point_ids(None).await.expect("list").is_empty());
    }
}
