//! Profiles: validating a CreateProfileRequest, reading the Secrets a profile names,
//! reaching the repository behind it, and the agent's profile file.
//!
//! The catalog stores Secret references only; credentials and the key are read from the
//! local cluster whenever a repository is opened, so a rotated Secret applies at once.
//!
//! `validate.rs` checks requests, `secrets.rs` reads the Secrets; reaching the
//! repository and the agent's profile file are here.

mod secrets;
#[cfg(test)]
mod tests;
mod validate;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_proto::v1::{Profile, SecretRef, StorageBackend};
use ferry_repo::backend::{BackendError, DynBackend, Reason, RepoUrl};

use crate::db::{ProfileRecord, SecretName};
use crate::error::CatalogError;
use crate::restore_points::timestamp;

pub(crate) use secrets::{Material, read_credentials, read_material, secret_api_error};
pub(crate) use validate::{
    check_token_request, default_key_secret, token_open_options, validate, validate_name,
};

/// Keys of the credentials Secret. The first name of each is the documented one (as in
/// catalog.proto); the camelCase spelling of the agent's profile file is accepted too.
pub const ACCESS_KEY_ID_KEYS: &[&str] = &["access_key_id", "accessKeyId"];
pub const SECRET_ACCESS_KEY_KEYS: &[&str] = &["secret_access_key", "secretAccessKey"];
/// Optional: temporary credentials' session token.
pub const SESSION_TOKEN_KEYS: &[&str] = &["session_token", "sessionToken"];
/// Key of the encryption key Secret: the user's key bytes, used as they are.
pub const ENCRYPTION_KEY_KEY: &str = "key";

pub use ferry_profile::DEFAULT_REGION;
/// How hard a backend tries before giving up.
pub(crate) use ferry_profile::Patience;

/// A validated CreateProfileRequest.
#[derive(Debug)]
pub(crate) struct NewProfile {
    pub record: ProfileRecord,
    pub create_repository: bool,
    /// No key Secret was named: generate a key into `record.key_secret`.
    pub generate_key: bool,
    /// For the response: things the user must act on.
    pub warnings: Vec<String>,
}

/// The repository's location as the agent's profile file and messages name it:
/// `s3:http(s)://host:port/bucket/prefix`, `s3://bucket/prefix` (AWS), or a directory.
pub(crate) fn location(p: &ProfileRecord) -> String {
    let tail = if p.prefix.is_empty() {
        p.bucket.clone()
    } else {
        format!("{}/{}", p.bucket, p.prefix)
    };
    if p.backend == StorageBackend::Local as i32 {
        tail
    } else if p.endpoint.is_empty() {
        format!("s3://{tail}")
    } else {
        format!("s3:{}/{tail}", p.endpoint)
    }
}

/// The API's form of a stored profile.
pub(crate) fn to_proto(p: &ProfileRecord) -> Profile {
    let secret = |s: &SecretName| SecretRef {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
    };
    Profile {
        name: p.name.clone(),
        kind: p.kind,
        backend: p.backend,
        endpoint: p.endpoint.clone(),
        bucket: p.bucket.clone(),
        prefix: p.prefix.clone(),
        region: p.region.clone(),
        credentials_secret: p.credentials.as_ref().map(secret),
        verify_tls: p.verify_tls,
        encryption_key_secret: Some(secret(&p.key_secret)),
        repository_id: p.repository_id.clone(),
        created_at: Some(timestamp(p.created_at_ns)),
        token_signer_fingerprint: p.token_signer.clone(),
        namespace: p.namespace.clone(),
    }
}

/// The storage backend a profile names.
pub(crate) fn backend(p: &ProfileRecord, m: &Material, patience: Patience) -> DynBackend {
    let url = if p.backend == StorageBackend::Local as i32 {
        RepoUrl::Local(if p.prefix.is_empty() {
            PathBuf::from(&p.bucket)
        } else {
            Path::new(&p.bucket).join(&p.prefix)
        })
    } else {
        RepoUrl::S3 {
            endpoint: (!p.endpoint.is_empty()).then(|| p.endpoint.clone()),
            bucket: p.bucket.clone(),
            prefix: p.prefix.clone(),
        }
    };
    let s3 = m.s3.as_ref().map(|c| c.for_profile(p));
    ferry_profile::build_backend(url, s3.as_ref(), p.verify_tls, patience)
}

/// What a failed repository operation means for this profile.
pub(crate) fn repo_error(
    p: &ProfileRecord,
    operation: &'static str,
    e: ferry_repo::Error,
) -> CatalogError {
    use ferry_repo::Error as R;
    let location = location(p);
    // What the store said travels as fields of the backend error, never as text.
    let (certificate, missing_bucket, denied) = match &e {
        R::Backend(b) => (
            *b.reason() == Reason::UntrustedCertificate,
            b.store_code() == Some("NoSuchBucket"),
            match b {
                BackendError::Permanent { message, .. } if is_access_denied(b) => {
                    Some(message.clone())
                }
                _ => None,
            },
        ),
        _ => (false, false, None),
    };
    match e {
        // Not retried by the backend, but to the user the store is not reachable, as
        // before the refusal was told apart.
        e if certificate => CatalogError::Unreachable {
            profile: p.name.clone(),
            location,
            source: Box::new(e),
        },
        e @ R::WrongKey { .. } => CatalogError::WrongKey {
            profile: p.name.clone(),
            location,
            key_secret: p.key_secret.to_string(),
            engine: e.to_string(),
        },
        R::NotFound { .. } if operation == "opening" => CatalogError::RepositoryMissing {
            profile: p.name.clone(),
            location,
        },
        _ if missing_bucket => CatalogError::BucketMissing {
            profile: p.name.clone(),
            bucket: p.bucket.clone(),
            location,
        },
        _ if denied.is_some() => CatalogError::AccessDenied {
            profile: p.name.clone(),
            location,
            operation,
            detail: denied.unwrap_or_default(),
        },
        e if e.is_transient() => CatalogError::Unreachable {
            profile: p.name.clone(),
            location,
            source: Box::new(e),
        },
        source => CatalogError::Repo {
            context: format!("{operation} repository {location} (profile {:?})", p.name),
            source: Box::new(source),
        },
    }
}

/// S3's own codes for refused credentials, or a bare 403 (a HEAD's answer has no body
/// to carry a code).
fn is_access_denied(e: &BackendError) -> bool {
    let code = e.store_code().unwrap_or_default();
    [
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
    ]
    .contains(&code)
        || e.http_status() == Some(403)
}

/// Writes a small object and removes it: whether these credentials may write.
pub(crate) async fn probe_write(backend: &DynBackend) -> Result<(), BackendError> {
    let suffix = ferry_repo::Id::random()
        .map(|id| id.short())
        .unwrap_or_default();
    let key = format!("probes/catalog-{}-{suffix}", std::process::id());
    backend
        .put(&key, Bytes::from_static(b"ferry catalog write check"))
        .await?;
    backend.delete(&key).await
}

/// The profile as the agents' profile file names it (ferry-profile's format), to be
/// sealed and written for them.
pub(crate) fn agent_profile(p: &ProfileRecord, m: &Material) -> ferry_profile::Profile {
    ferry_profile::Profile {
        name: p.name.clone(),
        repository: location(p),
        s3: m.s3.as_ref().map(|c| c.for_profile(p)),
        key: m.key.clone(),
        verify_tls: p.verify_tls,
        reads_only: p.reads_only(),
        namespace: Some(p.namespace.clone()).filter(|n| !n.is_empty()),
    }
}

/// The YAML of `<name>.yaml` for the agent, its secrets sealed by `sealer` and bound to
/// the profile's name.
pub(crate) fn agent_profile_yaml(
    p: &ProfileRecord,
    m: &Material,
    sealer: &ferry_store::SecretBox,
) -> Result<String, CatalogError> {
    agent_profile(p, m)
        .to_sealed_yaml(sealer)
        .map_err(agent_file_error)
}

/// Writes `<dir>/<name>.yaml` atomically with mode 0600.
pub(crate) async fn write_agent_profile(
    dir: &Path,
    name: &str,
    yaml: String,
) -> Result<(), CatalogError> {
    ferry_profile::write_file(dir, name, yaml)
        .await
        .map_err(agent_file_error)
}

/// Removes `<dir>/<name>.yaml`; a file already gone is fine.
pub(crate) async fn remove_agent_profile(dir: &Path, name: &str) -> Result<(), CatalogError> {
    ferry_profile::remove_file(dir, name)
        .await
        .map_err(agent_file_error)
}

fn agent_file_error(e: ferry_profile::ProfileError) -> CatalogError {
    use ferry_profile::ProfileError as P;
    match e {
        P::File { op, path, source } => CatalogError::AgentProfileFile { op, path, source },
        P::Seal { source, .. } => CatalogError::Store(*source),
        other => CatalogError::Internal(format!("agent profile file: {other}")),
    }
}
