//! The gRPC surface of `ferry.v1.PairingService`: each call's access check, then the
//! work of `tokens.rs` and `pairs.rs` on [`Inner`].

use ferry_proto::v1::pairing_service_server::PairingService as PairingApi;
use ferry_proto::v1::{
    AcceptPairingTokenRequest, AcceptPairingTokenResponse, CheckPairRequest, CheckPairResponse,
    CreatePairingTokenRequest, CreatePairingTokenResponse, DeletePairRequest, DeletePairResponse,
    ForgetPairRequest, ForgetPairResponse, GetPairRequest, GetPairResponse, ListPairsRequest,
    ListPairsResponse, RedeemPairingTokenRequest, RedeemPairingTokenResponse,
    RenewPairCredentialRequest, RenewPairCredentialResponse,
};
use tonic::{Request, Response, Status};

use crate::error::Result;

use super::{PairingService, run, traceparent};

#[tonic::async_trait]
impl PairingApi for PairingService {
    async fn create_pairing_token(
        &self,
        request: Request<CreatePairingTokenRequest>,
    ) -> Result<Response<CreatePairingTokenResponse>, Status> {
        self.review(&request, Some("creating a pairing token"))
            .await?;
        let req = request.into_inner();
        let span = tracing::info_span!("create_pairing_token", pair = %req.pair_name,
            pair_id = tracing::field::Empty);
        run(span, self.inner.clone().create_token(req)).await
    }

    async fn accept_pairing_token(
        &self,
        request: Request<AcceptPairingTokenRequest>,
    ) -> Result<Response<AcceptPairingTokenResponse>, Status> {
        self.review(&request, Some("accepting a pairing token"))
            .await?;
        let tp = traceparent(&request);
        let req = request.into_inner();
        // Never the token itself: it carries a credential.
        let span = tracing::info_span!("accept_pairing_token", pair = %req.pair_name,
            pair_id = tracing::field::Empty);
        run(span, self.inner.clone().accept(req, tp)).await
    }

    async fn list_pairs(
        &self,
        request: Request<ListPairsRequest>,
    ) -> Result<Response<ListPairsResponse>, Status> {
        self.review(&request, None).await?;
        let req = request.into_inner();
        let span = tracing::info_span!("list_pairs", page_size = req.page_size);
        let inner = self.inner.clone();
        run(span, async move { inner.list(req).await }).await
    }

    async fn get_pair(
        &self,
        request: Request<GetPairRequest>,
    ) -> Result<Response<GetPairResponse>, Status> {
        // The other side's Ferry holds no user token here; it proves the pair instead.
        if !self.proves_pair(&request, &request.get_ref().pair).await {
            self.review(&request, None).await?;
        }
        let req = request.into_inner();
        let span = tracing::info_span!("get_pair", pair = %req.pair);
        let inner = self.inner.clone();
        run(span, async move {
            let row = inner.find(&req.pair).await?;
            Ok(GetPairResponse {
                pair: Some(row.to_proto()),
            })
        })
        .await
    }

    async fn delete_pair(
        &self,
        request: Request<DeletePairRequest>,
    ) -> Result<Response<DeletePairResponse>, Status> {
        self.review(&request, Some("deleting a pair")).await?;
        let tp = traceparent(&request);
        let req = request.into_inner();
        let span = tracing::info_span!("delete_pair", pair = %req.pair,
            pair_id = tracing::field::Empty);
        run(span, self.inner.clone().delete(req, tp)).await
    }

    async fn check_pair(
        &self,
        request: Request<CheckPairRequest>,
    ) -> Result<Response<CheckPairResponse>, Status> {
        // The other side's Ferry asks for this side's half of the checks, proving the
        // pair; anyone else must administer this cluster, since a check writes the pair's
        // status and may write a probe object to the repository.
        let from_peer = self.proves_pair(&request, &request.get_ref().pair).await;
        if !from_peer {
            self.review(&request, Some("checking a pair")).await?;
        }
        let tp = traceparent(&request);
        let req = request.into_inner();
        let span = tracing::info_span!("check_pair", pair = %req.pair,
            pair_id = tracing::field::Empty, from_peer);
        run(span, self.inner.clone().check(req, tp, from_peer)).await
    }

    async fn redeem_pairing_token(
        &self,
        request: Request<RedeemPairingTokenRequest>,
    ) -> Result<Response<RedeemPairingTokenResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("redeem_pairing_token",
            source = %req.source.as_ref().map(|s| s.name.as_str()).unwrap_or(""));
        run(span, self.inner.clone().redeem(req)).await
    }

    async fn forget_pair(
        &self,
        request: Request<ForgetPairRequest>,
    ) -> Result<Response<ForgetPairResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("forget_pair", pair_id = %req.pair_id);
        run(span, self.inner.clone().forget(req)).await
    }

    async fn renew_pair_credential(
        &self,
        request: Request<RenewPairCredentialRequest>,
    ) -> Result<Response<RenewPairCredentialResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("renew_pair_credential", pair_id = %req.pair_id);
        run(span, self.inner.clone().renew(req)).await
    }
}
