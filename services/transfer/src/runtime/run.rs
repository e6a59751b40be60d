//! A running job as its runner sees it: its request, checkpoint, report, steps and
//! progress, the agent operations it runs, and how it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1::{
    ErrorDetail, Job, JobKind, JobReport, JobState, JobStep, ObjectAction, ObjectOutcome, Progress,
    RepositoryRef, StepState, VolumeResult, job_event,
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::access::{Actor, Gate};
use crate::error::{Result, TransferError, proto_object};
use crate::job::{self, Checkpoint};

use super::{AgentOp, Deps, Inner, JobCtl, PROGRESS_INTERVAL, TransferConfig, event, non_empty};

/// A running job, as its runner sees it.
#[derive(Debug, Clone)]
pub(crate) struct JobRun {
    pub(super) inner: Arc<Inner>,
    pub(super) ctl: Arc<JobCtl>,
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

    /// `cluster` as the job writes the application's objects on it: with the caller's
    /// own credential for it when they gave one (verified there when the job started),
    /// else acting as the user who started the job (impersonation, which a pair's
    /// destination allows only when it trusts its sources' identities). Either way the
    /// API server's RBAC, its escalation check and its admission judge every write as
    /// theirs. Unchanged when the service checks no callers. Ferry's own objects
    /// (restored volumes' PersistentVolumes, mover pods) are still written with
    /// `cluster`'s own credential.
    pub async fn writer(&self, cluster: &ferry_kube::Cluster) -> Result<ferry_kube::Cluster> {
        let given = self.ctl.destination.lock().clone();
        if let Some(d) = given {
            return cluster
                .as_bearer(&d.bearer, &d.who.caller.username)
                .map_err(|e| TransferError::Cluster {
                    cluster: cluster.name.clone(),
                    message: e.to_string(),
                    hint: "name the destination by a pair or a kubeconfig context".into(),
                });
        }
        let Some((actor, _)) = self.requester() else {
            return Ok(cluster.clone());
        };
        let user = actor.caller.username.clone();
        let acting = cluster
            .acting_as(&crate::access::act_as(&actor))
            .map_err(|e| TransferError::Cluster {
                cluster: cluster.name.clone(),
                message: e.to_string(),
                hint: "give the transfer service the cluster's configuration (a kubeconfig \
                       context or a pair), whose credential may impersonate users"
                    .into(),
            })?;
        // Asked once up front, so a destination that does not let Ferry act as the user
        // says so by name before anything is written.
        if let Err(e) = ferry_kube::who_am_i(&acting).await {
            let refused = matches!(e.kube_source(), Some(kube::Error::Api(s)) if s.code == 403);
            let message = match (&cluster.credential, refused) {
                (Some(c), true) => format!(
                    "Ferry may not write there as user {user}: it does not let {} act as \
                     another user (no impersonate right)",
                    c.who
                ),
                (None, true) => format!(
                    "Ferry may not write there as user {user}: its own credential may not \
                     act as another user (no impersonate right)"
                ),
                (_, false) => format!("Ferry may not write there as user {user}: {e}"),
            };
            let hint = if cluster.credential.is_some() {
                format!(
                    "cluster {} verifies who writes there itself unless its administrator \
                     trusts the identities its paired sources name (ferry serve \
                     --trust-source-identities, or the chart's pairing.trustSourceIdentities, \
                     then a new pairing token): start the job again with your own \
                     credential for it (ferry migrate --to-context CONTEXT, or \
                     --to-token-file FILE). Scheduled jobs, Migration objects and jobs \
                     resumed after a restart carry no such credential and need that trust",
                    cluster.name
                )
            } else {
                "grant Ferry's ServiceAccount the impersonate verb on users, groups and \
                 serviceaccounts (the Helm chart does)"
                    .to_owned()
            };
            return Err(TransferError::Cluster {
                cluster: cluster.name.clone(),
                message,
                hint,
            });
        }
        Ok(acting)
    }

    /// Fails unless the user who started the job may create `types` in `target` on
    /// `destination`; nothing to check when the service checks no callers.
    pub async fn require_create(
        &self,
        target: crate::access::Target<'_>,
        types: &[kube::api::ApiResource],
    ) -> Result<()> {
        let verified = self.ctl.destination.lock().clone();
        match self.requester() {
            // The identity the destination verified, when the caller gave their own
            // credential for it.
            Some((_, gate)) if let Some(d) = verified => {
                gate.may_create(&d.who, target, types).await
            }
            Some((actor, gate)) => gate.may_create(&actor, target, types).await,
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

    pub(super) async fn set_state(&self, state: JobState) {
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
                // A step that says something new while it runs (a warm migration's
                // syncs) keeps its start.
                StepState::Running if s.state == StepState::Running as i32 => {}
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

    /// Puts finished steps back to pending, to run again (a warm migration's syncs);
    /// watchers see each one when it next starts.
    pub async fn reset_steps(&self, names: &[&str]) {
        {
            let mut d = self.ctl.data.lock();
            for name in names {
                if let Some(s) = job::step_mut(&mut d.job, name) {
                    s.state = StepState::Pending as i32;
                    s.started_at = None;
                    s.finished_at = None;
                    s.message.clear();
                }
            }
        }
        self.persist(false).await;
    }

    /// A warm migration's status, changed by `f`, kept in the job and its report, saved
    /// and sent to watchers as a snapshot of the job.
    pub async fn update_warm<T>(&self, f: impl FnOnce(&mut ferry_proto::v1::WarmStatus) -> T) -> T {
        let out = {
            let mut d = self.ctl.data.lock();
            let warm = d.job.warm.get_or_insert_with(Default::default);
            let out = f(warm);
            let copy = warm.clone();
            d.report.warm = Some(copy);
            d.job.updated_at = Some(job::now());
            out
        };
        self.persist(false).await;
        self.announce();
        out
    }

    /// A warm migration's status as it is now.
    pub fn warm(&self) -> ferry_proto::v1::WarmStatus {
        self.ctl.data.lock().job.warm.clone().unwrap_or_default()
    }

    /// Resolves when a cutover is asked (see [`Transfer::cutover`]); check
    /// `warm().cutover_requested` before waiting, as an asked one may have come first.
    ///
    /// [`Transfer::cutover`]: super::Transfer::cutover
    pub async fn cutover_asked(&self) {
        self.ctl.cutover.notified().await;
    }

    /// Sends watchers the whole job as it is now.
    pub fn announce(&self) {
        let d = self.ctl.data.lock();
        let _ = self.ctl.events.send(event(
            &d.job.id,
            job_event::Event::Snapshot(Box::new(d.job.clone())),
        ));
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
    pub(super) async fn finish(&self, result: Result<JobState>) {
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
                Duration::from_secs_f64(ferry_rpc::seconds_between(a, b).max(0.0))
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
