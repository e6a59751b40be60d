//! Export jobs' migration tokens, issued by this process's catalog.

use async_trait::async_trait;
use ferry_proto::v1::catalog_service_server::CatalogService as CatalogApi;
use ferry_proto::v1::{ErrorCode, IssueMigrationTokenRequest};
use ferry_transfer::{Handover, TokenRequest, TransferError};

/// [`Handover`] through the in-process catalog: it reads the export profile's key and
/// wraps it for the destination's import key.
#[derive(Debug, Clone)]
pub struct CatalogHandover {
    catalog: ferry_catalog::CatalogService,
}

impl CatalogHandover {
    pub fn new(catalog: ferry_catalog::CatalogService) -> Self {
        CatalogHandover { catalog }
    }
}

#[async_trait]
impl Handover for CatalogHandover {
    async fn migration_token(&self, req: &TokenRequest) -> Result<String, TransferError> {
        let request = tonic::Request::new(IssueMigrationTokenRequest {
            profile: req.repository.profile.clone(),
            restore_point_id: req.restore_point_id.clone(),
            namespace: req.namespace.clone(),
            recipient_key: req.recipient_key.clone(),
            ttl: None,
        });
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
