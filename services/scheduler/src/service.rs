//! `ferry.v1.SchedulerService` over the [`Scheduler`] engine.

use ferry_proto::v1::scheduler_service_server::{SchedulerService, SchedulerServiceServer};
use ferry_proto::v1::{
    CreateScheduleRequest, CreateScheduleResponse, DeleteScheduleRequest, DeleteScheduleResponse,
    GetScheduleRequest, GetScheduleResponse, ListRunsRequest, ListRunsResponse,
    ListSchedulesRequest, ListSchedulesResponse, ResumeScheduleRequest, ResumeScheduleResponse,
    RunNowRequest, RunNowResponse, SuspendScheduleRequest, SuspendScheduleResponse,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::scheduler::Scheduler;

impl Scheduler {
    /// The gRPC service, to add to a server.
    pub fn into_server(self) -> SchedulerServiceServer<Scheduler> {
        SchedulerServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl SchedulerService for Scheduler {
    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_schedule(
        &self,
        request: Request<CreateScheduleRequest>,
    ) -> Result<Response<CreateScheduleResponse>, Status> {
        let schedule = self.create(request.into_inner()).await?;
        Ok(Response::new(CreateScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    #[instrument(skip_all)]
    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        let r = request.into_inner();
        let (schedules, next_page_token) = self.list(r.page_size, &r.page_token).await?;
        Ok(Response::new(ListSchedulesResponse {
            schedules,
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn get_schedule(
        &self,
        request: Request<GetScheduleRequest>,
    ) -> Result<Response<GetScheduleResponse>, Status> {
        let schedule = self.get(&request.into_inner().schedule).await?;
        Ok(Response::new(GetScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn suspend_schedule(
        &self,
        request: Request<SuspendScheduleRequest>,
    ) -> Result<Response<SuspendScheduleResponse>, Status> {
        let schedule = self.suspend(&request.into_inner().schedule).await?;
        Ok(Response::new(SuspendScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn resume_schedule(
        &self,
        request: Request<ResumeScheduleRequest>,
    ) -> Result<Response<ResumeScheduleResponse>, Status> {
        let schedule = self.resume(&request.into_inner().schedule).await?;
        Ok(Response::new(ResumeScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn delete_schedule(
        &self,
        request: Request<DeleteScheduleRequest>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        self.delete(&request.into_inner().schedule).await?;
        Ok(Response::new(DeleteScheduleResponse {}))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn run_now(
        &self,
        request: Request<RunNowRequest>,
    ) -> Result<Response<RunNowResponse>, Status> {
        let run = Scheduler::run_now(self, &request.into_inner().schedule).await?;
        Ok(Response::new(RunNowResponse { run: Some(run) }))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn list_runs(
        &self,
        request: Request<ListRunsRequest>,
    ) -> Result<Response<ListRunsResponse>, Status> {
        let r = request.into_inner();
        let (runs, next_page_token) = self.runs(&r.schedule, r.page_size, &r.page_token).await?;
        Ok(Response::new(ListRunsResponse {
            runs,
            next_page_token,
        }))
    }
}
