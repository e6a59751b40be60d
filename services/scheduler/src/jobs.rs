//! What the scheduler asks of the other services: the [`Jobs`] trait (start and follow
//! transfer jobs; for import policies, read profiles and restore points from the catalog
//! and label them), and [`TransferJobs`], its implementation over the transfer and catalog
//! services' gRPC APIs (what the binary and `ferry serve` use).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_proto::v1::catalog_service_client::CatalogServiceClient;
use ferry_proto::v1::transfer_service_client::TransferServiceClient;
use ferry_proto::v1::{
    ErrorCode, ErrorDetail, GetProfileRequest, JobRef, JobReport, JobState,
    LabelRestorePointRequest, ListRestorePointsRequest, Profile, RepositoryRef, RestorePoint,
    StartExportRequest, StartJobResponse, StartMigrationRequest, StartRestoreRequest,
    WatchJobRequest, job_event,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

tokio::task_local! {
    /// The user a schedule's run acts as (its ServiceAccount): the transfer service
    /// checks every job against its rights, never the scheduler's.
    static ACTING_FOR: Option<Requester>;
}

/// Who a run acts for: user name and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub user: String,
    pub groups: Vec<String>,
}

impl Requester {
    /// Who the runs of `def` act as: its ServiceAccount, named as its tokens would name
    /// it, so Kubernetes judges each run by the rights RBAC gives it then; nobody when
    /// it has none and no creator (a scheduler that checks no callers). A schedule with
    /// a creator but no ServiceAccount was stored before every schedule needed one: its
    /// runs would act with the groups its creator had at creation, frozen since, so
    /// they act for nobody and fail with this error instead.
    pub fn of_run(def: &ferry_proto::v1::Schedule) -> Result<Option<Requester>, JobError> {
        if let Some((namespace, name)) = def.service_account.split_once('/') {
            let (user, groups) = ferry_authz::service_account_identity(namespace, name);
            return Ok(Some(Requester { user, groups }));
        }
        if def.created_by.is_empty() {
            return Ok(None);
        }
        Err(JobError {
            detail: Box::new(ferry_rpc::error_detail(
                ErrorCode::PermissionDenied,
                format!(
                    "schedule {} ({}) names no ServiceAccount to run as: it was created by {} \
                     before every schedule had to, and its runs would act with the groups \
                     they had then, which nobody checks again; this run started nothing",
                    def.name, def.id, def.created_by
                ),
                format!(
                    "recreate it with a ServiceAccount that holds the rights each run needs: \
                     `ferry schedules delete {name}`, then create it again with \
                     `--service-account NAME` (a MigrationSchedule or ImportPolicy: delete the \
                     object and apply it again with spec.serviceAccountName)",
                    name = def.name
                ),
            )),
            retryable: false,
        })
    }
}

/// Runs `f` with every job it starts acting for `who` (None: for the scheduler itself).
pub async fn acting_for<F: std::future::Future>(who: Option<Requester>, f: F) -> F::Output {
    ACTING_FOR.scope(who, f).await
}

/// `message` as a request carrying the acting user, when there is one.
fn on_behalf<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(who) = ACTING_FOR.try_with(Clone::clone).ok().flatten() {
        ferry_authz::act_for(request.metadata_mut(), &who.user, &who.groups);
    }
    request
}

/// How a finished job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    /// A final state.
    pub state: JobState,
    /// Why it failed, when it did.
    pub error: Option<ErrorDetail>,
    /// Restore point it wrote, if any.
    pub restore_point_id: String,
}

impl JobOutcome {
    fn of(report: &JobReport) -> JobOutcome {
        JobOutcome {
            state: JobState::try_from(report.state).unwrap_or(JobState::Unspecified),
            error: report.error.clone(),
            restore_point_id: report.restore_point_id.clone(),
        }
    }
}

/// A job could not be started or followed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", detail.message)]
pub struct JobError {
    /// What went wrong, as the transfer service said it (or as the scheduler saw it).
    pub detail: Box<ErrorDetail>,
    /// True when the same call may work later unchanged (the service was unreachable);
    /// a refused request is not retried, it would be refused again.
    pub retryable: bool,
}

impl JobError {
    /// The error a status from the transfer service stands for.
    pub fn from_status(action: &str, status: &Status) -> JobError {
        JobError::from_status_of("transfer", action, status)
    }

    /// The error a status from the catalog stands for, its message saying what the
    /// scheduler was asking.
    fn from_catalog(action: &str, status: &Status) -> JobError {
        let mut e = JobError::from_status_of("catalog", action, status);
        if !e.detail.message.starts_with(action) {
            e.detail.message = format!("{action}: {}", e.detail.message);
        }
        e
    }

    /// The error a status from `service` ("transfer", "catalog") stands for.
    pub fn from_status_of(service: &str, action: &str, status: &Status) -> JobError {
        let retryable = matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
                | Code::Unknown
        );
        let detail = ferry_rpc::detail(status).unwrap_or_else(|| {
            let code = match status.code() {
                Code::Unavailable => ErrorCode::Unreachable,
                Code::DeadlineExceeded => ErrorCode::Timeout,
                Code::NotFound => ErrorCode::NotFound,
                Code::InvalidArgument | Code::Unimplemented => ErrorCode::InvalidArgument,
                Code::PermissionDenied => ErrorCode::PermissionDenied,
                Code::Cancelled => ErrorCode::Cancelled,
                _ => ErrorCode::Internal,
            };
            ferry_rpc::error_detail(
                code,
                format!("{action}: {}", status.message()),
                format!("check that the {service} service runs and that the scheduler reaches it"),
            )
        });
        JobError {
            detail: Box::new(detail),
            retryable,
        }
    }
}

/// Starts and follows transfer jobs for the scheduler, and answers an import policy's
/// questions to the catalog.
#[async_trait::async_trait]
pub trait Jobs: Send + Sync + std::fmt::Debug + 'static {
    /// Starts a migration; returns the new job's id.
    async fn start_migration(&self, request: StartMigrationRequest) -> Result<String, JobError>;
    /// Starts an export; returns the new job's id.
    async fn start_export(&self, request: StartExportRequest) -> Result<String, JobError>;
    /// Starts a restore (an import when `schedule_id` is set); returns the new job's id.
    async fn start_restore(&self, request: StartRestoreRequest) -> Result<String, JobError>;
    /// Waits until the job is final. May take hours; the scheduler stops waiting by
    /// dropping the future, which must therefore be safe to drop at any await.
    async fn wait(&self, job_id: &str) -> Result<JobOutcome, JobError>;
    /// The catalog's profile `name`; `None` when the catalog has no profile of that name.
    async fn profile(&self, name: &str) -> Result<Option<Profile>, JobError>;
    /// Every restore point the repository holds now (of `namespace` as on the source, when
    /// not empty), read from the repository itself: a store that cannot be listed is an
    /// error, never an empty list.
    async fn restore_points(
        &self,
        repository: &RepositoryRef,
        namespace: &str,
    ) -> Result<Vec<RestorePoint>, JobError>;
    /// Sets labels the catalog keeps on a restore point (LabelRestorePoint).
    async fn label_restore_point(
        &self,
        repository: &RepositoryRef,
        id: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), JobError>;
    /// Applies a schedule's retention to a repository through the catalog
    /// (PruneRepository). A repository another writer holds fails with an error whose
    /// code is REPOSITORY_LOCKED. Implementations that cannot prune refuse with an
    /// INTERNAL error, so retention is reported as not applied rather than skipped quietly.
    async fn prune_repository(
        &self,
        request: ferry_proto::v1::PruneRepositoryRequest,
    ) -> Result<ferry_proto::v1::PruneRepositoryResponse, JobError> {
        let profile = request.repository.map(|r| r.profile).unwrap_or_default();
        Err(JobError {
            detail: Box::new(ferry_rpc::error_detail(
                ErrorCode::Internal,
                format!("pruning profile {profile:?}: this scheduler's jobs cannot prune"),
                "run the scheduler with TransferJobs, which asks the catalog",
            )),
            retryable: false,
        })
    }
}

/// Restore points asked of the catalog per ListRestorePoints call.
const RESTORE_POINT_PAGE: u32 = 1000;

/// [`Jobs`] over `ferry.v1.TransferService` and `ferry.v1.CatalogService`.
#[derive(Debug, Clone)]
pub struct TransferJobs {
    /// Calls carry the run's trace context, so a job's spans join the schedule's run.
    client: TransferServiceClient<ferry_rpc::TracedChannel>,
    /// The catalog of the cluster the import policies restore onto.
    catalog: CatalogServiceClient<ferry_rpc::TracedChannel>,
    /// Longest time the transfer service may stay unreachable while a job is followed
    /// before the attempt counts as failed.
    pub unreachable_limit: Duration,
}

/// Pause between attempts to follow a job while the transfer service is unreachable.
const REWATCH_DELAY: Duration = Duration::from_secs(1);

impl TransferJobs {
    pub fn new(channel: Channel) -> TransferJobs {
        TransferJobs::traced(ferry_rpc::traced_channel(channel))
    }

    /// Over a channel made by the caller (one carrying credentials, say).
    pub fn traced(channel: ferry_rpc::TracedChannel) -> TransferJobs {
        TransferJobs {
            client: TransferServiceClient::new(channel.clone()),
            catalog: CatalogServiceClient::new(channel),
            unreachable_limit: Duration::from_secs(600),
        }
    }

    /// A client that connects on first use: in `ferry serve` the transfer service is
    /// this same server, which is not listening yet when the scheduler is built. The
    /// catalog is asked at the same endpoint (`ferry serve` has every service on one
    /// port) unless [`TransferJobs::with_catalog`] names another.
    pub fn lazy(endpoint: &str) -> Result<TransferJobs, tonic::transport::Error> {
        TransferJobs::lazy_with(endpoint, &ferry_rpc::ClientTls::new())
    }

    /// [`TransferJobs::lazy`] speaking TLS to an `https://` endpoint with `tls`; a
    /// failed handshake fails the call with a status naming the mismatch.
    pub fn lazy_with(
        endpoint: &str,
        tls: &ferry_rpc::ClientTls,
    ) -> Result<TransferJobs, tonic::transport::Error> {
        let channel = tls.endpoint(endpoint)?.connect_lazy();
        Ok(TransferJobs::traced(tls.traced(endpoint, channel)))
    }

    /// Asks the catalog at `endpoint` (connected on first use) instead of the transfer
    /// service's endpoint.
    pub fn with_catalog(
        mut self,
        endpoint: &str,
        tls: &ferry_rpc::ClientTls,
    ) -> Result<TransferJobs, tonic::transport::Error> {
        let channel = tls.endpoint(endpoint)?.connect_lazy();
        self.catalog = CatalogServiceClient::new(tls.traced(endpoint, channel));
        Ok(self)
    }

    /// The id of the job a Start* call started, or why there is none.
    fn started(
        action: &str,
        answer: Result<tonic::Response<StartJobResponse>, Status>,
    ) -> Result<String, JobError> {
        answer
            .map_err(|s| JobError::from_status(action, &s))?
            .into_inner()
            .job
            .map(|j| j.id)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| JobError {
                detail: Box::new(ferry_rpc::error_detail(
                    ErrorCode::Internal,
                    format!("{action}: the transfer service returned no job id"),
                    "report this as a bug",
                )),
                retryable: false,
            })
    }

    /// One WatchJob stream followed to its report; `Ok(None)` when the stream broke
    /// before it (the caller watches again). `reached` turns true once the service
    /// answered with an event.
    async fn watch_once(
        &self,
        job_id: &str,
        reached: &mut bool,
    ) -> Result<Option<JobOutcome>, Status> {
        let mut stream = self
            .client
            .clone()
            .watch_job(WatchJobRequest {
                job: Some(JobRef { id: job_id.into() }),
            })
            .await?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    *reached = true;
                    if let Some(job_event::Event::Report(report)) = event.event {
                        return Ok(Some(JobOutcome::of(&report)));
                    }
                }
                // The stream ends after the report; ending earlier means the transfer
                // service stopped (it resumes the job when it starts again).
                Ok(None) => return Ok(None),
                Err(s) if s.code() == Code::NotFound => return Err(s),
                Err(_) => return Ok(None),
            }
        }
    }
}

#[async_trait::async_trait]
impl Jobs for TransferJobs {
    async fn start_migration(&self, request: StartMigrationRequest) -> Result<String, JobError> {
        let answer = self
            .client
            .clone()
            .start_migration(on_behalf(request))
            .await;
        Self::started("starting the migration", answer)
    }

    async fn start_export(&self, request: StartExportRequest) -> Result<String, JobError> {
        let answer = self.client.clone().start_export(on_behalf(request)).await;
        Self::started("starting the export", answer)
    }

    async fn start_restore(&self, request: StartRestoreRequest) -> Result<String, JobError> {
        let answer = self.client.clone().start_restore(on_behalf(request)).await;
        Self::started("starting the restore", answer)
    }

    async fn profile(&self, name: &str) -> Result<Option<Profile>, JobError> {
        let answer = self
            .catalog
            .clone()
            .get_profile(GetProfileRequest { name: name.into() })
            .await;
        match answer {
            Ok(r) => Ok(r.into_inner().profile),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(JobError::from_catalog(
                &format!("reading profile {name:?} from the catalog"),
                &s,
            )),
        }
    }

    async fn restore_points(
        &self,
        repository: &RepositoryRef,
        namespace: &str,
    ) -> Result<Vec<RestorePoint>, JobError> {
        let action = format!(
            "listing the restore points of profile {:?}",
            repository.profile
        );
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .catalog
                .clone()
                .list_restore_points(ListRestorePointsRequest {
                    repository: Some(repository.clone()),
                    namespace: namespace.into(),
                    page_size: RESTORE_POINT_PAGE,
                    page_token,
                })
                .await
                .map_err(|s| JobError::from_catalog(&action, &s))?
                .into_inner();
            out.extend(page.restore_points);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
    }

    async fn label_restore_point(
        &self,
        repository: &RepositoryRef,
        id: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), JobError> {
        self.catalog
            .clone()
            .label_restore_point(LabelRestorePointRequest {
                repository: Some(repository.clone()),
                id: id.into(),
                labels,
            })
            .await
            .map_err(|s| JobError::from_catalog(&format!("labelling restore point {id}"), &s))?;
        Ok(())
    }

    async fn prune_repository(
        &self,
        request: ferry_proto::v1::PruneRepositoryRequest,
    ) -> Result<ferry_proto::v1::PruneRepositoryResponse, JobError> {
        let action = format!(
            "pruning profile {:?}",
            request
                .repository
                .as_ref()
                .map(|r| r.profile.as_str())
                .unwrap_or_default()
        );
        self.catalog
            .clone()
            .prune_repository(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| JobError::from_catalog(&action, &s))
    }

    async fn wait(&self, job_id: &str) -> Result<JobOutcome, JobError> {
        let action = format!("following job {job_id}");
        let mut unreachable_since: Option<Instant> = None;
        loop {
            let mut reached = false;
            let problem = match self.watch_once(job_id, &mut reached).await {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => None,
                Err(s) => {
                    let e = JobError::from_status(&action, &s);
                    if !e.retryable {
                        return Err(e);
                    }
                    Some(e)
                }
            };
            if reached {
                unreachable_since = None;
            }
            let since = *unreachable_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.unreachable_limit {
                let detail = problem.map(|e| *e.detail).unwrap_or_else(|| {
                    ferry_rpc::error_detail(
                        ErrorCode::Unreachable,
                        format!("{action}: the transfer service kept closing the stream"),
                        "",
                    )
                });
                return Err(JobError {
                    detail: Box::new(ErrorDetail {
                        code: ErrorCode::Unreachable as i32,
                        hint: format!(
                            "the transfer service was unreachable for {}s; check it, then \
                             look the job up with GetJob",
                            self.unreachable_limit.as_secs()
                        ),
                        ..detail
                    }),
                    retryable: true,
                });
            }
            tokio::time::sleep(REWATCH_DELAY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::v1::Schedule;

    #[test]
    fn runs_act_as_the_service_account_and_never_with_groups_recorded_at_creation() {
        let with = |service_account: &str, created_by: &str| Schedule {
            id: "sch-1".into(),
            name: "nightly".into(),
            created_by: created_by.into(),
            created_by_groups: vec!["system:masters".into()],
            service_account: service_account.into(),
            ..Default::default()
        };
        let sa = Requester::of_run(&with("shop/mover", "admin")).expect("acts");
        assert_eq!(
            sa.map(|r| r.user),
            Some("system:serviceaccount:shop:mover".to_owned())
        );
        // A scheduler that checks no callers: nobody.
        assert_eq!(Requester::of_run(&with("", "")).expect("acts"), None);
        // Stored before every schedule needed one: refused, not run with frozen groups.
        let refused = Requester::of_run(&with("", "admin")).expect_err("refused");
        assert!(!refused.retryable);
        assert_eq!(refused.detail.code, ErrorCode::PermissionDenied as i32);
        assert!(
            refused.detail.message.contains("schedule nightly (sch-1)"),
            "{refused:?}"
        );
        assert!(
            refused.detail.hint.contains("--service-account"),
            "{refused:?}"
        );
    }
}
