//! The pairing service: `ferry.v1.PairingService` over gRPC, and [`Pairs`] for other
//! services in the same process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_proto::v1::pairing_service_server::PairingService as PairingApi;
use ferry_proto::v1::{
    AcceptPairingTokenRequest, AcceptPairingTokenResponse, CheckPairRequest, CheckPairResponse,
    CreatePairingTokenRequest, CreatePairingTokenResponse, DeletePairRequest, DeletePairResponse,
    ForgetPairRequest, ForgetPairResponse, GetPairRequest, GetPairResponse, ListPairsRequest,
    ListPairsResponse, Pair, PairRole, PairStatus, RedeemPairingTokenRequest,
    RedeemPairingTokenResponse,
};
use ferry_store::SecretBox;
use rand::Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::cluster;
use crate::config::PairingConfig;
use crate::db::{Db, PairRow, Refusal, TokenRow, TokenState, constant_time_eq, timestamp};
use crate::error::{PairingError, Result};
use crate::peer;
use crate::token::{self, Secret, TokenPayload};

/// Longest TTL a pairing token may have: it carries a live credential.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_PAGE_SIZE: usize = 100;
/// How often credentials of tokens that expired unused are revoked.
const REAP_INTERVAL: Duration = Duration::from_secs(60);
const MAX_PAGE_SIZE: usize = 1000;

/// What the source keeps, sealed, for each pair: how to reach the destination's API.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredCredentials {
    pub ca_pem: String,
    pub bearer_token: Secret,
}

pub(crate) struct Inner {
    pub config: PairingConfig,
    pub db: Db,
    pub secrets: SecretBox,
}

/// The gRPC service. Cheap to clone.
#[derive(Clone)]
pub struct PairingService {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for PairingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingService")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Pairs for other services of this process, such as transfer, which needs a
/// Kubernetes client for a pair's destination. Cheap to clone.
#[derive(Clone)]
pub struct Pairs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairs")
            .field("cluster", &self.inner.config.cluster_name)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub(crate) fn rfc3339(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("unix time {seconds}"))
}

fn random_id() -> String {
    hex::encode(rand::rng().random::<[u8; 16]>())
}

/// Pair names are DNS labels, and never 32 hex digits, which is what ids look like: so a
/// lookup by "id or name" is never ambiguous.
fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| PairingError::invalid("pair_name", format!("{name:?} {why}"));
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must be 1 to 63 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(bad(
            "must be lower-case letters, digits and '-', starting and ending with a letter or digit",
        ));
    }
    if name.len() == 32 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("looks like a pair id; add a letter past 'f' or a '-'"));
    }
    Ok(())
}

fn validate_url(field: &'static str, url: &str) -> Result<()> {
    match url.parse::<http::Uri>() {
        Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Ok(()),
        _ => Err(PairingError::invalid(
            field,
            format!("{url:?} is not an https:// URL"),
        )),
    }
}

impl PairingService {
    /// Opens `<data_dir>/pairing.db` and the secret key, and revokes the credentials of
    /// tokens that expired while the service was down (best effort).
    pub async fn new(config: PairingConfig) -> Result<PairingService> {
        if config.cluster_name.trim().is_empty() {
            return Err(PairingError::invalid("cluster_name", "must not be empty"));
        }
        if config.ferry_endpoint.trim().is_empty() {
            return Err(PairingError::invalid(
                "ferry_endpoint",
                "must not be empty: other clusters reach this Ferry there",
            ));
        }
        validate_url("api_server_url", &config.api_server_url)?;
        let cluster = config.cluster_name.clone();
        let dir = config.data_dir.clone();
        let secrets = tokio::task::spawn_blocking(move || SecretBox::load_or_create(&dir))
            .await
            .map_err(|e| PairingError::Internal {
                detail: e.to_string(),
            })?
            .map_err(|source| PairingError::Store {
                cluster: cluster.clone(),
                source: Box::new(source),
            })?;
        let db = Db::open(&config.data_dir, &cluster).await?;
        let inner = Arc::new(Inner {
            config,
            db,
            secrets,
        });
        // Expired tokens' credentials are revoked now and then every minute, in the
        // background so that a slow API server does not hold up startup. The task holds a
        // weak reference and ends with the service.
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                match weak.upgrade() {
                    Some(inner) => inner.reap_expired().await,
                    None => return,
                }
                tokio::time::sleep(REAP_INTERVAL).await;
            }
        });
        Ok(PairingService { inner })
    }

    /// The in-process handle on this service's pairs.
    pub fn pairs(&self) -> Pairs {
        Pairs {
            inner: self.inner.clone(),
        }
    }
}

impl Pairs {
    /// A pair by id or name.
    pub async fn get(&self, pair: &str) -> Result<Pair> {
        Ok(self.inner.find(pair).await?.to_proto())
    }

    /// A Kubernetes client for the destination of `pair` (id or name), authenticated
    /// with the credential stored for it. Only on the pair's source cluster.
    pub async fn destination_client(&self, pair: &str) -> Result<kube::Client> {
        let row = self.inner.find(pair).await?;
        if row.role != PairRole::Source {
            return Err(PairingError::WrongRole {
                pair: row.name,
                cluster: self.inner.config.cluster_name.clone(),
                detail: "this cluster is the pair's destination and holds no credential for \
                         the source (pairs are one-way)",
            });
        }
        let creds = self.inner.credentials(&row)?;
        // Reads are not bounded here: a migration lists and watches for as long as it needs.
        let client = cluster::pair_client(
            &row.destination.name,
            &row.destination.api_server_url,
            &creds.ca_pem,
            &creds.bearer_token,
            self.inner.config.peer_timeout,
            false,
        )
        .await?;
        Ok(client)
    }
}

impl Inner {
    pub(crate) fn cluster(&self) -> &str {
        &self.config.cluster_name
    }

    fn seal_err(&self) -> impl FnOnce(ferry_store::StoreError) -> PairingError + '_ {
        move |source| PairingError::Store {
            cluster: self.cluster().to_string(),
            source: Box::new(source),
        }
    }

    pub(crate) async fn find(&self, pair: &str) -> Result<PairRow> {
        let pair = pair.trim();
        if pair.is_empty() {
            return Err(PairingError::invalid("pair", "give a pair id or name"));
        }
        self.db
            .find_pair(pair)
            .await?
            .ok_or_else(|| PairingError::PairNotFound {
                pair: pair.to_string(),
                cluster: self.cluster().to_string(),
            })
    }

    /// The destination credentials stored with a source-side pair.
    pub(crate) fn credentials(&self, row: &PairRow) -> Result<StoredCredentials> {
        let unseal = |source| PairingError::Unseal {
            pair: row.name.clone(),
            cluster: self.cluster().to_string(),
            source: Box::new(source),
        };
        let sealed = row.sealed_credentials.as_deref().unwrap_or_default();
        let plain = self
            .secrets
            .open(
                credentials_aad(&row.id).as_bytes(),
                sealed,
                &format!("credentials of pair {}", row.name),
            )
            .map_err(unseal)?;
        serde_json::from_slice(&plain).map_err(|e| PairingError::Internal {
            detail: format!("stored credentials of pair {} are not JSON: {e}", row.name),
        })
    }

    /// The bearer token this (destination) cluster issued for a token row.
    pub(crate) fn issued_bearer(&self, t: &TokenRow) -> Result<Option<Secret>> {
        let Some(sealed) = &t.sealed_bearer else {
            return Ok(None);
        };
        let plain = self
            .secrets
            .open(
                bearer_aad(&t.token_id).as_bytes(),
                sealed,
                &format!("token of pair {}", t.pair_name),
            )
            .map_err(|source| PairingError::Unseal {
                pair: t.pair_name.clone(),
                cluster: self.cluster().to_string(),
                source: Box::new(source),
            })?;
        String::from_utf8(plain)
            .map(|s| Some(Secret::new(s)))
            .map_err(|_| PairingError::Internal {
                detail: format!("stored token of pair {} is not text", t.pair_name),
            })
    }

    /// Revokes the credentials of pending tokens that expired unused.
    async fn reap_expired(&self) {
        let expired = match self.db.expired_pending(now()).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "listing expired pairing tokens");
                return;
            }
        };
        for t in expired {
            match cluster::revoke_credential(&self.config.kube, self.cluster(), &t.credential).await
            {
                Ok(()) => {
                    if let Err(e) = self.db.expire_token(&t.token_id).await {
                        tracing::warn!(error = %e, "marking a pairing token expired");
                    } else {
                        tracing::info!(pair_id = %t.pair_id, pair = %t.pair_name,
                            service_account = %t.credential.service_account,
                            "pairing token expired unused; its credential is revoked");
                    }
                }
                // Retried on the next token or restart.
                Err(e) => tracing::warn!(error = %e, pair = %t.pair_name,
                    "revoking the credential of an expired pairing token"),
            }
        }
    }

    async fn create_token(
        self: Arc<Self>,
        req: CreatePairingTokenRequest,
    ) -> Result<CreatePairingTokenResponse> {
        let now = now();
        let ttl = match req.ttl {
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
            self.config.credential_kind,
            self.config.credential_lifetime,
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

    async fn redeem(
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

    async fn accept(
        self: Arc<Self>,
        req: AcceptPairingTokenRequest,
        traceparent: Option<String>,
    ) -> Result<AcceptPairingTokenResponse> {
        let decoded = token::decode(&req.token)?;
        let p = &decoded.payload;
        let destination = p.destination.name.clone();
        tracing::Span::current().record("pair_id", p.pair_id.as_str());
        let now = now();
        if p.expires_at.unix_timestamp() <= now {
            return Err(PairingError::TokenExpired {
                destination,
                expired_at: rfc3339(p.expires_at.unix_timestamp()),
            });
        }
        let name = match (req.pair_name.trim(), p.pair_name.as_str()) {
            ("", "") => format!("pair-{}", p.pair_id.chars().take(8).collect::<String>()),
            ("", from_token) => from_token.to_string(),
            (chosen, _) => chosen.to_string(),
        };
        validate_name(&name)?;
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
        if self.db.name_taken(&name, now).await? {
            return Err(PairingError::PairExists {
                name,
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

        // The destination's API with the token's credential, before the token is spent: a
        // network problem found here leaves the token usable once it is fixed.
        let timeout = self.config.peer_timeout;
        let url = &p.destination.api_server_url;
        let client =
            cluster::pair_client(&destination, url, &p.ca_pem, &p.bearer_token, timeout, true)
                .await?;
        cluster::probe(&client, &destination, url).await?;
        let missing = cluster::missing_permissions(&client, &destination).await?;
        if !missing.is_empty() {
            return Err(PairingError::PermissionsMissing {
                cluster: destination,
                missing,
            });
        }

        // Spend the token; the destination refuses an altered, expired or used one.
        let peer = peer::connect(
            &self.config.peer_tls,
            &destination,
            &p.destination.ferry_endpoint,
            timeout,
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

        let row = async {
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
            Ok::<_, PairingError>(row)
        }
        .await;
        match row {
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

    async fn list(&self, req: ListPairsRequest) -> Result<ListPairsResponse> {
        let size = match req.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = match req.page_token.as_str() {
            "" => None,
            t => Some(
                URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        PairingError::invalid(
                            "page_token",
                            "not a token from a previous ListPairs response",
                        )
                    })?,
            ),
        };
        let mut rows = self.db.list_pairs(after, size + 1).await?;
        let mut next_page_token = String::new();
        if rows.len() > size {
            rows.truncate(size);
            if let Some(last) = rows.last() {
                next_page_token = URL_SAFE_NO_PAD.encode(&last.name);
            }
        }
        Ok(ListPairsResponse {
            pairs: rows.iter().map(PairRow::to_proto).collect(),
            next_page_token,
        })
    }

    /// On the destination: deletes the ServiceAccount, binding and token Secret issued
    /// for the pair, so the source's credential stops working at once.
    async fn revoke_for(&self, row: &PairRow) -> Result<()> {
        if let Some(t) = self.db.token(&row.token_id).await? {
            cluster::revoke_credential(&self.config.kube, self.cluster(), &t.credential).await?;
            tracing::info!(pair = %row.name, service_account = %t.credential.service_account,
                "pair credential revoked");
        }
        Ok(())
    }

    async fn delete(
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
    async fn tell_peer_to_forget(&self, row: &PairRow, traceparent: Option<String>) -> bool {
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

    async fn forget(self: Arc<Self>, req: ForgetPairRequest) -> Result<ForgetPairResponse> {
        let row = self
            .db
            .find_pair(&req.pair_id)
            .await?
            .filter(|r| r.id == req.pair_id)
            .ok_or_else(|| PairingError::PairNotFound {
                pair: req.pair_id.clone(),
                cluster: self.cluster().to_string(),
            })?;
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

fn credentials_aad(pair_id: &str) -> String {
    format!("pair/{pair_id}/credentials")
}

fn bearer_aad(token_id: &str) -> String {
    format!("token/{token_id}/bearer")
}

fn traceparent<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(ferry_rpc::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Runs a request on its own task, so a caller that hangs up cannot stop it half way
/// (say, between the destination redeeming a token and the source storing the pair).
async fn run<T: Send + 'static>(
    span: tracing::Span,
    fut: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<Response<T>, Status> {
    let result = tokio::spawn(fut.instrument(span))
        .await
        .unwrap_or_else(|e| {
            Err(PairingError::Internal {
                detail: format!("request task failed: {e}"),
            })
        });
    // A failure is logged once, by the server's layer (ferry_rpc::log), not here.
    result.map(Response::new).map_err(Status::from)
}

impl PairingService {
    /// Whether the call comes from the Ferry on the other side of `pair`: it bears that
    /// pair's token id, a secret only the pair's two sides hold (see peer.rs).
    async fn proves_pair<T>(&self, request: &Request<T>, pair: &str) -> bool {
        let Some(proof) = request
            .metadata()
            .get(crate::peer::PAIR_PROOF)
            .and_then(|v| v.to_str().ok())
            .filter(|p| !p.is_empty())
        else {
            return false;
        };
        match self.inner.find(pair).await {
            Ok(row) => constant_time_eq(row.token_id.as_bytes(), proof.as_bytes()),
            Err(_) => false,
        }
    }

    /// Fails unless the caller is signed in, and an administrator when `admin_for`
    /// names what needs one; passes when the service checks no callers. The
    /// deployment's own components (the controller, which checked that an object's
    /// creator administers Ferry before it asks) pass with the internal credential.
    async fn review<T>(&self, request: &Request<T>, admin_for: Option<&str>) -> Result<(), Status> {
        match &self.inner.config.access {
            Some(authz) => authz
                .review(
                    request.metadata(),
                    admin_for,
                    self.inner.config.internal_token.as_deref(),
                )
                .await
                .map_err(|e| e.to_status()),
            None => Ok(()),
        }
    }
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_and_never_look_like_ids() {
        for ok in ["prod-to-dr", "a", "pair-0123abcd", &"x".repeat(63)] {
            validate_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "Prod",
            "-a",
            "a-",
            "a_b",
            "0123456789abcdef0123456789abcdef",
            &"x".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
