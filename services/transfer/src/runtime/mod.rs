//! The job runtime: starts jobs, runs them on their own tasks under a concurrency
//! limit, keeps each one's state in memory and in the store, fans events out to
//! watchers, cancels, and on start resumes or ends what a previous process left running.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1::{
    ActivateRequest, ActivateResponse, ErrorDetail, Job, JobEvent, JobKind, JobReport, JobState,
    StepState, job_event,
};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{Instrument, info, info_span, warn};

use crate::access::Actor;
use crate::deps::{Agents, Clusters, Handover, Repositories};
use crate::error::{Result, TransferError};
use crate::job::{self, Checkpoint, steps};
use crate::store::{JobStore, ListQuery, StoredJob, is_final};

/// Settings of the transfer service.
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// Where `transfer.db` lives.
    pub data_dir: PathBuf,
    /// Directory on destination nodes under which restored volumes are created as
    /// hostPath volumes, one `<root>/<namespace>/<claim>` per claim, when the
    /// destination's agent names none of its own (GetInfo's volume_root); the destination
    /// agents must be allowed to write there. None (and no agent root): each claim is
    /// provisioned through its StorageClass and restored through a mover pod.
    pub volume_root: Option<PathBuf>,
    /// How mover pods are made.
    pub mover: crate::mover::MoverConfig,
    /// Profile used when a request names no repository.
    pub default_profile: Option<String>,
    /// Jobs running at once; more wait QUEUED.
    pub max_concurrent_jobs: usize,
    /// Volumes of one job moved at once.
    pub volume_concurrency: usize,
    /// Times a job is resumed after restarts before it is failed instead (a job that
    /// takes the service down with it must not do so forever).
    pub max_attempts: u32,
    /// How long the quiesce pre-hook waits for the source's pods to stop.
    pub quiesce_timeout: Duration,
    /// How long a warm migration's cutover waits for the application's pods on the
    /// destination to be Ready.
    pub ready_timeout: Duration,
    /// Who may start, see and stop jobs; None checks no callers (for embedding the
    /// runtime in a process that does its own checks, and for tests of other things).
    pub access: Option<crate::access::AccessPolicy>,
}

impl TransferConfig {
    /// Settings that restore into hostPath volumes under `volume_root`; set
    /// `volume_root` to None to provision claims through their StorageClass.
    pub fn new(data_dir: impl Into<PathBuf>, volume_root: impl Into<PathBuf>) -> Self {
        TransferConfig {
            data_dir: data_dir.into(),
            volume_root: Some(volume_root.into()),
            mover: crate::mover::MoverConfig::default(),
            default_profile: None,
            max_concurrent_jobs: 4,
            volume_concurrency: 4,
            max_attempts: 3,
            quiesce_timeout: Duration::from_secs(300),
            ready_timeout: Duration::from_secs(600),
            access: None,
        }
    }
}

/// The service's collaborators.
#[derive(Debug, Clone)]
pub struct Deps {
    pub clusters: Arc<dyn Clusters>,
    pub agents: Arc<dyn Agents>,
    pub repositories: Arc<dyn Repositories>,
    /// Issues the migration tokens of exports; None: exports end without one, and
    /// their reports say why.
    pub handover: Option<Arc<dyn Handover>>,
}

/// Events buffered per job for slow watchers; a watcher that falls further behind gets
/// a fresh snapshot instead of the events it missed.
const EVENT_BUFFER: usize = 256;
/// Events buffered per WatchJob stream.
const WATCH_BUFFER: usize = 32;
/// Progress events are sent at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// An agent operation a job is running, so a cancel can stop it.
#[derive(Debug, Clone)]
pub(crate) struct AgentOp {
    pub client: crate::deps::AgentClient,
    pub operation_id: String,
}

/// One job in memory while it is queued or running.
#[derive(Debug)]
pub(crate) struct JobCtl {
    data: parking_lot::Mutex<StoredJob>,
    events: broadcast::Sender<JobEvent>,
    cancel: CancellationToken,
    ops: parking_lot::Mutex<Vec<AgentOp>>,
    last_progress: parking_lot::Mutex<Option<Instant>>,
    /// Serialises saves, so the last save always carries the latest state.
    save_lock: tokio::sync::Mutex<()>,
    /// The caller's own credential for the destination, verified there; in memory only.
    destination: parking_lot::Mutex<Option<crate::access::DestinationCredential>>,
    /// Wakes a warm migration waiting for its next sync when a cutover is asked (the
    /// request itself is kept in the job's `warm.cutover_requested`).
    cutover: tokio::sync::Notify,
}

impl JobCtl {
    fn new(data: StoredJob) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Arc::new(JobCtl {
            data: parking_lot::Mutex::new(data),
            events,
            cancel: CancellationToken::new(),
            ops: parking_lot::Mutex::new(Vec::new()),
            last_progress: parking_lot::Mutex::new(None),
            save_lock: tokio::sync::Mutex::new(()),
            destination: parking_lot::Mutex::new(None),
            cutover: tokio::sync::Notify::new(),
        })
    }
}

#[derive(Debug)]
struct Inner {
    config: TransferConfig,
    deps: Deps,
    store: JobStore,
    jobs: parking_lot::Mutex<HashMap<String, Arc<JobCtl>>>,
    slots: Arc<Semaphore>,
    tasks: parking_lot::Mutex<Vec<AbortHandle>>,
    /// Held by a start that gave a request id from its lookup to its last job stored,
    /// so a repeat of it cannot slip in between and start the jobs twice.
    starting: tokio::sync::Mutex<()>,
}

/// The transfer service's engine, shared by the gRPC service and `ferry serve`.
#[derive(Debug, Clone)]
pub struct Transfer {
    inner: Arc<Inner>,
}

/// Sends a watcher `job`'s state, then its report when it has ended. False when the
/// stream is over: the watcher went away, or the report was sent.
async fn send_state(
    tx: &mpsc::Sender<Result<JobEvent, Status>>,
    job: Job,
    report: Option<JobReport>,
) -> bool {
    let id = job.id.clone();
    let snapshot = event(&id, job_event::Event::Snapshot(Box::new(job)));
    if tx.send(Ok(snapshot)).await.is_err() {
        return false;
    }
    match report {
        Some(r) => {
            let _ = tx
                .send(Ok(event(&id, job_event::Event::Report(Box::new(r)))))
                .await;
            false
        }
        None => true,
    }
}

fn event(job_id: &str, e: job_event::Event) -> JobEvent {
    JobEvent {
        job_id: job_id.to_owned(),
        time: Some(job::now()),
        event: Some(e),
    }
}

impl Transfer {
    /// Opens the job store under `config.data_dir` and resumes or ends every job a
    /// previous process left unfinished.
    pub async fn open(config: TransferConfig, deps: Deps) -> Result<Transfer> {
        let store = JobStore::open(&config.data_dir).await?;
        let slots = Arc::new(Semaphore::new(config.max_concurrent_jobs.max(1)));
        let t = Transfer {
            inner: Arc::new(Inner {
                config,
                deps,
                store,
                jobs: parking_lot::Mutex::new(HashMap::new()),
                slots,
                tasks: parking_lot::Mutex::new(Vec::new()),
                starting: tokio::sync::Mutex::new(()),
            }),
        };
        t.recover().await?;
        Ok(t)
    }

    /// Decides the fate of every job left unfinished by a previous process: queued jobs
    /// are queued again; a job whose current step may be repeated is resumed from that
    /// step; any other one is failed with the step named, after its source workloads are
    /// scaled back. None is left running forever.
    async fn recover(&self) -> Result<()> {
        for mut stored in self.inner.store.unfinished().await? {
            let id = stored.job.id.clone();
            let state = JobState::try_from(stored.job.state).unwrap_or(JobState::Unspecified);
            let step = job::current_step(&stored.job).map(|s| s.name.clone());
            stored.checkpoint.attempt += 1;
            let verdict: Option<TransferError> = match (state, step.as_deref()) {
                (JobState::Cancelling, _) => Some(TransferError::Cancelled {
                    reason: non_empty(&stored.checkpoint.cancel_reason, "cancel was asked"),
                }),
                (JobState::Queued | JobState::Unspecified, _) => None,
                _ if stored.checkpoint.attempt > self.inner.config.max_attempts => {
                    Some(TransferError::Interrupted {
                        step: step.clone().unwrap_or_default(),
                        hint: format!(
                            "the job was resumed {} times and the service stopped each time; \
                             look at the service's logs, then start the job again",
                            self.inner.config.max_attempts
                        ),
                    })
                }
                (_, Some(s)) if !steps::is_idempotent(s) => Some(TransferError::Interrupted {
                    step: s.to_owned(),
                    hint: "the restore point may or may not have been written; list the \
                           application's restore points, then start the job again"
                        .into(),
                }),
                _ => None,
            };
            // A step left RUNNING runs anew when resumed; otherwise it stays RUNNING
            // here and ends FAILED (or SKIPPED when cancelled) with the job.
            for s in &mut stored.job.steps {
                if verdict.is_none() && s.state == StepState::Running as i32 {
                    s.state = StepState::Pending as i32;
                    s.message = "interrupted by a restart of the transfer service".into();
                }
            }
            match &verdict {
                None => {
                    info!(job = %id, step = ?step, attempt = stored.checkpoint.attempt, "resuming job after restart");
                    stored.job.state = JobState::Queued as i32;
                    stored.report.warnings.push(ErrorDetail {
                        code: ferry_proto::v1::ErrorCode::Unspecified as i32,
                        message: format!(
                            "the transfer service restarted; the job was resumed at step {} \
                             (attempt {})",
                            step.as_deref().unwrap_or("(queued)"),
                            stored.checkpoint.attempt
                        ),
                        ..Default::default()
                    });
                }
                Some(e) => {
                    warn!(job = %id, step = ?step, error = %e, "ending job left unfinished by a restart")
                }
            }
            stored.job.updated_at = Some(job::now());
            self.inner
                .store
                .save(&stored.job, &stored.report, Some(&stored.checkpoint))
                .await?;
            let ctl = JobCtl::new(stored);
            self.inner.jobs.lock().insert(id, ctl.clone());
            self.spawn(ctl, verdict);
        }
        Ok(())
    }

    /// Stores a new job of `job`'s kind, with its steps pending, and runs it when a
    /// slot is free.
    /// Stores and spawns `job`; `destination` is the caller's own credential for its
    /// destination, kept in memory for the job's writes there (never stored: a job
    /// resumed after a restart writes as its user's name, which the destination then
    /// must trust).
    async fn queue(
        &self,
        job: Job,
        request: Vec<u8>,
        actor: Option<&Actor>,
        destination: Option<crate::access::DestinationCredential>,
    ) -> Result<Job> {
        let now = job::now();
        let job = Job {
            id: job::new_job_id(),
            state: JobState::Queued as i32,
            created_at: Some(now),
            updated_at: Some(now),
            steps: job::pending_steps(steps::of_job(&job)),
            ..job
        };
        let stored = StoredJob {
            report: JobReport {
                job_id: job.id.clone(),
                state: job.state,
                ..Default::default()
            },
            job: job.clone(),
            request,
            checkpoint: Checkpoint {
                attempt: 1,
                requester_groups: actor.map(|a| a.caller.groups.clone()).unwrap_or_default(),
                ..Default::default()
            },
        };
        self.inner.store.insert(&stored).await?;
        let namespace = job.application.as_ref().map(|a| a.namespace.as_str());
        info!(job = %job.id, kind = crate::store::kind_name(job.kind), namespace = namespace.unwrap_or_default(), "job queued");
        let ctl = JobCtl::new(stored);
        *ctl.destination.lock() = destination;
        self.inner.jobs.lock().insert(job.id.clone(), ctl.clone());
        self.spawn(ctl, None);
        Ok(job)
    }

    /// Runs a job on its own task: waits for a slot, runs, finalizes. `verdict` ends a
    /// recovered job without running it.
    fn spawn(&self, ctl: Arc<JobCtl>, verdict: Option<TransferError>) {
        let run = JobRun {
            inner: self.inner.clone(),
            ctl,
        };
        let id = run.id();
        let kind = run.kind();
        let span = info_span!("job", job = %id, kind = crate::store::kind_name(kind as i32));
        let handle = tokio::spawn(
            async move {
                let result = match verdict {
                    Some(e) => {
                        // Whatever happens to the job, the source's workloads come back.
                        let _ = crate::quiesce::unquiesce_left_over(&run).await;
                        Err(e)
                    }
                    None => {
                        let permit = tokio::select! {
                            p = run.inner.slots.clone().acquire_owned() => p.ok(),
                            () = run.ctl.cancel.cancelled() => None,
                        };
                        match permit {
                            Some(_permit) => {
                                run.set_state(JobState::Running).await;
                                let _running = ferry_metrics::metrics()
                                    .jobs
                                    .running(crate::store::kind_name(kind as i32));
                                match kind {
                                    JobKind::Export => crate::export::run(&run).await,
                                    JobKind::Restore | JobKind::Import => {
                                        crate::restore::run(&run).await
                                    }
                                    JobKind::Migration | JobKind::Unspecified => {
                                        crate::migrate::run(&run).await
                                    }
                                }
                            }
                            None => Err(run.cancelled()),
                        }
                    }
                };
                run.finish(result).await;
            }
            .instrument(span),
        );
        self.inner.tasks.lock().push(handle.abort_handle());
    }

    /// The job and, once final, its report.
    pub async fn get(&self, id: &str) -> Result<(Job, Option<JobReport>)> {
        if let Some(ctl) = self.inner.jobs.lock().get(id).cloned() {
            let d = ctl.data.lock();
            let report = is_final(d.job.state).then(|| d.report.clone());
            return Ok((d.job.clone(), report));
        }
        let stored = self.load(id).await?;
        let report = is_final(stored.job.state).then_some(stored.report);
        Ok((stored.job, report))
    }

    async fn load(&self, id: &str) -> Result<StoredJob> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| TransferError::JobNotFound { id: id.to_owned() })
    }

    /// A page of jobs, newest first.
    pub async fn list(&self, q: ListQuery) -> Result<(Vec<Job>, String)> {
        self.inner.store.list(q).await
    }

    /// A stream of the job's events: a snapshot, then steps and progress, the report
    /// last. The stream's buffer is bounded; a watcher too slow for the job's own buffer
    /// gets a fresh snapshot instead of what it missed.
    pub async fn watch(&self, id: &str) -> Result<mpsc::Receiver<Result<JobEvent, Status>>> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let ctl = self.inner.jobs.lock().get(id).cloned();
        let Some(ctl) = ctl else {
            let stored = self.load(id).await?;
            tokio::spawn(async move {
                let report = is_final(stored.job.state).then_some(stored.report);
                send_state(&tx, stored.job, report).await;
            });
            return Ok(rx);
        };
        // Subscribing and reading the state under the job's lock: the report is sent
        // under the same lock, so a watcher sees either the final state or the report.
        let (mut sub, snapshot, report) = {
            let d = ctl.data.lock();
            let report = is_final(d.job.state).then(|| d.report.clone());
            (ctl.events.subscribe(), d.job.clone(), report)
        };
        let id = id.to_owned();
        let span = info_span!("watch", job = %id);
        tokio::spawn(
            async move {
                if !send_state(&tx, snapshot, report).await {
                    return;
                }
                loop {
                    match sub.recv().await {
                        Ok(ev) => {
                            let last = matches!(ev.event, Some(job_event::Event::Report(_)));
                            if tx.send(Ok(ev)).await.is_err() || last {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            warn!(missed, "watcher fell behind; sending a fresh snapshot");
                            let (job, report) = {
                                let d = ctl.data.lock();
                                (
                                    d.job.clone(),
                                    is_final(d.job.state).then(|| d.report.clone()),
                                )
                            };
                            if !send_state(&tx, job, report).await {
                                return;
                            }
                        }
                        // The job's runtime is gone (the service is stopping).
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
            .instrument(span),
        );
        Ok(rx)
    }

    /// Asks a job to stop: running agent operations get a Cancel, the running step
    /// stops, and the job ends CANCELLED. A final job is returned unchanged.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<Job> {
        let id = id.to_owned();
        if id.is_empty() {
            return Err(TransferError::invalid(
                "job.id",
                "empty; name the job to cancel",
            ));
        }
        let Some(ctl) = self.inner.jobs.lock().get(&id).cloned() else {
            return Ok(self.load(&id).await?.job);
        };
        let reason = non_empty(reason, "cancelled by a user");
        {
            let mut d = ctl.data.lock();
            if is_final(d.job.state) {
                return Ok(d.job.clone());
            }
            d.job.state = JobState::Cancelling as i32;
            d.job.updated_at = Some(job::now());
            d.checkpoint.cancel_reason = reason.clone();
        }
        info!(job = %id, %reason, "cancel asked");
        let run = JobRun {
            inner: self.inner.clone(),
            ctl: ctl.clone(),
        };
        run.persist(true).await;
        ctl.cancel.cancel();
        // The agents stop their operations at once; the job's own streams then end.
        let ops: Vec<AgentOp> = ctl.ops.lock().clone();
        for op in ops {
            let mut client = op.client.clone();
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                client.cancel(ferry_proto::v1::CancelRequest {
                    operation_id: op.operation_id.clone(),
                }),
            )
            .await;
            match answer {
                Ok(Ok(r)) => {
                    info!(op = %op.operation_id, cancelled = r.get_ref().cancelled, "agent operation cancel sent")
                }
                Ok(Err(s)) => {
                    warn!(op = %op.operation_id, error = %s.message(), "agent refused cancel")
                }
                Err(_) => warn!(op = %op.operation_id, "agent did not answer cancel in 10 s"),
            }
        }
        let job = ctl.data.lock().job.clone();
        Ok(job)
    }

    /// Asks a warm migration to cut over: kept with the job (a restarted service cuts
    /// over too), and its wait for the next sync ends at once.
    pub async fn cutover(&self, id: &str) -> Result<Job> {
        let refuse = |why: String, hint: &str| TransferError::NoCutover {
            id: id.to_owned(),
            why,
            hint: hint.to_owned(),
        };
        let Some(ctl) = self.inner.jobs.lock().get(id).cloned() else {
            let job = self.load(id).await?.job;
            return Err(refuse(
                format!("it has ended ({})", job::state_name(job.state)),
                "start a new warm migration with `ferry migrate --warm`",
            ));
        };
        {
            let mut d = ctl.data.lock();
            if d.job.state == JobState::Cancelling as i32 || is_final(d.job.state) {
                return Err(refuse(
                    format!("it is {}", job::state_name(d.job.state)),
                    "start a new warm migration with `ferry migrate --warm`",
                ));
            }
            let Some(warm) = d.job.warm.as_mut() else {
                return Err(refuse(
                    "it is not a warm migration: it moves the application as soon as its \
                     copy is done"
                        .into(),
                    "follow it with `ferry jobs watch`; start warm migrations with \
                     `ferry migrate --warm`",
                ));
            };
            if warm.cutover_requested {
                return Ok(d.job.clone());
            }
            warm.cutover_requested = true;
            warm.next_sync_at = None;
            d.job.updated_at = Some(job::now());
        }
        info!(job = %id, "cutover asked");
        let run = JobRun {
            inner: self.inner.clone(),
            ctl: ctl.clone(),
        };
        run.persist(false).await;
        run.announce();
        ctl.cutover.notify_one();
        let job = ctl.data.lock().job.clone();
        Ok(job)
    }

    /// Scales up what arrived scaled to zero in a namespace, as `actor` when the call
    /// was checked (the API server judges the scaling as theirs).
    pub async fn activate(
        &self,
        req: ActivateRequest,
        actor: Option<&crate::access::Actor>,
    ) -> Result<ActivateResponse> {
        let app = req
            .application
            .ok_or_else(|| TransferError::invalid("application", "missing; name a namespace"))?;
        if app.namespace.is_empty() {
            return Err(TransferError::invalid(
                "application.namespace",
                "empty; name the namespace to activate",
            ));
        }
        if !app.label_selector.is_empty() {
            return Err(TransferError::invalid(
                "application.label_selector",
                "activation works on a whole namespace; leave the selector empty",
            ));
        }
        let cluster = self
            .inner
            .deps
            .clusters
            .cluster(req.cluster.as_ref())
            .await?;
        let cluster = match actor {
            Some(a) => cluster
                .acting_as(&crate::access::act_as(a))
                .map_err(TransferError::kube("activating workloads", &cluster.name))?,
            None => cluster,
        };
        let results = ferry_kube::activate(&cluster, &app.namespace)
            .await
            .map_err(TransferError::kube("activating workloads", &cluster.name))?;
        let workloads = results
            .iter()
            .map(|r| crate::destination::outcome_of(r, None))
            .collect();
        Ok(ActivateResponse { workloads })
    }

    /// Stops every job task at once without recording anything, as if the process had
    /// died: for tests of what a restarted service does. The store stays as it was.
    #[doc(hidden)]
    pub fn crash(&self) {
        for t in self.inner.tasks.lock().drain(..) {
            t.abort();
        }
        self.inner.jobs.lock().clear();
    }

    /// Waits up to `grace` for running jobs to finish, then stops the rest where they
    /// are; they are resumed (or ended) by the next start on the same data directory.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while !self.inner.jobs.lock().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self.inner.jobs.lock().len();
        if left > 0 {
            warn!(
                jobs = left,
                "stopping unfinished jobs; the next start resumes them"
            );
        }
        self.crash();
    }
}

fn non_empty(s: &str, default: &str) -> String {
    if s.is_empty() {
        default.to_owned()
    } else {
        s.to_owned()
    }
}

mod run;
mod start;

pub(crate) use run::{JobRun, api_ref, captured_outcomes};
