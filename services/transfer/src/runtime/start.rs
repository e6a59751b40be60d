//! Starting jobs: each Start* request checked, authorized for its caller and queued,
//! and what callers may see and do with jobs.

use std::collections::HashMap;

use ferry_proto::v1::{
    ActivateRequest, ApplicationSelector, ClusterRef, Job, JobKind, RepositoryRef,
    StartExportRequest, StartMigrationRequest, StartRestoreRequest,
};
use prost::Message;
use tracing::info;

use crate::access::{Actor, Gate};
use crate::error::{Result, TransferError};

use super::Transfer;

impl Transfer {
    /// Validates and queues a migration, checking no caller.
    pub async fn start_migration(&self, req: StartMigrationRequest) -> Result<Job> {
        let mut jobs = self.start_migrations(req, None, None).await?;
        jobs.truncate(1);
        jobs.pop()
            .ok_or_else(|| TransferError::invalid("application.namespace", "names no namespace"))
    }

    /// Validates, authorizes for `actor` (None: no checks) and queues a migration: one
    /// job per namespace it names. Nothing starts unless every one is allowed.
    /// `destination_bearer` is the caller's own credential for the destination: the
    /// destination verifies it, reviews and takes the job's writes as that identity.
    pub async fn start_migrations(
        &self,
        req: StartMigrationRequest,
        actor: Option<&Actor>,
        destination_bearer: Option<&str>,
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
        let destination = self
            .verify_destination(
                requests.first().and_then(|r| r.destination.as_ref()),
                destination_bearer,
            )
            .await?;
        if let Some(actor) = actor {
            let gate = self.gate()?;
            let dest_actor = destination.as_ref().map_or(actor, |d| &d.who);
            for r in &requests {
                let app = r.application.clone().unwrap_or_default();
                let target = crate::migrate::target_namespace(
                    &r.apply.clone().unwrap_or_default(),
                    &app.namespace,
                );
                let to =
                    crate::access::Target::of(r.destination.as_ref(), &target, r.apply.as_ref());
                // A warm migration's cutover stops the source's workloads.
                gate.may_move(
                    actor,
                    r.source.as_ref(),
                    &crate::source::capture_spec(&app),
                    Some((to, dest_actor)),
                    r.quiesce_source || r.warm.is_some(),
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
                warm: r.warm.map(|_| ferry_proto::v1::WarmStatus::default()),
                ..new_job(
                    JobKind::Migration,
                    &r.application,
                    r.dry_run,
                    &r.schedule_id,
                )
            };
            let bytes = r.encode_to_vec();
            jobs.push(self.queue(job, bytes, actor, destination.clone()).await?);
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
        crate::mover::check_options(req.volumes.as_ref())?;
        if req.destination.is_none() {
            return Err(TransferError::invalid(
                "destination",
                "missing; name the destination cluster (a pair id or a context)",
            ));
        }
        crate::warm::check_options(req)?;
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
        crate::mover::check_options(req.volumes.as_ref())?;
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
            // A migration token carries the key of the profile's whole repository, which
            // opens every namespace exported into it: as IssueMigrationToken, only an
            // administrator may have one made.
            if !req.recipient_key.trim().is_empty() {
                self.gate()?
                    .require_admin(
                        actor,
                        req.source.as_ref(),
                        "an export with a migration token (recipient_key, `--recipient-key-file`; \
                         the token's key opens every namespace in the profile's repository, so \
                         export without it and ask an administrator for the token: \
                         IssueMigrationToken)",
                    )
                    .await?;
            }
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
        self.queue(job, req.encode_to_vec(), actor, None).await
    }

    /// Validates and queues a restore (an import when a schedule starts it), checking
    /// no caller.
    pub async fn start_restore(&self, req: StartRestoreRequest) -> Result<Job> {
        self.start_restore_as(req, None, None).await
    }

    /// Validates and queues a restore for `actor` (None: no checks). What it reads and
    /// creates is only known once the restore point is read, so the job reviews both
    /// (read rights on the namespace it was captured from, as a migration of it needs)
    /// before it reports or applies anything of it.
    pub async fn start_restore_as(
        &self,
        req: StartRestoreRequest,
        actor: Option<&Actor>,
        destination_bearer: Option<&str>,
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
        crate::mover::check_options(req.volumes.as_ref())?;
        self.check_repository(req.repository.as_ref(), "holding the restore point")?;
        self.check_cluster(req.destination.as_ref()).await?;
        let destination = self
            .verify_destination(req.destination.as_ref(), destination_bearer)
            .await?;
        let job = Job {
            destination: req.destination.clone(),
            requested_by: requested_by(actor),
            request_id: req.request_id.clone(),
            ..new_job(kind, &req.application, req.dry_run, &req.schedule_id)
        };
        self.queue(job, req.encode_to_vec(), actor, destination)
            .await
    }

    /// The caller's credential for the destination `r` names, verified there; None
    /// without one. Verified whether or not the service checks callers: the job writes
    /// there with it.
    async fn verify_destination(
        &self,
        r: Option<&ClusterRef>,
        bearer: Option<&str>,
    ) -> Result<Option<crate::access::DestinationCredential>> {
        let Some(bearer) = bearer else {
            return Ok(None);
        };
        crate::access::verify_destination(&*self.inner.deps.clusters, r, bearer)
            .await
            .map(Some)
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
