//! Import policies in the scheduler's engine, over its real gRPC API and its real store,
//! with the other services scripted (`ScriptedJobs`): a catalog whose repository
//! listing the test sets and can make fail, and a transfer service whose restore jobs
//! end when the test says. What this checks is the policy's own bookkeeping: what is
//! new, what was imported, what a run records, across retries and restarts. The real
//! services, clusters and bucket are in cli/tests/import_policy.rs.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1::scheduler_service_client::SchedulerServiceClient;
use ferry_proto::v1::{
    ApplicationSelector, ApplyOptions, CreateScheduleRequest, ErrorCode, ImportPolicySpec,
    JobState, ListRunsRequest, Profile, ProfileKind, RepositoryRef, RestorePoint, RetryPolicy,
    RunNowRequest, RunState, Schedule, ScheduleRun, StartExportRequest, StartMigrationRequest,
    StartRestoreRequest, create_schedule_request,
};
use ferry_scheduler::{JobError, JobOutcome, Jobs, RetryDefaults, Scheduler, SchedulerConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

const REPOSITORY_ID: &str = "repo-0001";
const LABEL: &str = "ferry.dev/import-policy";

/// What the scripted catalog and transfer service hold and have been asked.
#[derive(Debug, Default)]
struct Script {
    profiles: HashMap<String, Profile>,
    /// The repository's restore points, as a listing returns them.
    points: Vec<RestorePoint>,
    /// The next this many listings fail as an unreachable store would.
    list_failures: u32,
    /// Every catalog call fails as an unreachable catalog would.
    catalog_down: bool,
    labels: HashMap<String, HashMap<String, String>>,
    /// Restores started, oldest first; job `job-<n>` is restores[n - 1].
    restores: Vec<StartRestoreRequest>,
    jobs: HashMap<String, watch::Sender<Option<JobState>>>,
    /// The state new restore jobs end in at once; `None` holds them until `finish`.
    end_restores_as: Option<JobState>,
}

#[derive(Debug, Clone, Default)]
struct ScriptedJobs(Arc<parking_lot::Mutex<Script>>);

fn store_down(what: &str) -> JobError {
    JobError {
        detail: Box::new(ferry_rpc::error_detail(
            ErrorCode::Unreachable,
            format!("{what}: the store did not answer"),
            "check the endpoint",
        )),
        retryable: true,
    }
}

#[async_trait::async_trait]
impl Jobs for ScriptedJobs {
    async fn start_migration(&self, _: StartMigrationRequest) -> Result<String, JobError> {
        unreachable!("no migrations here")
    }

    async fn start_export(&self, _: StartExportRequest) -> Result<String, JobError> {
        unreachable!("no exports here")
    }

    async fn start_restore(&self, request: StartRestoreRequest) -> Result<String, JobError> {
        let mut s = self.0.lock();
        s.restores.push(request);
        let id = format!("job-{}", s.restores.len());
        let (tx, _) = watch::channel(s.end_restores_as);
        s.jobs.insert(id.clone(), tx);
        Ok(id)
    }

    async fn wait(&self, job_id: &str) -> Result<JobOutcome, JobError> {
        let rx = self.0.lock().jobs.get(job_id).map(watch::Sender::subscribe);
        let Some(mut rx) = rx else {
            return Err(JobError {
                detail: Box::new(ferry_rpc::error_detail(
                    ErrorCode::NotFound,
                    format!("job {job_id} not found"),
                    "",
                )),
                retryable: false,
            });
        };
        loop {
            if let Some(state) = *rx.borrow_and_update() {
                let error = (state != JobState::Succeeded).then(|| {
                    ferry_rpc::error_detail(
                        ErrorCode::Unreachable,
                        format!("job {job_id}: the restore could not read the repository"),
                        "check the bucket",
                    )
                });
                return Ok(JobOutcome {
                    state,
                    error,
                    restore_point_id: String::new(),
                });
            }
            if rx.changed().await.is_err() {
                return Err(store_down("following the job"));
            }
        }
    }

    async fn profile(&self, name: &str) -> Result<Option<Profile>, JobError> {
        let s = self.0.lock();
        if s.catalog_down {
            return Err(store_down("reading the profile"));
        }
        Ok(s.profiles.get(name).cloned())
    }

    async fn restore_points(
        &self,
        repository: &RepositoryRef,
        namespace: &str,
    ) -> Result<Vec<RestorePoint>, JobError> {
        let mut s = self.0.lock();
        assert_eq!(
            repository.repository_id, REPOSITORY_ID,
            "pinned at creation"
        );
        if s.catalog_down {
            return Err(store_down("listing restore points"));
        }
        if s.list_failures > 0 {
            s.list_failures -= 1;
            return Err(store_down("listing restore points"));
        }
        Ok(s.points
            .iter()
            .filter(|rp| {
                namespace.is_empty() || rp.application.as_ref().unwrap().namespace == namespace
            })
            .cloned()
            .collect())
    }

    async fn label_restore_point(
        &self,
        _repository: &RepositoryRef,
        id: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), JobError> {
        let mut s = self.0.lock();
        if s.catalog_down {
            return Err(store_down("labelling"));
        }
        s.labels.entry(id.to_owned()).or_default().extend(labels);
        Ok(())
    }
}

impl ScriptedJobs {
    fn with_profiles() -> ScriptedJobs {
        let jobs = ScriptedJobs::default();
        {
            let mut s = jobs.0.lock();
            for (name, kind) in [("in", ProfileKind::Import), ("out", ProfileKind::Export)] {
                s.profiles.insert(
                    name.into(),
                    Profile {
                        name: name.into(),
                        kind: kind as i32,
                        repository_id: REPOSITORY_ID.into(),
                        ..Default::default()
                    },
                );
            }
            s.end_restores_as = Some(JobState::Succeeded);
        }
        jobs
    }

    fn add_point(&self, id: &str, namespace: &str, seconds: i64) {
        self.0.lock().points.push(RestorePoint {
            id: id.into(),
            application: Some(ApplicationSelector {
                namespace: namespace.into(),
                ..Default::default()
            }),
            created_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        });
    }

    fn restored(&self) -> Vec<String> {
        let s = self.0.lock();
        s.restores
            .iter()
            .map(|r| r.restore_point_id.clone())
            .collect()
    }

    fn finish(&self, job_id: &str, state: JobState) {
        let s = self.0.lock();
        s.jobs.get(job_id).unwrap().send_replace(Some(state));
    }
}

/// A scheduler on a real store and a real gRPC server, restartable on the same state.
struct Bench {
    dir: tempfile::TempDir,
    jobs: ScriptedJobs,
    scheduler: Scheduler,
    stop: CancellationToken,
    client: SchedulerServiceClient<Channel>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(
    dir: &std::path::Path,
    jobs: &ScriptedJobs,
) -> (
    Scheduler,
    CancellationToken,
    SchedulerServiceClient<Channel>,
) {
    let mut config = SchedulerConfig::new(dir);
    config.min_interval = Duration::from_secs(1);
    config.tick = Duration::from_millis(100);
    config.retry = RetryDefaults {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(200),
    };
    let scheduler = Scheduler::open(config, Arc::new(jobs.clone()))
        .await
        .expect("open scheduler");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(ferry_scheduler::serve(
        scheduler.clone(),
        listener,
        stop.clone(),
    ));
    let client = SchedulerServiceClient::connect(endpoint).await.unwrap();
    (scheduler, stop, client)
}

impl Bench {
    async fn new(jobs: ScriptedJobs) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let (scheduler, stop, client) = start(dir.path(), &jobs).await;
        Bench {
            dir,
            jobs,
            scheduler,
            stop,
            client,
        }
    }

    /// Stops the scheduler (a run in progress stays RUNNING in the store) and starts a
    /// new one on the same state.
    async fn restart(&mut self) {
        self.scheduler.shutdown().await;
        self.stop.cancel();
        let (scheduler, stop, client) = start(self.dir.path(), &self.jobs).await;
        self.scheduler = scheduler;
        self.stop = stop;
        self.client = client;
    }

    async fn create(&self, req: CreateScheduleRequest) -> Result<Schedule, tonic::Status> {
        let answer = self.client.clone().create_schedule(req).await?;
        Ok(answer.into_inner().schedule.unwrap())
    }

    async fn run_now(&self, name: &str) -> ScheduleRun {
        let req = RunNowRequest {
            schedule: name.into(),
        };
        self.client
            .clone()
            .run_now(req)
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap()
    }

    async fn runs(&self, name: &str) -> Vec<ScheduleRun> {
        let req = ListRunsRequest {
            schedule: name.into(),
            ..Default::default()
        };
        self.client
            .clone()
            .list_runs(req)
            .await
            .unwrap()
            .into_inner()
            .runs
    }

    /// Waits until run `id` is no longer RUNNING; returns it.
    async fn ended(&self, name: &str, id: &str) -> ScheduleRun {
        let start = Instant::now();
        loop {
            let runs = self.runs(name).await;
            if let Some(r) = runs
                .iter()
                .find(|r| r.id == id && r.state() != RunState::Running)
            {
                return r.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "run {id} never ended: {runs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// RunNow, then wait for the run to end.
    async fn run(&self, name: &str) -> ScheduleRun {
        let run = self.run_now(name).await;
        self.ended(name, &run.id).await
    }
}

fn policy(name: &str, profile: &str, restore: bool) -> CreateScheduleRequest {
    CreateScheduleRequest {
        name: name.into(),
        trigger: Some(create_schedule_request::Trigger::Interval(
            prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            },
        )),
        spec: Some(create_schedule_request::Spec::ImportPolicy(
            ImportPolicySpec {
                repository: Some(RepositoryRef {
                    profile: profile.into(),
                    repository_id: String::new(),
                }),
                application: Some(ApplicationSelector {
                    namespace: "shop".into(),
                    ..Default::default()
                }),
                destination: None,
                apply: Some(ApplyOptions {
                    namespace_mapping: HashMap::from([("shop".into(), "shop-dr".into())]),
                    ..Default::default()
                }),
                restore,
            },
        )),
        ..Default::default()
    }
}

/// The first run imports and restores what the bucket holds; a run over an unchanged
/// bucket does nothing (no job) and says so; new restore points are imported once, the
/// application restored once from the newest; a restarted scheduler imports nothing
/// again; a listing that fails fails the run instead of finding "nothing new".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_policy_imports_each_restore_point_once() {
    let jobs = ScriptedJobs::with_profiles();
    jobs.add_point("p1", "shop", 10);
    jobs.add_point("other", "web", 15);
    let mut bench = Bench::new(jobs.clone()).await;

    let created = bench.create(policy("shop-in", "in", true)).await.unwrap();
    let Some(ferry_proto::v1::schedule::Spec::ImportPolicy(spec)) = &created.spec else {
        panic!("not an import policy: {created:?}");
    };
    assert_eq!(
        spec.repository.as_ref().unwrap().repository_id,
        REPOSITORY_ID
    );

    let first = bench.run("shop-in").await;
    assert_eq!(first.state(), RunState::Succeeded, "{first:#?}");
    assert_eq!(
        (first.restore_points_found, first.restore_points_imported),
        (1, 1),
        "{first:#?}"
    );
    assert_eq!(first.imported_restore_point_ids, vec!["p1"]);
    assert_eq!(first.restore_point_id, "p1");
    assert_eq!(first.job_ids, vec!["job-1"]);
    {
        let s = jobs.0.lock();
        let r = &s.restores[0];
        assert_eq!(r.restore_point_id, "p1");
        assert_eq!(
            r.schedule_id, created.id,
            "the job is an IMPORT of this policy"
        );
        assert_eq!(r.application.as_ref().unwrap().namespace, "shop");
        assert_eq!(
            r.apply.as_ref().unwrap().namespace_mapping["shop"],
            "shop-dr"
        );
        assert_eq!(s.labels["p1"][LABEL], "shop-in");
        assert!(!s.labels.contains_key("other"), "another namespace's");
    }

    // The bucket did not change: nothing imported, no job started.
    let idle = bench.run("shop-in").await;
    assert_eq!(idle.state(), RunState::NothingToDo, "{idle:#?}");
    assert_eq!(
        (idle.restore_points_found, idle.restore_points_imported),
        (1, 0)
    );
    assert!(idle.job_ids.is_empty() && idle.imported_restore_point_ids.is_empty());
    assert_eq!(jobs.restored(), vec!["p1"]);

    // Two new exports: both imported, the application restored once, from the newest.
    jobs.add_point("p3", "shop", 30);
    jobs.add_point("p2", "shop", 20);
    let second = bench.run("shop-in").await;
    assert_eq!(second.state(), RunState::Succeeded, "{second:#?}");
    assert_eq!(
        (second.restore_points_found, second.restore_points_imported),
        (3, 2)
    );
    assert_eq!(second.imported_restore_point_ids, vec!["p2", "p3"]);
    assert_eq!(second.restore_point_id, "p3");
    assert_eq!(jobs.restored(), vec!["p1", "p3"]);
    assert_eq!(
        jobs.0.lock().labels["p2"][LABEL],
        "shop-in",
        "superseded, still imported"
    );

    // A restarted scheduler remembers what the policy imported.
    bench.restart().await;
    let after = bench.run("shop-in").await;
    assert_eq!(after.state(), RunState::NothingToDo, "{after:#?}");
    assert_eq!(jobs.restored(), vec!["p1", "p3"]);

    // The bucket unreachable: the run fails, it does not conclude "nothing new".
    jobs.0.lock().list_failures = u32::MAX;
    let failed = bench.run("shop-in").await;
    assert_eq!(failed.state(), RunState::Failed, "{failed:#?}");
    let error = failed.error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::Unreachable as i32, "{error:?}");
    assert!(
        error.message.contains("listing restore points"),
        "{error:?}"
    );
    assert!(failed.job_ids.is_empty());
    assert_eq!(failed.restore_points_imported, 0);
    assert_eq!(jobs.restored(), vec!["p1", "p3"]);

    // A listing that fails once is retried within the run.
    let mut req = policy("retried", "in", false);
    req.retry = Some(RetryPolicy {
        max_attempts: 2,
        initial_backoff: Some(prost_types::Duration {
            seconds: 0,
            nanos: 100_000_000,
        }),
        max_backoff: None,
    });
    bench.create(req).await.unwrap();
    jobs.0.lock().list_failures = 1;
    let retried = bench.run("retried").await;
    assert_eq!(retried.state(), RunState::Succeeded, "{retried:#?}");
    assert_eq!(retried.attempts, 2);
    assert!(retried.error.is_none());
    // Import only: labelled, not restored.
    assert_eq!(retried.restore_points_imported, 3);
    assert!(retried.job_ids.is_empty());
    assert_eq!(jobs.restored(), vec!["p1", "p3"]);
    assert_eq!(jobs.0.lock().labels["p1"][LABEL], "retried");
}

/// A restore that fails fails the run and leaves the restore point new: the next run
/// restores it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_is_tried_again_by_the_next_run() {
    let jobs = ScriptedJobs::with_profiles();
    jobs.add_point("p1", "shop", 10);
    jobs.0.lock().end_restores_as = Some(JobState::Failed);
    let bench = Bench::new(jobs.clone()).await;
    bench.create(policy("shop-in", "in", true)).await.unwrap();

    let failed = bench.run("shop-in").await;
    assert_eq!(failed.state(), RunState::Failed, "{failed:#?}");
    assert_eq!(failed.restore_points_imported, 0);
    assert_eq!(failed.job_ids, vec!["job-1"]);
    let error = failed.error.unwrap();
    assert!(
        error.message.contains("job-1"),
        "the job's own error: {error:?}"
    );

    jobs.0.lock().end_restores_as = Some(JobState::Succeeded);
    let again = bench.run("shop-in").await;
    assert_eq!(again.state(), RunState::Succeeded, "{again:#?}");
    assert_eq!(again.imported_restore_point_ids, vec!["p1"]);
    assert_eq!(again.job_ids, vec!["job-2"]);
    assert_eq!(jobs.restored(), vec!["p1", "p1"]);
}

/// A scheduler stopped while a restore job goes waits on that job when it starts
/// again: no second restore of the same restore point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_waits_on_the_restore_it_left_going() {
    let jobs = ScriptedJobs::with_profiles();
    jobs.add_point("p1", "shop", 10);
    jobs.0.lock().end_restores_as = None;
    let mut bench = Bench::new(jobs.clone()).await;
    bench.create(policy("shop-in", "in", true)).await.unwrap();

    let run = bench.run_now("shop-in").await;
    let start = Instant::now();
    while bench.runs("shop-in").await[0].job_ids.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no restore started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bench.restart().await;
    assert_eq!(bench.runs("shop-in").await[0].state(), RunState::Running);
    jobs.finish("job-1", JobState::Succeeded);
    let done = bench.ended("shop-in", &run.id).await;
    assert_eq!(done.state(), RunState::Succeeded, "{done:#?}");
    assert_eq!(done.job_ids, vec!["job-1"], "waited on the same job");
    assert_eq!(done.imported_restore_point_ids, vec!["p1"]);
    assert_eq!(jobs.restored(), vec!["p1"], "restored once");

    let idle = bench.run("shop-in").await;
    assert_eq!(idle.state(), RunState::NothingToDo, "{idle:#?}");
}

/// CreateSchedule asks the catalog: the profile must exist and be an import profile,
/// and a catalog that does not answer refuses the request as unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_policy_needs_an_import_profile_of_the_catalog() {
    let jobs = ScriptedJobs::with_profiles();
    let bench = Bench::new(jobs.clone()).await;
    let detail = |s: &tonic::Status| ferry_rpc::detail(s).unwrap();

    let e = bench.create(policy("a", "nope", true)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let d = detail(&e);
    assert!(d.message.contains("no profile \"nope\""), "{d:?}");
    assert!(d.hint.contains("--migration-token-file"), "{d:?}");

    let e = bench.create(policy("b", "out", true)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        detail(&e).message.contains("not an import profile"),
        "{e:?}"
    );

    let mut pinned = policy("c", "in", true);
    if let Some(create_schedule_request::Spec::ImportPolicy(p)) = &mut pinned.spec {
        p.repository.as_mut().unwrap().repository_id = "repo-other".into();
    }
    let e = bench.create(pinned).await.unwrap_err();
    assert!(detail(&e).message.contains("repository_id"), "{e:?}");

    jobs.0.lock().catalog_down = true;
    let e = bench.create(policy("d", "in", true)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(detail(&e).code, ErrorCode::Unreachable as i32);
}
