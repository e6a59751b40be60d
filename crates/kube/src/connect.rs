//! A client for a cluster known by URL, CA and bearer token alone: how a pair's source
//! reaches its destination with the credential the destination issued.

use std::time::Duration;

use base64::Engine;

/// The URL, CA or token do not make a usable client; the text says which part.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BearerClientError(String);

/// A client for the API server at `url`, trusting `ca_pem` (empty: the system roots) and
/// authenticating with `bearer`. Connecting is bounded by `timeout`; each read and write
/// too when `bounded_reads` (a check), not when a job lists and watches for as long as
/// it needs.
pub async fn bearer_client(
    url: &str,
    ca_pem: &str,
    bearer: &str,
    timeout: Duration,
    bounded_reads: bool,
) -> Result<kube::Client, BearerClientError> {
    let config = bearer_config(url, ca_pem, bearer, timeout, bounded_reads).await?;
    kube::Client::try_from(config).map_err(|e| BearerClientError(format!("building a client: {e}")))
}

/// The configuration [`bearer_client`] builds its client from, for a caller that keeps
/// it (to act as a user over the same credential later).
pub async fn bearer_config(
    url: &str,
    ca_pem: &str,
    bearer: &str,
    timeout: Duration,
    bounded_reads: bool,
) -> Result<kube::Config, BearerClientError> {
    let mut cluster_entry = serde_json::json!({ "server": url });
    if !ca_pem.is_empty() {
        cluster_entry["certificate-authority-data"] = base64::engine::general_purpose::STANDARD
            .encode(ca_pem)
            .into();
    }
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "pair", "cluster": cluster_entry }],
        "users": [{ "name": "pair", "user": { "token": bearer } }],
        "contexts": [{ "name": "pair", "context": { "cluster": "pair", "user": "pair" } }],
        "current-context": "pair",
    });
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(doc)
        .map_err(|e| BearerClientError(format!("building its kubeconfig: {e}")))?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| BearerClientError(format!("its URL or CA is not usable: {e}")))?;
    config.connect_timeout = Some(timeout);
    if bounded_reads {
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
    }
    Ok(config)
}

/// A cluster's client configuration: the context of the kubeconfig file given, or of the
/// usual kubeconfig; with neither, kube's own resolution (KUBECONFIG, ~/.kube/config,
/// the in-cluster ServiceAccount).
pub async fn kube_config(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<kube::Config, BearerClientError> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let failed = |e: &dyn std::fmt::Display| BearerClientError(e.to_string());
    match (kubeconfig, context) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                BearerClientError(format!("reading kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| failed(&e))
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| failed(&e)),
        (None, None) => kube::Config::infer().await.map_err(|e| failed(&e)),
    }
}

/// Who the API server of `cluster` says its client is (a SelfSubjectReview, which
/// anyone signed in may make): how a user's credential for a cluster, or an identity a
/// client impersonates, is verified by that cluster itself.
pub async fn who_am_i(cluster: &crate::Cluster) -> crate::Result<crate::ActAs> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: kube::Api<SelfSubjectReview> = kube::Api::all(cluster.client.clone());
    let review = api
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await
        .map_err(|source| crate::Error::Object {
            cluster: cluster.name.clone(),
            action: "asking who the credential is",
            object: Box::new(crate::ObjectRef {
                api_version: "authentication.k8s.io/v1".into(),
                kind: "SelfSubjectReview".into(),
                namespace: None,
                name: String::new(),
            }),
            next_step: "check that the credential is valid for this cluster and not expired".into(),
            source: Box::new(source),
        })?;
    let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
    Ok(crate::ActAs {
        username: info.username.unwrap_or_default(),
        uid: info.uid.unwrap_or_default(),
        groups: info.groups.unwrap_or_default(),
    })
}
