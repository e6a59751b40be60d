//! Finding a cluster's Ferry from a kubeconfig context: every Ferry publishes the
//! address other parties reach it at in a ConfigMap of its cluster, and a Ferry
//! installed in the cluster (the Helm chart) also names its gateway's Service there, so
//! a user reaches it through the API server (port-forward) without an exposed port.

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
/// Key of the gateway Service's name in it, when Ferry runs in the cluster: clients
/// then port-forward to a Ready pod behind that Service.
pub const SERVICE_KEY: &str = "service";
/// Key of that Service's port (7443).
pub const PORT_KEY: &str = "port";

/// What a cluster's ConfigMap `ferry-system/ferry` says about its Ferry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    /// `endpoint`: the address other clusters reach the Ferry at.
    pub endpoint: String,
    /// `service`: the gateway's Service, when Ferry runs in the cluster.
    pub service: Option<String>,
    /// `port`: that Service's port.
    pub port: Option<u16>,
}

pub(crate) fn describe(context: Option<&str>) -> String {
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

/// A client of the context's cluster.
pub(crate) async fn kube_client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Client> {
    let config = kube_config(kubeconfig, context).await?;
    kube::Client::try_from(config).map_err(|e| ClientError::Discovery {
        what: describe(context),
        problem: e.to_string(),
    })
}

/// Reads what the context's cluster's Ferry published, with `client` (of that cluster).
pub(crate) async fn published(client: kube::Client, context: Option<&str>) -> Result<Published> {
    let what = describe(context);
    let api: Api<ConfigMap> = Api::namespaced(client, FERRY_NAMESPACE);
    let missing = || ClientError::Discovery {
        what: what.clone(),
        problem: format!(
            "ConfigMap {FERRY_NAMESPACE}/{ENDPOINT_CONFIGMAP} has no {ENDPOINT_KEY:?}; is \
             Ferry running on that cluster? Install it there (the Helm chart charts/ferry, \
             or `ferry serve`), or pass --server (FERRY_SERVER) with its address"
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
    parse(cm.data.unwrap_or_default(), &what).and_then(|p| p.ok_or_else(missing))
}

/// The ConfigMap's keys; None without an endpoint.
fn parse(
    data: std::collections::BTreeMap<String, String>,
    what: &str,
) -> Result<Option<Published>> {
    let Some(endpoint) = data
        .get(ENDPOINT_KEY)
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
    else {
        return Ok(None);
    };
    let service = data
        .get(SERVICE_KEY)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let port = match data
        .get(PORT_KEY)
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
    {
        None => None,
        Some(text) => Some(
            text.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ClientError::Discovery {
                    what: what.to_owned(),
                    problem: format!(
                        "ConfigMap {FERRY_NAMESPACE}/{ENDPOINT_CONFIGMAP} has {PORT_KEY:?} \
                         {text:?}, not a port number; fix it (the Helm chart writes the \
                         gateway's port there), or pass --server with the Ferry's address"
                    ),
                })?,
        ),
    };
    Ok(Some(Published {
        endpoint,
        service,
        port,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_configmap_names_the_endpoint_and_maybe_the_gateway() {
        let what = "kubeconfig context \"a\"";
        assert_eq!(parse(data(&[]), what).expect("parses"), None);
        assert_eq!(
            parse(data(&[("endpoint", " http://h:1 ")]), what).expect("parses"),
            Some(Published {
                endpoint: "http://h:1".into(),
                service: None,
                port: None
            })
        );
        assert_eq!(
            parse(
                data(&[
                    ("endpoint", "https://h:1"),
                    ("service", "ferry-gateway"),
                    ("port", "7443")
                ]),
                what
            )
            .expect("parses"),
            Some(Published {
                endpoint: "https://h:1".into(),
                service: Some("ferry-gateway".into()),
                port: Some(7443)
            })
        );
        let err = parse(
            data(&[("endpoint", "https://h:1"), ("port", "seventy")]),
            what,
        )
        .expect_err("not a port");
        assert!(
            err.to_string().contains("\"seventy\", not a port number"),
            "{err}"
        );
    }
}
