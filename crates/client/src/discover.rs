//! Finding a cluster's Ferry from a kubeconfig context: every Ferry publishes the
//! address other parties reach it at in a ConfigMap of its cluster.

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{ClientError, Result};

/// Namespace of the ConfigMap a Ferry publishes its endpoint in.
pub const FERRY_NAMESPACE: &str = "ferry-system";
/// Name of that ConfigMap.
pub const ENDPOINT_CONFIGMAP: &str = "ferry";
/// Key of the endpoint (`http://host:port`) in it.
pub const ENDPOINT_KEY: &str = "endpoint";

fn describe(context: Option<&str>) -> String {
    match context {
        Some(c) => format!("kubeconfig context {c:?}"),
        None => "the current kubeconfig context".into(),
    }
}

async fn kube_config(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<kube::Config> {
    let what = describe(context);
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let result = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| ClientError::Discovery {
                what: what.clone(),
                problem: format!("reading kubeconfig {}: {e}", path.display()),
            })?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    };
    result.map_err(|e| ClientError::Discovery {
        what,
        problem: format!("{e}; check --kubeconfig/KUBECONFIG and --context"),
    })
}

/// The API server URL a kubeconfig context points at (how pairs name clusters).
pub async fn context_api_server(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<String> {
    let config = kube_config(kubeconfig, context).await?;
    Ok(config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string())
}

/// The bearer token of a kubeconfig context's user (`token`, or the file `tokenFile`
/// names), which calls to that cluster's Ferry carry; None when the user signs in
/// another way (client certificate, exec plugin).
pub async fn context_token(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Option<String>> {
    use secrecy::ExposeSecret;

    let config = kube_config(kubeconfig, context).await?;
    if let Some(token) = &config.auth_info.token {
        return Ok(Some(token.expose_secret().trim().to_owned()).filter(|t| !t.is_empty()));
    }
    let Some(file) = &config.auth_info.token_file else {
        return Ok(None);
    };
    let text = tokio::fs::read_to_string(file)
        .await
        .map_err(|e| ClientError::Discovery {
            what: describe(context),
            problem: format!("reading the user's tokenFile {file}: {e}"),
        })?;
    Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// Reads the endpoint the context's cluster's Ferry published.
pub(crate) async fn endpoint_of(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<String> {
    let what = describe(context);
    let config = kube_config(kubeconfig, context).await?;
    let client = kube::Client::try_from(config).map_err(|e| ClientError::Discovery {
        what: what.clone(),
        problem: e.to_string(),
    })?;
    let api: Api<ConfigMap> = Api::namespaced(client, FERRY_NAMESPACE);
    let missing = || ClientError::Discovery {
        what: what.clone(),
        problem: format!(
            "ConfigMap {FERRY_NAMESPACE}/{ENDPOINT_CONFIGMAP} has no {ENDPOINT_KEY:?}; is \
             Ferry running on that cluster? Start `ferry serve` there, or pass --server \
             (FERRY_SERVER) with its address"
        ),
    };
    let cm = api
        .get_opt(ENDPOINT_CONFIGMAP)
        .await
        .map_err(|e| ClientError::Discovery {
            what: what.clone(),
            problem: format!(
                "reading ConfigMap {FERRY_NAMESPACE}/{ENDPOINT_CONFIGMAP}: {e}; pass --server \
                 (FERRY_SERVER) with the Ferry's address if you may not read it"
            ),
        })?
        .ok_or_else(missing)?;
    cm.data
        .and_then(|d| d.get(ENDPOINT_KEY).cloned())
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(missing)
}
