//! The gRPC surface of `ferry.v1.CatalogService`: each call's access check and span,
//! then the work of `profiles.rs`, `restore_points.rs` and the other modules.

use ferry_proto::v1::catalog_service_server::CatalogService as CatalogApi;
use ferry_proto::v1::{
    CheckProfileRequest, CheckProfileResponse, CreateImportKeyRequest, CreateImportKeyResponse,
    CreateProfileRequest, CreateProfileResponse, DeleteProfileRequest, DeleteProfileResponse,
    GetImportKeyRequest, GetImportKeyResponse, GetProfileRequest, GetProfileResponse,
    GetRestorePointRequest, GetRestorePointResponse, IssueMigrationTokenRequest,
    IssueMigrationTokenResponse, LabelRestorePointRequest, LabelRestorePointResponse,
    ListApplicationsRequest, ListApplicationsResponse, ListProfilesRequest, ListProfilesResponse,
    ListRestorePointsRequest, ListRestorePointsResponse, PruneRepositoryRequest,
    PruneRepositoryResponse, RebuildIndexEvent, RebuildIndexRequest, rebuild_index_event,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::profile::{self};

use super::{CatalogService, EventStream, traced};

/// Events of a streaming call waiting to be sent.
const STREAM_BUFFER: usize = 16;

#[tonic::async_trait]
impl CatalogApi for CatalogService {
    type RebuildIndexStream = EventStream<RebuildIndexEvent>;

    async fn create_profile(
        &self,
        request: Request<CreateProfileRequest>,
    ) -> Result<Response<CreateProfileResponse>, Status> {
        self.review(&request, Some("creating a profile")).await?;
        let req = request.into_inner();
        let span = tracing::info_span!("catalog.create_profile", profile = %req.name);
        traced(span, self.create_profile(req)).await
    }

    async fn get_profile(
        &self,
        request: Request<GetProfileRequest>,
    ) -> Result<Response<GetProfileResponse>, Status> {
        self.review(&request, None).await?;
        let name = request.into_inner().name;
        let span = tracing::info_span!("catalog.get_profile", profile = %name);
        traced(span, async {
            let record = self.profile_record(&name).await?;
            Ok(GetProfileResponse {
                profile: Some(profile::to_proto(&record)),
            })
        })
        .await
    }

    async fn list_profiles(
        &self,
        request: Request<ListProfilesRequest>,
    ) -> Result<Response<ListProfilesResponse>, Status> {
        self.review(&request, None).await?;
        let req = request.into_inner();
        let span = tracing::info_span!("catalog.list_profiles", kind = req.kind);
        traced(span, self.list_profiles(req)).await
    }

    async fn delete_profile(
        &self,
        request: Request<DeleteProfileRequest>,
    ) -> Result<Response<DeleteProfileResponse>, Status> {
        self.review(&request, Some("deleting a profile")).await?;
        let name = request.into_inner().name;
        let span = tracing::info_span!("catalog.delete_profile", profile = %name);
        traced(span, async {
            self.delete_profile(&name).await?;
            Ok(DeleteProfileResponse {})
        })
        .await
    }

    async fn list_applications(
        &self,
        request: Request<ListApplicationsRequest>,
    ) -> Result<Response<ListApplicationsResponse>, Status> {
        let reader = self.narrowed_for(&request).await?;
        let span = tracing::info_span!("catalog.list_applications", cluster = %self.cluster());
        traced(
            span,
            self.list_applications(request.into_inner(), reader.as_ref()),
        )
        .await
    }

    async fn list_restore_points(
        &self,
        request: Request<ListRestorePointsRequest>,
    ) -> Result<Response<ListRestorePointsResponse>, Status> {
        let reader = self.narrowed_for(&request).await?;
        let req = request.into_inner();
        let profile = req.repository.as_ref().map(|r| r.profile.clone());
        let span = tracing::info_span!("catalog.list_restore_points",
            profile = profile.as_deref().unwrap_or_default(), namespace = %req.namespace);
        traced(span, self.list_restore_points(req, reader.as_ref())).await
    }

    async fn get_restore_point(
        &self,
        request: Request<GetRestorePointRequest>,
    ) -> Result<Response<GetRestorePointResponse>, Status> {
        let reader = self.narrowed_for(&request).await?;
        let req = request.into_inner();
        let profile = req.repository.as_ref().map(|r| r.profile.clone());
        let span = tracing::info_span!("catalog.get_restore_point",
            profile = profile.as_deref().unwrap_or_default(), id = %req.id);
        traced(span, self.get_restore_point(req, reader.as_ref())).await
    }

    async fn label_restore_point(
        &self,
        request: Request<LabelRestorePointRequest>,
    ) -> Result<Response<LabelRestorePointResponse>, Status> {
        self.review(&request, Some("labelling a restore point"))
            .await?;
        let req = request.into_inner();
        let profile = req.repository.as_ref().map(|r| r.profile.clone());
        let span = tracing::info_span!("catalog.label_restore_point",
            profile = profile.as_deref().unwrap_or_default(), id = %req.id);
        traced(span, self.label_restore_point(req)).await
    }

    async fn check_profile(
        &self,
        request: Request<CheckProfileRequest>,
    ) -> Result<Response<CheckProfileResponse>, Status> {
        // It derives the repository key (argon2, tens of MiB) and may write to the store.
        self.review(&request, Some("checking a profile")).await?;
        let req = request.into_inner();
        let span = tracing::info_span!("catalog.check_profile", profile = %req.name,
            write = req.write);
        traced(span, self.check_profile(&req.name, req.write)).await
    }

    async fn create_import_key(
        &self,
        request: Request<CreateImportKeyRequest>,
    ) -> Result<Response<CreateImportKeyResponse>, Status> {
        self.review(&request, Some("creating the import key"))
            .await?;
        let span = tracing::info_span!("catalog.create_import_key");
        traced(span, async {
            let (key, created) = self.import_key(true).await?;
            Ok(CreateImportKeyResponse {
                key: Some(key),
                created,
            })
        })
        .await
    }

    async fn get_import_key(
        &self,
        request: Request<GetImportKeyRequest>,
    ) -> Result<Response<GetImportKeyResponse>, Status> {
        self.review(&request, None).await?;
        let span = tracing::info_span!("catalog.get_import_key");
        traced(span, async {
            let (key, _) = self.import_key(false).await?;
            Ok(GetImportKeyResponse { key: Some(key) })
        })
        .await
    }

    async fn issue_migration_token(
        &self,
        request: Request<IssueMigrationTokenRequest>,
    ) -> Result<Response<IssueMigrationTokenResponse>, Status> {
        self.review(&request, Some("issuing a migration token"))
            .await?;
        let req = request.into_inner();
        let span = tracing::info_span!("catalog.issue_migration_token", profile = %req.profile,
            namespace = %req.namespace);
        traced(span, self.issue_migration_token(req)).await
    }

    async fn prune_repository(
        &self,
        request: Request<PruneRepositoryRequest>,
    ) -> Result<Response<PruneRepositoryResponse>, Status> {
        self.review(&request, Some("pruning a repository")).await?;
        let req = request.into_inner();
        let profile = req.repository.as_ref().map(|r| r.profile.clone());
        let span = tracing::info_span!("catalog.prune_repository",
            profile = profile.as_deref().unwrap_or_default(), namespace = %req.namespace,
            keep_last = req.keep_last, max_age_s = req.max_age.map(|d| d.seconds),
            dry_run = req.dry_run);
        traced(span, self.prune_repository(req)).await
    }

    async fn rebuild_index(
        &self,
        request: Request<RebuildIndexRequest>,
    ) -> Result<Response<Self::RebuildIndexStream>, Status> {
        self.review(&request, Some("rebuilding the index")).await?;
        let req = request.into_inner();
        let profile = req.repository.as_ref().map(|r| r.profile.clone());
        let span = tracing::info_span!(
            "catalog.rebuild_index",
            profile = profile.as_deref().unwrap_or_default()
        );
        // Opening fails the call itself; later failures end the stream with a status.
        let (record, repo) = traced(span.clone(), self.repository(req.repository.as_ref()))
            .await?
            .into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let service = self.clone();
        tokio::spawn(
            async move {
                let last = match service.rebuild(record, repo, &tx).await {
                    Ok(Some(summary)) => Ok(RebuildIndexEvent {
                        event: Some(rebuild_index_event::Event::Done(summary)),
                    }),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "rebuild failed");
                        Err(Status::from(e))
                    }
                };
                let _ = tx.send(last).await;
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
