//! The kubeconfig of an environment: one cluster entry per cluster, one user entry per
//! (cluster, user), and contexts `<cluster>` (admin) and `<cluster>-<user>`.

use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};

use crate::cluster::ClusterInfo;
use crate::error::{Error, Result};

/// The kubeconfig document for `clusters`, current context the first cluster's admin
/// (or `only_user` on it when given, which writes that user's context alone).
pub fn document(clusters: &[ClusterInfo], only_user: Option<&str>) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut kc_clusters = Vec::new();
    let mut kc_users = Vec::new();
    let mut kc_contexts = Vec::new();
    for c in clusters {
        kc_clusters.push(json!({
            "name": c.name,
            "cluster": {
                "server": c.server,
                "certificate-authority-data": b64.encode(&c.ca_pem),
            }
        }));
        for u in std::iter::once(&c.admin).chain(&c.users) {
            if only_user.is_some_and(|only| only != u.name) {
                continue;
            }
            let user_entry = format!("{}-{}", c.name, u.name);
            kc_users.push(json!({ "name": user_entry, "user": { "token": u.token } }));
            kc_contexts.push(json!({
                "name": c.context_for(&u.name),
                "context": { "cluster": c.name, "user": user_entry, "namespace": "default" }
            }));
        }
    }
    let current = clusters
        .first()
        .map(|c| c.context_for(only_user.unwrap_or(&c.admin.name)))
        .unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": kc_clusters,
        "users": kc_users,
        "contexts": kc_contexts,
        "current-context": current,
    })
}

/// Writes the kubeconfig to `path` with mode 0600 (it holds tokens).
pub fn write(path: &Path, clusters: &[ClusterInfo], only_user: Option<&str>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let yaml = serde_yaml_ng::to_string(&document(clusters, only_user)).map_err(|e| {
        Error::io("serialising kubeconfig", path)(std::io::Error::other(e.to_string()))
    })?;
    std::fs::write(path, yaml).map_err(Error::io("writing", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(Error::io("setting permissions of", path))
}

/// A kube-rs client for `user` on `cluster`, built through the same kubeconfig path users
/// take, so the tests exercise it.
pub async fn client_for(cluster: &ClusterInfo, user: &str) -> Result<kube::Client> {
    let config = config_for(cluster, user).await?;
    kube::Client::try_from(config).map_err(|e| Error::KubeClient {
        cluster: cluster.name.clone(),
        context: cluster.context_for(user),
        message: e.to_string(),
    })
}

/// The client configuration of `user` on `cluster`, for a caller that keeps it (a
/// service that acts as its callers over it).
pub async fn config_for(cluster: &ClusterInfo, user: &str) -> Result<kube::Config> {
    let context = cluster.context_for(user);
    let err = |message: String| Error::KubeClient {
        cluster: cluster.name.clone(),
        context: context.clone(),
        message,
    };
    cluster.user(user)?;
    let doc = document(std::slice::from_ref(cluster), None);
    let kc: kube::config::Kubeconfig =
        serde_json::from_value(doc).map_err(|e| err(format!("kubeconfig: {e}")))?;
    let options = kube::config::KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|e| err(e.to_string()))
}
