//! Key Secrets Ferry makes itself: a generated repository key (an export or migration
//! profile created without one), or the key a migration token carried (an import
//! profile). Ferry never overwrites a Secret; the ones it makes carry the label
//! `app.kubernetes.io/managed-by: ferry` and say which profile they belong to.

use std::collections::BTreeMap;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use zeroize::Zeroizing;

use crate::db::SecretName;
use crate::error::CatalogError;
use crate::profile::{ENCRYPTION_KEY_KEY, secret_api_error};

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const PROFILE_LABEL: &str = "ferry.dev/profile";
const ORIGIN_ANNOTATION: &str = "ferry.dev/key-origin";

/// Length of a generated repository key.
pub(crate) const GENERATED_KEY_LEN: usize = 32;

/// Where the key in a Ferry-made Secret came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Random bytes made for a new repository: the only copy.
    Generated,
    /// Unwrapped from a migration token: the source keeps the original.
    MigrationToken,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Generated => "generated",
            Origin::MigrationToken => "migration-token",
        }
    }

    /// What Ferry was doing, for [`CatalogError::SecretExists`].
    fn purpose(self) -> &'static str {
        match self {
            Origin::Generated => "generating a repository key",
            Origin::MigrationToken => "storing the repository key of a migration token",
        }
    }
}

/// 32 random bytes.
pub(crate) fn generate_key() -> Result<Zeroizing<Vec<u8>>, CatalogError> {
    let mut key = Zeroizing::new(vec![0u8; GENERATED_KEY_LEN]);
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| CatalogError::Internal("no system randomness for a repository key".into()))?;
    Ok(key)
}

fn exists(origin: Origin, cluster: &str, s: &SecretName) -> CatalogError {
    CatalogError::SecretExists {
        purpose: origin.purpose(),
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        cluster: cluster.to_string(),
    }
}

/// Fails when Secret `s` exists: checked before anything else is done, so a taken name
/// stops the request early.
pub(crate) async fn ensure_absent(
    client: &kube::Client,
    cluster: &str,
    s: &SecretName,
    origin: Origin,
) -> Result<(), CatalogError> {
    match get(client, cluster, s).await? {
        Some(_) => Err(exists(origin, cluster, s)),
        None => Ok(()),
    }
}

async fn get(
    client: &kube::Client,
    cluster: &str,
    s: &SecretName,
) -> Result<Option<Secret>, CatalogError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &s.namespace);
    api.get_opt(&s.name).await.map_err(|source| {
        secret_api_error("get", format!("looking up Secret {s}"), cluster, s, source)
    })
}

/// Creates Secret `s` holding `key` under "key", labelled as Ferry's and `profile`'s.
pub(crate) async fn create(
    client: &kube::Client,
    cluster: &str,
    s: &SecretName,
    profile: &str,
    origin: Origin,
    key: &[u8],
    annotations: BTreeMap<String, String>,
) -> Result<(), CatalogError> {
    let mut annotations = annotations;
    annotations.insert(ORIGIN_ANNOTATION.into(), origin.as_str().into());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(s.name.clone()),
            namespace: Some(s.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.to_string(), "ferry".to_string()),
                (PROFILE_LABEL.to_string(), profile.to_string()),
            ])),
            annotations: Some(annotations),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ENCRYPTION_KEY_KEY.to_string(),
            ByteString(key.to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &s.namespace);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %s, origin = origin.as_str(), "repository key Secret created");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Err(exists(origin, cluster, s)),
        Err(source) => Err(secret_api_error(
            "create",
            format!("creating key Secret {s}"),
            cluster,
            s,
            source,
        )),
    }
}

/// Deletes Secret `s` if Ferry made it for `profile` from `origin`; anything else is left
/// alone. Returns whether it was deleted.
pub(crate) async fn delete_if_ours(
    client: &kube::Client,
    cluster: &str,
    s: &SecretName,
    profile: &str,
    origin: Origin,
) -> Result<bool, CatalogError> {
    let Some(found) = get(client, cluster, s).await? else {
        return Ok(false);
    };
    let meta = &found.metadata;
    let is = |map: &Option<BTreeMap<String, String>>, k: &str, v: &str| {
        map.as_ref().and_then(|m| m.get(k)).map(String::as_str) == Some(v)
    };
    let ours = is(&meta.labels, MANAGED_BY, "ferry")
        && is(&meta.labels, PROFILE_LABEL, profile)
        && is(&meta.annotations, ORIGIN_ANNOTATION, origin.as_str());
    if !ours {
        return Ok(false);
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), &s.namespace);
    match api.delete(&s.name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(source) => Err(secret_api_error(
            "delete",
            format!("deleting key Secret {s}"),
            cluster,
            s,
            source,
        )),
    }
}
