//! Profiles: validating a CreateProfileRequest, reading the Secrets a profile names,
//! reaching the repository behind it, and the agent's profile file.
//!
//! The catalog stores Secret references only; credentials and the key are read from the
//! local cluster whenever a repository is opened, so a rotated Secret applies at once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_proto::v1::{CreateProfileRequest, Profile, ProfileKind, SecretRef, StorageBackend};
use ferry_repo::backend::{BackendError, DynBackend, Reason, RepoUrl};
use ferry_token::{Fingerprint, OpenOptions};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::db::{ProfileRecord, SecretName};
use crate::error::{CatalogError, kube_message, kube_status};
use crate::restore_points::timestamp;

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

/// The Secret Ferry creates for a profile's key when the request names none.
pub(crate) fn default_key_secret(profile: &str) -> String {
    format!("{profile}-key")
}

/// A request with a migration token: the token gives the location, so the request must
/// not, and the profile is an import profile.
pub(crate) fn check_token_request(req: &CreateProfileRequest) -> Result<(), CatalogError> {
    validate_name(&req.name)?;
    let kind = ProfileKind::try_from(req.kind).unwrap_or(ProfileKind::Unspecified);
    if !matches!(kind, ProfileKind::Unspecified | ProfileKind::Import) {
        return Err(CatalogError::invalid(
            "kind",
            "a profile made from a migration token is an IMPORT profile; set IMPORT or leave \
             kind out",
        ));
    }
    let given: Vec<&str> = [
        ("backend", req.backend != 0),
        ("endpoint", !req.endpoint.is_empty()),
        ("bucket", !req.bucket.is_empty()),
        ("prefix", !req.prefix.is_empty()),
        ("region", !req.region.is_empty()),
        ("create_repository", req.create_repository),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    if !given.is_empty() {
        return Err(CatalogError::invalid(
            "migration_token",
            format!(
                "the token names the repository's location; leave {} empty",
                given.join(", ")
            ),
        ));
    }
    expected_signer(req)?;
    Ok(())
}

/// The signer a create request pins (`expected_signer`), if any.
fn expected_signer(req: &CreateProfileRequest) -> Result<Option<Fingerprint>, CatalogError> {
    let text = req.expected_signer.trim();
    if text.is_empty() {
        return Ok(None);
    }
    Fingerprint::parse(text).map(Some).map_err(|_| {
        CatalogError::invalid(
            "expected_signer",
            format!(
                "{text:?} is not a signing key fingerprint: want SHA256: followed by 43 base64 \
                 characters, as the source's IssueMigrationToken (or `ferry export`) printed it"
            ),
        )
    })
}

/// How a create request's migration token is checked: against the clock, and against
/// the pinned signer when `expected_signer` is set (a token signed by another key is then
/// refused, naming both fingerprints, before anything is stored).
pub(crate) fn token_open_options(req: &CreateProfileRequest) -> Result<OpenOptions, CatalogError> {
    let options = OpenOptions::now();
    Ok(match expected_signer(req)? {
        Some(signer) => options.pin(signer),
        None => options,
    })
}

/// Checks every field of a create request; `secrets_namespace` fills empty Secret
/// namespaces. Nothing outside the request is looked at.
pub(crate) fn validate(
    req: &CreateProfileRequest,
    secrets_namespace: &str,
) -> Result<NewProfile, CatalogError> {
    validate_name(&req.name)?;
    if !req.expected_signer.is_empty() {
        return Err(CatalogError::invalid(
            "expected_signer",
            "it pins the signer of a migration token: give migration_token too, or leave \
             expected_signer empty",
        ));
    }
    let kind = ProfileKind::try_from(req.kind)
        .ok()
        .filter(|k| *k != ProfileKind::Unspecified)
        .ok_or_else(|| CatalogError::invalid("kind", "set EXPORT, IMPORT or MIGRATION"))?;
    if kind == ProfileKind::Import && req.create_repository {
        return Err(CatalogError::invalid(
            "create_repository",
            "an import profile only reads a repository another cluster exported; \
             create the repository with the exporting cluster's profile",
        ));
    }
    let backend = StorageBackend::try_from(req.backend)
        .ok()
        .filter(|b| *b != StorageBackend::Unspecified)
        .ok_or_else(|| CatalogError::invalid("backend", "set S3 or LOCAL"))?;
    let prefix = validate_prefix(&req.prefix)?;
    let verify_tls = req.verify_tls.unwrap_or(true);
    let named_key = secret_name(
        "encryption_key_secret",
        &req.encryption_key_secret,
        secrets_namespace,
    )?;
    let generate_key = named_key.is_none();
    let key_secret = match named_key {
        Some(s) => s,
        None if kind == ProfileKind::Import => {
            return Err(CatalogError::invalid(
                "encryption_key_secret",
                "required for an import profile: name the Secret whose key \"key\" holds the \
                 repository key, or create the profile from a migration token",
            ));
        }
        None if !req.create_repository => {
            return Err(CatalogError::invalid(
                "encryption_key_secret",
                "required unless create_repository is set (a generated key only opens a \
                 repository it creates): name the Secret whose key \"key\" holds the repository \
                 key",
            ));
        }
        None => SecretName {
            namespace: secrets_namespace.to_string(),
            name: default_key_secret(&req.name),
        },
    };
    let credentials = secret_name(
        "credentials_secret",
        &req.credentials_secret,
        secrets_namespace,
    )?;

    let (endpoint, bucket, region) = match backend {
        StorageBackend::S3 => {
            let endpoint = validate_endpoint(&req.endpoint)?;
            validate_bucket(&req.bucket)?;
            if credentials.is_none() {
                // The engine signs every request; anonymous access is not wired through.
                return Err(CatalogError::invalid(
                    "credentials_secret",
                    "required for S3: name the Secret with access_key_id and secret_access_key",
                ));
            }
            (endpoint, req.bucket.clone(), req.region.trim().to_string())
        }
        StorageBackend::Local => {
            if !req.endpoint.is_empty() || !req.region.is_empty() || credentials.is_some() {
                return Err(CatalogError::invalid(
                    "backend",
                    "a LOCAL profile takes only bucket (the directory) and prefix; leave \
                     endpoint, region and credentials_secret empty",
                ));
            }
            let dir = req.bucket.trim_end_matches('/');
            if !dir.starts_with('/') || dir.split('/').any(|c| c == "..") {
                return Err(CatalogError::invalid(
                    "bucket",
                    format!(
                        "{:?}: a LOCAL profile's bucket is an absolute directory path",
                        req.bucket
                    ),
                ));
            }
            (String::new(), dir.to_string(), String::new())
        }
        StorageBackend::Unspecified => {
            return Err(CatalogError::invalid("backend", "set S3 or LOCAL"));
        }
    };
    let mut warnings = Vec::new();
    if !verify_tls && backend == StorageBackend::S3 && !endpoint.starts_with("http://") {
        let shown = if endpoint.is_empty() {
            "AWS S3"
        } else {
            endpoint.as_str()
        };
        let warning = format!(
            "TLS certificate verification is OFF for profile {:?} ({shown}): anyone on the \
             network path can pose as the object store and read or change what the profile \
             sends; use this only in test setups",
            req.name
        );
        tracing::warn!(profile = %req.name, "{warning}");
        warnings.push(warning);
    }
    Ok(NewProfile {
        record: ProfileRecord {
            name: req.name.clone(),
            kind: kind as i32,
            backend: backend as i32,
            endpoint,
            bucket,
            prefix,
            region,
            credentials,
            verify_tls,
            key_secret,
            repository_id: String::new(),
            created_at_ns: 0,
            token_signer: String::new(),
        },
        create_repository: req.create_repository,
        generate_key,
        warnings,
    })
}

/// Profile names become file names (`<name>.yaml`) and appear in commands: DNS-label-like.
pub(crate) fn validate_name(name: &str) -> Result<(), CatalogError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(CatalogError::invalid(
            "name",
            format!(
                "{name:?} is not a profile name: 1 to 63 lowercase letters, digits, '-' and '.', \
                 starting and ending with a letter or digit"
            ),
        ))
    }
}

fn validate_prefix(prefix: &str) -> Result<String, CatalogError> {
    let p = prefix.trim_matches('/');
    if p.split('/').any(|c| c == ".." || c == ".")
        || p.contains("//")
        || p.chars().any(|c| c.is_control() || c == '\\')
    {
        return Err(CatalogError::invalid(
            "prefix",
            format!("{prefix:?}: use '/'-separated names without '.', '..' or empty parts"),
        ));
    }
    Ok(p.to_string())
}

fn validate_endpoint(endpoint: &str) -> Result<String, CatalogError> {
    if endpoint.is_empty() {
        return Ok(String::new());
    }
    let bad = |detail: &str| {
        CatalogError::invalid(
            "endpoint",
            format!("{endpoint:?}: {detail}; give it as http(s)://host[:port]"),
        )
    };
    let uri: http::Uri = endpoint.parse().map_err(|_| bad("not a URL"))?;
    let scheme = uri.scheme_str().ok_or_else(|| bad("no scheme"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad("no host, or credentials in the URL"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad(
            "no path or query may follow the host; the bucket is its own field",
        ));
    }
    Ok(format!("{scheme}://{authority}"))
}

fn validate_bucket(bucket: &str) -> Result<(), CatalogError> {
    // S3's naming rules, which every S3-compatible store accepts.
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(CatalogError::invalid(
            "bucket",
            format!(
                "{bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, '-' and '.')"
            ),
        ))
    }
}

fn secret_name(
    field: &'static str,
    r: &Option<SecretRef>,
    default_namespace: &str,
) -> Result<Option<SecretName>, CatalogError> {
    let Some(r) = r
        .as_ref()
        .filter(|r| !r.name.is_empty() || !r.namespace.is_empty())
    else {
        return Ok(None);
    };
    if r.name.is_empty() {
        return Err(CatalogError::invalid(field, "the Secret's name is empty"));
    }
    let namespace = if r.namespace.is_empty() {
        default_namespace.to_string()
    } else {
        r.namespace.clone()
    };
    Ok(Some(SecretName {
        namespace,
        name: r.name.clone(),
    }))
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
    }
}

/// What the Secrets hold: S3 credentials and the repository key. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Material {
    pub s3: Option<S3Credentials>,
    pub key: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl S3Credentials {
    /// With the profile's region, as ferry-profile carries credentials.
    fn for_profile(&self, p: &ProfileRecord) -> ferry_profile::S3Credentials {
        ferry_profile::S3Credentials {
            region: p.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
        }
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field(
                "access_key_id",
                &self.s3.as_ref().map(|c| c.access_key_id.as_str()),
            )
            .field("secret_access_key", &"<redacted>")
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Reads a profile's Secrets from the local cluster.
pub(crate) async fn read_material(
    client: &kube::Client,
    cluster: &str,
    p: &ProfileRecord,
) -> Result<Material, CatalogError> {
    let key = read_key(client, cluster, p).await?;
    let s3 = read_credentials(client, cluster, p).await?;
    Ok(Material { s3, key })
}

/// The repository key from the profile's key Secret.
async fn read_key(
    client: &kube::Client,
    cluster: &str,
    p: &ProfileRecord,
) -> Result<Vec<u8>, CatalogError> {
    let key_data = read_secret(client, cluster, "encryption key", &p.key_secret).await?;
    let key_invalid = |detail: String| CatalogError::SecretInvalid {
        purpose: "encryption key",
        namespace: p.key_secret.namespace.clone(),
        name: p.key_secret.name.clone(),
        cluster: cluster.to_string(),
        detail,
    };
    let key = key_data.get(ENCRYPTION_KEY_KEY).cloned().ok_or_else(|| {
        key_invalid(format!(
            "no key {ENCRYPTION_KEY_KEY:?} (it has: {}); add the repository key under \
             {ENCRYPTION_KEY_KEY:?}",
            keys_of(&key_data)
        ))
    })?;
    if key.is_empty() {
        return Err(key_invalid(format!(
            "key {ENCRYPTION_KEY_KEY:?} is empty; put the repository key there"
        )));
    }
    Ok(key)
}

/// The S3 credentials from the profile's credentials Secret, if it names one.
pub(crate) async fn read_credentials(
    client: &kube::Client,
    cluster: &str,
    p: &ProfileRecord,
) -> Result<Option<S3Credentials>, CatalogError> {
    let s3 = match &p.credentials {
        None => None,
        Some(name) => {
            let data = read_secret(client, cluster, "credentials", name).await?;
            let field = |names: &[&str], required: bool| {
                credential_value(&data, names, required).map_err(|detail| {
                    CatalogError::SecretInvalid {
                        purpose: "credentials",
                        namespace: name.namespace.clone(),
                        name: name.name.clone(),
                        cluster: cluster.to_string(),
                        detail,
                    }
                })
            };
            Some(S3Credentials {
                access_key_id: field(ACCESS_KEY_ID_KEYS, true)?.unwrap_or_default(),
                secret_access_key: field(SECRET_ACCESS_KEY_KEYS, true)?.unwrap_or_default(),
                session_token: field(SESSION_TOKEN_KEYS, false)?,
            })
        }
    };
    Ok(s3)
}

fn keys_of(data: &BTreeMap<String, Vec<u8>>) -> String {
    if data.is_empty() {
        "no keys".into()
    } else {
        data.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// One credential under any of its accepted key names; two spellings that disagree are
/// refused rather than guessed between.
fn credential_value(
    data: &BTreeMap<String, Vec<u8>>,
    names: &[&str],
    required: bool,
) -> Result<Option<String>, String> {
    let mut found: Option<(&str, String)> = None;
    for name in names {
        let Some(raw) = data.get(*name) else { continue };
        let value = std::str::from_utf8(raw)
            .map_err(|_| format!("key {name:?} is not UTF-8 text"))?
            // `kubectl create secret --from-file` keeps a file's trailing newline.
            .trim()
            .to_string();
        match &found {
            Some((first, v)) if *v != value => {
                return Err(format!(
                    "keys {first:?} and {name:?} hold different values; keep only {:?}",
                    names[0]
                ));
            }
            Some(_) => {}
            None => found = Some((name, value)),
        }
    }
    match found {
        Some((name, v)) if v.is_empty() => Err(format!("key {name:?} is empty")),
        Some((_, v)) => Ok(Some(v)),
        None if required => Err(format!(
            "no key {:?} (it has: {}); add it",
            names[0],
            keys_of(data)
        )),
        None => Ok(None),
    }
}

async fn read_secret(
    client: &kube::Client,
    cluster: &str,
    purpose: &'static str,
    s: &SecretName,
) -> Result<BTreeMap<String, Vec<u8>>, CatalogError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &s.namespace);
    let secret = api.get_opt(&s.name).await.map_err(|source| {
        secret_api_error(
            "get",
            format!("reading {purpose} Secret {s}"),
            cluster,
            s,
            source,
        )
    })?;
    let secret = secret.ok_or_else(|| CatalogError::SecretNotFound {
        purpose,
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        cluster: cluster.to_string(),
    })?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// A failed call on Secret `s`; `verb` is the RBAC verb the call needs.
pub(crate) fn secret_api_error(
    verb: &str,
    action: String,
    cluster: &str,
    s: &SecretName,
    source: kube::Error,
) -> CatalogError {
    let http_status = kube_status(&source);
    let next_step = match http_status {
        Some(401 | 403) => format!(
            "grant the catalog's service account {verb} on secrets in namespace {}",
            s.namespace
        ),
        _ => "check that the API server is reachable, then retry".to_string(),
    };
    CatalogError::Kube {
        action,
        cluster: cluster.to_string(),
        message: kube_message(&source),
        next_step,
        http_status,
        object: Some(Box::new(ferry_proto::v1::ObjectRef {
            api_version: "v1".into(),
            kind: "Secret".into(),
            namespace: s.namespace.clone(),
            name: s.name.clone(),
        })),
        source: Box::new(source),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreateProfileRequest {
        CreateProfileRequest {
            name: "prod".into(),
            kind: ProfileKind::Export as i32,
            backend: StorageBackend::S3 as i32,
            endpoint: "http://127.0.0.1:9000/".into(),
            bucket: "ferry".into(),
            prefix: "/a/b/".into(),
            region: String::new(),
            credentials_secret: Some(SecretRef {
                namespace: String::new(),
                name: "s3".into(),
            }),
            verify_tls: None,
            encryption_key_secret: Some(SecretRef {
                namespace: "keys".into(),
                name: "repo-key".into(),
            }),
            create_repository: true,
            migration_token: String::new(),
            expected_signer: String::new(),
        }
    }

    #[test]
    fn requests_are_validated_and_normalised() {
        let p = validate(&request(), "ferry-system").expect("valid").record;
        assert_eq!(p.endpoint, "http://127.0.0.1:9000");
        assert_eq!(p.prefix, "a/b");
        assert!(p.verify_tls, "TLS verification is on by default");
        assert_eq!(
            p.credentials.as_ref().map(|s| s.namespace.as_str()),
            Some("ferry-system")
        );
        assert_eq!(p.key_secret.namespace, "keys");
        assert_eq!(location(&p), "s3:http://127.0.0.1:9000/ferry/a/b");

        let bad = |f: &dyn Fn(&mut CreateProfileRequest)| {
            let mut r = request();
            f(&mut r);
            validate(&r, "ferry-system")
                .expect_err("must fail")
                .to_string()
        };
        assert!(bad(&|r| r.name = "Prod!".into()).contains("profile name"));
        assert!(bad(&|r| r.endpoint = "ftp://x".into()).contains("endpoint"));
        assert!(bad(&|r| r.endpoint = "http://h:1/bucket".into()).contains("path"));
        assert!(bad(&|r| r.bucket = "B".into()).contains("bucket"));
        assert!(bad(&|r| r.prefix = "a/../b".into()).contains("prefix"));
        assert!(
            bad(&|r| {
                r.encryption_key_secret = None;
                r.create_repository = false;
            })
            .contains("encryption_key_secret")
        );
        assert!(bad(&|r| r.credentials_secret = None).contains("credentials_secret"));
        assert!(bad(&|r| r.kind = 0).contains("kind"));
        assert!(bad(&|r| r.kind = ProfileKind::Import as i32).contains("import profile"));

        // No key Secret and a new repository: a key is generated into "<name>-key".
        let mut generated = request();
        generated.encryption_key_secret = None;
        let new = validate(&generated, "ferry-system").expect("generated key");
        assert!(new.generate_key);
        assert_eq!(new.record.key_secret.to_string(), "ferry-system/prod-key");
        generated.kind = ProfileKind::Import as i32;
        generated.create_repository = false;
        assert!(
            validate(&generated, "x").is_err(),
            "import profiles name their key"
        );

        // TLS verification off is allowed, with a warning.
        let mut insecure = request();
        insecure.endpoint = "https://s3.local".into();
        insecure.verify_tls = Some(false);
        let new = validate(&insecure, "ferry-system").expect("verify_tls off");
        assert!(!new.record.verify_tls);
        assert!(
            new.warnings.iter().any(|w| w.contains("TLS")),
            "{:?}",
            new.warnings
        );
        assert!(
            validate(&request(), "x")
                .expect("valid")
                .warnings
                .is_empty()
        );

        // A token names the location: the request may not.
        let mut token = request();
        token.migration_token = "token".into();
        token.kind = ProfileKind::Import as i32;
        token.create_repository = false;
        let err = check_token_request(&token)
            .expect_err("location given")
            .to_string();
        assert!(err.contains("endpoint") && err.contains("bucket"), "{err}");
        token.backend = 0;
        token.endpoint.clear();
        token.bucket.clear();
        token.prefix.clear();
        check_token_request(&token).expect("location from the token");
        // A pinned signer must be a fingerprint, and only pins tokens.
        let signer = ferry_token::SigningKey::generate()
            .expect("signing key")
            .public_key()
            .fingerprint();
        token.expected_signer = format!(" {signer}\n");
        check_token_request(&token).expect("a fingerprint, copy-paste whitespace and all");
        let options = token_open_options(&token).expect("options");
        assert_eq!(options.expected_signer, Some(signer));
        token.expected_signer = "SHA256:nope".into();
        let err = check_token_request(&token).expect_err("not a fingerprint");
        assert!(err.to_string().contains("expected_signer"), "{err}");
        token.expected_signer.clear();
        assert_eq!(
            token_open_options(&token).expect("options").expected_signer,
            None
        );
        assert!(
            bad(&|r| r.expected_signer = "SHA256:x".into()).contains("migration_token"),
            "expected_signer without a token"
        );
        token.kind = ProfileKind::Export as i32;
        assert!(check_token_request(&token).is_err());

        let mut local = request();
        local.backend = StorageBackend::Local as i32;
        local.endpoint.clear();
        local.credentials_secret = None;
        local.bucket = "/srv/repos".into();
        let p = validate(&local, "ferry-system").expect("local").record;
        assert_eq!(location(&p), "/srv/repos/a/b");
        local.bucket = "relative".into();
        assert!(validate(&local, "x").is_err());
    }

    #[tokio::test]
    async fn the_agent_file_carries_the_tls_switch_and_the_agent_honours_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer = ferry_store::SecretBox::load_or_create(dir.path()).expect("secret key");
        let agent_dir = dir.path().join("agent-profiles");
        std::fs::create_dir_all(&agent_dir).expect("agent dir");
        let material = Material {
            s3: Some(S3Credentials {
                access_key_id: "id".into(),
                secret_access_key: "s3-secret".into(),
                session_token: None,
            }),
            key: b"repository key".to_vec(),
        };
        let agents = ferry_profile::ProfileSource::Dir(agent_dir.clone());
        for (name, verify_tls) in [("checked", None), ("selfsigned", Some(false))] {
            let mut req = request();
            req.name = name.into();
            req.endpoint = "https://s3.test:9443".into();
            req.verify_tls = verify_tls;
            let record = validate(&req, "ferry-system").expect("valid").record;
            let yaml = agent_profile_yaml(&record, &material, &sealer).expect("agent file");
            assert_eq!(
                yaml.contains("verifyTls: false"),
                verify_tls == Some(false),
                "{yaml}"
            );
            std::fs::write(ferry_profile::file_path(&agent_dir, name), yaml).expect("write");
            let loaded = agents.get(name).await.expect("the agent reads the file");
            assert_eq!(loaded.verify_tls, verify_tls.unwrap_or(true), "{name}");
        }
    }

    #[test]
    fn credential_spellings_must_agree() {
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let d = data(&[("accessKeyId", "AK\n")]);
        assert_eq!(
            credential_value(&d, ACCESS_KEY_ID_KEYS, true),
            Ok(Some("AK".into()))
        );
        let d = data(&[("access_key_id", "A"), ("accessKeyId", "B")]);
        assert!(credential_value(&d, ACCESS_KEY_ID_KEYS, true).is_err());
        let d = data(&[("other", "x")]);
        let err = credential_value(&d, ACCESS_KEY_ID_KEYS, true).expect_err("missing");
        assert!(
            err.contains("access_key_id") && err.contains("other"),
            "{err}"
        );
        assert_eq!(credential_value(&d, SESSION_TOKEN_KEYS, false), Ok(None));
    }
}
