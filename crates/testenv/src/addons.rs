//! What a cluster with real nodes runs besides its nodes: CoreDNS and the default
//! StorageClass (local-path-provisioner), from the manifests under `manifests/`, applied
//! with server-side apply as `kubectl apply --server-side` would.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use serde::Deserialize;

use crate::bins::NodeImages;
use crate::error::{Error, Result};
use crate::node::{CLUSTER_DNS, NodeInfo};

const COREDNS: &str = include_str!("../manifests/coredns.yaml");
const LOCAL_PATH: &str = include_str!("../manifests/local-path.yaml");

/// Applies every document of a multi-document YAML text.
pub async fn apply_yaml(client: &kube::Client, cluster: &str, yaml: &str) -> Result<()> {
    let err = |action: String, message: String| Error::Kube {
        cluster: cluster.to_owned(),
        action,
        message,
    };
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| err("discovering API resources".into(), e.to_string()))?;
    let params = PatchParams::apply("ferry-testenv").force();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| err("parsing a manifest".into(), e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_yaml::from_value(value)
            .map_err(|e| err("reading a manifest object".into(), e.to_string()))?;
        let Some(types) = obj.types.clone() else {
            return Err(err(
                "reading a manifest object".into(),
                "apiVersion and kind are required".into(),
            ));
        };
        let gvk = kube::api::GroupVersionKind::try_from(&types)
            .map_err(|e| err("reading a manifest object".into(), e.to_string()))?;
        let what = format!(
            "{} {}",
            types.kind,
            obj.metadata.name.clone().unwrap_or_default()
        );
        let (resource, caps) = discovery.resolve_gvk(&gvk).ok_or_else(|| {
            err(
                format!("applying {what}"),
                format!(
                    "the API server does not serve {}/{}",
                    types.api_version, types.kind
                ),
            )
        })?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or("default"),
                &resource,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let name = obj.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&obj))
            .await
            .map_err(|e| err(format!("applying {what}"), e.to_string()))?;
    }
    Ok(())
}

/// Installs CoreDNS and local-path-provisioner for `nodes` and waits until both serve.
pub(crate) async fn install(
    client: &kube::Client,
    cluster: &str,
    nodes: &[NodeInfo],
    images: &NodeImages,
) -> Result<()> {
    let coredns = COREDNS
        .replace("${IMAGE}", &images.coredns)
        .replace("${DNS_IP}", &CLUSTER_DNS.to_string());
    apply_yaml(client, cluster, &coredns).await?;

    let path_map: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| serde_json::json!({ "node": n.name, "paths": [n.dir.join("local-path")] }))
        .collect();
    let local_path = LOCAL_PATH
        .replace("${IMAGE}", &images.local_path)
        .replace("${HELPER_IMAGE}", &images.toolbox)
        .replace(
            "${NODE_PATH_MAP}",
            &serde_json::Value::from(path_map).to_string(),
        );
    apply_yaml(client, cluster, &local_path).await?;

    for (ns, name) in [
        ("kube-system", "coredns"),
        ("local-path-storage", "local-path-provisioner"),
    ] {
        wait_available(client, cluster, ns, name, Duration::from_secs(120)).await?;
    }
    Ok(())
}

/// Waits until every node is Ready.
pub(crate) async fn wait_nodes_ready(
    client: &kube::Client,
    cluster: &str,
    nodes: &[NodeInfo],
    timeout: Duration,
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    for node in nodes {
        loop {
            let ready = api
                .get_opt(&node.name)
                .await
                .ok()
                .flatten()
                .is_some_and(|n| {
                    n.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
            if ready {
                break;
            }
            if start.elapsed() > timeout {
                let log = node.dir.join("logs/kubelet.log");
                return Err(Error::NotReady {
                    component: format!("node {} of cluster {cluster}", node.name),
                    seconds: timeout.as_secs(),
                    tail: crate::process::log_tail(&log, 30),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

async fn wait_available(
    client: &kube::Client,
    cluster: &str,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    loop {
        let available = api.get_opt(name).await.ok().flatten().is_some_and(|d| {
            d.status
                .and_then(|s| s.available_replicas)
                .unwrap_or_default()
                >= 1
        });
        if available {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::Kube {
                cluster: cluster.to_owned(),
                action: format!("waiting for Deployment {ns}/{name}"),
                message: format!(
                    "not available after {}s; `kubectl -n {ns} describe pods` tells why",
                    timeout.as_secs()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
