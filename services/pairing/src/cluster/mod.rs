//! Kubernetes work of the pairing service: facts about this cluster, the credential a
//! destination issues to a source (ServiceAccount, ClusterRole `ferry-migrator`, binding,
//! token), clients built from a pair's credential, and access reviews.
//!
//! `role.rs` holds the ClusterRole, `credential.rs` issues and revokes credentials,
//! `access.rs` reviews access; facts about this cluster and clients are here.

mod access;
mod credential;
mod role;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_proto::v1::{ClusterInfo, ObjectRef};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::error::{PairingError, Result, is_network};
use crate::token::Secret;

pub use access::{
    KEY_ACCESS, may_impersonate, missing_permissions, missing_permissions_of, review_token,
};
pub use credential::{CredentialSpec, issue_credential, request_token, revoke_credential};
pub use role::{CLUSTER_ROLE, cluster_role_owner, ensure_cluster_role, migrator_rules};

/// Field manager for server-side apply, and the managed-by label's value.
const MANAGER: &str = "ferry-pairing";

/// Label carrying the pair id on every object made for a pair.
pub const PAIR_LABEL: &str = "ferry.dev/pair-id";

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
