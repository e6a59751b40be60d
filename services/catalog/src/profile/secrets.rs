//! Reading the Secrets a profile names: S3 credentials and the repository key.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::db::{ProfileRecord, SecretName};
use crate::error::{CatalogError, kube_message, kube_status};

use super::{ACCESS_KEY_ID_KEYS, ENCRYPTION_KEY_KEY, SECRET_ACCESS_KEY_KEYS, SESSION_TOKEN_KEYS};

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
    pub(super) fn for_profile(&self, p: &ProfileRecord) -> ferry_profile::S3Credentials {
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
pub(super) fn credential_value(
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
