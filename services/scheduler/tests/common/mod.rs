//! A schedule bench on real parts: the test environment's two clusters, the transfer
//! service over real gRPC (objects only, so no agents or repository), and the scheduler
//! over real gRPC starting its jobs through that transfer service.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1::scheduler_service_client::SchedulerServiceClient;
use ferry_proto::v1::transfer_service_client::TransferServiceClient;
use ferry_proto::v1::{
    ApplicationSelector, ApplyOptions, ClusterRef, CreateScheduleRequest, DeleteScheduleRequest,
    ExistingObjectPolicy, GetJobRequest, GetScheduleRequest, Job, JobRef, ListRunsRequest,
    ResumeScheduleRequest, RetryPolicy, RunNowRequest, RunState, Schedule, ScheduleRun,
    StartMigrationRequest, SuspendScheduleRequest, cluster_ref, create_schedule_request,
};
use ferry_scheduler::{RetryDefaults, Scheduler, SchedulerConfig, TransferJobs};
use ferry_transfer::{
    Deps, ProfileRepositories, StaticAgents, StaticClusters, Transfer, TransferConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::Channel;

/// Shortest interval the bench's scheduler accepts.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);
/// How long a wait for runs may take before the test fails.
pub const LONG: Duration = Duration::from_secs(60);

pub struct Bench {
    pub a: Client,
    pub b: Client,
    root: tempfile::TempDir,
    transfer_stop: CancellationToken,
    transfer_endpoint: String,
    pub transfer: TransferServiceClient<Channel>,
    scheduler: Scheduler,
    scheduler_stop: CancellationToken,
    pub client: SchedulerServiceClient<Channel>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.scheduler_stop.cancel();
        self.transfer_stop.cancel();
    }
}

async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("http://{addr}"))
}

impl Bench {
    pub async fn start() -> Bench {
        let env = ferry_testenv::shared().await.expect("test environment");
        let a = env.client("a", "admin").await.unwrap();
        let b = env.client("b", "admin").await.unwrap();
        let root = tempfile::tempdir().unwrap();

        let deps = Deps {
            clusters: Arc::new(
                StaticClusters::new()
                    .with("a", a.clone())
                    .with("b", b.clone()),
            ),
            // Objects only: no volume data, so no agents and no repository.
            agents: Arc::new(StaticAgents::new()),
            repositories: Arc::new(ProfileRepositories::dir(root.path().join("profiles"))),
            handover: None,
        };
        let mut config =
            TransferConfig::new(root.path().join("transfer"), root.path().join("volumes"));
        // Gated jobs (see `gate`) are held in the quiesce step until a test opens them.
        config.quiesce_timeout = Duration::from_secs(120);
        let transfer = Transfer::open(config, deps).await.expect("open transfer");
        let (listener, transfer_endpoint) = listen().await;
        let transfer_stop = CancellationToken::new();
        tokio::spawn(ferry_transfer::serve_with(
            transfer,
            listener,
            transfer_stop.clone(),
            Duration::from_secs(1),
        ));
        let transfer_client = TransferServiceClient::connect(transfer_endpoint.clone())
            .await
            .expect("connect to transfer");

        let (scheduler, scheduler_stop, client) =
            start_scheduler(root.path(), &transfer_endpoint).await;
        Bench {
            a,
            b,
            root,
            transfer_stop,
            transfer_endpoint,
            transfer: transfer_client,
            scheduler,
            scheduler_stop,
            client,
        }
    }

    /// Stops the scheduler (runs stay RUNNING in its store, their jobs go on) and starts
    /// a new one on the same data directory.
    pub async fn restart_scheduler(&mut self) {
        self.scheduler.shutdown().await;
        self.scheduler_stop.cancel();
        let (scheduler, stop, client) =
            start_scheduler(self.root.path(), &self.transfer_endpoint).await;
        self.scheduler = scheduler;
        self.scheduler_stop = stop;
        self.client = client;
    }

    pub async fn create(&self, req: CreateScheduleRequest) -> Schedule {
        self.client
            .clone()
            .create_schedule(req)
            .await
            .unwrap_or_else(|s| panic!("create schedule: {s:?}"))
            .into_inner()
            .schedule
            .unwrap()
    }

    pub async fn runs(&self, schedule: &str) -> Vec<ScheduleRun> {
        self.client
            .clone()
            .list_runs(ListRunsRequest {
                schedule: schedule.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .runs
    }

    pub async fn job(&self, id: &str) -> Job {
        self.transfer
            .clone()
            .get_job(GetJobRequest {
                job: Some(JobRef { id: id.into() }),
            })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap()
    }

    pub async fn get(&self, schedule: &str) -> Result<Schedule, Status> {
        let req = GetScheduleRequest {
            schedule: schedule.into(),
        };
        let answer = self.client.clone().get_schedule(req).await?;
        Ok(answer.into_inner().schedule.unwrap())
    }

    pub async fn suspend(&self, schedule: &str) -> Schedule {
        let req = SuspendScheduleRequest {
            schedule: schedule.into(),
        };
        let answer = self.client.clone().suspend_schedule(req).await.unwrap();
        answer.into_inner().schedule.unwrap()
    }

    pub async fn resume(&self, schedule: &str) -> Schedule {
        let req = ResumeScheduleRequest {
            schedule: schedule.into(),
        };
        let answer = self.client.clone().resume_schedule(req).await.unwrap();
        answer.into_inner().schedule.unwrap()
    }

    pub async fn run_now(&self, schedule: &str) -> Result<ScheduleRun, Status> {
        let req = RunNowRequest {
            schedule: schedule.into(),
        };
        let answer = self.client.clone().run_now(req).await?;
        Ok(answer.into_inner().run.unwrap())
    }

    pub async fn delete(&self, schedule: &str) {
        let req = DeleteScheduleRequest {
            schedule: schedule.into(),
        };
        self.client.clone().delete_schedule(req).await.unwrap();
    }

    /// Waits until no run of the schedule is going.
    pub async fn settled(&self, schedule: &str) -> Vec<ScheduleRun> {
        self.runs_until(schedule, "runs in progress to end", LONG, |runs| {
            runs.iter().all(|r| state(r) != RunState::Running)
        })
        .await
    }

    /// Waits until run `id` is in `want`; returns the schedule's runs.
    pub async fn run_ends(&self, schedule: &str, id: &str, want: RunState) -> Vec<ScheduleRun> {
        let what = format!("run {id} to be {want:?}");
        self.runs_until(schedule, &what, LONG, |runs| {
            runs.iter().any(|r| r.id == id && state(r) == want)
        })
        .await
    }

    /// Waits until the newest run is in `want`; returns it.
    pub async fn newest_ends(&self, schedule: &str, want: RunState) -> ScheduleRun {
        let what = format!("the newest run to be {want:?}");
        let runs = self
            .runs_until(schedule, &what, LONG, |runs| {
                runs.first().is_some_and(|r| state(r) == want)
            })
            .await;
        runs[0].clone()
    }

    /// Polls the schedule's runs until `f` holds; returns them (newest first).
    pub async fn runs_until(
        &self,
        schedule: &str,
        what: &str,
        timeout: Duration,
        f: impl Fn(&[ScheduleRun]) -> bool,
    ) -> Vec<ScheduleRun> {
        let start = Instant::now();
        loop {
            let runs = self.runs(schedule).await;
            if f(&runs) {
                return runs;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}; runs: {runs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn start_scheduler(
    root: &std::path::Path,
    transfer: &str,
) -> (
    Scheduler,
    CancellationToken,
    SchedulerServiceClient<Channel>,
) {
    let mut config = SchedulerConfig::new(root.join("scheduler"));
    config.min_interval = MIN_INTERVAL;
    config.tick = Duration::from_millis(100);
    config.retry = RetryDefaults {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(2),
    };
    let jobs = TransferJobs::lazy(transfer).unwrap();
    let scheduler = Scheduler::open(config, Arc::new(jobs))
        .await
        .expect("open scheduler");
    let (listener, endpoint) = listen().await;
    let stop = CancellationToken::new();
    tokio::spawn(ferry_scheduler::serve(
        scheduler.clone(),
        listener,
        stop.clone(),
    ));
    let client = SchedulerServiceClient::connect(endpoint)
        .await
        .expect("connect to scheduler");
    (scheduler, stop, client)
}

/// A migration of `ns` from cluster a to b, objects only, updating what exists.
pub fn migration(ns: &str) -> StartMigrationRequest {
    let context = |c: &str| ClusterRef {
        target: Some(cluster_ref::Target::Context(c.into())),
    };
    StartMigrationRequest {
        source: Some(context("a")),
        destination: Some(context("b")),
        application: Some(ApplicationSelector {
            namespace: ns.into(),
            ..Default::default()
        }),
        apply: Some(ApplyOptions {
            existing_object_policy: ExistingObjectPolicy::Update as i32,
            ..Default::default()
        }),
        skip_volume_data: true,
        ..Default::default()
    }
}

pub fn every(seconds: i64) -> create_schedule_request::Trigger {
    create_schedule_request::Trigger::Interval(prost_types::Duration { seconds, nanos: 0 })
}

pub fn schedule(
    name: &str,
    trigger: create_schedule_request::Trigger,
    m: StartMigrationRequest,
) -> CreateScheduleRequest {
    CreateScheduleRequest {
        name: name.into(),
        trigger: Some(trigger),
        spec: Some(create_schedule_request::Spec::Migration(m)),
        ..Default::default()
    }
}

pub fn retry(max_attempts: u32, initial_ms: u64, max_ms: u64) -> RetryPolicy {
    let d = |ms: u64| prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    };
    RetryPolicy {
        max_attempts,
        initial_backoff: Some(d(initial_ms)),
        max_backoff: Some(d(max_ms)),
    }
}

pub fn state(r: &ScheduleRun) -> RunState {
    RunState::try_from(r.state).unwrap()
}

pub fn seconds(t: Option<&prost_types::Timestamp>) -> f64 {
    let t = t.expect("timestamp");
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

async fn create<K>(api: Api<K>, object: serde_json::Value)
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {object:?}: {e}"));
}

/// A namespace on cluster a holding ConfigMap `settings` with `greeting`.
pub async fn application(a: &Client, ns: &str, greeting: &str) {
    create(
        Api::<Namespace>::all(a.clone()),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await;
    create(
        Api::<ConfigMap>::namespaced(a.clone(), ns),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "settings", "namespace": ns},
               "data": {"greeting": greeting}}),
    )
    .await;
}

fn merge(patch: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(patch)
}

pub async fn set_greeting(c: &Client, ns: &str, greeting: &str) {
    let patch = merge(json!({"data": {"greeting": greeting}}));
    Api::<ConfigMap>::namespaced(c.clone(), ns)
        .patch("settings", &PatchParams::default(), &patch)
        .await
        .unwrap();
}

pub async fn greeting(c: &Client, ns: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(c.clone(), ns)
        .get_opt("settings")
        .await
        .unwrap()
        .and_then(|cm| cm.data?.get("greeting").cloned())
}

/// A Deployment `web` on cluster a that a migration with `quiesce_source` waits on.
///
/// No controller runs Deployments in the test clusters, so `status.replicas` is whatever
/// the test writes: while it says 1, the quiesce step waits for the pods to stop and the
/// job stays RUNNING; [`set_gate`] with `open` lets it go on. A real, slow job, at will.
pub async fn gated_workload(a: &Client, ns: &str) {
    create(
        Api::<Deployment>::namespaced(a.clone(), ns),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": ns},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "example.com/web:1"}]}}}}),
    )
    .await;
    set_gate(a, ns, false).await;
}

pub async fn set_gate(a: &Client, ns: &str, open: bool) {
    let patch = merge(json!({"status": {"replicas": if open { 0 } else { 1 }}}));
    Api::<Deployment>::namespaced(a.clone(), ns)
        .patch_status("web", &PatchParams::default(), &patch)
        .await
        .unwrap();
}

pub use ferry_testenv::eventually;
