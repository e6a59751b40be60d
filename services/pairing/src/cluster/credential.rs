//! The credential a destination issues to a source: ServiceAccount, binding to
//! `ferry-migrator` and token (a TokenRequest or a token Secret), and its revocation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret as KubeSecret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};

use crate::config::CredentialKind;
use crate::db::IssuedCredential;
use crate::error::{PairingError, Result};
use crate::token::Secret;

use super::{CLUSTER_ROLE, ensure_cluster_role, ensure_namespace, labels, object};

/// How long the token controller gets to fill in a token Secret.
const SECRET_TOKEN_WAIT: Duration = Duration::from_secs(20);

/// Names of the objects behind pair `pair_id`'s credential.
pub fn credential_names(namespace: &str, pair_id: &str) -> IssuedCredential {
    let short: String = pair_id.chars().take(10).collect();
    let name = format!("ferry-pair-{short}");
    IssuedCredential {
        namespace: namespace.into(),
        secret: Some(format!("{name}-token")),
        binding: name.clone(),
        service_account: name,
        expires_at: None,
    }
}

/// What a pair's credential is made as.
#[derive(Debug, Clone, Copy)]
pub struct CredentialSpec {
    pub kind: CredentialKind,
    /// How long a token-request credential lasts.
    pub lifetime: Duration,
    /// `ferry-migrator` may impersonate (the destination trusts its sources' names).
    pub trust_source_identities: bool,
}

/// Creates the ServiceAccount, binds it to `ferry-migrator` and gets a token for it.
/// On failure, removes whatever it created. `owner` (the installation's own
/// ClusterRole) owns what is made, so uninstalling Ferry removes it.
pub async fn issue_credential(
    client: &kube::Client,
    cluster: &str,
    namespace: &str,
    pair_id: &str,
    spec: CredentialSpec,
    owner: Option<&OwnerReference>,
) -> Result<(IssuedCredential, Secret)> {
    let mut cred = credential_names(namespace, pair_id);
    if spec.kind == CredentialKind::TokenRequest {
        cred.secret = None;
    }
    match issue(client, cluster, pair_id, spec, owner, &mut cred).await {
        Ok(bearer) => Ok((cred, bearer)),
        Err(e) => {
            if let Err(cleanup) = revoke_credential(client, cluster, &cred).await {
                tracing::warn!(error = %cleanup, service_account = %cred.service_account,
                    "could not remove a half-made pair credential");
            }
            Err(e)
        }
    }
}

async fn issue(
    client: &kube::Client,
    cluster: &str,
    pair_id: &str,
    spec: CredentialSpec,
    owner: Option<&OwnerReference>,
    cred: &mut IssuedCredential,
) -> Result<Secret> {
    let ns = cred.namespace.clone();
    ensure_namespace(client, cluster, &ns).await?;
    ensure_cluster_role(client, cluster, owner, spec.trust_source_identities).await?;

    let sa_ref = || object("v1", "ServiceAccount", &ns, &cred.service_account);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(cred.service_account.clone()),
            labels: Some(labels(pair_id)),
            owner_references: owner.map(|o| vec![o.clone()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let sa = sas
        .create(&PostParams::default(), &sa)
        .await
        .map_err(PairingError::kube(
            cluster,
            format!("creating ServiceAccount {ns}/{}", cred.service_account),
            sa_ref(),
        ))?;

    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(cred.binding.clone()),
            labels: Some(labels(pair_id)),
            owner_references: owner.map(|o| vec![o.clone()]),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: cred.service_account.clone(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .map_err(PairingError::kube(
            cluster,
            format!("creating ClusterRoleBinding {}", cred.binding),
            object(
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                "",
                &cred.binding,
            ),
        ))?;

    match spec.kind {
        CredentialKind::Secret => {
            let name = cred.secret.clone().unwrap_or_default();
            secret_token(client, cluster, pair_id, &ns, &name, &sa).await
        }
        CredentialKind::TokenRequest => request_token(client, cluster, cred, spec.lifetime).await,
    }
}

/// A token of the credential's ServiceAccount from the TokenRequest API, valid for
/// `lifetime` (or what the API server grants, which `cred.expires_at` then records):
/// for a new pair, and again each time the source renews it.
pub async fn request_token(
    client: &kube::Client,
    cluster: &str,
    cred: &mut IssuedCredential,
    lifetime: Duration,
) -> Result<Secret> {
    let ns = cred.namespace.clone();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let seconds = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(seconds),
            ..Default::default()
        },
        ..Default::default()
    };
    let got = sas
        .create_token_request(&cred.service_account, &PostParams::default(), &request)
        .await
        .map_err(PairingError::kube(
            cluster,
            format!(
                "requesting a token for ServiceAccount {ns}/{}",
                cred.service_account
            ),
            object("v1", "ServiceAccount", &ns, &cred.service_account),
        ))?;
    let status = got.status.ok_or_else(|| PairingError::Internal {
        detail: format!("cluster {cluster} answered a TokenRequest without a status"),
    })?;
    // The API server may shorten the lifetime; keep what it granted.
    cred.expires_at = Some(status.expiration_timestamp.0.as_second());
    Ok(Secret::new(status.token))
}

/// A `kubernetes.io/service-account-token` Secret, then its token once the controller
/// has filled it in.
async fn secret_token(
    client: &kube::Client,
    cluster: &str,
    pair_id: &str,
    namespace: &str,
    name: &str,
    sa: &ServiceAccount,
) -> Result<Secret> {
    let sa_name = sa.metadata.name.clone().unwrap_or_default();
    let secrets: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let what = || object("v1", "Secret", namespace, name);
    let secret = KubeSecret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(pair_id)),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/service-account.name".to_string(),
                sa_name.clone(),
            )])),
            // Goes with its ServiceAccount if someone deletes that by hand.
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ServiceAccount".into(),
                name: sa_name,
                uid: sa.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map_err(PairingError::kube(
            cluster,
            format!("creating token Secret {namespace}/{name}"),
            what(),
        ))?;
    let started = Instant::now();
    loop {
        let got = secrets.get(name).await.map_err(PairingError::kube(
            cluster,
            format!("reading token Secret {namespace}/{name}"),
            what(),
        ))?;
        if let Some(token) = got.data.as_ref().and_then(|d| d.get("token"))
            && !token.0.is_empty()
        {
            let token = String::from_utf8(token.0.clone()).map_err(|_| PairingError::Internal {
                detail: format!("token in Secret {namespace}/{name} on {cluster} is not text"),
            })?;
            return Ok(Secret::new(token));
        }
        if started.elapsed() > SECRET_TOKEN_WAIT {
            return Err(PairingError::CredentialNotIssued {
                cluster: cluster.into(),
                namespace: namespace.into(),
                secret: name.into(),
                waited_seconds: SECRET_TOKEN_WAIT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the binding, the token Secret and the ServiceAccount. The binding goes first
/// because RBAC changes apply at once, while the API server keeps accepting a token it
/// authenticated recently for its token cache TTL (10 s by default; measured on the
/// testenv clusters) even after its ServiceAccount is gone. Missing objects are fine:
/// revoking twice is not an error.
pub async fn revoke_credential(
    client: &kube::Client,
    cluster: &str,
    cred: &IssuedCredential,
) -> Result<()> {
    let gone = |r: std::result::Result<(), kube::Error>| match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other,
    };
    let dp = DeleteParams::default();
    gone(
        Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&cred.binding, &dp)
            .await
            .map(drop),
    )
    .map_err(PairingError::kube(
        cluster,
        format!("deleting ClusterRoleBinding {}", cred.binding),
        object(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "",
            &cred.binding,
        ),
    ))?;
    if let Some(secret) = &cred.secret {
        gone(
            Api::<KubeSecret>::namespaced(client.clone(), &cred.namespace)
                .delete(secret, &dp)
                .await
                .map(drop),
        )
        .map_err(PairingError::kube(
            cluster,
            format!("deleting token Secret {}/{secret}", cred.namespace),
            object("v1", "Secret", &cred.namespace, secret),
        ))?;
    }
    gone(
        Api::<ServiceAccount>::namespaced(client.clone(), &cred.namespace)
            .delete(&cred.service_account, &dp)
            .await
            .map(drop),
    )
    .map_err(PairingError::kube(
        cluster,
        format!(
            "deleting ServiceAccount {}/{}",
            cred.namespace, cred.service_account
        ),
        object(
            "v1",
            "ServiceAccount",
            &cred.namespace,
            &cred.service_account,
        ),
    ))
}
