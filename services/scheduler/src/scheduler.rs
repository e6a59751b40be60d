//! The engine: schedules in the store, a timing loop that fires due runs, and one task
//! per run that starts its job, waits for it and retries with backoff. An import
//! policy's run lists the repository and restores what is new instead ([`import`]).
//! A migration or export run that succeeded then applies the schedule's retention to
//! the repository it wrote to ([`retention`]).
//!
//! The store is the truth. A run is RUNNING there from the moment it is recorded until
//! it ends, and a due time finding a RUNNING run of the same schedule records a SKIPPED
//! run instead (in the same transaction), so runs never overlap. Stopping the scheduler
//! leaves runs RUNNING; the next start resumes each one: it waits again on the job it
//! was waiting on, or starts its next attempt.

mod import;
mod retention;

use std::collections::HashMap;
use std::sync::Arc;

use ferry_proto::v1::{
    CreateScheduleRequest, ErrorCode, JobState, RunState, Schedule, ScheduleRun, schedule,
};
use jiff::Timestamp;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::SchedulerConfig;
use crate::error::{Result, SchedulerError};
use crate::jobs::{JobError, JobOutcome, Jobs};
use crate::store::{Fired, Manual, ScheduleStore, StoredSchedule};
use crate::trigger::{Trigger, from_millis, to_proto};
use crate::validate::{self, Retry};

/// The scheduler's engine, shared by the gRPC service, its timing loop and its runs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SchedulerConfig,
    store: ScheduleStore,
    jobs: Arc<dyn Jobs>,
    /// Cancelled by [`Scheduler::shutdown`]: stops the loop and every run task.
    stop: CancellationToken,
    /// Runs this process is driving: run id -> (schedule id, the run task's token).
    active: parking_lot::Mutex<HashMap<String, (String, CancellationToken)>>,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

fn new_run(schedule_id: &str, due: Timestamp, manual: bool) -> ScheduleRun {
    ScheduleRun {
        id: new_id("run"),
        schedule_id: schedule_id.to_owned(),
        state: RunState::Running as i32,
        scheduled_at: Some(to_proto(due)),
        manual,
        ..Default::default()
    }
}

/// A run's result as the metrics label it.
/// Starts the next attempt of `run`: after the retry policy's backoff when an attempt
/// came before, counted, and the run's start time set by the first.
async fn begin_attempt(retry: &Retry, run: &mut ScheduleRun) {
    if run.attempts > 0 {
        let wait = retry.backoff(run.attempts);
        info!(
            attempt = run.attempts + 1,
            wait_s = wait.as_secs_f64(),
            "retrying after backoff"
        );
        tokio::time::sleep(wait).await;
    }
    run.attempts += 1;
    if run.started_at.is_none() {
        run.started_at = Some(to_proto(Timestamp::now()));
    }
}

fn run_result(state: RunState) -> &'static str {
    match state {
        RunState::Succeeded => "succeeded",
        RunState::NothingToDo => "nothing_to_do",
        RunState::Skipped => "skipped",
        _ => "failed",
    }
}

impl Scheduler {
    /// Opens `<data_dir>/scheduler.db`, resumes the runs a previous process left going,
    /// and starts the timing loop. Stop it with [`Scheduler::shutdown`].
    pub async fn open(config: SchedulerConfig, jobs: Arc<dyn Jobs>) -> Result<Scheduler> {
        let store = ScheduleStore::open(&config.data_dir).await?;
        let scheduler = Scheduler {
            inner: Arc::new(Inner {
                config,
                store,
                jobs,
                stop: CancellationToken::new(),
                active: parking_lot::Mutex::new(HashMap::new()),
                tasks: parking_lot::Mutex::new(Vec::new()),
            }),
        };
        for run in scheduler.inner.store.running_runs().await? {
            let Some(s) = scheduler.inner.store.find(&run.schedule_id).await? else {
                continue;
            };
            info!(
                schedule = %s.definition.name,
                run = %run.id,
                attempts = run.attempts,
                job = run.job_ids.last().map(String::as_str).unwrap_or(""),
                "resuming a run left going by the previous process"
            );
            scheduler.spawn_run(s.definition, run);
        }
        // So an alert on the age of the last success survives a restart.
        for (name, run) in scheduler.inner.store.last_successes().await? {
            if let Some(at) = run.finished_at {
                ferry_metrics::metrics()
                    .schedules
                    .last_succeeded(&name, at.seconds as f64 + f64::from(at.nanos) / 1e9);
            }
        }
        let timing = scheduler.clone();
        scheduler.track(tokio::spawn(timing.timing_loop()));
        Ok(scheduler)
    }

    fn track(&self, handle: JoinHandle<()>) {
        let mut tasks = self.inner.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Stops the timing loop and every run task and waits for them; runs in progress
    /// stay RUNNING in the store and are resumed by the next start. Their jobs go on in
    /// the transfer service.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.inner.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn timing_loop(self) {
        loop {
            if let Err(e) = self.fire_due().await {
                warn!(error = %e, "looking for due schedules failed; trying again next tick");
            }
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                () = tokio::time::sleep(self.inner.config.tick) => {}
            }
        }
    }

    /// Records a run for every due schedule (SKIPPED if its previous run is going),
    /// moves each to its next due time, and starts the runs.
    async fn fire_due(&self) -> Result<()> {
        let now = Timestamp::now();
        for s in self.inner.store.due(now.as_millisecond()).await? {
            let def = s.definition;
            let Some(due_ms) = s.next_run_ms else {
                continue;
            };
            let due = from_millis(due_ms).unwrap_or(now);
            let next = match Trigger::of(def.trigger.as_ref(), &def.time_zone) {
                Ok(t) => t.next_from(due, now),
                Err(e) => {
                    warn!(schedule = %def.name, error = %e, "stored trigger is unusable; the schedule stops firing");
                    None
                }
            };
            let run = new_run(&def.id, due, false);
            let next_ms = next.map(Timestamp::as_millisecond);
            match self.inner.store.fire(run, due_ms, next_ms).await? {
                Fired::Started(run) => {
                    info!(schedule = %def.name, run = %run.id, "run due");
                    self.spawn_run(def, run);
                }
                Fired::Skipped(run) => {
                    ferry_metrics::metrics().schedules.missed(&def.name);
                    warn!(schedule = %def.name, run = %run.id, "run skipped: the previous run is still going");
                }
                Fired::Gone => {}
            }
        }
        Ok(())
    }

    /// Drives `run` on its own task, in a span naming the schedule and the run.
    fn spawn_run(&self, def: Schedule, run: ScheduleRun) {
        let token = self.inner.stop.child_token();
        self.inner
            .active
            .lock()
            .insert(run.id.clone(), (def.id.clone(), token.clone()));
        // A root span: the run outlives the request or tick that started it.
        let span = info_span!(
            parent: None,
            "schedule_run",
            schedule = %def.name,
            schedule_id = %def.id,
            run = %run.id,
            manual = run.manual
        );
        let this = self.clone();
        let handle = tokio::spawn(
            async move {
                let id = run.id.clone();
                // Dropping the run at any await is safe: it stays RUNNING in the store
                // (or is gone with its schedule) and the next start resumes it.
                match crate::jobs::Requester::of_run(&def) {
                    Ok(actor) => tokio::select! {
                        () = crate::jobs::acting_for(actor, this.execute(&def, run)) => {}
                        () = token.cancelled() => info!("run task stopped; the run resumes on the next start"),
                    },
                    // Nobody it may act as: the run fails before it starts anything.
                    Err(refused) => {
                        warn!(error = %refused.detail.message, "run refused");
                        this.finish(&def, run, RunState::Failed, Some(refused)).await;
                    }
                }
                this.inner.active.lock().remove(&id);
            }
            .instrument(span),
        );
        self.track(handle);
    }

    /// Runs attempts until one succeeds, one fails for good, or attempts run out.
    async fn execute(&self, def: &Schedule, mut run: ScheduleRun) {
        if let Some(schedule::Spec::ImportPolicy(policy)) = &def.spec {
            return self.execute_import(def, policy, run).await;
        }
        let retry = Retry::of(def.retry.as_ref(), self.inner.config.retry);
        // A resumed run whose latest attempt has a job waits for that job first.
        let mut follow = (run.attempts > 0 && run.job_ids.len() == run.attempts as usize)
            .then(|| run.job_ids.last().cloned())
            .flatten();
        loop {
            let job = match follow.take() {
                Some(id) => Ok(id),
                None => {
                    begin_attempt(&retry, &mut run).await;
                    let started = self.start_job(def).await;
                    if let Ok(id) = &started {
                        info!(attempt = run.attempts, job = %id, "job started");
                        run.job_ids.push(id.clone());
                    }
                    if !self.save(&run).await {
                        return;
                    }
                    started
                }
            };
            let failure = match job {
                Ok(id) => match self.inner.jobs.wait(&id).await {
                    Ok(o) if o.state == JobState::Succeeded => {
                        run.restore_point_id = o.restore_point_id;
                        // Still RUNNING meanwhile, so the next run cannot overlap it.
                        self.apply_retention(def, &mut run).await;
                        self.finish(def, run, RunState::Succeeded, None).await;
                        return;
                    }
                    Ok(o) => job_failure(&id, o),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            warn!(attempt = run.attempts, error = %failure.detail.message, retryable = failure.retryable, "attempt failed");
            if !failure.retryable || run.attempts >= retry.max_attempts {
                self.finish(def, run, RunState::Failed, Some(failure)).await;
                return;
            }
        }
    }

    /// Starts the job a schedule's spec describes, marked as the schedule's.
    async fn start_job(&self, def: &Schedule) -> Result<String, JobError> {
        match def.spec.clone() {
            Some(schedule::Spec::Migration(mut m)) => {
                m.schedule_id = def.id.clone();
                self.inner.jobs.start_migration(m).await
            }
            Some(schedule::Spec::Export(mut e)) => {
                e.schedule_id = def.id.clone();
                self.inner.jobs.start_export(e).await
            }
            // Import policies run through `execute_import`; no spec means a newer build
            // wrote the schedule.
            Some(schedule::Spec::ImportPolicy(_)) | None => Err(JobError {
                detail: Box::new(ferry_rpc::error_detail(
                    ErrorCode::Internal,
                    format!("schedule {} has no spec this build can run", def.name),
                    "run the ferry version that created the schedule, or recreate it",
                )),
                retryable: false,
            }),
        }
    }

    /// Saves a run; false when it is gone because its schedule was deleted.
    async fn save(&self, run: &ScheduleRun) -> bool {
        match self.inner.store.save_run(run).await {
            Ok(true) => true,
            Ok(false) => {
                info!("the schedule was deleted; the run stops here");
                false
            }
            // The outcome matters more than the bookkeeping: go on, the next save may work.
            Err(e) => {
                warn!(error = %e, "saving the run failed");
                true
            }
        }
    }

    async fn finish(
        &self,
        def: &Schedule,
        mut run: ScheduleRun,
        state: RunState,
        failure: Option<JobError>,
    ) {
        let now = Timestamp::now();
        run.state = state as i32;
        run.finished_at = Some(to_proto(now));
        run.error = failure.map(|f| *f.detail);
        info!(state = ?state, attempts = run.attempts, jobs = ?run.job_ids, "run finished");
        if self.save(&run).await {
            ferry_metrics::metrics().schedules.run_finished(
                &def.name,
                run_result(state),
                now.as_millisecond() as f64 / 1000.0,
            );
        }
    }

    async fn find(&self, key: &str) -> Result<StoredSchedule> {
        if key.is_empty() {
            return Err(SchedulerError::invalid(
                "schedule",
                "empty",
                "name the schedule by its id or its name",
            ));
        }
        self.inner
            .store
            .find(key)
            .await?
            .ok_or_else(|| SchedulerError::NotFound {
                schedule: key.to_owned(),
            })
    }

    /// The schedule as the API shows it: definition, state and latest run.
    async fn view(&self, s: StoredSchedule) -> Result<Schedule> {
        let mut out = s.definition;
        out.suspended = s.suspended;
        out.next_run_at = s.next_run_ms.and_then(from_millis).map(to_proto);
        out.last_run = self.inner.store.last_run(&out.id).await?;
        Ok(out)
    }

    /// Validates and stores a schedule; its first run is due one interval (or the next
    /// cron time) from now.
    pub async fn create(&self, req: CreateScheduleRequest) -> Result<Schedule> {
        self.create_as(req, None).await
    }

    /// Creates a schedule for `creator` (None: the scheduler checks no callers, and a
    /// schedule may then go without a ServiceAccount, its runs acting for nobody). Its
    /// runs act as its ServiceAccount, which every creator must name, administrators
    /// too; others must be allowed to act as it ([`Scheduler::check_run_as`]).
    pub async fn create_as(
        &self,
        req: CreateScheduleRequest,
        creator: Option<&ferry_authz::Identity>,
    ) -> Result<Schedule> {
        let (mut def, trigger) = validate::definition(&self.inner.config, req)?;
        if let Some(who) = creator {
            self.check_run_as(who, &def).await?;
            def.created_by = who.caller.username.clone();
            def.created_by_groups = who.caller.groups.clone();
        }
        if let Some(schedule::Spec::ImportPolicy(policy)) = &mut def.spec {
            self.check_import_profile(policy).await?;
        }
        let now = Timestamp::now();
        def.id = new_id("sch");
        def.created_at = Some(to_proto(now));
        let suspended = def.suspended;
        let stored = StoredSchedule {
            next_run_ms: (!suspended)
                .then(|| trigger.next_after(now))
                .flatten()
                .map(Timestamp::as_millisecond),
            suspended,
            definition: def,
        };
        if !self.inner.store.insert(&stored).await? {
            return Err(SchedulerError::NameTaken {
                name: stored.definition.name,
            });
        }
        info!(schedule = %stored.definition.name, id = %stored.definition.id, "schedule created");
        self.view(stored).await
    }

    /// Every schedule's runs act as a ServiceAccount, administrators' too, so that
    /// Kubernetes judges each run by the rights RBAC gives it when the run starts (hole
    /// 7): never by the groups its creator had at creation, which Kubernetes cannot tell
    /// us again later. A namespace user names one of the schedule's own namespace that
    /// they may act as; an administrator may name any (they could act as it anyway).
    async fn check_run_as(&self, who: &ferry_authz::Identity, def: &Schedule) -> Result<()> {
        let Some(authz) = self.access() else {
            return Ok(());
        };
        let Some((namespace, name)) = def.service_account.split_once('/') else {
            return Err(no_service_account(who));
        };
        if who.admin {
            return Ok(());
        }
        let own = def
            .spec
            .as_ref()
            .and_then(validate::schedule_namespace)
            .unwrap_or_default();
        if own != namespace {
            let of_own = if own.is_empty() {
                String::new()
            } else {
                format!(" ({own})")
            };
            return Err(SchedulerError::invalid(
                "service_account",
                format!(
                    "{namespace}/{name} is a ServiceAccount of namespace {namespace}, not of \
                     the schedule's own namespace{of_own}, and {} is not an administrator, who \
                     alone may name one of another namespace",
                    who.caller.username
                ),
                format!(
                    "name a ServiceAccount of the schedule's namespace{of_own}: NAME alone \
                     (`--service-account NAME`, a MigrationSchedule's or ImportPolicy's \
                     `serviceAccountName`) means one of it"
                ),
            ));
        }
        authz
            .require(
                &who.caller,
                &[ferry_authz::Access::act_as_service_account(namespace, name)],
            )
            .await?;
        Ok(())
    }

    /// How callers are reviewed; None checks none.
    pub(crate) fn access(&self) -> Option<&ferry_authz::Authorizer> {
        self.inner.config.access.as_ref()
    }

    pub(crate) fn internal_credential(&self) -> Option<&str> {
        self.inner.config.internal.as_deref()
    }

    pub async fn get(&self, key: &str) -> Result<Schedule> {
        let s = self.find(key).await?;
        self.view(s).await
    }

    /// A page of schedules ordered by name.
    pub async fn list(&self, page_size: u32, page_token: &str) -> Result<(Vec<Schedule>, String)> {
        let (page, next) = self.inner.store.list(page_size, page_token).await?;
        let mut out = Vec::with_capacity(page.len());
        for s in page {
            out.push(self.view(s).await?);
        }
        Ok((out, next))
    }

    /// No new runs until resumed; a run in progress goes on.
    pub async fn suspend(&self, key: &str) -> Result<Schedule> {
        let s = self.find(key).await?;
        self.inner
            .store
            .set_suspended(&s.definition.id, true, None)
            .await?;
        info!(schedule = %s.definition.name, "schedule suspended");
        self.get(&s.definition.id).await
    }

    /// Runs again from the next due time after now; missed ones are not made up.
    pub async fn resume(&self, key: &str) -> Result<Schedule> {
        let s = self.find(key).await?;
        if s.suspended {
            let d = &s.definition;
            let next = Trigger::of(d.trigger.as_ref(), &d.time_zone)?
                .next_after(Timestamp::now())
                .map(Timestamp::as_millisecond);
            self.inner.store.set_suspended(&d.id, false, next).await?;
            info!(schedule = %d.name, "schedule resumed");
        }
        self.get(&s.definition.id).await
    }

    /// Removes the schedule and its runs; jobs it started go on in the transfer service.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let s = self.find(key).await?;
        let id = s.definition.id;
        self.inner.store.delete(&id).await?;
        for (schedule_id, token) in self.inner.active.lock().values() {
            if *schedule_id == id {
                token.cancel();
            }
        }
        ferry_metrics::metrics()
            .schedules
            .forget(&s.definition.name);
        info!(schedule = %s.definition.name, "schedule deleted");
        Ok(())
    }

    /// Starts a run now, also when suspended; refused while a run is going.
    pub async fn run_now(&self, key: &str) -> Result<ScheduleRun> {
        let s = self.find(key).await?;
        let def = s.definition;
        let run = new_run(&def.id, Timestamp::now(), true);
        match self.inner.store.start_manual(run).await? {
            Manual::Started(run) => {
                info!(schedule = %def.name, run = %run.id, "manual run");
                self.spawn_run(def, run.clone());
                Ok(run)
            }
            Manual::Busy(going) => Err(SchedulerError::RunInProgress {
                schedule: def.name,
                job_id: going.job_ids.last().cloned().unwrap_or_default(),
                run_id: going.id,
            }),
            Manual::Gone => Err(SchedulerError::NotFound { schedule: def.id }),
        }
    }

    /// A page of the schedule's runs, newest first.
    pub async fn runs(
        &self,
        key: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<ScheduleRun>, String)> {
        let s = self.find(key).await?;
        self.inner
            .store
            .runs(&s.definition.id, page_size, page_token)
            .await
    }
}

/// A job that ended but not well, as a failed attempt: retried unless it was cancelled
/// (someone stopped it on purpose).
fn job_failure(job_id: &str, o: JobOutcome) -> JobError {
    let (code, message, hint, retryable) = match o.state {
        JobState::Cancelled => (
            ErrorCode::Cancelled,
            format!("job {job_id} was cancelled"),
            "the next run starts on schedule; RunNow starts one at once".to_owned(),
            false,
        ),
        JobState::PartiallySucceeded => (
            ErrorCode::Conflict,
            format!("job {job_id} finished, but some objects or volumes failed"),
            format!("GetJob {job_id} lists them in its report"),
            true,
        ),
        state => (
            ErrorCode::Internal,
            format!("job {job_id} ended {state:?} without saying why"),
            format!("look at job {job_id} with GetJob and at the transfer service's logs"),
            true,
        ),
    };
    // The job's own error says it best when it has one.
    let detail = o
        .error
        .filter(|_| o.state != JobState::Cancelled)
        .unwrap_or_else(|| ferry_rpc::error_detail(code, message, hint));
    JobError {
        detail: Box::new(detail),
        retryable,
    }
}

/// The refusal of a schedule that names no ServiceAccount, created by `who`.
fn no_service_account(who: &ferry_authz::Identity) -> SchedulerError {
    let (which, may) = if who.admin {
        (
            "NAME (one of the schedule's namespace) or NAMESPACE/NAME",
            "",
        )
    } else {
        (
            "NAME, one of the schedule's namespace",
            " and that you may get tokens for",
        )
    };
    SchedulerError::invalid(
        "service_account",
        format!(
            "empty; every schedule's runs act as a ServiceAccount, administrators' too: \
             Kubernetes judges each run as it, with the rights RBAC gives it when the run \
             starts, as it judges a CronJob's pods, never with the groups {} had when \
             creating the schedule",
            who.caller.username
        ),
        format!(
            "name a ServiceAccount that holds the rights each run needs{may}: \
             `--service-account {which}` (a MigrationSchedule's or ImportPolicy's \
             `serviceAccountName`); make one with `kubectl -n NAMESPACE create serviceaccount \
             NAME` and grant it those rights with a RoleBinding, on the destination too, \
             where runs write as it"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use ferry_proto::v1::{
        ApplicationSelector, Profile, RepositoryRef, RestorePoint, StartExportRequest,
        StartMigrationRequest, StartRestoreRequest,
    };

    use super::*;

    /// Jobs that count the jobs they are asked to start; each succeeds at once.
    #[derive(Debug, Default)]
    struct Counting {
        started: AtomicUsize,
    }

    impl Counting {
        fn start(&self) -> Result<String, JobError> {
            let n = self.started.fetch_add(1, Ordering::SeqCst);
            Ok(format!("job-{n}"))
        }
    }

    #[async_trait::async_trait]
    impl Jobs for Counting {
        async fn start_migration(&self, _: StartMigrationRequest) -> Result<String, JobError> {
            self.start()
        }
        async fn start_export(&self, _: StartExportRequest) -> Result<String, JobError> {
            self.start()
        }
        async fn start_restore(&self, _: StartRestoreRequest) -> Result<String, JobError> {
            self.start()
        }
        async fn wait(&self, _: &str) -> Result<JobOutcome, JobError> {
            Ok(JobOutcome {
                state: JobState::Succeeded,
                error: None,
                restore_point_id: String::new(),
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
            Ok(Vec::new())
        }
        async fn label_restore_point(
            &self,
            _: &RepositoryRef,
            _: &str,
            _: HashMap<String, String>,
        ) -> Result<(), JobError> {
            Ok(())
        }
    }

    /// Hole 7: an administrator's schedule stored before every schedule had to name a
    /// ServiceAccount would run with the groups its creator had at creation. Its run
    /// fails instead, naming the schedule and the fix, and starts no job.
    #[tokio::test]
    async fn a_schedule_stored_without_a_service_account_starts_nothing() {
        let dir = tempfile::tempdir().expect("a directory");
        let jobs = Arc::new(Counting::default());
        let scheduler = Scheduler::open(SchedulerConfig::new(dir.path()), jobs.clone())
            .await
            .expect("open");
        let legacy = Schedule {
            id: "sch-legacy".into(),
            name: "legacy".into(),
            trigger: Some(schedule::Trigger::Interval(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            })),
            spec: Some(schedule::Spec::Export(StartExportRequest {
                application: Some(ApplicationSelector {
                    namespace: "shop".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            created_by: "admin".into(),
            created_by_groups: vec!["system:masters".into()],
            ..Default::default()
        };
        let stored = StoredSchedule {
            definition: legacy,
            suspended: true,
            next_run_ms: None,
        };
        assert!(scheduler.inner.store.insert(&stored).await.expect("insert"));

        let run = scheduler.run_now("legacy").await.expect("a run");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let ended = loop {
            let (runs, _) = scheduler.runs("legacy", 10, "").await.expect("runs");
            let found = runs.into_iter().find(|r| r.id == run.id).expect("the run");
            if found.state != RunState::Running as i32 {
                break found;
            }
            assert!(std::time::Instant::now() < deadline, "{found:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(ended.state, RunState::Failed as i32, "{ended:#?}");
        let error = ended.error.clone().unwrap_or_default();
        assert_eq!(error.code, ErrorCode::PermissionDenied as i32, "{ended:#?}");
        assert!(
            error.message.contains("schedule legacy (sch-legacy)")
                && error.message.contains("names no ServiceAccount"),
            "{ended:#?}"
        );
        assert!(error.hint.contains("--service-account"), "{ended:#?}");
        assert!(ended.job_ids.is_empty(), "{ended:#?}");
        assert_eq!(jobs.started.load(Ordering::SeqCst), 0);
        scheduler.shutdown().await;
    }
}
