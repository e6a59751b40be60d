//! `ferry.v1.TransferService` over the [`Transfer`] runtime.

use std::pin::Pin;

use ferry_proto::v1::transfer_service_server::TransferService;
use ferry_proto::v1::{
    ActivateRequest, ActivateResponse, CancelJobRequest, CancelJobResponse, CutoverRequest,
    CutoverResponse, GetJobRequest, GetJobResponse, JobEvent, ListJobsRequest, ListJobsResponse,
    StartExportRequest, StartJobResponse, StartMigrationRequest, StartRestoreRequest,
    WatchJobRequest,
};
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::error::TransferError;
use crate::runtime::Transfer;
use crate::store::ListQuery;

type EventStream = Pin<Box<dyn Stream<Item = Result<JobEvent, Status>> + Send + 'static>>;

fn job_id(r: Option<ferry_proto::v1::JobRef>) -> Result<String, Status> {
    r.map(|j| j.id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| TransferError::invalid("job.id", "empty; name the job").to_status())
}

#[tonic::async_trait]
impl TransferService for Transfer {
    type WatchJobStream = EventStream;

    #[instrument(skip_all, fields(namespace = ?request.get_ref().application.as_ref().map(|a| &a.namespace)))]
    async fn start_migration(
        &self,
        request: Request<StartMigrationRequest>,
    ) -> Result<Response<StartJobResponse>, Status> {
        let actor = self.identify(request.metadata()).await?;
        let destination = ferry_authz::destination_bearer(request.metadata());
        let jobs = self
            .start_migrations(request.into_inner(), actor.as_ref(), destination.as_deref())
            .await?;
        Ok(Response::new(StartJobResponse {
            job: jobs.first().cloned(),
            jobs,
        }))
    }

    #[instrument(skip_all, fields(restore_point = %request.get_ref().restore_point_id))]
    async fn start_restore(
        &self,
        request: Request<StartRestoreRequest>,
    ) -> Result<Response<StartJobResponse>, Status> {
        let actor = self.identify(request.metadata()).await?;
        let destination = ferry_authz::destination_bearer(request.metadata());
        let job = self
            .start_restore_as(request.into_inner(), actor.as_ref(), destination.as_deref())
            .await?;
        Ok(Response::new(StartJobResponse {
            job: Some(job.clone()),
            jobs: vec![job],
        }))
    }

    #[instrument(skip_all, fields(namespace = ?request.get_ref().application.as_ref().map(|a| &a.namespace)))]
    async fn start_export(
        &self,
        request: Request<StartExportRequest>,
    ) -> Result<Response<StartJobResponse>, Status> {
        let actor = self.identify(request.metadata()).await?;
        let job = self
            .start_export_as(request.into_inner(), actor.as_ref())
            .await?;
        Ok(Response::new(StartJobResponse {
            job: Some(job.clone()),
            jobs: vec![job],
        }))
    }

    #[instrument(skip_all)]
    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        let actor = self.identify(request.metadata()).await?;
        let id = job_id(request.into_inner().job)?;
        let (job, report) = self.get(&id).await?;
        self.require_see(actor.as_ref(), &job).await?;
        Ok(Response::new(GetJobResponse {
            job: Some(job),
            report,
        }))
    }

    #[instrument(skip_all)]
    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let actor = self.identify(request.metadata()).await?;
        let r = request.into_inner();
        let (jobs, next_page_token) = self
            .list(ListQuery {
                kinds: r.kinds,
                states: r.states,
                schedule_id: r.schedule_id,
                page_size: r.page_size,
                page_token: r.page_token,
            })
            .await?;
        let jobs = self.visible(actor.as_ref(), jobs).await?;
        Ok(Response::new(ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let actor = self.identify(request.metadata()).await?;
        let id = job_id(request.into_inner().job)?;
        if actor.is_some() {
            let (job, _) = self.get(&id).await?;
            self.require_see(actor.as_ref(), &job).await?;
        }
        let rx = self.watch(&id).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all)]
    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let actor = self.identify(request.metadata()).await?;
        let r = request.into_inner();
        let id = job_id(r.job)?;
        if actor.is_some() {
            let (job, _) = self.get(&id).await?;
            self.require_see(actor.as_ref(), &job).await?;
        }
        let job = self.cancel(&id, &r.reason).await?;
        Ok(Response::new(CancelJobResponse { job: Some(job) }))
    }

    #[instrument(skip_all)]
    async fn cutover(
        &self,
        request: Request<CutoverRequest>,
    ) -> Result<Response<CutoverResponse>, Status> {
        let actor = self.identify(request.metadata()).await?;
        let id = job_id(request.into_inner().job)?;
        // Whoever may see a job may stop it (CancelJob) or end its syncs: the job acts
        // as the user who started it either way.
        if actor.is_some() {
            let (job, _) = self.get(&id).await?;
            self.require_see(actor.as_ref(), &job).await?;
        }
        let job = Transfer::cutover(self, &id).await?;
        Ok(Response::new(CutoverResponse { job: Some(job) }))
    }

    #[instrument(skip_all)]
    async fn activate(
        &self,
        request: Request<ActivateRequest>,
    ) -> Result<Response<ActivateResponse>, Status> {
        let actor = self.identify(request.metadata()).await?;
        let r = request.into_inner();
        if let Some(actor) = &actor {
            self.may_activate(actor, &r).await?;
        }
        Ok(Response::new(
            Transfer::activate(self, r, actor.as_ref()).await?,
        ))
    }
}
