//! Restore points: listing them from the index (synced from the repository first),
//! reading and labelling one, and rebuilding the index.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use ferry_authz::Caller;
use ferry_kube::RestorePointManifest;
use ferry_proto::v1::{
    ErrorDetail, GetRestorePointRequest, GetRestorePointResponse, LabelRestorePointRequest,
    LabelRestorePointResponse, ListRestorePointsRequest, ListRestorePointsResponse, Progress,
    RebuildIndexEvent, RebuildIndexSummary, rebuild_index_event,
};
use ferry_repo::{Id, Repository};
use futures::{StreamExt, stream};
use tokio::sync::mpsc;
use tonic::Status;

use crate::db::ProfileRecord;
use crate::error::CatalogError;
use crate::profile::{self};
use crate::restore_points::IndexedRestorePoint;

use super::page::{bad_token, page};
use super::{CatalogService, validate_namespace};

/// Restore point manifests read at once.
const LOAD_CONCURRENCY: usize = 8;
const REBUILD_STEP: &str = "rebuild-index";

impl CatalogService {
    pub(super) async fn list_restore_points(
        &self,
        req: ListRestorePointsRequest,
        reader: Option<&Caller>,
    ) -> Result<ListRestorePointsResponse, CatalogError> {
        let namespace = (!req.namespace.is_empty()).then_some(req.namespace.as_str());
        if let Some(ns) = namespace {
            validate_namespace(ns)?;
            if let Some(caller) = reader {
                self.require_see(caller, ns).await?;
            }
        }
        let page = page(req.page_size, &req.page_token)?;
        let after = match &page.after {
            None => None,
            Some(t) => Some(
                t.split_once(':')
                    .and_then(|(ns, id)| Some((ns.parse::<i64>().ok()?, id.to_string())))
                    .ok_or_else(bad_token)?,
            ),
        };
        let (record, repo) = self.repository(req.repository.as_ref()).await?;
        // A profile made from a token lists what the token named, nothing else.
        let scope = record.reads_only();
        let namespace = match (&scope.namespace, namespace) {
            (None, asked) => asked,
            (Some(allowed), None) => Some(allowed.as_str()),
            (Some(allowed), Some(asked)) if allowed == asked => Some(asked),
            (Some(_), Some(asked)) => {
                return Err(CatalogError::OutsideProfileScope {
                    what: format!("namespace {asked}"),
                    profile: record.name.clone(),
                    scope: scope.to_string(),
                });
            }
        };
        self.sync_index(&record, &repo, namespace).await?;
        let mut rows = self
            .inner
            .db
            .restore_points_page(&record.repository_id, namespace, after, page.fetch())
            .await?;
        rows.retain(|r| scope.allows(&r.application, &r.id));
        let next_page_token = page.finish(&mut rows, |r| format!("{}:{}", r.created_at_ns, r.id));
        // After the page is cut, so the token still continues the whole listing; a page
        // may hold fewer than page_size.
        if let (Some(caller), None) = (reader, namespace) {
            let apps: Vec<String> = rows
                .iter()
                .map(|r| r.application.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let visible = self.visible(caller, &apps).await?;
            rows.retain(|r| visible.contains(&r.application));
        }
        Ok(ListRestorePointsResponse {
            restore_points: rows.iter().map(|r| r.to_proto(false)).collect(),
            next_page_token,
        })
    }

    /// Brings the index of a repository (or of one application in it) in line with
    /// what the repository lists: new restore points are read and added, vanished ones
    /// removed. A restore point that does not decrypt is left out and logged;
    /// RebuildIndex reports it.
    pub(super) async fn sync_index(
        &self,
        record: &ProfileRecord,
        repo: &Repository,
        application: Option<&str>,
    ) -> Result<(), CatalogError> {
        let listed = repo
            .restore_point_ids(application)
            .await
            .map_err(|e| profile::repo_error(record, "listing restore points in", e))?;
        let known = self
            .inner
            .db
            .indexed_ids(&record.repository_id, application)
            .await?;
        let present: HashSet<String> = listed.iter().map(|(_, id)| id.to_hex()).collect();
        let remove: Vec<String> = known.difference(&present).cloned().collect();
        let new: Vec<(String, Id)> = listed
            .into_iter()
            .filter(|(_, id)| !known.contains(&id.to_hex()))
            .collect();
        let loaded: Vec<Loaded> = stream::iter(new)
            .map(|(app, id)| load(record, repo, app, id))
            .buffer_unordered(LOAD_CONCURRENCY)
            .collect()
            .await;
        let mut rows = Vec::new();
        for l in loaded {
            match l {
                Loaded::Ok(row) => rows.push(row),
                Loaded::Gone => {}
                Loaded::Unreadable { app, id, error } => {
                    tracing::warn!(restore_point = %format!("{app}/{id}"), error = %error,
                        "restore point left out of the listing");
                }
                Loaded::Failed(e) => return Err(e),
            }
        }
        if !remove.is_empty() || !rows.is_empty() {
            self.inner
                .db
                .update_index(&record.repository_id, remove, &rows)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn get_restore_point(
        &self,
        req: GetRestorePointRequest,
        reader: Option<&Caller>,
    ) -> Result<GetRestorePointResponse, CatalogError> {
        let id = Id::parse(&req.id).map_err(|_| {
            CatalogError::invalid(
                "id",
                format!("{:?} is not a restore point id (64 hex digits)", req.id),
            )
        })?;
        let (record, repo) = self.repository(req.repository.as_ref()).await?;
        let not_found = || CatalogError::RestorePointNotFound {
            id: req.id.clone(),
            profile: record.name.clone(),
            location: profile::location(&record),
        };
        let indexed_app = self
            .inner
            .db
            .restore_point(&record.repository_id, &id.to_hex())
            .await?
            .map(|r| r.application);
        let app = match indexed_app {
            Some(app) => app,
            None => repo
                .restore_point_ids(None)
                .await
                .map_err(|e| profile::repo_error(&record, "listing restore points in", e))?
                .into_iter()
                .find(|(_, found)| *found == id)
                .map(|(app, _)| app)
                .ok_or_else(not_found)?,
        };
        let scope = record.reads_only();
        if !scope.allows(&app, &id.to_hex()) {
            return Err(CatalogError::OutsideProfileScope {
                what: format!("restore point {} of namespace {app}", req.id),
                profile: record.name.clone(),
                scope: scope.to_string(),
            });
        }
        // Refused by namespace, as Kubernetes answers Forbidden naming what was asked.
        if let Some(caller) = reader {
            self.require_see(caller, &app).await?;
        }
        let row = match load(&record, &repo, app, id).await {
            Loaded::Ok(row) => row,
            Loaded::Gone => {
                self.inner
                    .db
                    .update_index(&record.repository_id, vec![id.to_hex()], &[])
                    .await?;
                return Err(not_found());
            }
            Loaded::Unreadable { error, .. } | Loaded::Failed(error) => return Err(error),
        };
        self.inner
            .db
            .update_index(
                &record.repository_id,
                Vec::new(),
                std::slice::from_ref(&row),
            )
            .await?;
        let mut rp = row.to_proto(true);
        for v in &mut rp.volumes {
            // File counts live in the snapshots, not the restore point: one small read each.
            let snapshot = match Id::parse(&v.snapshot_id) {
                Ok(sid) => repo.load_snapshot(&sid).await,
                Err(e) => Err(e),
            };
            match snapshot {
                Ok(s) => v.files = s.summary.files,
                Err(e) => tracing::warn!(snapshot = %v.snapshot_id, pvc = %v.pvc_name,
                    error = %e, "volume snapshot unreadable; file count unknown"),
            }
        }
        Ok(GetRestorePointResponse {
            restore_point: Some(rp),
        })
    }

    /// LabelRestorePoint: sets (or removes) labels the catalog keeps on a restore point
    /// the repository holds. One not indexed yet is looked for in the repository first.
    pub(super) async fn label_restore_point(
        &self,
        req: LabelRestorePointRequest,
    ) -> Result<LabelRestorePointResponse, CatalogError> {
        let id = Id::parse(&req.id).map_err(|_| {
            CatalogError::invalid(
                "id",
                format!("{:?} is not a restore point id (64 hex digits)", req.id),
            )
        })?;
        check_labels(&req.labels)?;
        let (record, repo) = self.repository(req.repository.as_ref()).await?;
        let hex = id.to_hex();
        let mut labels: Vec<(String, String)> = req.labels.into_iter().collect();
        labels.sort();
        let db = &self.inner.db;
        let mut found = db
            .set_labels(&record.repository_id, &hex, labels.clone())
            .await?;
        if !found {
            self.sync_index(&record, &repo, None).await?;
            found = db
                .set_labels(&record.repository_id, &hex, labels.clone())
                .await?;
        }
        let not_found = || CatalogError::RestorePointNotFound {
            id: hex.clone(),
            profile: record.name.clone(),
            location: profile::location(&record),
        };
        if !found {
            return Err(not_found());
        }
        let row = db
            .restore_point(&record.repository_id, &hex)
            .await?
            .ok_or_else(not_found)?;
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        tracing::info!(restore_point = %hex, labels = ?keys, "restore point labelled");
        Ok(LabelRestorePointResponse {
            restore_point: Some(row.to_proto(false)),
        })
    }

    /// Reads every restore point of the repository and replaces its index, reporting
    /// progress on `tx`. A transport or permission failure stops the rebuild and leaves
    /// the old index; only restore points that fail to decrypt or parse are skipped.
    pub(super) async fn rebuild(
        &self,
        record: ProfileRecord,
        repo: Repository,
        tx: &mpsc::Sender<Result<RebuildIndexEvent, Status>>,
    ) -> Result<Option<RebuildIndexSummary>, CatalogError> {
        let started = Instant::now();
        let ids = repo
            .restore_point_ids(None)
            .await
            .map_err(|e| profile::repo_error(&record, "listing restore points in", e))?;
        let total = ids.len() as u64;
        let progress = |done: u64| RebuildIndexEvent {
            event: Some(rebuild_index_event::Event::Progress(Progress {
                step: REBUILD_STEP.into(),
                objects_done: done,
                objects_total: total,
                ..Default::default()
            })),
        };
        if tx.send(Ok(progress(0))).await.is_err() {
            return Ok(None);
        }
        // About a hundred updates at most, however large the repository.
        let every = (total / 100).max(1);
        let mut loads = stream::iter(ids)
            .map(|(app, id)| load(&record, &repo, app, id))
            .buffer_unordered(LOAD_CONCURRENCY);
        let (mut rows, mut errors, mut done) = (Vec::new(), Vec::new(), 0u64);
        while let Some(l) = loads.next().await {
            done += 1;
            match l {
                Loaded::Ok(row) => rows.push(row),
                Loaded::Gone => {}
                Loaded::Unreadable { app, id, error } => errors.push(unreadable(&app, &id, error)),
                Loaded::Failed(e) => return Err(e),
            }
            if (done % every == 0 || done == total) && tx.send(Ok(progress(done))).await.is_err() {
                // Nobody is listening: leave the old index as it was.
                return Ok(None);
            }
        }
        drop(loads);
        self.inner
            .db
            .replace_index(&record.repository_id, &rows)
            .await?;
        let elapsed = started.elapsed();
        tracing::info!(
            restore_points = total,
            unreadable = errors.len(),
            ?elapsed,
            "index rebuilt"
        );
        Ok(Some(RebuildIndexSummary {
            restore_points: total,
            unreadable: errors.len() as u64,
            duration: Some(prost_types::Duration {
                seconds: elapsed.as_secs() as i64,
                nanos: elapsed.subsec_nanos() as i32,
            }),
            errors,
        }))
    }
}

/// Outcome of reading one restore point.
pub(super) enum Loaded {
    Ok(IndexedRestorePoint),
    /// Deleted between listing and reading.
    Gone,
    /// Does not decrypt, verify or parse: reported, left out.
    Unreadable {
        app: String,
        id: String,
        error: CatalogError,
    },
    /// The store failed: the caller stops.
    Failed(CatalogError),
}

pub(super) async fn load(record: &ProfileRecord, repo: &Repository, app: String, id: Id) -> Loaded {
    use ferry_repo::Error as R;
    let hex = id.to_hex();
    match repo
        .load_restore_point::<RestorePointManifest>(&app, &id)
        .await
    {
        Ok(m) => match IndexedRestorePoint::from_manifest(&hex, &app, &m) {
            Ok(row) => Loaded::Ok(row),
            Err(ferry_kube::UnsupportedFormat { found, supported }) => Loaded::Unreadable {
                error: CatalogError::Repo {
                    context: format!("restore point {app}/{hex}"),
                    source: Box::new(R::UnsupportedVersion { found, supported }),
                },
                app,
                id: hex,
            },
        },
        Err(e) if e.is_not_found() => Loaded::Gone,
        Err(e @ (R::Corrupt { .. } | R::UnsupportedVersion { .. })) => Loaded::Unreadable {
            error: profile::repo_error(record, "reading restore point from", e),
            app,
            id: hex,
        },
        Err(e) => Loaded::Failed(profile::repo_error(record, "reading restore point from", e)),
    }
}

pub(super) fn unreadable(app: &str, id: &str, e: CatalogError) -> ErrorDetail {
    let mut d = e.detail();
    d.message = format!("restore point {app}/{id}: {}", d.message);
    d
}

/// Most labels one LabelRestorePoint may set, and their sizes.
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 253;
const MAX_LABEL_VALUE: usize = 1024;

/// Label keys as Kubernetes writes them (`ferry.dev/import-policy`); values any printable
/// text.
pub(super) fn check_labels(labels: &HashMap<String, String>) -> Result<(), CatalogError> {
    if labels.is_empty() {
        return Err(CatalogError::invalid(
            "labels",
            "empty; give at least one label to set (an empty value removes one)",
        ));
    }
    if labels.len() > MAX_LABELS {
        return Err(CatalogError::invalid(
            "labels",
            format!("{} labels, at most {MAX_LABELS} at once", labels.len()),
        ));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !key_ok {
            return Err(CatalogError::invalid(
                "labels",
                format!(
                    "key {key:?} is not a label key: 1 to {MAX_LABEL_KEY} letters, digits and \
                     -_./ such as \"ferry.dev/import-policy\""
                ),
            ));
        }
        if value.len() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
            return Err(CatalogError::invalid(
                "labels",
                format!(
                    "value of {key:?} must be at most {MAX_LABEL_VALUE} bytes of printable text"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        let one = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert!(check_labels(&one("ferry.dev/import-policy", "nightly")).is_ok());
        assert!(
            check_labels(&one("ferry.dev/import-policy", "")).is_ok(),
            "removal"
        );
        assert!(check_labels(&HashMap::new()).is_err());
        assert!(check_labels(&one("", "x")).is_err());
        assert!(check_labels(&one("a b", "x")).is_err());
        assert!(check_labels(&one("k", "line\nbreak")).is_err());
        assert!(check_labels(&one("k", &"x".repeat(MAX_LABEL_VALUE + 1))).is_err());
    }
}
