//! The job runtime: starts jobs, runs them on their own tasks under a concurrency
//! limit, keeps each one's state in memory and in the store, fans events out to
//! watchers, cancels, and on start resumes or ends what a previous process left running.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1::{
    ActivateRequest, ActivateResponse, ApplicationSelector, ClusterRef, ErrorDetail, Job, JobEvent,
    JobKind, JobReport, JobState, JobStep, ObjectAction, ObjectOutcome, Progress, RepositoryRef,
    StartExportRequest, StartMigrationRequest, StartRestoreRequest, StepState, VolumeResult,
    job_event,
};
use prost::Message;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{Instrument, info, info_span, warn};

use crate::access::{Actor, Gate};
use crate::deps::{Agents, Clusters, Handover, Repositories};
use crate::error::{Result, TransferError, proto_object};
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

    /// Validates and queues a migration, checking no caller.
    pub async fn start_migration(&self, req: StartMigrationRequest) -> Result<Job> {
        let mut jobs = self.start_migrations(req, None).await?;
        jobs.truncate(1);
        jobs.pop()
            .ok_or_else(|| TransferError::invalid("application.namespace", "names no namespace"))
    }

    /// Validates, authorizes for `actor` (None: no checks) and queues a migration: one
    /// job per namespace it names. Nothing starts unless every one is allowed.
    pub async fn start_migrations(
        &self,
        req: StartMigrationRequest,
        actor: Option<&Actor>,
    ) -> Result<Vec<Job>> {
        let request_id = req.request_id.clone();
        let _starting = match request_id.is_empty() {
            true => None,
            false => Some(self.inner.starting.lock().await),
        };
        let earlier = self
            .started_by(&request_id, JobKind::Migration, actor)
            .await?;
        if !earlier.is_empty() {
            return Ok(earlier);
        }
        let requests = self.split_namespaces(req, actor).await?;
        for r in &requests {
            self.check_migration(r).await?;
        }
        if let Some(actor) = actor {
            let gate = self.gate()?;
            for r in &requests {
                let app = r.application.clone().unwrap_or_default();
                let target = crate::migrate::target_namespace(
                    &r.apply.clone().unwrap_or_default(),
                    &app.namespace,
                );
                gate.may_move(
                    actor,
                    r.source.as_ref(),
                    &crate::source::capture_spec(&app),
                    Some((r.destination.as_ref(), &target)),
                    r.quiesce_source,
                )
                .await?;
            }
        }
        let mut jobs = Vec::with_capacity(requests.len());
        for r in requests {
            let job = Job {
                source: r.source.clone(),
                destination: r.destination.clone(),
                requested_by: requested_by(actor),
                request_id: request_id.clone(),
                ..new_job(
                    JobKind::Migration,
                    &r.application,
                    r.dry_run,
                    &r.schedule_id,
                )
            };
            jobs.push(self.queue(job, r.encode_to_vec(), actor).await?);
        }
        Ok(jobs)
    }

    /// One request per namespace the request names (its application's, `namespaces`,
    /// or every one for `all_namespaces`).
    async fn split_namespaces(
        &self,
        mut req: StartMigrationRequest,
        actor: Option<&Actor>,
    ) -> Result<Vec<StartMigrationRequest>> {
        let mut app = req.application.take().unwrap_or_default();
        let mut names: Vec<String> = Vec::new();
        if req.all_namespaces {
            if !req.namespaces.is_empty() || !app.namespace.is_empty() {
                return Err(TransferError::invalid(
                    "all_namespaces",
                    "set together with named namespaces; name namespaces or ask for all, not both",
                ));
            }
            let source = req.source.as_ref();
            if let Some(actor) = actor {
                self.gate()?
                    .require_admin(actor, source, "--all-namespaces")
                    .await?;
            }
            names = crate::access::list_namespaces(&*self.inner.deps.clusters, source).await?;
            if names.is_empty() {
                return Err(TransferError::invalid(
                    "all_namespaces",
                    "the source has no namespaces besides its own and Ferry's",
                ));
            }
        } else {
            if !app.namespace.is_empty() {
                names.push(std::mem::take(&mut app.namespace));
            }
            for n in std::mem::take(&mut req.namespaces) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        req.all_namespaces = false;
        req.namespaces.clear();
        if names.is_empty() {
            check_application(Some(&app), "migrate")?;
        }
        Ok(names
            .into_iter()
            .map(|namespace| StartMigrationRequest {
                application: Some(ApplicationSelector {
                    namespace,
                    ..app.clone()
                }),
                ..req.clone()
            })
            .collect())
    }

    async fn check_migration(&self, req: &StartMigrationRequest) -> Result<()> {
        check_application(req.application.as_ref(), "migrate")?;
        if req.destination.is_none() {
            return Err(TransferError::invalid(
                "destination",
                "missing; name the destination cluster (a pair id or a context)",
            ));
        }
        let moves_data = !req.skip_volume_data && !req.dry_run;
        if moves_data {
            self.check_repository(req.repository.as_ref(), "volume data goes through")?;
        }
        // Both clusters must be known now: a typo is a refused request, not a failed job.
        self.check_cluster(req.source.as_ref()).await?;
        self.check_cluster(req.destination.as_ref()).await?;
        Ok(())
    }

    /// Validates and queues an export, checking no caller.
    pub async fn start_export(&self, req: StartExportRequest) -> Result<Job> {
        self.start_export_as(req, None).await
    }

    /// Validates, authorizes for `actor` (None: no checks) and queues an export.
    pub async fn start_export_as(
        &self,
        req: StartExportRequest,
        actor: Option<&Actor>,
    ) -> Result<Job> {
        check_application(req.application.as_ref(), "export")?;
        if !req.dry_run {
            self.check_repository(req.repository.as_ref(), "the export writes to")?;
        }
        self.check_cluster(req.source.as_ref()).await?;
        if let Some(actor) = actor {
            let app = req.application.clone().unwrap_or_default();
            self.gate()?
                .may_move(
                    actor,
                    req.source.as_ref(),
                    &crate::source::capture_spec(&app),
                    None,
                    req.quiesce_source,
                )
                .await?;
        }
        let job = Job {
            source: req.source.clone(),
            requested_by: requested_by(actor),
            ..new_job(
                JobKind::Export,
                &req.application,
                req.dry_run,
                &req.schedule_id,
            )
        };
        self.queue(job, req.encode_to_vec(), actor).await
    }

    /// Validates and queues a restore (an import when a schedule starts it), checking
    /// no caller.
    pub async fn start_restore(&self, req: StartRestoreRequest) -> Result<Job> {
        self.start_restore_as(req, None).await
    }

    /// Validates and queues a restore for `actor` (None: no checks). What it reads and
    /// creates is only known once the restore point is read, so the job reviews both
    /// (read rights on the namespace it was captured from, as a migration of it needs)
    /// before it reports or applies anything of it.
    pub async fn start_restore_as(
        &self,
        req: StartRestoreRequest,
        actor: Option<&Actor>,
    ) -> Result<Job> {
        let _starting = match req.request_id.is_empty() {
            true => None,
            false => Some(self.inner.starting.lock().await),
        };
        let kind = if req.schedule_id.is_empty() {
            JobKind::Restore
        } else {
            JobKind::Import
        };
        if let Some(earlier) = self
            .started_by(&req.request_id, kind, actor)
            .await?
            .into_iter()
            .next()
        {
            return Ok(earlier);
        }
        crate::restore::check_request(&req)?;
        self.check_repository(req.repository.as_ref(), "holding the restore point")?;
        self.check_cluster(req.destination.as_ref()).await?;
        let job = Job {
            destination: req.destination.clone(),
            requested_by: requested_by(actor),
            request_id: req.request_id.clone(),
            ..new_job(kind, &req.application, req.dry_run, &req.schedule_id)
        };
        self.queue(job, req.encode_to_vec(), actor).await
    }

    /// The jobs of `kind` an earlier start with `request_id` made for `actor`; none for
    /// an empty id.
    async fn started_by(
        &self,
        request_id: &str,
        kind: JobKind,
        actor: Option<&Actor>,
    ) -> Result<Vec<Job>> {
        if request_id.is_empty() {
            return Ok(Vec::new());
        }
        let mut jobs = self
            .inner
            .store
            .by_request(request_id, &requested_by(actor))
            .await?;
        jobs.retain(|j| j.kind == kind as i32);
        if !jobs.is_empty() {
            info!(
                request_id,
                jobs = jobs.len(),
                "a repeated start: answering the jobs it made"
            );
        }
        Ok(jobs)
    }

    /// The access policy; None under --insecure-no-access-checks.
    pub(crate) fn access_policy(&self) -> Option<&crate::access::AccessPolicy> {
        self.inner.config.access.as_ref()
    }

    /// The agents this engine calls.
    pub(crate) fn agents(&self) -> std::sync::Arc<dyn crate::deps::Agents> {
        self.inner.deps.agents.clone()
    }

    /// A client of the cluster this service runs in.
    pub(crate) async fn local_client(&self) -> Result<kube::Client> {
        Ok(self.inner.deps.clusters.cluster(None).await?.client)
    }

    /// The reviews of this service's access policy.
    pub(crate) fn gate(&self) -> Result<Gate<'_>> {
        let policy = self.inner.config.access.as_ref().ok_or_else(|| {
            TransferError::Internal(
                "caller checks asked of a service without an access policy".into(),
            )
        })?;
        Ok(Gate {
            policy,
            clusters: &*self.inner.deps.clusters,
        })
    }

    /// Fails unless `actor` (None: no checks) may see `job`; a job they may not see is
    /// "not found", so ids reveal nothing.
    pub async fn require_see(&self, actor: Option<&Actor>, job: &Job) -> Result<()> {
        match actor {
            Some(actor) => self.gate()?.require_see(actor, job).await,
            None => Ok(()),
        }
    }

    /// The jobs of `jobs` that `actor` (None: no checks) may see.
    pub async fn visible(&self, actor: Option<&Actor>, jobs: Vec<Job>) -> Result<Vec<Job>> {
        let Some(actor) = actor else {
            return Ok(jobs);
        };
        let gate = self.gate()?;
        let mut memo = HashMap::new();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            if gate.may_see(actor, &job, &mut memo).await? {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Activation scales workloads up: the caller must be allowed to.
    pub async fn may_activate(&self, actor: &Actor, req: &ActivateRequest) -> Result<()> {
        let ns = req
            .application
            .as_ref()
            .map(|a| a.namespace.as_str())
            .unwrap_or_default();
        self.gate()?
            .may_scale(actor, req.cluster.as_ref(), ns)
            .await
    }

    /// Who is calling, when the service checks callers (None when it does not).
    pub async fn identify(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Option<Actor>> {
        if self.inner.config.access.is_none() {
            return Ok(None);
        }
        self.gate()?.identify(metadata).await.map(Some)
    }

    /// A request must name a repository profile, or the service have a default one.
    fn check_repository(&self, r: Option<&RepositoryRef>, what: &str) -> Result<()> {
        if r.is_none_or(|r| r.profile.is_empty()) && self.inner.config.default_profile.is_none() {
            return Err(TransferError::invalid(
                "repository",
                format!(
                    "missing, and the service has no default profile; name the repository \
                     profile {what}"
                ),
            ));
        }
        Ok(())
    }

    async fn check_cluster(&self, r: Option<&ClusterRef>) -> Result<()> {
        self.inner.deps.clusters.cluster(r).await.map(|_| ())
    }

    /// Stores a new job of `job`'s kind, with its steps pending, and runs it when a
    /// slot is free.
    async fn queue(&self, job: Job, request: Vec<u8>, actor: Option<&Actor>) -> Result<Job> {
        let now = job::now();
        let kind = JobKind::try_from(job.kind).unwrap_or(JobKind::Unspecified);
        let job = Job {
            id: job::new_job_id(),
            state: JobState::Queued as i32,
            created_at: Some(now),
            updated_at: Some(now),
            steps: job::pending_steps(steps::of(kind)),
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
                let id = stored.job.id.clone();
                let done = is_final(stored.job.state);
                let _ = tx
                    .send(Ok(event(
                        &id,
                        job_event::Event::Snapshot(Box::new(stored.job)),
                    )))
                    .await;
                if done {
                    let _ = tx
                        .send(Ok(event(
                            &id,
                            job_event::Event::Report(Box::new(stored.report)),
                        )))
                        .await;
                }
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
                if tx
                    .send(Ok(event(
                        &id,
                        job_event::Event::Snapshot(Box::new(snapshot)),
                    )))
                    .await
                    .is_err()
                {
                    return;
                }
                if let Some(r) = report {
                    let _ = tx
                        .send(Ok(event(&id, job_event::Event::Report(Box::new(r)))))
                        .await;
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
                            if tx
                                .send(Ok(event(&id, job_event::Event::Snapshot(Box::new(job)))))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            if let Some(r) = report {
                                let _ = tx
                                    .send(Ok(event(&id, job_event::Event::Report(Box::new(r)))))
                                    .await;
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

    /// Scales up what arrived scaled to zero in a namespace.
    pub async fn activate(&self, req: ActivateRequest) -> Result<ActivateResponse> {
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

/// A job of `kind` as a Start* request describes it; [`Transfer::queue`] makes it new.
fn new_job(
    kind: JobKind,
    application: &Option<ApplicationSelector>,
    dry_run: bool,
    schedule_id: &str,
) -> Job {
    Job {
        kind: kind as i32,
        application: application.clone(),
        dry_run,
        schedule_id: schedule_id.to_owned(),
        ..Default::default()
    }
}

/// A request's application must name a namespace; `what` the job does with it.
fn check_application(app: Option<&ApplicationSelector>, what: &str) -> Result<()> {
    let app =
        app.ok_or_else(|| TransferError::invalid("application", "missing; name a namespace"))?;
    if app.namespace.is_empty() {
        return Err(TransferError::invalid(
            "application.namespace",
            format!("empty; name the namespace to {what}"),
        ));
    }
    Ok(())
}

fn requested_by(actor: Option<&Actor>) -> String {
    actor.map(|a| a.caller.username.clone()).unwrap_or_default()
}

fn non_empty(s: &str, default: &str) -> String {
    if s.is_empty() {
        default.to_owned()
    } else {
        s.to_owned()
    }
}

/// A running job, as its runner sees it.
#[derive(Debug, Clone)]
pub(crate) struct JobRun {
    inner: Arc<Inner>,
    ctl: Arc<JobCtl>,
}

/// Unregisters an agent operation when its call ends.
pub(crate) struct OpGuard<'a> {
    run: &'a JobRun,
    operation_id: String,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.run
            .ctl
            .ops
            .lock()
            .retain(|o| o.operation_id != self.operation_id);
    }
}

impl JobRun {
    pub fn id(&self) -> String {
        self.ctl.data.lock().job.id.clone()
    }

    pub fn config(&self) -> &TransferConfig {
        &self.inner.config
    }

    pub fn deps(&self) -> &Deps {
        &self.inner.deps
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.ctl.cancel
    }

    /// The error a cancelled job stops with.
    pub fn cancelled(&self) -> TransferError {
        let reason = self.ctl.data.lock().checkpoint.cancel_reason.clone();
        TransferError::Cancelled {
            reason: non_empty(&reason, "cancel was asked"),
        }
    }

    /// The user who started the job and the reviews of the service's policy; None when
    /// the service checks no callers, or the job records nobody.
    fn requester(&self) -> Option<(Actor, Gate<'_>)> {
        let policy = self.inner.config.access.as_ref()?;
        let username = self.ctl.data.lock().job.requested_by.clone();
        let actor = Actor {
            caller: ferry_authz::Caller {
                username,
                uid: String::new(),
                groups: self.with_checkpoint(|c| c.requester_groups.clone()),
            },
            admin: false,
        };
        // Only jobs queued before callers were checked record nobody; they were
        // accepted then.
        if actor.caller.username.is_empty() {
            tracing::debug!("job records no requester; not reviewed again");
            return None;
        }
        let gate = Gate {
            policy,
            clusters: &*self.inner.deps.clusters,
        };
        Some((actor, gate))
    }

    /// Fails unless the user who started the job may create `types` in `target` on
    /// `destination`; nothing to check when the service checks no callers.
    pub async fn require_create(
        &self,
        destination: Option<&ClusterRef>,
        target: &str,
        types: &[kube::api::ApiResource],
    ) -> Result<()> {
        match self.requester() {
            Some((actor, gate)) => gate.may_create(&actor, destination, target, types).await,
            None => Ok(()),
        }
    }

    /// Fails unless the user who started the job may read `types` in `namespace` on
    /// this cluster, as a migration of it would: a restore point is a copy of that
    /// namespace, so restoring it reveals what reading it would.
    pub async fn require_read(
        &self,
        namespace: &str,
        types: &[kube::api::ApiResource],
    ) -> Result<()> {
        match self.requester() {
            Some((actor, gate)) => gate.may_read(&actor, None, namespace, types, false).await,
            None => Ok(()),
        }
    }

    /// Err once cancel was asked: called between steps and volumes.
    pub fn check_cancel(&self) -> Result<()> {
        if self.ctl.cancel.is_cancelled() {
            Err(self.cancelled())
        } else {
            Ok(())
        }
    }

    /// The job as it is now.
    pub fn job(&self) -> Job {
        self.ctl.data.lock().job.clone()
    }

    pub fn kind(&self) -> JobKind {
        JobKind::try_from(self.ctl.data.lock().job.kind).unwrap_or(JobKind::Unspecified)
    }

    /// The Start* request the job was made from.
    pub fn request<R: Message + Default>(&self) -> Result<R> {
        let bytes = self.ctl.data.lock().request.clone();
        R::decode(bytes.as_slice())
            .map_err(|e| TransferError::Internal(format!("stored request does not decode: {e}")))
    }

    /// The repository a request names (`requested`), else the service's default
    /// profile; pinned to the repository id the job first found there.
    pub fn repository_ref(&self, requested: Option<&RepositoryRef>) -> Result<RepositoryRef> {
        let mut r = requested.cloned().unwrap_or_default();
        if r.profile.is_empty() {
            r.profile = self.config().default_profile.clone().ok_or_else(|| {
                TransferError::invalid("repository", "missing, and the service has no default")
            })?;
        }
        if r.repository_id.is_empty() {
            r.repository_id = self.with_checkpoint(|c| c.repository_id.clone());
        }
        Ok(r)
    }

    pub fn with_checkpoint<T>(&self, f: impl FnOnce(&Checkpoint) -> T) -> T {
        f(&self.ctl.data.lock().checkpoint)
    }

    /// Changes the checkpoint and saves it.
    pub async fn update_checkpoint(&self, f: impl FnOnce(&mut Checkpoint)) {
        f(&mut self.ctl.data.lock().checkpoint);
        self.persist(true).await;
    }

    pub fn with_report<T>(&self, f: impl FnOnce(&mut JobReport) -> T) -> T {
        f(&mut self.ctl.data.lock().report)
    }

    pub fn step_finished(&self, name: &str) -> bool {
        job::step_finished(&self.ctl.data.lock().job, name)
    }

    /// Saves the job (and the checkpoint if asked). A failed save is logged, not fatal:
    /// the job's outcome matters more than its bookkeeping, and the next save retries.
    pub async fn persist(&self, checkpoint: bool) {
        let _order = self.ctl.save_lock.lock().await;
        let (job, report, cp) = {
            let d = self.ctl.data.lock();
            (
                d.job.clone(),
                d.report.clone(),
                checkpoint.then(|| d.checkpoint.clone()),
            )
        };
        if let Err(e) = self.inner.store.save(&job, &report, cp.as_ref()).await {
            warn!(job = %job.id, error = %e, "saving job state failed");
        }
    }

    async fn set_state(&self, state: JobState) {
        {
            let mut d = self.ctl.data.lock();
            // A cancel asked while queued stays visible.
            if d.job.state != JobState::Cancelling as i32 {
                d.job.state = state as i32;
            }
            d.job.updated_at = Some(job::now());
            if d.report.started_at.is_none() {
                d.report.started_at = Some(job::now());
            }
        }
        self.persist(false).await;
    }

    /// Moves a step to `state` with a message, saves and tells watchers.
    pub async fn step(&self, name: &str, state: StepState, message: impl Into<String>) {
        let message = message.into();
        let step = {
            let mut d = self.ctl.data.lock();
            d.job.updated_at = Some(job::now());
            let Some(s) = job::step_mut(&mut d.job, name) else {
                return;
            };
            match state {
                StepState::Running => {
                    s.started_at = Some(job::now());
                    s.finished_at = None;
                }
                StepState::Pending => {}
                _ => {
                    if s.started_at.is_none() && state != StepState::Skipped {
                        s.started_at = Some(job::now());
                    }
                    s.finished_at = Some(job::now());
                }
            }
            s.state = state as i32;
            s.message = message;
            let step: JobStep = s.clone();
            if state == StepState::Running {
                d.job.progress = Some(Progress {
                    step: name.to_owned(),
                    ..Default::default()
                });
            }
            let _ = self
                .ctl
                .events
                .send(event(&d.job.id, job_event::Event::Step(step.clone())));
            step
        };
        tracing::debug!(step = %step.name, state = ?state, message = %step.message, "step");
        self.persist(false).await;
    }

    /// New progress of the running step; watchers get it at most a few times a second.
    pub fn progress(&self, p: Progress, force: bool) {
        let mut d = self.ctl.data.lock();
        d.job.progress = Some(p.clone());
        let mut last = self.ctl.last_progress.lock();
        let due = force || last.is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL);
        if due {
            *last = Some(Instant::now());
            let _ = self
                .ctl
                .events
                .send(event(&d.job.id, job_event::Event::Progress(p)));
        }
    }

    /// Progress of a step that went through `n` objects at once.
    pub fn objects_done(&self, step: &str, n: usize) {
        let n = n as u64;
        let p = Progress {
            step: step.into(),
            objects_done: n,
            objects_total: n,
            ..Default::default()
        };
        self.progress(p, true);
    }

    /// Marks steps skipped, all for the same reason.
    pub async fn skip(&self, names: &[&str], why: &str) {
        for name in names {
            self.step(name, StepState::Skipped, why).await;
        }
    }

    /// Registers an agent operation for cancel until the guard drops.
    pub fn track_op(&self, client: crate::deps::AgentClient, operation_id: &str) -> OpGuard<'_> {
        self.ctl.ops.lock().push(AgentOp {
            client,
            operation_id: operation_id.to_owned(),
        });
        OpGuard {
            run: self,
            operation_id: operation_id.to_owned(),
        }
    }

    /// Ends the job: its final state, the report's, steps left over, saved, and the
    /// report sent to watchers last.
    async fn finish(&self, result: Result<JobState>) {
        let id = self.id();
        {
            let mut d = self.ctl.data.lock();
            let now = job::now();
            let (state, error) = match &result {
                Ok(state) => (*state, None),
                Err(e) if e.is_cancelled() => (JobState::Cancelled, None),
                Err(e) => (JobState::Failed, Some(e.detail())),
            };
            if let Err(e) = &result
                && e.is_cancelled()
            {
                let detail = ErrorDetail {
                    message: e.to_string(),
                    ..e.detail()
                };
                d.report.warnings.push(detail);
            }
            let step_end = match state {
                JobState::Cancelled => "not run: the job was cancelled",
                _ => "not run: the job stopped before it",
            };
            let mut step_events = Vec::new();
            for s in &mut d.job.steps {
                match StepState::try_from(s.state) {
                    Ok(StepState::Running) => {
                        s.state = if state == JobState::Failed {
                            StepState::Failed
                        } else {
                            StepState::Skipped
                        } as i32;
                        if let Some(err) = &error {
                            s.message = err.message.clone();
                        } else {
                            s.message = step_end.into();
                        }
                        s.finished_at = Some(now);
                        step_events.push(s.clone());
                    }
                    Ok(StepState::Pending) | Err(_) => {
                        s.state = StepState::Skipped as i32;
                        s.message = step_end.into();
                        step_events.push(s.clone());
                    }
                    _ => {}
                }
            }
            d.job.state = state as i32;
            d.job.error = error.clone();
            d.job.updated_at = Some(now);
            d.report.state = state as i32;
            d.report.error = error;
            d.report.finished_at = Some(now);
            if d.report.started_at.is_none() {
                d.report.started_at = Some(now);
            }
            d.report.job_id = id.clone();
            for s in step_events {
                let _ = self.ctl.events.send(event(&id, job_event::Event::Step(s)));
            }
        }
        self.persist(true).await;
        self.count_finished();
        {
            // Under the lock, after the save: a watcher that subscribes now sees a final
            // state, one that subscribed before gets this report.
            let d = self.ctl.data.lock();
            let _ = self.ctl.events.send(event(
                &id,
                job_event::Event::Report(Box::new(d.report.clone())),
            ));
            info!(state = job::state_name(d.job.state), "job finished");
        }
        self.inner.jobs.lock().remove(&id);
    }
}

impl JobRun {
    /// Moves the Prometheus counters by what the final report says.
    fn count_finished(&self) {
        let m = &ferry_metrics::metrics().jobs;
        let d = self.ctl.data.lock();
        let report = &d.report;
        let took = match (&report.started_at, &report.finished_at) {
            (Some(a), Some(b)) => {
                let secs = (b.seconds - a.seconds) as f64 + f64::from(b.nanos - a.nanos) / 1e9;
                Duration::from_secs_f64(secs.max(0.0))
            }
            _ => Duration::ZERO,
        };
        let result = match JobState::try_from(report.state) {
            Ok(JobState::Succeeded) => "succeeded",
            Ok(JobState::PartiallySucceeded) => "partially_succeeded",
            Ok(JobState::Cancelled) => "cancelled",
            _ => "failed",
        };
        m.finished(crate::store::kind_name(d.job.kind), result, took);
        let restores = !matches!(JobKind::try_from(d.job.kind), Ok(JobKind::Export));
        for v in &report.volumes {
            m.bytes(ferry_metrics::Direction::Uploaded, v.bytes_uploaded);
            if restores && v.result == VolumeResult::Succeeded as i32 {
                m.bytes(ferry_metrics::Direction::Restored, v.bytes_total);
            }
        }
        let mut applied = [0u64; 4];
        for o in &report.objects {
            match ObjectAction::try_from(o.action) {
                Ok(ObjectAction::Created) => applied[0] += 1,
                Ok(ObjectAction::Updated) => applied[1] += 1,
                Ok(ObjectAction::Skipped) => applied[2] += 1,
                Ok(ObjectAction::Failed) => applied[3] += 1,
                _ => {}
            }
        }
        for (result, n) in ["created", "updated", "skipped", "failed"]
            .into_iter()
            .zip(applied)
        {
            if n > 0 {
                m.objects(result, n);
            }
        }
    }
}

/// What a capture (or a restore point) holds, as the report lists it until an apply
/// replaces the captured objects with what became of them: each captured object, then
/// each one left out.
pub(crate) fn captured_outcomes(captured: &ferry_kube::Captured) -> Vec<ObjectOutcome> {
    let taken = captured.objects.iter().map(|o| ObjectOutcome {
        object: Some(api_ref(&o.object_ref())),
        destination_object: None,
        action: ObjectAction::Captured as i32,
        reason: String::new(),
        error: None,
    });
    taken
        .chain(captured.excluded.iter().map(excluded_outcome))
        .collect()
}

/// An excluded object as the report lists it.
fn excluded_outcome(e: &ferry_kube::Exclusion) -> ObjectOutcome {
    ObjectOutcome {
        object: Some(ferry_proto::v1::ObjectRef {
            api_version: e.api_version.clone(),
            kind: e.kind.clone(),
            namespace: e.namespace.clone().unwrap_or_default(),
            name: e.name.clone().unwrap_or_default(),
        }),
        destination_object: None,
        action: ObjectAction::Excluded as i32,
        reason: e.reason.to_string(),
        error: None,
    }
}

/// Kept for symmetry with `excluded_outcome`: a ferry-kube ref as the API names it.
pub(crate) fn api_ref(o: &ferry_kube::ObjectRef) -> ferry_proto::v1::ObjectRef {
    proto_object(o)
}
