//! Pairs: AcceptPairingToken (source side), listing and deleting pairs, and
//! ForgetPair, the other side's deletion arriving.

use std::sync::Arc;

use ferry_proto::v1::{
    AcceptPairingTokenRequest, AcceptPairingTokenResponse, ClusterInfo, DeletePairRequest,
    DeletePairResponse, ForgetPairRequest, ForgetPairResponse, ListPairsRequest, ListPairsResponse,
    PairRole, PairStatus, RedeemPairingTokenRequest, RedeemPairingTokenResponse,
    RenewPairCredentialRequest, RenewPairCredentialResponse,
};

use crate::cluster;
use crate::db::{PairRow, constant_time_eq};
use crate::error::{PairingError, Result};
use crate::peer;
use crate::token::{self, TokenPayload};

use super::{Inner, StoredCredentials, credentials_aad, now, rfc3339, validate_name};

impl Inner {
    pub(super) async fn accept(
        self: Arc<Self>,
        req: AcceptPairingTokenRequest,
        traceparent: Option<String>,
    ) -> Result<AcceptPairingTokenResponse> {
        let decoded = token::decode(&req.token)?;
        let p = &decoded.payload;
        let destination = p.destination.name.clone();
        tracing::Span::current().record("pair_id", p.pair_id.as_str());
        let now = now();
        let name = pair_name(&req, p);
        let me = self.check_acceptable(p, &name, now).await?;
        // The destination's API with the token's credential, before the token is spent: a
        // network problem found here leaves the token usable once it is fixed.
        self.check_destination_api(p).await?;

        // Spend the token; the destination refuses an altered, expired or used one.
        let peer = peer::connect(
            &self.config.peer_tls,
            &destination,
            &p.destination.ferry_endpoint,
            self.config.peer_timeout,
            traceparent,
            None,
        )
        .await?;
        let redeemed = peer
            .client
            .clone()
            .redeem_pairing_token(RedeemPairingTokenRequest {
                token_id: p.token_id.clone(),
                token_digest: decoded.digest.clone(),
                source: Some(me.clone()),
            })
            .await
            .map_err(|s| peer.error(s))?
            .into_inner();

        match self.store_source_half(p, name, me, redeemed, now).await {
            Ok(row) => {
                tracing::info!(pair = %row.name, destination = %destination, "pair created");
                Ok(AcceptPairingTokenResponse {
                    pair: Some(row.to_proto()),
                })
            }
            Err(e) => {
                // The destination has recorded its half; take it back so no half-pair stays.
                let undo = peer
                    .client
                    .clone()
                    .forget_pair(ForgetPairRequest {
                        pair_id: p.pair_id.clone(),
                        token_id: p.token_id.clone(),
                    })
                    .await;
                if let Err(status) = undo {
                    tracing::warn!(error = %status.message(), destination = %destination,
                        "could not undo the destination's half of a pair not stored here");
                }
                Err(e)
            }
        }
    }

    /// Refuses a token that expired or already made a pair, a pair name that is invalid
    /// or taken, and a token this very cluster issued; returns this cluster's facts.
    async fn check_acceptable(
        &self,
        p: &TokenPayload,
        name: &str,
        now: i64,
    ) -> Result<ClusterInfo> {
        let destination = p.destination.name.clone();
        if p.expires_at.unix_timestamp() <= now {
            return Err(PairingError::TokenExpired {
                destination,
                expired_at: rfc3339(p.expires_at.unix_timestamp()),
            });
        }
        validate_name(name)?;
        if let Some(existing) = self.db.find_pair(&p.pair_id).await? {
            return Err(PairingError::TokenUsed {
                destination,
                detail: format!(
                    "it made pair {:?} on cluster {}",
                    existing.name,
                    self.cluster()
                ),
            });
        }
        if self.db.name_taken(name, now).await? {
            return Err(PairingError::PairExists {
                name: name.to_string(),
                cluster: self.cluster().to_string(),
            });
        }
        let me = cluster::local_info(
            &self.config.kube,
            self.cluster(),
            &self.config.api_server_url,
            &self.config.ferry_endpoint,
        )
        .await?;
        if me.cluster_id == p.destination.cluster_id {
            return Err(PairingError::SelfPairing {
                cluster: self.cluster().to_string(),
            });
        }
        Ok(me)
    }

    /// Reaches the destination's API with the token's credential and checks it holds
    /// every right a migration needs.
    async fn check_destination_api(&self, p: &TokenPayload) -> Result<()> {
        let destination = &p.destination.name;
        let url = &p.destination.api_server_url;
        let timeout = self.config.peer_timeout;
        let client =
            cluster::pair_client(destination, url, &p.ca_pem, &p.bearer_token, timeout, true)
                .await?;
        cluster::probe(&client, destination, url).await?;
        let missing = cluster::missing_permissions(&client, destination).await?;
        if !missing.is_empty() {
            return Err(PairingError::PermissionsMissing {
                cluster: destination.clone(),
                missing,
            });
        }
        Ok(())
    }

    /// Stores this side of a pair the destination has redeemed: the credential sealed,
    /// the destination as it answered (or as the token named it).
    async fn store_source_half(
        &self,
        p: &TokenPayload,
        name: String,
        me: ClusterInfo,
        redeemed: RedeemPairingTokenResponse,
        now: i64,
    ) -> Result<PairRow> {
        let creds = StoredCredentials {
            ca_pem: p.ca_pem.clone(),
            bearer_token: p.bearer_token.clone(),
        };
        let plain = serde_json::to_vec(&creds).map_err(|e| PairingError::Internal {
            detail: format!("encoding credentials: {e}"),
        })?;
        let sealed = self
            .secrets
            .seal(credentials_aad(&p.pair_id).as_bytes(), &plain)
            .map_err(self.seal_err())?;
        let row = PairRow {
            id: p.pair_id.clone(),
            name,
            role: PairRole::Source,
            token_id: p.token_id.clone(),
            source: me,
            destination: redeemed
                .pair
                .and_then(|pair| pair.destination)
                .unwrap_or_else(|| (&p.destination).into()),
            created_at: now,
            status: PairStatus::Unknown,
            last_checked_at: None,
            sealed_credentials: Some(sealed),
        };
        self.db.insert_pair(row.clone()).await?;
        Ok(row)
    }

    pub(super) async fn list(&self, req: ListPairsRequest) -> Result<ListPairsResponse> {
        let page = ferry_store::Page::of(req.page_size, &req.page_token)
            .map_err(|e| PairingError::invalid("page_token", e.to_string()))?;
        let mut rows = self.db.list_pairs(page.after.clone(), page.fetch()).await?;
        let next_page_token = page.finish(&mut rows, |p| p.name.clone());
        Ok(ListPairsResponse {
            pairs: rows.iter().map(PairRow::to_proto).collect(),
            next_page_token,
        })
    }

    /// On the destination: deletes the ServiceAccount, binding and token Secret issued
    /// for the pair, so the source's credential stops working at once.
    pub(super) async fn revoke_for(&self, row: &PairRow) -> Result<()> {
        if let Some(t) = self.db.token(&row.token_id).await? {
            cluster::revoke_credential(&self.config.kube, self.cluster(), &t.credential).await?;
            tracing::info!(pair = %row.name, service_account = %t.credential.service_account,
                "pair credential revoked");
        }
        Ok(())
    }

    pub(super) async fn delete(
        self: Arc<Self>,
        req: DeletePairRequest,
        traceparent: Option<String>,
    ) -> Result<DeletePairResponse> {
        let row = self.find(&req.pair).await?;
        tracing::Span::current().record("pair_id", row.id.as_str());
        // Revoke first: if that fails nothing has changed yet, and the pair stays listed
        // for a retry instead of leaving a credential nobody knows about.
        if row.role == PairRole::Destination {
            self.revoke_for(&row).await?;
        }
        let remote_deleted = self.tell_peer_to_forget(&row, traceparent).await;
        self.db.delete_pair(&row.id).await?;
        tracing::info!(pair = %row.name, remote_deleted, "pair deleted");
        Ok(DeletePairResponse { remote_deleted })
    }

    /// Asks the other side to forget the pair; true if it did or never had it.
    pub(super) async fn tell_peer_to_forget(
        &self,
        row: &PairRow,
        traceparent: Option<String>,
    ) -> bool {
        let result = async {
            let peer =
                peer::other_side(&self.config, row, self.config.peer_timeout, traceparent).await?;
            match peer
                .client
                .clone()
                .forget_pair(ForgetPairRequest {
                    pair_id: row.id.clone(),
                    token_id: row.token_id.clone(),
                })
                .await
            {
                Ok(_) => Ok(()),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
                Err(s) => Err(peer.error(s)),
            }
        }
        .await;
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, pair = %row.name,
                    "the other side was not told; delete the pair there too");
                false
            }
        }
    }

    /// A pair by its id only, as the other side's Ferry names it.
    async fn find_by_id(&self, pair_id: &str) -> Result<PairRow> {
        self.db
            .find_pair(pair_id)
            .await?
            .filter(|r| r.id == pair_id)
            .ok_or_else(|| PairingError::PairNotFound {
                pair: pair_id.to_string(),
                cluster: self.cluster().to_string(),
            })
    }

    pub(super) async fn forget(
        self: Arc<Self>,
        req: ForgetPairRequest,
    ) -> Result<ForgetPairResponse> {
        let row = self.find_by_id(&req.pair_id).await?;
        if !constant_time_eq(row.token_id.as_bytes(), req.token_id.as_bytes()) {
            return Err(PairingError::ForgetRefused {
                pair: row.name,
                cluster: self.cluster().to_string(),
            });
        }
        if row.role == PairRole::Destination {
            self.revoke_for(&row).await?;
        }
        self.db.delete_pair(&row.id).await?;
        tracing::info!(pair = %row.name, "pair deleted by its other side");
        Ok(ForgetPairResponse {})
    }
}

impl Inner {
    /// On the destination: a fresh token for the pair's ServiceAccount, for the source
    /// that proves the pair with its token id.
    pub(super) async fn renew(
        self: Arc<Self>,
        req: RenewPairCredentialRequest,
    ) -> Result<RenewPairCredentialResponse> {
        let cluster = self.cluster().to_string();
        let refused = |pair: &str, reason: &str| PairingError::RenewRefused {
            pair: pair.to_string(),
            cluster: cluster.clone(),
            reason: reason.to_string(),
        };
        let row = self.find_by_id(&req.pair_id).await?;
        if !constant_time_eq(row.token_id.as_bytes(), req.token_id.as_bytes()) {
            return Err(refused(
                &row.name,
                "the request does not come from the pair's source",
            ));
        }
        if row.role != PairRole::Destination {
            return Err(refused(&row.name, "this cluster is the pair's source"));
        }
        let token = self
            .db
            .token(&row.token_id)
            .await?
            .ok_or_else(|| refused(&row.name, "no credential was issued for it here"))?;
        let mut credential = token.credential;
        if credential.secret.is_some() {
            return Err(refused(
                &row.name,
                "its credential is a token Secret, which does not expire",
            ));
        }
        let bearer = cluster::request_token(
            &self.config.kube,
            &cluster,
            &mut credential,
            self.config.credential_lifetime,
        )
        .await?;
        self.db.set_credential(&row.token_id, &credential).await?;
        let expires_at = credential.expires_at.unwrap_or_default();
        tracing::info!(pair = %row.name, service_account = %credential.service_account,
            expires_at = %rfc3339(expires_at), "pair credential renewed");
        Ok(RenewPairCredentialResponse {
            bearer_token: bearer.expose().to_string(),
            expires_at: Some(crate::db::timestamp(expires_at)),
        })
    }
}

/// The pair's name: the one asked for, else the token's, else one made from the pair id.
fn pair_name(req: &AcceptPairingTokenRequest, p: &TokenPayload) -> String {
    match (req.pair_name.trim(), p.pair_name.as_str()) {
        ("", "") => format!("pair-{}", p.pair_id.chars().take(8).collect::<String>()),
        ("", from_token) => from_token.to_string(),
        (chosen, _) => chosen.to_string(),
    }
}
