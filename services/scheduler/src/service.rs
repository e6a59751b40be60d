//! `ferry.v1.SchedulerService` over the [`Scheduler`] engine.

use ferry_authz::Identity;
use ferry_proto::v1::Schedule;
use ferry_proto::v1::scheduler_service_server::{SchedulerService, SchedulerServiceServer};
use ferry_proto::v1::{
    CreateScheduleRequest, CreateScheduleResponse, DeleteScheduleRequest, DeleteScheduleResponse,
    GetScheduleRequest, GetScheduleResponse, ListRunsRequest, ListRunsResponse,
    ListSchedulesRequest, ListSchedulesResponse, ResumeScheduleRequest, ResumeScheduleResponse,
    RunNowRequest, RunNowResponse, SuspendScheduleRequest, SuspendScheduleResponse,
    create_schedule_request,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::error::{Result, SchedulerError};
use crate::scheduler::Scheduler;

/// Administrators see and change every schedule; others only their own.
fn owns(who: &Identity, s: &Schedule) -> bool {
    who.admin || (!s.created_by.is_empty() && s.created_by == who.caller.username)
}

impl Scheduler {
    /// The gRPC service, to add to a server.
    pub fn into_server(self) -> SchedulerServiceServer<Scheduler> {
        SchedulerServiceServer::new(self)
    }

    /// Who is calling; None when the scheduler checks no callers.
    async fn actor(&self, metadata: &MetadataMap) -> Result<Option<Identity>> {
        let Some(authz) = self.access() else {
            return Ok(None);
        };
        Ok(Some(
            authz
                .identify_acting(metadata, self.internal_credential())
                .await?,
        ))
    }

    /// An import policy with no namespace restores whatever anyone exported into its
    /// repository, every namespace of it, acting for its creator: only administrators
    /// may make one, as only they may migrate every namespace.
    async fn check_import_scope(
        &self,
        actor: &Option<Identity>,
        req: &CreateScheduleRequest,
    ) -> Result<()> {
        let (Some(who), Some(authz)) = (actor, self.access()) else {
            return Ok(());
        };
        let every_namespace = match &req.spec {
            Some(create_schedule_request::Spec::ImportPolicy(p)) => p
                .application
                .as_ref()
                .is_none_or(|a| a.namespace.is_empty()),
            _ => false,
        };
        if every_namespace && !who.admin {
            authz
                .require_admin(
                    &who.caller,
                    "an import policy with no namespace (it imports every namespace's restore \
                     points; set import_policy.application.namespace, `ferry import-policy \
                     create -n NAMESPACE`)",
                )
                .await?;
        }
        Ok(())
    }

    /// The schedule `key` names, if `actor` may see and change it; someone else's is
    /// refused by name, since schedule names are not secret.
    async fn owned(&self, actor: &Option<Identity>, key: &str) -> Result<Schedule> {
        let schedule = self.get(key).await?;
        match actor {
            Some(a) if !owns(a, &schedule) => Err(SchedulerError::NotYours {
                user: a.caller.username.clone(),
                schedule: schedule.name,
            }),
            _ => Ok(schedule),
        }
    }
}

#[tonic::async_trait]
impl SchedulerService for Scheduler {
    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_schedule(
        &self,
        request: Request<CreateScheduleRequest>,
    ) -> Result<Response<CreateScheduleResponse>, Status> {
        let actor = self.actor(request.metadata()).await?;
        self.check_import_scope(&actor, request.get_ref()).await?;
        let schedule = self.create_as(request.into_inner(), actor.as_ref()).await?;
        Ok(Response::new(CreateScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    #[instrument(skip_all)]
    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        let actor = self.actor(request.metadata()).await?;
        let r = request.into_inner();
        let (mut schedules, next_page_token) = self.list(r.page_size, &r.page_token).await?;
        if let Some(a) = &actor {
            schedules.retain(|s| owns(a, s));
        }
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
        let actor = self.actor(request.metadata()).await?;
        let schedule = self.owned(&actor, &request.into_inner().schedule).await?;
        Ok(Response::new(GetScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn suspend_schedule(
        &self,
        request: Request<SuspendScheduleRequest>,
    ) -> Result<Response<SuspendScheduleResponse>, Status> {
        let actor = self.actor(request.metadata()).await?;
        let key = self.owned(&actor, &request.into_inner().schedule).await?.id;
        let schedule = self.suspend(&key).await?;
        Ok(Response::new(SuspendScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn resume_schedule(
        &self,
        request: Request<ResumeScheduleRequest>,
    ) -> Result<Response<ResumeScheduleResponse>, Status> {
        let actor = self.actor(request.metadata()).await?;
        let key = self.owned(&actor, &request.into_inner().schedule).await?.id;
        let schedule = self.resume(&key).await?;
        Ok(Response::new(ResumeScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn delete_schedule(
        &self,
        request: Request<DeleteScheduleRequest>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        let actor = self.actor(request.metadata()).await?;
        let key = self.owned(&actor, &request.into_inner().schedule).await?.id;
        self.delete(&key).await?;
        Ok(Response::new(DeleteScheduleResponse {}))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn run_now(
        &self,
        request: Request<RunNowRequest>,
    ) -> Result<Response<RunNowResponse>, Status> {
        let actor = self.actor(request.metadata()).await?;
        let key = self.owned(&actor, &request.into_inner().schedule).await?.id;
        let run = Scheduler::run_now(self, &key).await?;
        Ok(Response::new(RunNowResponse { run: Some(run) }))
    }

    #[instrument(skip_all, fields(schedule = %request.get_ref().schedule))]
    async fn list_runs(
        &self,
        request: Request<ListRunsRequest>,
    ) -> Result<Response<ListRunsResponse>, Status> {
        let actor = self.actor(request.metadata()).await?;
        let r = request.into_inner();
        let key = self.owned(&actor, &r.schedule).await?.id;
        let (runs, next_page_token) = self.runs(&key, r.page_size, &r.page_token).await?;
        Ok(Response::new(ListRunsResponse {
            runs,
            next_page_token,
        }))
    }
}
