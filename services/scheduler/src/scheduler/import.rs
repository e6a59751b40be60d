//! Import policies: each run lists the repository through the catalog (the repository
//! is the truth: a listing that fails fails the run, it never means "nothing new"),
//! imports the restore points the policy has not imported before, oldest first, and
//! restores them if the policy asks to.
//!
//! What a policy imported lives in the store (`imports`), written as each restore point
//! is done, so a run stopped half-way, a retried attempt or a restarted scheduler never
//! imports one twice. A restore point counts as imported only once its restore job
//! succeeded; while the job goes it is RESTORING with the job's id, and a restarted
//! scheduler waits on that job rather than starting another. Of several new restore
//! points of one application in one run, only the newest is restored: the older ones
//! are superseded by it (a restore replaces the data of the one before), and are
//! imported with it.

use std::collections::HashMap;

use ferry_proto::v1::{
    ApplicationSelector, ErrorCode, ImportPolicySpec, JobState, ProfileKind, RepositoryRef,
    RestorePoint, RunState, Schedule, ScheduleRun, StartRestoreRequest,
};
use jiff::Timestamp;
use tracing::{Instrument, info, info_span, warn};

use super::{Scheduler, job_failure};
use crate::error::{Result, SchedulerError};
use crate::jobs::JobError;
use crate::store::Import;
use crate::validate::Retry;

/// The catalog label naming the import policy that imported a restore point.
pub(crate) const IMPORT_POLICY_LABEL: &str = "ferry.dev/import-policy";

/// Why an attempt stopped before its end.
#[derive(Debug)]
enum Stop {
    /// The attempt failed; the run retries it or ends FAILED.
    Failed(JobError),
    /// The schedule was deleted: the run stops where it is.
    Gone,
}

/// How a restore job that was followed to its end ended.
#[derive(Debug)]
enum Followed {
    Succeeded,
    /// Ended without succeeding; the restore point is to be restored again.
    Failed(JobError),
}

impl From<JobError> for Stop {
    fn from(e: JobError) -> Self {
        Stop::Failed(e)
    }
}

/// The scheduler's own state could not be written: the attempt fails, and may work later.
fn store_failure(e: SchedulerError) -> Stop {
    Stop::Failed(JobError {
        detail: Box::new(ferry_rpc::error_detail(
            ErrorCode::Internal,
            format!("recording the import policy's progress: {e}"),
            "check the scheduler's data directory (scheduler.db): disk space and permissions",
        )),
        retryable: true,
    })
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// The application a restore point holds: its namespace and label selector as captured.
fn application_of(rp: &RestorePoint) -> (String, String) {
    rp.application
        .as_ref()
        .map(|a| (a.namespace.clone(), a.label_selector.clone()))
        .unwrap_or_default()
}

/// Oldest first, ties broken by id.
fn age_key(rp: &RestorePoint) -> (i64, i32, String) {
    let t = rp.created_at.unwrap_or_default();
    (t.seconds, t.nanos, rp.id.clone())
}

/// New restore points (oldest first) grouped by application, each group oldest first,
/// the groups in the order of their newest member: each group is restored once, from
/// its newest restore point.
fn by_application(new: Vec<RestorePoint>) -> Vec<Vec<RestorePoint>> {
    let mut groups: Vec<((String, String), Vec<RestorePoint>)> = Vec::new();
    for rp in new {
        let key = application_of(&rp);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(rp),
            None => groups.push((key, vec![rp])),
        }
    }
    let mut groups: Vec<Vec<RestorePoint>> = groups.into_iter().map(|(_, g)| g).collect();
    groups.sort_by_key(|g| g.last().map(age_key));
    groups
}

impl Scheduler {
    /// CreateSchedule's check of an import policy's repository: an IMPORT profile the
    /// catalog knows. Pins the policy to the profile's repository id, so a profile later
    /// pointed at another repository is refused rather than imported from.
    pub(super) async fn check_import_profile(&self, policy: &mut ImportPolicySpec) -> Result<()> {
        let field = "import_policy.repository.profile";
        let Some(repository) = policy.repository.as_mut() else {
            return Err(SchedulerError::invalid(
                field,
                "missing",
                "name the import profile made from the migration token",
            ));
        };
        let name = repository.profile.clone();
        let profile = self
            .inner
            .jobs
            .profile(&name)
            .await
            .map_err(|error| SchedulerError::Upstream { error })?
            .ok_or_else(|| {
                SchedulerError::invalid(
                    field,
                    format!("this cluster's catalog has no profile {name:?}"),
                    "create it from the source's migration token (`ferry migration-token` \
                     there): ferry profile create NAME --kind import --migration-token-file \
                     TOKEN --expect-signer FINGERPRINT --credentials-secret SECRET",
                )
            })?;
        if profile.kind != ProfileKind::Import as i32 {
            let kind = ProfileKind::try_from(profile.kind)
                .map(|k| k.as_str_name())
                .unwrap_or("of an unknown kind");
            return Err(SchedulerError::invalid(
                field,
                format!("profile {name:?} is {kind}, not an import profile"),
                "an import policy reads a repository another cluster exports to: name an \
                 import profile (ferry profile list shows each profile's kind)",
            ));
        }
        if repository.repository_id.is_empty() {
            repository.repository_id = profile.repository_id;
        } else if repository.repository_id != profile.repository_id {
            return Err(SchedulerError::invalid(
                "import_policy.repository.repository_id",
                format!(
                    "{:?}, but profile {name:?} reaches repository {:?}",
                    repository.repository_id, profile.repository_id
                ),
                "leave repository_id empty to use the profile's repository",
            ));
        }
        Ok(())
    }

    /// Runs an import policy's attempts until one completes, one fails for good, or
    /// attempts run out. A resumed run goes on with the attempt it was making.
    pub(super) async fn execute_import(
        &self,
        def: &Schedule,
        policy: &ImportPolicySpec,
        mut run: ScheduleRun,
    ) {
        let retry = Retry::of(def.retry.as_ref(), self.inner.config.retry);
        let mut resumed = run.attempts > 0;
        loop {
            if !resumed {
                super::begin_attempt(&retry, &mut run).await;
                if !self.save(&run).await {
                    return;
                }
            }
            resumed = false;
            let failure = match self.import_attempt(def, policy, &mut run).await {
                Ok(()) => {
                    let state = if run.restore_points_imported == 0 {
                        RunState::NothingToDo
                    } else {
                        RunState::Succeeded
                    };
                    self.finish(def, run, state, None).await;
                    return;
                }
                Err(Stop::Gone) => {
                    info!("the schedule was deleted; the run stops here");
                    return;
                }
                Err(Stop::Failed(f)) => f,
            };
            warn!(attempt = run.attempts, error = %failure.detail.message,
                retryable = failure.retryable, "import attempt failed");
            if !failure.retryable || run.attempts >= retry.max_attempts {
                self.finish(def, run, RunState::Failed, Some(failure)).await;
                return;
            }
        }
    }

    /// One attempt: settle restore jobs a stopped scheduler left going, list the
    /// repository, and import what is new, oldest first.
    async fn import_attempt(
        &self,
        def: &Schedule,
        policy: &ImportPolicySpec,
        run: &mut ScheduleRun,
    ) -> Result<(), Stop> {
        let store = &self.inner.store;
        self.settle_restoring(def, run).await?;

        let repository = policy.repository.clone().unwrap_or_default();
        let selector = policy.application.clone().unwrap_or_default();
        let listed = self
            .inner
            .jobs
            .restore_points(&repository, &selector.namespace)
            .await?;
        let mut new: Vec<RestorePoint> = listed
            .into_iter()
            .filter(|rp| {
                selector.namespace.is_empty() || application_of(rp).0 == selector.namespace
            })
            .collect();
        run.restore_points_found = u32::try_from(new.len()).unwrap_or(u32::MAX);
        let imports = store.imports(&def.id).await.map_err(store_failure)?;
        new.retain(|rp| imports.get(&rp.id) != Some(&Import::Done));
        new.sort_by_key(age_key);
        info!(
            profile = %repository.profile,
            found = run.restore_points_found,
            new = new.len(),
            "repository listed"
        );
        if new.is_empty() {
            return Ok(());
        }
        let batches = if policy.restore {
            by_application(new)
        } else {
            new.into_iter().map(|rp| vec![rp]).collect()
        };
        for batch in batches {
            let Some(newest) = batch.last() else {
                continue;
            };
            let (namespace, _) = application_of(newest);
            let span = info_span!("import", restore_point = %newest.id, %namespace,
                superseded = batch.len() - 1);
            self.import_batch(def, policy, &repository, &batch, run)
                .instrument(span)
                .await?;
        }
        Ok(())
    }

    /// Imports one application's new restore points: labels them, restores the newest
    /// if the policy restores, then records them all imported.
    async fn import_batch(
        &self,
        def: &Schedule,
        policy: &ImportPolicySpec,
        repository: &RepositoryRef,
        batch: &[RestorePoint],
        run: &mut ScheduleRun,
    ) -> Result<(), Stop> {
        let Some(newest) = batch.last() else {
            return Ok(());
        };
        for rp in batch {
            let labels = HashMap::from([(IMPORT_POLICY_LABEL.to_owned(), def.name.clone())]);
            self.inner
                .jobs
                .label_restore_point(repository, &rp.id, labels)
                .await?;
        }
        if policy.restore {
            self.restore(def, policy, repository, newest, run).await?;
        }
        let ids: Vec<String> = batch.iter().map(|rp| rp.id.clone()).collect();
        let recorded = self
            .inner
            .store
            .set_imports(&def.id, &run.id, ids.clone(), Some(Import::Done), now_ms())
            .await
            .map_err(store_failure)?;
        if !recorded {
            return Err(Stop::Gone);
        }
        run.restore_points_imported += u32::try_from(ids.len()).unwrap_or(u32::MAX);
        run.imported_restore_point_ids.extend(ids);
        run.restore_point_id = newest.id.clone();
        info!(restored = policy.restore, "imported");
        if !self.save(run).await {
            return Err(Stop::Gone);
        }
        Ok(())
    }

    /// Starts the restore of `rp` (a job of kind IMPORT, marked as the schedule's) and
    /// follows it; the restore point is RESTORING in the store meanwhile.
    async fn restore(
        &self,
        def: &Schedule,
        policy: &ImportPolicySpec,
        repository: &RepositoryRef,
        rp: &RestorePoint,
        run: &mut ScheduleRun,
    ) -> Result<(), Stop> {
        let selector = policy.application.clone().unwrap_or_default();
        let request = StartRestoreRequest {
            destination: policy.destination.clone(),
            repository: Some(repository.clone()),
            restore_point_id: rp.id.clone(),
            application: Some(ApplicationSelector {
                namespace: application_of(rp).0,
                ..selector
            }),
            apply: policy.apply.clone(),
            dry_run: false,
            schedule_id: def.id.clone(),
            // Each run's restore is a new start.
            request_id: String::new(),
            // Import policies take the transfer service's defaults.
            volumes: None,
        };
        let job_id = self.inner.jobs.start_restore(request).await?;
        info!(job = %job_id, "restore job started");
        run.job_ids.push(job_id.clone());
        let restoring = Import::Restoring {
            job_id: job_id.clone(),
        };
        let recorded = self
            .inner
            .store
            .set_imports(
                &def.id,
                &run.id,
                vec![rp.id.clone()],
                Some(restoring),
                now_ms(),
            )
            .await
            .map_err(store_failure)?;
        if !recorded || !self.save(run).await {
            return Err(Stop::Gone);
        }
        match self.follow_restore(def, run, &rp.id, &job_id).await? {
            Followed::Succeeded => Ok(()),
            Followed::Failed(e) => Err(Stop::Failed(e)),
        }
    }

    /// Waits for the restore job of `rp_id`. When it ended without succeeding (or is
    /// unknown to the transfer service), the restore point is no longer RESTORING, so it
    /// is restored again by a new job; when the job could not be followed, the attempt
    /// fails and the restore point stays RESTORING: a later attempt waits on the same job.
    async fn follow_restore(
        &self,
        def: &Schedule,
        run: &ScheduleRun,
        rp_id: &str,
        job_id: &str,
    ) -> Result<Followed, Stop> {
        let failure = match self.inner.jobs.wait(job_id).await {
            Ok(o) if o.state == JobState::Succeeded => {
                info!(job = %job_id, "restore job succeeded");
                return Ok(Followed::Succeeded);
            }
            Ok(o) => job_failure(job_id, o),
            Err(e) if e.detail.code == ErrorCode::NotFound as i32 => e,
            Err(e) => return Err(Stop::Failed(e)),
        };
        let forgotten = self
            .inner
            .store
            .set_imports(&def.id, &run.id, vec![rp_id.to_owned()], None, now_ms())
            .await
            .map_err(store_failure)?;
        if !forgotten {
            return Err(Stop::Gone);
        }
        Ok(Followed::Failed(failure))
    }

    /// Waits on every restore job the policy left going (the scheduler stopped while it
    /// ran): one that succeeded makes its restore point imported by this run; after one
    /// that failed, the restore point is new again and restored by this attempt.
    async fn settle_restoring(&self, def: &Schedule, run: &mut ScheduleRun) -> Result<(), Stop> {
        let imports = self
            .inner
            .store
            .imports(&def.id)
            .await
            .map_err(store_failure)?;
        for (rp_id, import) in imports {
            let Import::Restoring { job_id } = import else {
                continue;
            };
            info!(restore_point = %rp_id, job = %job_id,
                "waiting on the restore job left going before the scheduler stopped");
            if !run.job_ids.contains(&job_id) {
                run.job_ids.push(job_id.clone());
            }
            match self.follow_restore(def, run, &rp_id, &job_id).await? {
                Followed::Succeeded => {}
                Followed::Failed(e) => {
                    warn!(restore_point = %rp_id, job = %job_id, error = %e.detail.message,
                        "the restore job left going failed; the restore point is restored again");
                    continue;
                }
            }
            let recorded = self
                .inner
                .store
                .set_imports(
                    &def.id,
                    &run.id,
                    vec![rp_id.clone()],
                    Some(Import::Done),
                    now_ms(),
                )
                .await
                .map_err(store_failure)?;
            if !recorded {
                return Err(Stop::Gone);
            }
            run.restore_points_imported += 1;
            run.imported_restore_point_ids.push(rp_id.clone());
            run.restore_point_id = rp_id;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(id: &str, ns: &str, selector: &str, seconds: i64) -> RestorePoint {
        RestorePoint {
            id: id.into(),
            application: Some(ApplicationSelector {
                namespace: ns.into(),
                label_selector: selector.into(),
                ..Default::default()
            }),
            created_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    fn ids(groups: &[Vec<RestorePoint>]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|g| g.iter().map(|r| r.id.as_str()).collect())
            .collect()
    }

    #[test]
    fn each_application_is_restored_once_from_its_newest_restore_point() {
        let mut new = vec![
            rp("shop-2", "shop", "", 20),
            rp("web-1", "web", "", 15),
            rp("shop-1", "shop", "", 10),
            rp("db-1", "shop", "app=db", 30),
            rp("shop-3", "shop", "", 40),
        ];
        new.sort_by_key(age_key);
        let groups = by_application(new);
        // Oldest group first by its newest member; each group oldest first.
        assert_eq!(
            ids(&groups),
            vec![
                vec!["web-1"],
                vec!["db-1"],
                vec!["shop-1", "shop-2", "shop-3"]
            ]
        );
        assert!(by_application(Vec::new()).is_empty());
    }
}
