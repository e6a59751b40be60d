//! Retention: after a migration or export run succeeded, the schedule's limits are
//! applied to the repository the run wrote to, for the schedule's application only,
//! through the catalog's PruneRepository (forget, then prune, under the repository's
//! exclusive lock). The run records how many restore points went.
//!
//! Retention never fails a run whose job succeeded: the restore point is written, and
//! what retention did not remove now the next successful run removes. A repository
//! another writer holds (REPOSITORY_LOCKED) is expected when exports overlap and is
//! logged as a warning; any other failure (a clock too far off, a listing the engine
//! refused, a catalog that does not answer) is logged as an error with the catalog's
//! hint, since it stops retention until someone acts.

use ferry_proto::v1::{ErrorCode, PruneRepositoryRequest, Schedule, ScheduleRun, schedule};
use tracing::{Instrument, error, info, info_span, warn};

use super::Scheduler;

/// The PruneRepository call a schedule's retention makes after a successful run; `None`
/// when it keeps everything or its spec writes no restore points.
pub(crate) fn prune_request(def: &Schedule) -> Option<PruneRepositoryRequest> {
    let retention = def.retention.as_ref()?;
    let max_age = retention.max_age.filter(|d| d.seconds > 0 || d.nanos > 0);
    if retention.keep_last == 0 && max_age.is_none() {
        return None;
    }
    let (repository, application) = match def.spec.as_ref()? {
        schedule::Spec::Migration(m) => (m.repository.clone(), m.application.as_ref()),
        schedule::Spec::Export(e) => (e.repository.clone(), e.application.as_ref()),
        schedule::Spec::ImportPolicy(_) => return None,
    };
    let repository = repository.filter(|r| !r.profile.is_empty())?;
    let namespace = application.map(|a| a.namespace.clone())?;
    if namespace.is_empty() {
        return None;
    }
    Some(PruneRepositoryRequest {
        repository: Some(repository),
        namespace,
        keep_last: retention.keep_last,
        max_age,
        dry_run: false,
    })
}

impl Scheduler {
    /// Applies the schedule's retention after `run` succeeded, recording what it removed.
    pub(super) async fn apply_retention(&self, def: &Schedule, run: &mut ScheduleRun) {
        let Some(request) = prune_request(def) else {
            return;
        };
        let profile = request
            .repository
            .as_ref()
            .map(|r| r.profile.clone())
            .unwrap_or_default();
        let span = info_span!(
            "retention",
            profile = %profile,
            namespace = %request.namespace,
            keep_last = request.keep_last,
            max_age_s = request.max_age.map(|d| d.seconds)
        );
        async {
            match self.inner.jobs.prune_repository(request).await {
                Ok(pruned) => {
                    run.restore_points_pruned =
                        u32::try_from(pruned.restore_points_removed.len()).unwrap_or(u32::MAX);
                    info!(
                        restore_points_removed = run.restore_points_pruned,
                        restore_points_kept = pruned.restore_points_kept.len(),
                        packs_deleted = pruned.packs_deleted,
                        bytes_freed = pruned.bytes_freed,
                        "retention applied"
                    );
                }
                Err(e) if e.detail.code == ErrorCode::RepositoryLocked as i32 => {
                    warn!(error = %e.detail.message,
                        "retention not applied: another writer or prune holds the repository; \
                         the next successful run applies it");
                }
                Err(e) => {
                    error!(error = %e.detail.message, hint = %e.detail.hint,
                        "retention not applied; the run still succeeded, and the next successful \
                         run tries again");
                }
            }
        }
        .instrument(span)
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::v1::{
        ApplicationSelector, ImportPolicySpec, RepositoryRef, Retention, StartExportRequest,
        StartMigrationRequest,
    };

    fn selector(ns: &str) -> Option<ApplicationSelector> {
        Some(ApplicationSelector {
            namespace: ns.into(),
            ..Default::default()
        })
    }

    fn repo(profile: &str) -> Option<RepositoryRef> {
        Some(RepositoryRef {
            profile: profile.into(),
            repository_id: "r1".into(),
        })
    }

    fn with(spec: schedule::Spec, keep_last: u32, max_age_s: Option<i64>) -> Schedule {
        Schedule {
            spec: Some(spec),
            retention: Some(Retention {
                keep_last,
                max_age: max_age_s.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn retention_prunes_the_runs_repository_for_the_schedules_application() {
        let export = schedule::Spec::Export(StartExportRequest {
            application: selector("shop"),
            repository: repo("out"),
            ..Default::default()
        });
        let req = prune_request(&with(export.clone(), 2, Some(3600))).expect("a request");
        assert_eq!(req.namespace, "shop");
        assert_eq!(req.repository, repo("out"));
        assert_eq!(req.keep_last, 2);
        assert_eq!(req.max_age.map(|d| d.seconds), Some(3600));
        assert!(!req.dry_run);

        let migration = schedule::Spec::Migration(StartMigrationRequest {
            application: selector("blog"),
            repository: repo("main"),
            ..Default::default()
        });
        let req = prune_request(&with(migration, 3, None)).expect("a request");
        assert_eq!((req.namespace.as_str(), req.keep_last), ("blog", 3));
        assert!(req.max_age.is_none());

        // Keeps everything: no call.
        assert!(prune_request(&with(export.clone(), 0, None)).is_none());
        assert!(prune_request(&with(export.clone(), 0, Some(0))).is_none());
        let mut none = with(export, 2, None);
        none.retention = None;
        assert!(prune_request(&none).is_none());
        // Import policies only read.
        let policy = schedule::Spec::ImportPolicy(ImportPolicySpec::default());
        assert!(prune_request(&with(policy, 2, None)).is_none());
    }
}
