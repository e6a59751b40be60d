//! Checking a CreateProfileRequest, with or without a migration token, before anything
//! outside the request is looked at.

use ferry_proto::v1::{CreateProfileRequest, ProfileKind, SecretRef, StorageBackend};
use ferry_token::{Fingerprint, OpenOptions};

use crate::db::{ProfileRecord, SecretName};
use crate::error::CatalogError;

use super::NewProfile;

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

/// The signer a create request with a token pins (`expected_signer`). None only when the
/// request says, by its unsafe flag, that any signer will do: a token is pinned by
/// default, as kubeadm pins the cluster CA on join.
fn expected_signer(req: &CreateProfileRequest) -> Result<Option<Fingerprint>, CatalogError> {
    let text = req.expected_signer.trim();
    match (text.is_empty(), req.unsafe_skip_signer_verification) {
        (true, true) => return Ok(None),
        (true, false) => {
            return Err(CatalogError::invalid(
                "expected_signer",
                "required with a migration token: give the fingerprint (SHA256:...) of the \
                 source's signing key, which the source printed with the token (`ferry export` \
                 on stderr, IssueMigrationToken's signer_fingerprint); or set \
                 unsafe_skip_signer_verification (`--unsafe-skip-signer-verification`) to \
                 accept a token whoever signed it",
            ));
        }
        (false, true) => {
            return Err(CatalogError::invalid(
                "unsafe_skip_signer_verification",
                "set together with expected_signer: pin the signer or skip the check, not both",
            ));
        }
        (false, false) => {}
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
/// the pinned signer (a token signed by another key is refused, naming both fingerprints,
/// before anything is stored) unless the request skips that check.
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
    if req.unsafe_skip_signer_verification {
        return Err(CatalogError::invalid(
            "unsafe_skip_signer_verification",
            "it skips checking a migration token's signer: give migration_token too, or \
             leave it unset",
        ));
    }
    let kind = ProfileKind::try_from(req.kind)
        .ok()
        .filter(|k| *k != ProfileKind::Unspecified)
        .ok_or_else(|| CatalogError::invalid("kind", "set EXPORT, IMPORT or MIGRATION"))?;
    let namespace = req.namespace.trim();
    if !namespace.is_empty() {
        if kind != ProfileKind::Export {
            return Err(CatalogError::invalid(
                "namespace",
                "binds an EXPORT profile to one application namespace; leave it empty for \
                 other kinds",
            ));
        }
        crate::service::validate_namespace(namespace)?;
    }
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
    let (key_secret, generate_key) = key_secret(req, kind, secrets_namespace)?;
    let credentials = secret_name(
        "credentials_secret",
        &req.credentials_secret,
        secrets_namespace,
    )?;

    let (endpoint, bucket, region) = storage_location(req, backend, credentials.is_some())?;
    let warnings = tls_warning(req, backend, verify_tls, &endpoint)
        .into_iter()
        .collect();
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
            token_namespace: String::new(),
            token_restore_point: String::new(),
            namespace: namespace.to_owned(),
        },
        create_repository: req.create_repository,
        generate_key,
        warnings,
    })
}

/// The Secret holding the profile's key, and whether the key is to be generated (only for
/// a profile that creates its repository).
fn key_secret(
    req: &CreateProfileRequest,
    kind: ProfileKind,
    secrets_namespace: &str,
) -> Result<(SecretName, bool), CatalogError> {
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
    Ok((key_secret, generate_key))
}

/// The endpoint, bucket and region of the request's backend, checked (a LOCAL profile's
/// bucket is a directory).
fn storage_location(
    req: &CreateProfileRequest,
    backend: StorageBackend,
    has_credentials: bool,
) -> Result<(String, String, String), CatalogError> {
    Ok(match backend {
        StorageBackend::S3 => {
            let endpoint = validate_endpoint(&req.endpoint)?;
            validate_bucket(&req.bucket)?;
            if !has_credentials {
                // The engine signs every request; anonymous access is not wired through.
                return Err(CatalogError::invalid(
                    "credentials_secret",
                    "required for S3: name the Secret with access_key_id and secret_access_key",
                ));
            }
            (endpoint, req.bucket.clone(), req.region.trim().to_string())
        }
        StorageBackend::Local => {
            if !req.endpoint.is_empty() || !req.region.is_empty() || has_credentials {
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
    })
}

/// The warning a profile that turns TLS verification off for a TLS endpoint gets (and
/// logs).
fn tls_warning(
    req: &CreateProfileRequest,
    backend: StorageBackend,
    verify_tls: bool,
    endpoint: &str,
) -> Option<String> {
    if !verify_tls && backend == StorageBackend::S3 && !endpoint.starts_with("http://") {
        let shown = if endpoint.is_empty() {
            "AWS S3"
        } else {
            endpoint
        };
        let warning = format!(
            "TLS certificate verification is OFF for profile {:?} ({shown}): anyone on the \
             network path can pose as the object store and read or change what the profile \
             sends; use this only in test setups",
            req.name
        );
        tracing::warn!(profile = %req.name, "{warning}");
        return Some(warning);
    }
    None
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
