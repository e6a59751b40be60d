//! The pairing service: `ferry.v1.PairingService` over gRPC, and [`Pairs`] for other
//! services in the same process.
//!
//! The state ([`Inner`]) and its helpers are here; `tokens.rs` issues and redeems
//! pairing tokens (destination side), `pairs.rs` accepts tokens and lists, deletes and
//! forgets pairs, `api.rs` is the gRPC surface.

mod api;
mod pairs;
#[cfg(test)]
mod tests;
mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::{Pair, PairRole};
use ferry_store::SecretBox;
use rand::Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::cluster;
use crate::config::PairingConfig;
use crate::db::{Db, PairRow, TokenRow, constant_time_eq};
use crate::error::{PairingError, Result};
use crate::token::Secret;

/// Longest TTL a pairing token may have: it carries a live credential.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often credentials of tokens that expired unused are revoked.
const REAP_INTERVAL: Duration = Duration::from_secs(60);

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
                    Some(inner) => {
                        inner.reap_expired().await;
                        inner.renew_expiring(None).await;
                    }
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
    /// On the source: renews every pair's credential that has less than `within` left
    /// (None: less than a third of its lifetime), as the service does every minute.
    /// Returns each pair tried, by name, with the new credential's expiry.
    pub async fn renew_expiring(&self, within: Option<Duration>) -> Vec<(String, Result<i64>)> {
        self.inner.renew_expiring(within).await
    }

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

    /// On the source: asks each pair's destination for a fresh credential when the one
    /// stored has less than `within` left (None: less than a third of its lifetime).
    /// Credentials that do not expire (token Secrets) are left alone. A failure is
    /// logged and tried again on the next pass; the old credential works until it
    /// expires.
    pub(crate) async fn renew_expiring(
        &self,
        within: Option<Duration>,
    ) -> Vec<(String, Result<i64>)> {
        let pairs = match self.db.source_pairs().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "listing pairs to renew their credentials");
                return Vec::new();
            }
        };
        let mut renewed = Vec::new();
        for row in pairs {
            let due = self.credentials(&row).ok().and_then(|c| {
                let (issued, expires) = token_times(c.bearer_token.expose())?;
                let left = expires - now();
                let threshold = within.map_or((expires - issued) / 3, |w| {
                    i64::try_from(w.as_secs()).unwrap_or(i64::MAX)
                });
                (left < threshold).then_some(c)
            });
            let Some(creds) = due else { continue };
            let result = self.renew_one(&row, creds).await;
            match &result {
                Ok(expires) => tracing::info!(pair = %row.name, expires_at = %rfc3339(*expires),
                    "pair credential renewed by the destination"),
                Err(e) => tracing::warn!(pair = %row.name, error = %e,
                    "renewing the pair's credential failed; trying again in a minute"),
            }
            renewed.push((row.name.clone(), result));
        }
        renewed
    }

    async fn renew_one(&self, row: &PairRow, creds: StoredCredentials) -> Result<i64> {
        let timeout = self.config.peer_timeout;
        let peer = crate::peer::other_side(&self.config, row, timeout, None).await?;
        let fresh = peer
            .client
            .clone()
            .renew_pair_credential(ferry_proto::v1::RenewPairCredentialRequest {
                pair_id: row.id.clone(),
                token_id: row.token_id.clone(),
            })
            .await
            .map_err(|s| peer.error(s))?
            .into_inner();
        let expires = fresh.expires_at.map_or(0, |t| t.seconds);
        let creds = StoredCredentials {
            ca_pem: creds.ca_pem,
            bearer_token: Secret::new(fresh.bearer_token),
        };
        let plain = serde_json::to_vec(&creds).map_err(|e| PairingError::Internal {
            detail: format!("encoding credentials: {e}"),
        })?;
        let sealed = self
            .secrets
            .seal(credentials_aad(&row.id).as_bytes(), &plain)
            .map_err(self.seal_err())?;
        self.db.set_sealed_credentials(&row.id, sealed).await?;
        Ok(expires)
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
}

/// When a ServiceAccount token (a JWT) was issued and expires, in Unix seconds, from
/// its claims; None for a token without an expiry (a token Secret's) or not a JWT.
/// Read only to schedule a renewal: the destination's API server judges the token.
fn token_times(token: &str) -> Option<(i64, i64)> {
    use base64::Engine as _;
    let claims = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    let iat = claims
        .get("iat")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(exp);
    Some((iat, exp))
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
