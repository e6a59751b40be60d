//! Repository profiles: how a Ferry process reaches a repository (location, S3
//! credentials, key), the `<name>.yaml` file that carries one, and the storage backend
//! it names.
//!
//! In a cluster each profile is one YAML file per profile, read on every request so a
//! rotated Secret applies without a restart; the catalog writes those files (secrets
//! sealed), agents and the transfer service read them. Profiles can also be handed
//! over in memory.

mod error;
mod file;
mod wire;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ferry_repo::Repository;
use ferry_repo::backend::{DynBackend, LocalBackend, Reason, RepoUrl, S3Backend, S3Options};
use parking_lot::Mutex;

pub use error::ProfileError;
pub use file::{file_path, remove_file, write_file};
pub use wire::repo_kind;

/// Region used when a profile leaves it empty; S3 servers other than AWS ignore it.
pub const DEFAULT_REGION: &str = "us-east-1";

/// A repository location with what it takes to open it.
#[derive(Clone)]
pub struct Profile {
    pub name: String,
    /// A directory or `s3:http(s)://host:port/bucket/prefix` or `s3://bucket/prefix`.
    pub repository: String,
    /// S3 credentials; required for `s3:` repositories.
    pub s3: Option<S3Credentials>,
    /// The user's key that wraps the repository's master key.
    pub key: Vec<u8>,
    /// Check the S3 endpoint's TLS certificate (`verifyTls`, on unless a profile turns
    /// it off). Off accepts any certificate, for test setups with self-signed ones, and
    /// logs a loud warning.
    pub verify_tls: bool,
    /// What of the repository the profile may read; all of it unless the profile was
    /// made from a migration token.
    pub reads_only: ReadScope,
    /// Export profiles bound to one application namespace: it; nothing of another is
    /// written through the profile.
    pub namespace: Option<String>,
}

/// The part of a repository an import profile made from a migration token may read:
/// what the token named. Its key may open more; Ferry restores nothing else through it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadScope {
    /// The one application namespace whose restore points it reads.
    pub namespace: Option<String>,
    /// The one restore point (id, hex) it reads.
    pub restore_point: Option<String>,
}

impl ReadScope {
    /// Whether restore point `id` of `namespace` is within the scope.
    pub fn allows(&self, namespace: &str, id: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.restore_point.as_deref().is_none_or(|rp| rp == id)
    }

    /// The whole repository.
    pub fn is_everything(&self) -> bool {
        self.namespace.is_none() && self.restore_point.is_none()
    }

    /// The scope from two strings, empty meaning no limit.
    pub fn from_parts(namespace: &str, restore_point: &str) -> Self {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        ReadScope {
            namespace: some(namespace),
            restore_point: some(restore_point),
        }
    }
}

impl fmt::Display for ReadScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.namespace, &self.restore_point) {
            (None, None) => f.write_str("every restore point"),
            (Some(ns), None) => write!(f, "the restore points of namespace {ns}"),
            (Some(ns), Some(rp)) => write!(f, "restore point {rp} of namespace {ns}"),
            (None, Some(rp)) => write!(f, "restore point {rp}"),
        }
    }
}

/// Static S3 credentials.
#[derive(Clone)]
pub struct S3Credentials {
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach logs.
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("repository", &self.repository)
            .field(
                "s3_access_key_id",
                &self.s3.as_ref().map(|c| c.access_key_id.as_str()),
            )
            .field("key", &"<redacted>")
            .field("verify_tls", &self.verify_tls)
            .field("reads_only", &self.reads_only)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Where profiles come from.
#[derive(Clone, Debug)]
pub enum ProfileSource {
    /// One `<name>.yaml` per profile in a directory, read on every request.
    Dir(PathBuf),
    /// Profiles given in memory (by the control plane, or in tests).
    Static(Arc<HashMap<String, Profile>>),
    /// Profiles resolved by the deployment's catalog on every request, over gRPC with the
    /// internal credential (in a cluster, where agents share no directory with it).
    Catalog(Box<CatalogProfiles>),
}

/// The catalog's CatalogInternalService, asked for each profile when it is used, so a
/// rotated Secret or a deleted profile applies at once.
#[derive(Clone)]
pub struct CatalogProfiles {
    endpoint: String,
    client: ferry_proto::v1::catalog_internal_service_client::CatalogInternalServiceClient<
        ferry_rpc::TracedChannel,
    >,
}

impl fmt::Debug for CatalogProfiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogProfiles")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl CatalogProfiles {
    /// The catalog at `endpoint`, called with `tls` (which must carry the internal
    /// credential as its bearer); connected on first use.
    pub fn lazy(
        endpoint: &str,
        tls: &ferry_rpc::ClientTls,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = tls.endpoint(endpoint)?.connect_lazy();
        Ok(CatalogProfiles {
            endpoint: endpoint.to_owned(),
            client:
                ferry_proto::v1::catalog_internal_service_client::CatalogInternalServiceClient::new(
                    tls.traced(endpoint, channel),
                ),
        })
    }

    async fn get(&self, name: &str) -> Result<Profile, ProfileError> {
        let request = ferry_proto::v1::ResolveProfileRequest {
            profile: name.to_owned(),
        };
        let answer = self.client.clone().resolve_profile(request).await;
        let resolved = match answer {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let detail = ferry_rpc::detail(&status);
                let code = detail
                    .as_ref()
                    .and_then(|d| ferry_proto::v1::ErrorCode::try_from(d.code).ok())
                    .unwrap_or(ferry_proto::v1::ErrorCode::Unreachable);
                if code == ferry_proto::v1::ErrorCode::NotFound {
                    return Err(ProfileError::NotFound {
                        name: name.to_owned(),
                        dir: format!("the catalog at {}", self.endpoint),
                    });
                }
                let text = match detail {
                    Some(d) if !d.hint.is_empty() => format!("{}; {}", d.message, d.hint),
                    Some(d) => d.message,
                    None => status.message().to_owned(),
                };
                return Err(ProfileError::Catalog {
                    name: name.to_owned(),
                    endpoint: self.endpoint.clone(),
                    detail: text,
                    code,
                });
            }
        };
        Ok(Profile {
            name: resolved.profile,
            repository: resolved.repository,
            s3: resolved.s3.map(|c| S3Credentials {
                region: c.region,
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                session_token: Some(c.session_token).filter(|t| !t.is_empty()),
            }),
            key: resolved.key,
            verify_tls: resolved.verify_tls,
            reads_only: ReadScope::from_parts(
                &resolved.reads_only_namespace,
                &resolved.reads_only_restore_point,
            ),
            namespace: Some(resolved.namespace).filter(|n| !n.is_empty()),
        })
    }
}

impl ProfileSource {
    /// Looks a profile up by name.
    pub async fn get(&self, name: &str) -> Result<Profile, ProfileError> {
        validate_name(name)?;
        match self {
            ProfileSource::Static(map) => {
                map.get(name)
                    .cloned()
                    .ok_or_else(|| ProfileError::NotFound {
                        name: name.to_string(),
                        dir: "the agent's in-memory profiles".to_string(),
                    })
            }
            ProfileSource::Dir(dir) => {
                let dir = dir.clone();
                let owned = name.to_string();
                tokio::task::spawn_blocking(move || file::load(&dir, &owned))
                    .await
                    .map_err(|e| ProfileError::Internal {
                        name: name.to_string(),
                        detail: format!("loading failed: {e}"),
                    })?
            }
            ProfileSource::Catalog(catalog) => catalog.get(name).await,
        }
    }
}

fn validate_name(name: &str) -> Result<(), ProfileError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ProfileError::InvalidName {
            name: name.to_string(),
        })
    }
}

/// How hard a backend tries before giving up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patience {
    /// Normal use: ride out a store's short hiccups.
    Normal,
    /// Validating a new profile: a person waits, and a wrong endpoint should say so soon.
    Validate,
}

/// The storage backend at `url`, with `s3` credentials for an S3 location (empty ones
/// when `None`). The one place a profile becomes a backend, for every profile owner.
pub fn build_backend(
    url: RepoUrl,
    s3: Option<&S3Credentials>,
    verify_tls: bool,
    patience: Patience,
) -> DynBackend {
    match url {
        RepoUrl::Local(path) => Arc::new(LocalBackend::new(path)),
        RepoUrl::S3 {
            endpoint,
            bucket,
            prefix,
        } => {
            let region = s3
                .map(|c| c.region.as_str())
                .filter(|r| !r.is_empty())
                .unwrap_or(DEFAULT_REGION);
            let mut options = S3Options::new(endpoint, &bucket, &prefix, region);
            if let Some(creds) = s3 {
                options.access_key_id = creds.access_key_id.clone();
                options.secret_access_key = creds.secret_access_key.clone();
                options.session_token = creds.session_token.clone();
            }
            options.verify_tls = verify_tls;
            if patience == Patience::Validate {
                options.max_attempts = 2;
            }
            Arc::new(S3Backend::new(options))
        }
    }
}

/// Warns, once per profile and endpoint in this process, that a profile does not check
/// its S3 endpoint's certificate. Profiles are read on every request; the warning is
/// not repeated for each.
fn warn_unverified(profile: &str, endpoint: &str) {
    static WARNED: OnceLock<Mutex<HashSet<(String, String)>>> = OnceLock::new();
    let first = WARNED
        .get_or_init(Default::default)
        .lock()
        .insert((profile.to_string(), endpoint.to_string()));
    if first {
        tracing::warn!(
            profile,
            endpoint,
            "TLS CERTIFICATE VERIFICATION IS OFF: profile {profile:?} has verifyTls: false, so \
             this agent accepts any certificate from S3 endpoint {endpoint}; anyone on the \
             network path can pose as it and read or change repository traffic. Use this only \
             in test setups, and remove verifyTls: false once the endpoint has a trusted \
             certificate"
        );
    }
}

impl Profile {
    /// The storage backend this profile names.
    pub fn backend(&self) -> Result<DynBackend, ProfileError> {
        let url = RepoUrl::parse(&self.repository).map_err(|source| ProfileError::Repo {
            context: format!("profile {:?}: repository URL", self.name),
            source: Box::new(source),
        })?;
        if let RepoUrl::S3 { endpoint, .. } = &url {
            if self.s3.is_none() {
                return Err(ProfileError::Invalid {
                    name: self.name.clone(),
                    path: "in memory".into(),
                    detail: "an s3: repository needs S3 credentials".into(),
                });
            }
            let plain_http = endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"));
            if !self.verify_tls && !plain_http {
                warn_unverified(&self.name, endpoint.as_deref().unwrap_or("AWS S3"));
            }
        }
        Ok(build_backend(
            url,
            self.s3.as_ref(),
            self.verify_tls,
            Patience::Normal,
        ))
    }

    /// Opens the repository; `expected_id`, when not empty, must match its id.
    pub async fn open(&self, expected_id: &str) -> Result<Repository, ProfileError> {
        let repo = Repository::open(self.backend()?, &self.key)
            .await
            .map_err(|source| self.open_error(source))?;
        let found = repo.config().id.to_string();
        if !expected_id.is_empty() && found != expected_id {
            return Err(ProfileError::RepositoryMismatch {
                profile: self.name.clone(),
                expected: expected_id.to_string(),
                found,
            });
        }
        Ok(repo)
    }

    /// What a failed open means: a refused TLS certificate gets its own error, naming
    /// the profile and the `verifyTls` switch, since retrying never fixes it.
    fn open_error(&self, source: ferry_repo::Error) -> ProfileError {
        let certificate = matches!(
            &source,
            ferry_repo::Error::Backend(b) if *b.reason() == Reason::UntrustedCertificate
        );
        if certificate && self.verify_tls {
            let endpoint = match RepoUrl::parse(&self.repository) {
                Ok(RepoUrl::S3 {
                    endpoint: Some(e), ..
                }) => e,
                _ => "AWS S3".to_string(),
            };
            return ProfileError::TlsCertificate {
                profile: self.name.clone(),
                endpoint,
                detail: source.to_string(),
            };
        }
        ProfileError::Repo {
            context: format!(
                "opening repository {} of profile {:?}",
                self.repository, self.name
            ),
            source: Box::new(source),
        }
    }

    /// This profile as a `<name>.yaml` file whose secrets (S3 secret key, session token,
    /// repository key) are sealed by `sealer` and bound to the profile's name, so no
    /// secret lies in clear on disk and a sealed value copied into another profile's
    /// file does not open there.
    pub fn to_sealed_yaml(&self, sealer: &ferry_store::SecretBox) -> Result<String, ProfileError> {
        file::sealed_yaml(self, sealer)
    }
}
