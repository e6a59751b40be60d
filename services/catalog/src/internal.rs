//! CatalogInternalService: what opens a profile's repository, for the transfer service
//! and the agents of this deployment only (they bear the internal credential).

use ferry_proto::v1::catalog_internal_service_server::{
    CatalogInternalService, CatalogInternalServiceServer,
};
use ferry_proto::v1::{ResolveProfileRequest, ResolveProfileResponse, S3Credentials};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::profile;
use crate::service::CatalogService;

impl CatalogService {
    /// The internal API on this same catalog.
    pub fn internal_server(&self) -> CatalogInternalServiceServer<CatalogService> {
        CatalogInternalServiceServer::new(self.clone())
    }

    /// The profile `name` resolved to what opens its repository, with the id of the
    /// repository it was created for.
    pub async fn resolve_profile(
        &self,
        name: &str,
    ) -> Result<(ferry_profile::Profile, String), crate::CatalogError> {
        let record = self.profile_record(name).await?;
        let material = profile::read_material(self.client(), self.cluster(), &record).await?;
        Ok((
            profile::agent_profile(&record, &material),
            record.repository_id,
        ))
    }
}

#[tonic::async_trait]
impl CatalogInternalService for CatalogService {
    async fn resolve_profile(
        &self,
        request: Request<ResolveProfileRequest>,
    ) -> Result<Response<ResolveProfileResponse>, Status> {
        ferry_authz::require_internal(
            request.metadata(),
            self.internal_token(),
            self.cluster(),
            "the catalog's ResolveProfile",
        )
        .map_err(|e| e.to_status())?;
        let name = request.into_inner().profile;
        let span = tracing::info_span!("catalog.resolve_profile", profile = %name);
        let (resolved, repository_id) = CatalogService::resolve_profile(self, &name)
            .instrument(span)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(ResolveProfileResponse {
            profile: resolved.name,
            repository: resolved.repository,
            s3: resolved.s3.map(|c| S3Credentials {
                region: c.region,
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: c.session_token.unwrap_or_default(),
            }),
            key: resolved.key,
            verify_tls: resolved.verify_tls,
            repository_id,
            reads_only_namespace: resolved.reads_only.namespace.unwrap_or_default(),
            reads_only_restore_point: resolved.reads_only.restore_point.unwrap_or_default(),
            namespace: resolved.namespace.unwrap_or_default(),
        }))
    }
}
