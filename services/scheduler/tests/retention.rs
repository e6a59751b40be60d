//! Retention in the scheduler's engine, with its real store and the other services
//! scripted (`ScriptedJobs`): export jobs that succeed or fail at once, and a catalog
//! whose PruneRepository answers what the test says. What this checks is the
//! scheduler's part: which call a successful run makes, what the run records, that a
//! locked repository (or any retention failure) never fails a run whose job succeeded,
//! and that the next run tries again. The real catalog, clusters and bucket are in
//! cli/tests/retention.rs.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1::{
    ApplicationSelector, CreateScheduleRequest, ErrorCode, ImportPolicySpec, JobState, Profile,
    PruneRepositoryRequest, PruneRepositoryResponse, RepositoryRef, RestorePoint, Retention,
    RunState, ScheduleRun, StartExportRequest, StartMigrationRequest, StartRestoreRequest,
    create_schedule_request,
};
use ferry_scheduler::{JobError, JobOutcome, Jobs, Scheduler, SchedulerConfig};

/// What PruneRepository answers next.
#[derive(Debug, Clone)]
enum Answer {
    /// Removed this many restore points.
    Removed(usize),
    /// Another writer holds the repository.
    Locked,
    /// The engine refused (a clock too far off, say).
    Refused,
}

#[derive(Debug, Default)]
struct Script {
    exports: u32,
    /// The state export jobs end in.
    fail_exports: bool,
    answers: VecDeque<Answer>,
    prunes: Vec<PruneRepositoryRequest>,
}

#[derive(Debug, Clone, Default)]
struct ScriptedJobs(Arc<parking_lot::Mutex<Script>>);

#[async_trait::async_trait]
impl Jobs for ScriptedJobs {
    async fn start_migration(&self, _: StartMigrationRequest) -> Result<String, JobError> {
        unreachable!("exports only here")
    }

    async fn start_export(&self, _: StartExportRequest) -> Result<String, JobError> {
        let mut s = self.0.lock();
        s.exports += 1;
        Ok(format!("job-{}", s.exports))
    }

    async fn start_restore(&self, _: StartRestoreRequest) -> Result<String, JobError> {
        unreachable!("no restores here")
    }

    async fn wait(&self, job_id: &str) -> Result<JobOutcome, JobError> {
        let failed = self.0.lock().fail_exports;
        Ok(JobOutcome {
            state: if failed {
                JobState::Failed
            } else {
                JobState::Succeeded
            },
            error: None,
            restore_point_id: if failed {
                String::new()
            } else {
                format!("rp-of-{job_id}")
            },
        })
    }

    async fn profile(&self, _: &str) -> Result<Option<Profile>, JobError> {
        Ok(None)
    }

    async fn restore_points(
        &self,
        _: &RepositoryRef,
        _: &str,
    ) -> Result<Vec<RestorePoint>, JobError> {
        unreachable!("no import policies here")
    }

    async fn label_restore_point(
        &self,
        _: &RepositoryRef,
        _: &str,
        _: std::collections::HashMap<String, String>,
    ) -> Result<(), JobError> {
        unreachable!("no import policies here")
    }

    async fn prune_repository(
        &self,
        request: PruneRepositoryRequest,
    ) -> Result<PruneRepositoryResponse, JobError> {
        let mut s = self.0.lock();
        s.prunes.push(request);
        let refused = |code: ErrorCode, message: &str| JobError {
            detail: Box::new(ferry_rpc::error_detail(code, message, "see the catalog")),
            retryable: code == ErrorCode::RepositoryLocked,
        };
        match s.answers.pop_front().unwrap_or(Answer::Removed(0)) {
            Answer::Removed(n) => Ok(PruneRepositoryResponse {
                restore_points_removed: (0..n)
                    .map(|i| RestorePoint {
                        id: format!("old-{i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            Answer::Locked => Err(refused(
                ErrorCode::RepositoryLocked,
                "repository is locked by an export",
            )),
            Answer::Refused => Err(refused(
                ErrorCode::Internal,
                "this machine's clock is 400 s ahead of the store's",
            )),
        }
    }
}

fn export_schedule(
    name: &str,
    profile: &str,
    retention: Option<Retention>,
) -> CreateScheduleRequest {
    CreateScheduleRequest {
        name: name.into(),
        trigger: Some(create_schedule_request::Trigger::Interval(
            prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            },
        )),
        spec: Some(create_schedule_request::Spec::Export(StartExportRequest {
            application: Some(ApplicationSelector {
                namespace: "shop".into(),
                ..Default::default()
            }),
            repository: (!profile.is_empty()).then(|| RepositoryRef {
                profile: profile.into(),
                repository_id: String::new(),
            }),
            ..Default::default()
        })),
        retention,
        ..Default::default()
    }
}

fn keep(keep_last: u32, max_age_s: Option<i64>) -> Option<Retention> {
    Some(Retention {
        keep_last,
        max_age: max_age_s.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
    })
}

/// Starts a run now and waits until it is final.
async fn run_once(scheduler: &Scheduler, schedule: &str) -> ScheduleRun {
    let started = scheduler.run_now(schedule).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (runs, _) = scheduler.runs(schedule, 10, "").await.unwrap();
        let run = runs.into_iter().find(|r| r.id == started.id).unwrap();
        if run.state != RunState::Running as i32 {
            return run;
        }
        assert!(Instant::now() < deadline, "run {run:?} never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_successful_run_prunes_its_application_and_a_locked_repository_fails_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = ScriptedJobs::default();
    let scheduler = Scheduler::open(SchedulerConfig::new(dir.path()), Arc::new(jobs.clone()))
        .await
        .unwrap();
    let created = scheduler
        .create(export_schedule("nightly", "out", keep(2, Some(7200))))
        .await
        .unwrap();
    assert_eq!(created.retention, keep(2, Some(7200)));

    // Pruned: the run records how many restore points went.
    jobs.0.lock().answers.push_back(Answer::Removed(3));
    let run = run_once(&scheduler, "nightly").await;
    assert_eq!(run.state, RunState::Succeeded as i32, "{run:?}");
    assert_eq!(run.restore_point_id, "rp-of-job-1");
    assert_eq!(run.restore_points_pruned, 3, "{run:?}");
    {
        let s = jobs.0.lock();
        assert_eq!(s.prunes.len(), 1);
        let asked = &s.prunes[0];
        assert_eq!(asked.namespace, "shop");
        assert_eq!(
            asked.repository.as_ref().map(|r| r.profile.as_str()),
            Some("out")
        );
        assert_eq!(asked.keep_last, 2);
        assert_eq!(asked.max_age.map(|d| d.seconds), Some(7200));
        assert!(!asked.dry_run);
    }

    // Locked, then refused: the runs still succeed, with nothing pruned; each run tries.
    jobs.0
        .lock()
        .answers
        .extend([Answer::Locked, Answer::Refused]);
    for expected_job in ["rp-of-job-2", "rp-of-job-3"] {
        let run = run_once(&scheduler, "nightly").await;
        assert_eq!(run.state, RunState::Succeeded as i32, "{run:?}");
        assert_eq!(run.restore_point_id, expected_job);
        assert_eq!(run.restore_points_pruned, 0, "{run:?}");
        assert!(run.error.is_none(), "{run:?}");
        assert_eq!(run.attempts, 1, "retention never retries the job: {run:?}");
    }
    assert_eq!(jobs.0.lock().prunes.len(), 3);

    // The next run catches up.
    jobs.0.lock().answers.push_back(Answer::Removed(2));
    let run = run_once(&scheduler, "nightly").await;
    assert_eq!(run.restore_points_pruned, 2, "{run:?}");

    // A failed job prunes nothing.
    jobs.0.lock().fail_exports = true;
    let mut failing = export_schedule("failing", "out", keep(1, None));
    failing.retry = Some(ferry_proto::v1::RetryPolicy {
        max_attempts: 1,
        ..Default::default()
    });
    scheduler.create(failing).await.unwrap();
    let before = jobs.0.lock().prunes.len();
    let run = run_once(&scheduler, "failing").await;
    assert_eq!(run.state, RunState::Failed as i32, "{run:?}");
    assert_eq!(jobs.0.lock().prunes.len(), before);

    // No retention, no call.
    jobs.0.lock().fail_exports = false;
    scheduler
        .create(export_schedule("keep-all", "out", keep(0, None)))
        .await
        .unwrap();
    let run = run_once(&scheduler, "keep-all").await;
    assert_eq!(run.state, RunState::Succeeded as i32, "{run:?}");
    assert_eq!(jobs.0.lock().prunes.len(), before);
    scheduler.shutdown().await;
}

#[tokio::test]
async fn retention_is_refused_where_it_could_not_work() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Scheduler::open(
        SchedulerConfig::new(dir.path()),
        Arc::new(ScriptedJobs::default()),
    )
    .await
    .unwrap();
    // Which repository? The transfer service's default is not the scheduler's to know.
    let e = scheduler
        .create(export_schedule("no-profile", "", keep(2, None)))
        .await
        .expect_err("no repository named");
    let detail = e.detail();
    assert_eq!(detail.code, ErrorCode::InvalidArgument as i32, "{detail:?}");
    assert!(
        detail.message.contains("export.repository.profile"),
        "{detail:?}"
    );
    // Too short an age could remove what a run just wrote.
    let e = scheduler
        .create(export_schedule("short", "out", keep(0, Some(30))))
        .await
        .expect_err("max_age of 30 s");
    assert!(e.to_string().contains("retention.max_age"), "{e}");
    // An import policy's profile only reads.
    let policy = CreateScheduleRequest {
        name: "import".into(),
        trigger: export_schedule("x", "", None).trigger,
        spec: Some(create_schedule_request::Spec::ImportPolicy(
            ImportPolicySpec {
                repository: Some(RepositoryRef {
                    profile: "in".into(),
                    repository_id: String::new(),
                }),
                ..Default::default()
            },
        )),
        retention: keep(3, None),
        ..Default::default()
    };
    let e = scheduler.create(policy).await.expect_err("import policy");
    assert!(e.detail().hint.contains("export schedule"), "{e:?}");
    scheduler.shutdown().await;
}
