//! PairingInternalService: a pair with the credential that reaches its destination, for
//! the transfer service of this deployment only (it bears the internal credential).

use ferry_proto::v1::pairing_internal_service_server::{
    PairingInternalService, PairingInternalServiceServer,
};
use ferry_proto::v1::{PairRole, ResolvePairRequest, ResolvePairResponse};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::Result;
use crate::service::PairingService;

impl PairingService {
    /// The internal API on this same service.
    pub fn internal_server(&self) -> PairingInternalServiceServer<PairingService> {
        PairingInternalServiceServer::new(self.clone())
    }

    async fn resolve(&self, pair: &str) -> Result<ResolvePairResponse> {
        let row = self.inner.find(pair).await?;
        let (ca_pem, bearer) = if row.role == PairRole::Source {
            let creds = self.inner.credentials(&row)?;
            (creds.ca_pem, creds.bearer_token.expose().to_owned())
        } else {
            // A destination holds no credential for its source (pairs are one-way).
            (String::new(), String::new())
        };
        Ok(ResolvePairResponse {
            pair: Some(row.to_proto()),
            destination_ca_pem: ca_pem,
            destination_bearer_token: bearer,
        })
    }
}

#[tonic::async_trait]
impl PairingInternalService for PairingService {
    async fn resolve_pair(
        &self,
        request: Request<ResolvePairRequest>,
    ) -> std::result::Result<Response<ResolvePairResponse>, Status> {
        let config = &self.inner.config;
        ferry_authz::require_internal(
            request.metadata(),
            config.internal_token.as_deref(),
            &config.cluster_name,
            "the pairing service's ResolvePair",
        )
        .map_err(|e| e.to_status())?;
        let pair = request.into_inner().pair;
        let span = tracing::info_span!("pairing.resolve_pair", pair = %pair);
        self.resolve(&pair)
            .instrument(span)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}
