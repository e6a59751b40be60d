//! Migration tokens in the catalog (the token itself is `ferry_token`'s): this cluster's
//! import key (CreateImportKey, GetImportKey), issuing a token from an export profile
//! (IssueMigrationToken, source side), and opening one for an import profile
//! (CreateProfile with `migration_token`, destination side).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use ferry_proto::v1::{
    CreateProfileRequest, ImportKey as ImportKeyProto, IssueMigrationTokenRequest,
    IssueMigrationTokenResponse, MigrationTokenInfo, ProfileKind, RepositoryRef, SecretRef,
    StorageBackend,
};
use ferry_repo::Id;
use ferry_token::{Backend, Claims, Location, RecipientKey};
use zeroize::Zeroizing;

use crate::db::{TokenUse, UsedToken};
use crate::error::CatalogError;
use crate::key_secret::Origin;
use crate::keys::Loaded;
use crate::profile;
use crate::restore_points::timestamp;
use crate::service::{CatalogService, validate_namespace};

/// Lifetime of a token when the request gives none.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest lifetime a token may have.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A repository key a new profile's Secret is to hold; not stored anywhere yet.
pub(crate) struct PendingKey {
    pub origin: Origin,
    pub key: Zeroizing<Vec<u8>>,
    /// Annotations for the Secret.
    pub annotations: BTreeMap<String, String>,
    /// What the migration token said, for the response.
    pub token: Option<MigrationTokenInfo>,
    /// The token's id and expiry, recorded so it makes one profile only.
    pub token_use: Option<TokenUse>,
}

impl fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingKey")
            .field("origin", &self.origin)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl PendingKey {
    /// A fresh random key for a new repository.
    pub fn generated() -> Result<Self, CatalogError> {
        Ok(PendingKey {
            origin: Origin::Generated,
            key: crate::key_secret::generate_key()?,
            annotations: BTreeMap::new(),
            token: None,
            token_use: None,
        })
    }
}

/// A token's key opens the profile's whole repository: the profile must be bound to
/// the token's namespace and its repository hold that namespace alone. Returns its
/// restore points (namespace, id).
async fn holds_the_token_namespace_alone(
    record: &crate::db::ProfileRecord,
    repo: &ferry_repo::Repository,
    namespace: &str,
) -> Result<Vec<(String, Id)>, CatalogError> {
    let refused = |why: String| CatalogError::TokenNeedsBoundProfile {
        profile: record.name.clone(),
        namespace: namespace.to_owned(),
        why,
    };
    if record.namespace != namespace {
        return Err(refused(if record.namespace.is_empty() {
            "is bound to no namespace".to_owned()
        } else {
            format!("is bound to namespace {}", record.namespace)
        }));
    }
    // Bound when created; checked again, as anything that writes the bucket could have
    // put another namespace there since.
    match crate::service::holds_only(record, repo).await {
        Err(CatalogError::BoundRepositoryHoldsOthers { .. }) => Err(refused(
            "holds restore points of other namespaces too".to_owned(),
        )),
        other => other,
    }
}

/// Nanoseconds since 1970, saturating.
fn unix_ns(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn proto_time(t: SystemTime) -> prost_types::Timestamp {
    let ns = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    timestamp(ns)
}

fn import_key_proto(key: &ferry_token::ImportKey, created_at_ns: i64) -> ImportKeyProto {
    ImportKeyProto {
        public_key: key.public_key().to_text(),
        fingerprint: key.public_key().fingerprint().to_string(),
        created_at: Some(timestamp(created_at_ns)),
    }
}

fn ttl(requested: Option<&prost_types::Duration>) -> Result<Duration, CatalogError> {
    let Some(d) = requested else {
        return Ok(DEFAULT_TTL);
    };
    let ttl = u64::try_from(d.seconds)
        .ok()
        .map(Duration::from_secs)
        .filter(|t| (Duration::from_secs(1)..=MAX_TTL).contains(t))
        .ok_or_else(|| {
            CatalogError::invalid(
                "ttl",
                format!(
                    "{}s: a token lives from 1 second to {} days",
                    d.seconds,
                    MAX_TTL.as_secs() / 86_400
                ),
            )
        })?;
    Ok(ttl)
}

/// The request as if the user had typed the token's location, for the usual checks.
fn request_from_token(req: &CreateProfileRequest, location: &Location) -> CreateProfileRequest {
    let key_secret = req
        .encryption_key_secret
        .clone()
        .filter(|s| !s.name.is_empty())
        .unwrap_or_else(|| SecretRef {
            namespace: req
                .encryption_key_secret
                .as_ref()
                .map(|s| s.namespace.clone())
                .unwrap_or_default(),
            name: profile::default_key_secret(&req.name),
        });
    CreateProfileRequest {
        name: req.name.clone(),
        kind: ProfileKind::Import as i32,
        backend: match location.backend {
            Backend::S3 => StorageBackend::S3,
            Backend::Local => StorageBackend::Local,
        } as i32,
        endpoint: location.endpoint.clone(),
        bucket: location.bucket.clone(),
        prefix: location.prefix.clone(),
        region: location.region.clone(),
        credentials_secret: req.credentials_secret.clone(),
        verify_tls: req.verify_tls,
        encryption_key_secret: Some(key_secret),
        create_repository: false,
        migration_token: String::new(),
        // Checked when the token was opened.
        expected_signer: String::new(),
        unsafe_skip_signer_verification: false,
        namespace: String::new(),
    }
}

impl CatalogService {
    /// CreateImportKey (`create`) and GetImportKey.
    pub(crate) async fn import_key(
        &self,
        create: bool,
    ) -> Result<(ImportKeyProto, bool), CatalogError> {
        let loaded = self.loaded_import_key(create).await?;
        Ok((
            import_key_proto(&loaded.key, loaded.created_at_ns),
            loaded.created,
        ))
    }

    /// The import key; made now if `create`, else an error when there is none.
    async fn loaded_import_key(
        &self,
        create: bool,
    ) -> Result<Loaded<ferry_token::ImportKey>, CatalogError> {
        self.inner
            .keys
            .import_key(create)
            .await?
            .ok_or_else(|| CatalogError::ImportKeyMissing {
                cluster: self.inner.config.cluster_name.clone(),
            })
    }

    /// IssueMigrationToken: checks the profile, namespace and restore point, opens the
    /// repository with the profile's key (so the token never carries a wrong one), and
    /// issues the token.
    pub(crate) async fn issue_migration_token(
        &self,
        req: IssueMigrationTokenRequest,
    ) -> Result<IssueMigrationTokenResponse, CatalogError> {
        if req.namespace.is_empty() {
            return Err(CatalogError::invalid(
                "namespace",
                "required: the application namespace the token is for",
            ));
        }
        validate_namespace(&req.namespace)?;
        let recipient = RecipientKey::parse(&req.recipient_key)?;
        let ttl = ttl(req.ttl.as_ref())?;
        let restore_point = (!req.restore_point_id.is_empty())
            .then(|| {
                Id::parse(&req.restore_point_id).map_err(|_| {
                    CatalogError::invalid(
                        "restore_point_id",
                        format!(
                            "{:?} is not a restore point id (64 hex digits)",
                            req.restore_point_id
                        ),
                    )
                })
            })
            .transpose()?;

        let (record, material, repo) = self
            .repository_and_key(Some(&RepositoryRef {
                profile: req.profile.clone(),
                repository_id: String::new(),
            }))
            .await?;
        if record.kind != ProfileKind::Export as i32 {
            let kind = ProfileKind::try_from(record.kind)
                .map(|k| k.as_str_name())
                .unwrap_or("unknown");
            return Err(CatalogError::invalid(
                "profile",
                format!(
                    "{:?} is a {kind} profile; migration tokens hand over what an EXPORT profile \
                     writes",
                    record.name
                ),
            ));
        }
        let listed = holds_the_token_namespace_alone(&record, &repo, &req.namespace).await?;
        if let Some(id) = &restore_point
            && !listed.iter().any(|(_, found)| found == id)
        {
            return Err(CatalogError::RestorePointNotFound {
                id: req.restore_point_id.clone(),
                profile: record.name.clone(),
                location: profile::location(&record),
            });
        }

        let signer = self.inner.keys.signing_key().await?;
        // Tokens keep whole seconds.
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
        let claims = Claims {
            location: Location {
                backend: if record.backend == StorageBackend::Local as i32 {
                    Backend::Local
                } else {
                    Backend::S3
                },
                endpoint: record.endpoint.clone(),
                bucket: record.bucket.clone(),
                prefix: record.prefix.clone(),
                region: record.region.clone(),
            },
            repository_id: record.repository_id.clone(),
            namespace: req.namespace.clone(),
            restore_point_id: restore_point.map(|id| id.to_hex()),
            issuer: self.inner.config.cluster_name.clone(),
            issued_at: now,
            expires_at: now + ttl,
        };
        let token = ferry_token::issue(&claims, &material.key, &recipient, &signer)?;
        let signer_fingerprint = signer.public_key().fingerprint().to_string();
        tracing::info!(
            repository = %record.repository_id,
            namespace = %req.namespace,
            recipient = %recipient.fingerprint(),
            signer = %signer_fingerprint,
            ttl_seconds = ttl.as_secs(),
            "migration token issued"
        );
        Ok(IssueMigrationTokenResponse {
            token,
            expires_at: Some(proto_time(claims.expires_at)),
            signer_fingerprint,
            recipient_fingerprint: recipient.fingerprint().to_string(),
            repository_id: record.repository_id,
        })
    }

    /// Opens a create request's migration token with this cluster's import key. Returns
    /// the request with the token's location filled in, the key to store, and the
    /// signer's fingerprint. Nothing is stored.
    pub(crate) async fn open_migration_token(
        &self,
        req: &CreateProfileRequest,
    ) -> Result<(CreateProfileRequest, PendingKey, String), CatalogError> {
        profile::check_token_request(req)?;
        let import_key = self.loaded_import_key(false).await?;
        let options = profile::token_open_options(req)?;
        let opened = ferry_token::open(&req.migration_token, &import_key.key, &options)?;
        let claims = &opened.claims;
        let signer = opened.signer.fingerprint().to_string();
        self.refuse_used_token(&opened.id).await?;
        tracing::info!(
            repository = %claims.repository_id,
            namespace = %claims.namespace,
            issuer = %claims.issuer,
            signer = %signer,
            "migration token verified"
        );
        let filled = request_from_token(req, &claims.location);
        let annotations = BTreeMap::from([
            (
                "ferry.dev/repository-id".to_string(),
                claims.repository_id.clone(),
            ),
            ("ferry.dev/token-issuer".to_string(), claims.issuer.clone()),
            ("ferry.dev/token-signer".to_string(), signer.clone()),
        ]);
        let info = MigrationTokenInfo {
            repository_id: claims.repository_id.clone(),
            namespace: claims.namespace.clone(),
            restore_point_id: claims.restore_point_id.clone().unwrap_or_default(),
            issuer: claims.issuer.clone(),
            issued_at: Some(proto_time(claims.issued_at)),
            expires_at: Some(proto_time(claims.expires_at)),
            signer_fingerprint: signer.clone(),
        };
        let pending = PendingKey {
            origin: Origin::MigrationToken,
            key: Zeroizing::new(opened.repository_key.as_bytes().to_vec()),
            annotations,
            token: Some(info),
            token_use: Some(TokenUse {
                id: opened.id.clone(),
                expires_at_ns: unix_ns(claims.expires_at),
            }),
        };
        Ok((filled, pending, signer))
    }

    /// Fails when this catalog accepted token `id` before (checked again when the
    /// profile is stored, in the same transaction).
    async fn refuse_used_token(&self, id: &str) -> Result<(), CatalogError> {
        match self
            .inner
            .db
            .used_token(id, unix_ns(SystemTime::now()))
            .await?
        {
            None => Ok(()),
            Some(used) => Err(self.token_used(used)),
        }
    }

    /// The error for a token used before.
    pub(crate) fn token_used(&self, used: UsedToken) -> CatalogError {
        let used_at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(used.used_at_ns))
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("{} ns after 1970", used.used_at_ns));
        CatalogError::TokenUsed {
            cluster: self.inner.config.cluster_name.clone(),
            profile: used.profile,
            used_at,
        }
    }
}

/// The warning for a generated key: without a copy elsewhere, losing the Secret loses
/// the data.
pub(crate) fn generated_key_warning(profile: &str, secret: &str, cluster: &str) -> String {
    let (namespace, name) = secret.split_once('/').unwrap_or(("", secret));
    format!(
        "no encryption_key_secret was given, so profile {profile:?} got a generated repository \
         key, stored in Secret {secret} on cluster {cluster}. Back it up outside this cluster \
         now (kubectl -n {namespace} get secret {name} -o jsonpath='{{.data.key}}' | base64 -d \
         > {name}.bin): without it no restore point in this repository can be read"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_default_and_are_bounded() {
        assert_eq!(ttl(None).expect("default"), DEFAULT_TTL);
        let d = |seconds| prost_types::Duration { seconds, nanos: 0 };
        assert_eq!(ttl(Some(&d(1))).expect("1s"), Duration::from_secs(1));
        assert!(ttl(Some(&d(0))).is_err());
        assert!(ttl(Some(&d(-5))).is_err());
        assert!(ttl(Some(&d(31 * 86_400))).is_err());
    }

    #[test]
    fn a_token_request_gets_the_token_location_and_a_default_key_secret() {
        let req = CreateProfileRequest {
            name: "imported".into(),
            credentials_secret: Some(SecretRef {
                namespace: String::new(),
                name: "reader".into(),
            }),
            migration_token: "token".into(),
            ..Default::default()
        };
        let location = Location {
            backend: Backend::S3,
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "ferry".into(),
            prefix: "p".into(),
            region: "r".into(),
        };
        let filled = request_from_token(&req, &location);
        assert_eq!(filled.kind, ProfileKind::Import as i32);
        assert_eq!(filled.bucket, "ferry");
        assert!(filled.migration_token.is_empty());
        assert_eq!(
            filled.encryption_key_secret.map(|s| s.name),
            Some("imported-key".to_string())
        );
        let new = profile::validate(&request_from_token(&req, &location), "ns").expect("valid");
        assert!(!new.generate_key);
        assert_eq!(new.record.key_secret.to_string(), "ns/imported-key");
        let warning = generated_key_warning("p", "ns/p-key", "a");
        assert!(
            warning.contains("Back it up") && warning.contains("-n ns"),
            "{warning}"
        );
    }
}
