//! Pairing tokens, destination side: CreatePairingToken issues a credential and wraps
//! it in a one-time token; RedeemPairingToken is the source's Ferry using it up.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::{
    CreatePairingTokenRequest, CreatePairingTokenResponse, RedeemPairingTokenRequest,
    RedeemPairingTokenResponse,
};
use time::OffsetDateTime;

use crate::cluster;
use crate::db::{Refusal, TokenRow, TokenState, timestamp};
use crate::error::{PairingError, Result};
use crate::token::{self, TokenPayload};

use super::{
    Inner, MAX_TOKEN_TTL, bearer_aad, now, random_id, rfc3339, validate_name, validate_url,
};

impl Inner {
    pub(super) async fn create_token(
        self: Arc<Self>,
        req: CreatePairingTokenRequest,
    ) -> Result<CreatePairingTokenResponse> {
        let now = now();
        let ttl = self.token_ttl(req.ttl)?;
        let pair_id = random_id();
        let token_id = random_id();
        let pair_name = match req.pair_name.trim() {
            "" => format!("pair-{}", &pair_id[..8]),
            name => name.to_string(),
        };
        validate_name(&pair_name)?;
        let api_server_url = match req.api_server_url.trim() {
            "" => self.config.api_server_url.clone(),
            url => url.trim_end_matches('/').to_string(),
        };
        validate_url("api_server_url", &api_server_url)?;
        let ferry_endpoint = match req.ferry_endpoint.trim() {
            "" => self.config.ferry_endpoint.clone(),
            e => e.to_string(),
        };
        tracing::Span::current().record("pair_id", pair_id.as_str());

        self.reap_expired().await;
        if self.db.name_taken(&pair_name, now).await? {
            return Err(PairingError::PairExists {
                name: pair_name,
                cluster: self.cluster().to_string(),
            });
        }
        let info = cluster::local_info(
            &self.config.kube,
            self.cluster(),
            &api_server_url,
            &ferry_endpoint,
        )
        .await?;
        let (credential, bearer) = cluster::issue_credential(
            &self.config.kube,
            self.cluster(),
            &self.config.namespace,
            &pair_id,
            cluster::CredentialSpec {
                kind: self.config.credential_kind,
                lifetime: self.config.credential_lifetime,
                trust_source_identities: self.config.trust_source_identities,
            },
            self.config.owner.as_ref(),
        )
        .await?;

        let expires_at = now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let stored = async {
            let payload = TokenPayload {
                version: token::VERSION,
                pair_id: pair_id.clone(),
                token_id: token_id.clone(),
                pair_name: pair_name.clone(),
                destination: (&info).into(),
                ca_pem: self.config.api_ca_pem.clone(),
                bearer_token: bearer.clone(),
                expires_at: OffsetDateTime::from_unix_timestamp(expires_at).map_err(|e| {
                    PairingError::Internal {
                        detail: format!("token expiry: {e}"),
                    }
                })?,
            };
            let (text, digest) = payload.encode()?;
            let sealed = self
                .secrets
                .seal(bearer_aad(&token_id).as_bytes(), bearer.expose().as_bytes())
                .map_err(self.seal_err())?;
            self.db
                .insert_token(TokenRow {
                    token_id: token_id.clone(),
                    pair_id: pair_id.clone(),
                    pair_name: pair_name.clone(),
                    digest,
                    destination: info.clone(),
                    credential: credential.clone(),
                    sealed_bearer: Some(sealed),
                    created_at: now,
                    expires_at,
                    state: TokenState::Pending,
                    used_at: None,
                })
                .await?;
            Ok::<_, PairingError>(text)
        }
        .await;
        let text = match stored {
            Ok(text) => text,
            Err(e) => {
                // No record means nobody would ever revoke it: revoke now.
                if let Err(cleanup) =
                    cluster::revoke_credential(&self.config.kube, self.cluster(), &credential).await
                {
                    tracing::warn!(error = %cleanup, "revoking the credential of a token not stored");
                }
                return Err(e);
            }
        };
        tracing::info!(pair = %pair_name, service_account = %credential.service_account,
            expires_at = %rfc3339(expires_at), "pairing token issued");
        Ok(CreatePairingTokenResponse {
            token: text.expose().to_string(),
            expires_at: Some(timestamp(expires_at)),
        })
    }

    pub(super) async fn redeem(
        self: Arc<Self>,
        req: RedeemPairingTokenRequest,
    ) -> Result<RedeemPairingTokenResponse> {
        if req.token_id.is_empty() || req.token_digest.is_empty() {
            return Err(PairingError::invalid(
                "token_id",
                "token_id and token_digest are required",
            ));
        }
        let source = req
            .source
            .filter(|s| !s.name.is_empty() && !s.cluster_id.is_empty())
            .ok_or_else(|| {
                PairingError::invalid("source", "the source cluster's name and id are required")
            })?;
        let source_name = source.name.clone();
        let me = self.cluster().to_string();
        let refused = match self
            .db
            .redeem(&req.token_id, &req.token_digest, source, now())
            .await?
        {
            Ok(pair) => {
                tracing::info!(pair_id = %pair.id, pair = %pair.name, source = %source_name,
                    "pairing token redeemed");
                return Ok(RedeemPairingTokenResponse {
                    pair: Some(pair.to_proto()),
                });
            }
            Err(r) => r,
        };
        Err(match refused {
            Refusal::Unknown => PairingError::TokenUnknown { destination: me },
            Refusal::Altered => PairingError::TokenAltered { destination: me },
            Refusal::Used { used_at } => PairingError::TokenUsed {
                detail: format!(
                    "destination {me} redeemed it{}",
                    used_at
                        .map(|t| format!(" at {}", rfc3339(t)))
                        .unwrap_or_default()
                ),
                destination: me,
            },
            Refusal::Expired { expires_at } => PairingError::TokenExpired {
                destination: me,
                expired_at: rfc3339(expires_at),
            },
            Refusal::NameTaken { name } => PairingError::PairExists { name, cluster: me },
        })
    }

    /// The token's lifetime: the one asked for, else the configured one, within
    /// 1 s..`MAX_TOKEN_TTL` (a token carries a live credential).
    fn token_ttl(&self, asked: Option<prost_types::Duration>) -> Result<Duration> {
        let ttl = match asked {
            Some(d) => Duration::try_from(d)
                .map_err(|_| PairingError::invalid("ttl", "must be positive"))?,
            None => self.config.token_ttl,
        };
        if ttl < Duration::from_secs(1) || ttl > MAX_TOKEN_TTL {
            return Err(PairingError::invalid(
                "ttl",
                format!(
                    "{}s is outside 1s..{}s (a token carries a live credential)",
                    ttl.as_secs(),
                    MAX_TOKEN_TTL.as_secs()
                ),
            ));
        }
        Ok(ttl)
    }
}
