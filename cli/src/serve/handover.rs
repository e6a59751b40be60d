//! Export jobs' migration tokens, issued by this process's catalog.

use async_trait::async_trait;
use ferry_proto::v1::catalog_service_server::CatalogService as CatalogApi;
use ferry_proto::v1::{ErrorCode, IssueMigrationTokenRequest};
use ferry_transfer::{Handover, TokenRequest, TransferError};

/// [`Handover`] through the in-process catalog: it reads the export profile's key and
/// wraps it for the destination's import key.
/// The export job was authorized when it started; the catalog takes this process's
/// own secret as that job asking.
#[derive(Clone)]
pub struct CatalogHandover {
    catalog: ferry_catalog::CatalogService,
    internal_token: String,
}

impl std::fmt::Debug for CatalogHandover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogHandover").finish_non_exhaustive()
    }
}

impl CatalogHandover {
    pub fn new(catalog: ferry_catalog::CatalogService, internal_token: String) -> Self {
        CatalogHandover {
            catalog,
            internal_token,
        }
    }
}

#[async_trait]
impl Handover for CatalogHandover {
    async fn migration_token(&self, req: &TokenRequest) -> Result<String, TransferError> {
        let mut request = tonic::Request::new(IssueMigrationTokenRequest {
            profile: req.repository.profile.clone(),
            restore_point_id: req.restore_point_id.clone(),
            namespace: req.namespace.clone(),
            recipient_key: req.recipient_key.clone(),
            ttl: None,
        });
        let mut bearer: tonic::metadata::MetadataValue<_> =
            format!("Bearer {}", self.internal_token)
                .parse()
                .map_err(|_| TransferError::Internal("the process secret is not ASCII".into()))?;
        bearer.set_sensitive(true);
        request
            .metadata_mut()
            .insert(ferry_authz::AUTHORIZATION, bearer);
        match CatalogApi::issue_migration_token(&self.catalog, request).await {
            Ok(answer) => Ok(answer.into_inner().token),
            Err(status) => {
                let detail = ferry_rpc::detail(&status).unwrap_or_default();
                Err(TransferError::Handover {
                    profile: req.repository.profile.clone(),
                    code: ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Internal),
                    message: if detail.message.is_empty() {
                        status.message().to_string()
                    } else {
                        detail.message
                    },
                    hint: if detail.hint.is_empty() {
                        "check the recipient key (the destination's `GetImportKey`) and the \
                         export profile"
                            .into()
                    } else {
                        detail.hint
                    },
                })
            }
        }
    }
}
