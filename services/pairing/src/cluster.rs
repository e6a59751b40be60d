//! Kubernetes work of the pairing service: facts about this cluster, the credential a
//! destination issues to a source (ServiceAccount, ClusterRole `ferry-migrator`, binding,
//! token), clients built from a pair's credential, and access reviews.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_proto::v1::{ClusterInfo, ObjectRef};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Secret as KubeSecret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::config::CredentialKind;
use crate::db::IssuedCredential;
use crate::error::{PairingError, Result, is_network};
use crate::token::Secret;

/// The ClusterRole every pair's ServiceAccount is bound to on the destination.
pub const CLUSTER_ROLE: &str = "ferry-migrator";
/// Field manager for server-side apply, and the managed-by label's value.
const MANAGER: &str = "ferry-pairing";
/// Label carrying the pair id on every object made for a pair.
pub const PAIR_LABEL: &str = "ferry.dev/pair-id";
/// How long the token controller gets to fill in a token Secret.
const SECRET_TOKEN_WAIT: Duration = Duration::from_secs(20);

const WRITE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const READ: &[&str] = &["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// What a migration does on the destination. Custom resources are granted per group of
/// the CRDs present when a token is made (RBAC cannot say "every custom group"; a
/// wildcard group would grant every built-in too).
pub fn migrator_rules(crd_groups: &[String]) -> Vec<PolicyRule> {
    let mut rules = vec![
        rule(
            &[""],
            &[
                "namespaces",
                "configmaps",
                "secrets",
                "services",
                "persistentvolumeclaims",
                "persistentvolumes",
                "pods",
                "replicationcontrollers",
                "limitranges",
                "resourcequotas",
            ],
            WRITE,
        ),
        // ServiceAccounts are never moved (design: they and their tokens stay behind);
        // reading them lets pre-flight say which ones a workload misses.
        rule(&[""], &["serviceaccounts", "nodes"], READ),
        rule(
            &["apps"],
            &[
                "deployments",
                "statefulsets",
                "daemonsets",
                "replicasets",
                "deployments/scale",
                "statefulsets/scale",
                "replicasets/scale",
            ],
            WRITE,
        ),
        rule(&["batch"], &["jobs", "cronjobs"], WRITE),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            WRITE,
        ),
        // RBAC's own escalation check still applies: these succeed only for rules the
        // migrator itself holds.
        rule(
            &["rbac.authorization.k8s.io"],
            &["roles", "rolebindings"],
            WRITE,
        ),
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            READ,
        ),
        rule(&["storage.k8s.io"], &["storageclasses"], READ),
        rule(&["scheduling.k8s.io"], &["priorityclasses"], READ),
        rule(
            &["authorization.k8s.io"],
            &["selfsubjectaccessreviews", "subjectaccessreviews"],
            &["create"],
        ),
        // The destination's agent relay admits callers that may use its agents (restore
        // a volume's data on a node): the pair's source, with this credential.
        rule(&["ferry.dev"], &["agents"], &["use"]),
    ];
    if !crd_groups.is_empty() {
        let groups: Vec<&str> = crd_groups.iter().map(String::as_str).collect();
        rules.push(rule(&groups, &["*"], WRITE));
    }
    rules
}

/// One permission a migration needs, as checked by an access review.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
}

impl Access {
    pub fn describe(&self) -> String {
        if self.group.is_empty() {
            format!("{} {}", self.verb, self.resource)
        } else {
            format!("{} {}.{}", self.verb, self.resource, self.group)
        }
    }

    fn attributes(&self) -> ResourceAttributes {
        ResourceAttributes {
            verb: Some(self.verb.into()),
            group: Some(self.group.into()),
            resource: Some(self.resource.into()),
            ..Default::default()
        }
    }
}

/// The permissions checked when pairing and by CheckPair: one per kind of step a
/// migration takes on the destination.
pub const KEY_ACCESS: &[Access] = &[
    Access {
        verb: "create",
        group: "",
        resource: "namespaces",
    },
    Access {
        verb: "use",
        group: "ferry.dev",
        resource: "agents",
    },
    Access {
        verb: "create",
        group: "",
        resource: "persistentvolumes",
    },
    Access {
        verb: "create",
        group: "",
        resource: "persistentvolumeclaims",
    },
    Access {
        verb: "create",
        group: "apps",
        resource: "statefulsets",
    },
    Access {
        verb: "patch",
        group: "apps",
        resource: "deployments",
    },
    Access {
        verb: "delete",
        group: "",
        resource: "configmaps",
    },
    Access {
        verb: "list",
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
    },
    Access {
        verb: "list",
        group: "storage.k8s.io",
        resource: "storageclasses",
    },
    Access {
        verb: "list",
        group: "",
        resource: "nodes",
    },
];

fn object(api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<ObjectRef> {
    Some(ObjectRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// This cluster as the other side sees it.
pub async fn local_info(
    client: &kube::Client,
    name: &str,
    api_server_url: &str,
    ferry_endpoint: &str,
) -> Result<ClusterInfo> {
    let ns: Api<Namespace> = Api::all(client.clone());
    let kube_system = ns.get("kube-system").await.map_err(PairingError::kube(
        name,
        "reading namespace kube-system (the cluster's id is its uid)",
        object("v1", "Namespace", "", "kube-system"),
    ))?;
    let version = client
        .apiserver_version()
        .await
        .map_err(PairingError::kube(
            name,
            "reading the API server version",
            None,
        ))?;
    Ok(ClusterInfo {
        name: name.into(),
        cluster_id: kube_system.metadata.uid.unwrap_or_default(),
        api_server_url: api_server_url.into(),
        ferry_endpoint: ferry_endpoint.into(),
        kubernetes_version: version.git_version,
    })
}

fn labels(pair_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGER.to_string(),
        ),
        (PAIR_LABEL.to_string(), pair_id.to_string()),
    ])
}

async fn ensure_namespace(client: &kube::Client, cluster: &str, namespace: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let what = || object("v1", "Namespace", "", namespace);
    if api
        .get_opt(namespace)
        .await
        .map_err(PairingError::kube(
            cluster,
            format!("reading namespace {namespace}"),
            what(),
        ))?
        .is_some()
    {
        return Ok(());
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                MANAGER.to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        // Another token being made at the same moment created it.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(PairingError::kube(
            cluster,
            format!("creating namespace {namespace}"),
            what(),
        )(e)),
    }
}

/// Writes ClusterRole `ferry-migrator` (server-side apply, so repeated and concurrent
/// calls converge), granting the custom-resource groups present now. `owner` (the
/// installation's own ClusterRole) makes the garbage collector remove it with Ferry.
pub async fn ensure_cluster_role(
    client: &kube::Client,
    cluster: &str,
    owner: Option<&OwnerReference>,
) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut groups: Vec<String> = crds
        .list_metadata(&ListParams::default())
        .await
        .map_err(PairingError::kube(
            cluster,
            "listing CustomResourceDefinitions",
            None,
        ))?
        .items
        .into_iter()
        .filter_map(|crd| {
            // metadata.name is "<plural>.<group>"; the group is what RBAC needs.
            crd.metadata
                .name
                .and_then(|n| n.split_once('.').map(|(_, g)| g.to_string()))
        })
        .collect();
    groups.sort();
    groups.dedup();
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(CLUSTER_ROLE.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                MANAGER.to_string(),
            )])),
            owner_references: owner.map(|o| vec![o.clone()]),
            ..Default::default()
        },
        rules: Some(migrator_rules(&groups)),
        ..Default::default()
    };
    Api::<ClusterRole>::all(client.clone())
        .patch(
            CLUSTER_ROLE,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&role),
        )
        .await
        .map_err(PairingError::kube(
            cluster,
            format!("applying ClusterRole {CLUSTER_ROLE}"),
            object(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "",
                CLUSTER_ROLE,
            ),
        ))?;
    Ok(())
}

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

/// Creates the ServiceAccount, binds it to `ferry-migrator` and gets a token for it.
/// On failure, removes whatever it created. `owner` (the installation's own
/// ClusterRole) owns what is made, so uninstalling Ferry removes it.
pub async fn issue_credential(
    client: &kube::Client,
    cluster: &str,
    namespace: &str,
    pair_id: &str,
    kind: CredentialKind,
    lifetime: Duration,
    owner: Option<&OwnerReference>,
) -> Result<(IssuedCredential, Secret)> {
    let mut cred = credential_names(namespace, pair_id);
    if kind == CredentialKind::TokenRequest {
        cred.secret = None;
    }
    match issue(client, cluster, pair_id, kind, lifetime, owner, &mut cred).await {
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
    kind: CredentialKind,
    lifetime: Duration,
    owner: Option<&OwnerReference>,
    cred: &mut IssuedCredential,
) -> Result<Secret> {
    let ns = cred.namespace.clone();
    ensure_namespace(client, cluster, &ns).await?;
    ensure_cluster_role(client, cluster, owner).await?;

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

    match kind {
        CredentialKind::Secret => {
            let name = cred.secret.clone().unwrap_or_default();
            secret_token(client, cluster, pair_id, &ns, &name, &sa).await
        }
        CredentialKind::TokenRequest => {
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
                    sa_ref(),
                ))?;
            let status = got.status.ok_or_else(|| PairingError::Internal {
                detail: format!("cluster {cluster} answered a TokenRequest without a status"),
            })?;
            // The API server may shorten the lifetime; keep what it granted.
            cred.expires_at = Some(status.expiration_timestamp.0.as_second());
            Ok(Secret::new(status.token))
        }
    }
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

/// A client for another cluster from a pair's credential. Built through a kubeconfig
/// document so the CA is read exactly as kubectl would read it. `bounded_reads` caps
/// every response at `timeout` too (checks), not just connecting (migrations).
pub async fn pair_client(
    cluster: &str,
    url: &str,
    ca_pem: &str,
    bearer: &Secret,
    timeout: Duration,
    bounded_reads: bool,
) -> Result<kube::Client> {
    ferry_kube::bearer_client(url, ca_pem, bearer.expose(), timeout, bounded_reads)
        .await
        .map_err(|e| PairingError::ApiUnreachable {
            cluster: cluster.into(),
            url: url.into(),
            detail: e.to_string(),
        })
}

/// An owner reference to ClusterRole `name` (the installation's own, made by the Helm
/// chart): what pairing makes is removed by the garbage collector when it goes.
pub async fn cluster_role_owner(
    client: &kube::Client,
    cluster: &str,
    name: &str,
) -> Result<OwnerReference> {
    let role = Api::<ClusterRole>::all(client.clone())
        .get(name)
        .await
        .map_err(PairingError::kube(
            cluster,
            format!(
                "reading ClusterRole {name}, the owner of what pairing makes (--owner-cluster-role)"
            ),
            object("rbac.authorization.k8s.io/v1", "ClusterRole", "", name),
        ))?;
    Ok(OwnerReference {
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: "ClusterRole".into(),
        name: name.into(),
        uid: role.metadata.uid.unwrap_or_default(),
        ..Default::default()
    })
}

/// Reaches the API with the pair's credential: the server's version, or why not.
pub async fn probe(client: &kube::Client, cluster: &str, url: &str) -> Result<String> {
    match client.apiserver_version().await {
        Ok(v) => Ok(v.git_version),
        Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
            Err(PairingError::CredentialRejected {
                cluster: cluster.into(),
                url: url.into(),
                detail: format!("HTTP {} {}", s.code, s.message),
            })
        }
        Err(e) if is_network(&e) => Err(PairingError::ApiUnreachable {
            cluster: cluster.into(),
            url: url.into(),
            detail: error_chain(&e),
        }),
        Err(e) => Err(PairingError::kube(
            cluster,
            "reading the API server version",
            None,
        )(e)),
    }
}

/// The permissions in [`KEY_ACCESS`] the client's own identity lacks.
pub async fn missing_permissions(client: &kube::Client, cluster: &str) -> Result<Vec<String>> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let reviews = KEY_ACCESS.iter().map(|access| {
        let api = api.clone();
        async move {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(access.attributes()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let got =
                api.create(&PostParams::default(), &review)
                    .await
                    .map_err(PairingError::kube(
                        cluster,
                        format!("reviewing access to {}", access.describe()),
                        None,
                    ))?;
            Ok::<_, PairingError>((access, got.status.is_some_and(|s| s.allowed)))
        }
    });
    let mut missing = Vec::new();
    for result in futures::future::join_all(reviews).await {
        let (access, allowed) = result?;
        if !allowed {
            missing.push(access.describe());
        }
    }
    Ok(missing)
}

/// On the destination, with its own client: does the token it issued still authenticate,
/// and as whom? Returns the user name, or `None` if the token is no longer valid.
pub async fn review_token(
    client: &kube::Client,
    cluster: &str,
    bearer: &Secret,
) -> Result<Option<(String, Vec<String>)>> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(bearer.expose().to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    let got = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(PairingError::kube(
            cluster,
            "reviewing the pair's token",
            None,
        ))?;
    let Some(status) = got.status.filter(|s| s.authenticated == Some(true)) else {
        return Ok(None);
    };
    let user = status.user.unwrap_or_default();
    Ok(Some((
        user.username.unwrap_or_default(),
        user.groups.unwrap_or_default(),
    )))
}

/// The permissions in [`KEY_ACCESS`] that `user` lacks, asked by this cluster's Ferry.
pub async fn missing_permissions_of(
    client: &kube::Client,
    cluster: &str,
    user: &str,
    groups: &[String],
) -> Result<Vec<String>> {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for access in KEY_ACCESS {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.into()),
                groups: Some(groups.to_vec()),
                resource_attributes: Some(access.attributes()),
                ..Default::default()
            },
            ..Default::default()
        };
        let got = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(PairingError::kube(
                cluster,
                format!("reviewing access of {user} to {}", access.describe()),
                None,
            ))?;
        if !got.status.is_some_and(|s| s.allowed) {
            missing.push(access.describe());
        }
    }
    Ok(missing)
}

/// An error and its causes on one line: kube's top-level message for a network failure
/// ("ServiceError: client error (Connect)") hides the part a person needs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_covers_every_key_access() {
        let rules = migrator_rules(&["example.com".into()]);
        for access in KEY_ACCESS {
            let ok = rules.iter().any(|r| {
                r.api_groups
                    .as_ref()
                    .is_some_and(|g| g.iter().any(|g| g == access.group))
                    && r.resources
                        .as_ref()
                        .is_some_and(|rs| rs.iter().any(|x| x == access.resource || x == "*"))
                    && r.verbs.iter().any(|v| v == access.verb)
            });
            assert!(ok, "ferry-migrator lacks {}", access.describe());
        }
        assert!(rules.iter().any(|r| {
            r.api_groups
                .as_ref()
                .is_some_and(|g| g.contains(&"example.com".to_string()))
        }));
        assert_eq!(migrator_rules(&[]).len() + 1, rules.len());
    }

    #[test]
    fn credential_names_are_short_and_stable() {
        let c = credential_names("ferry-system", "0123456789abcdef0123456789abcdef");
        assert_eq!(c.service_account, "ferry-pair-0123456789");
        assert_eq!(c.secret.as_deref(), Some("ferry-pair-0123456789-token"));
        assert_eq!(c.binding, c.service_account);
    }
}
