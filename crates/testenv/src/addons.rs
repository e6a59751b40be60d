//! What a cluster with real nodes runs besides its nodes: CoreDNS, the default
//! StorageClass (local-path-provisioner) and a CSI driver with snapshots (csi-hostpath),
//! from the manifests under `manifests/`, applied with server-side apply as
//! `kubectl apply --server-side` would.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::CSINode;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use serde::Deserialize;

use crate::bins::{NodeImages, Versions};
use crate::error::{Error, Result};
use crate::node::{CLUSTER_DNS, NodeInfo};

const COREDNS: &str = include_str!("../manifests/coredns.yaml");
const LOCAL_PATH: &str = include_str!("../manifests/local-path.yaml");
const CSI_HOSTPATH: &str = include_str!("../manifests/csi-hostpath.yaml");
const CSI_HOSTPATH_NODE: &str = include_str!("../manifests/csi-hostpath-node.yaml");

/// The CSI driver's name, its StorageClass and its VolumeSnapshotClass.
pub const CSI_DRIVER: &str = "hostpath.csi.k8s.io";
pub const CSI_STORAGE_CLASS: &str = "csi-hostpath";
pub const CSI_SNAPSHOT_CLASS: &str = "csi-hostpath-snapclass";

/// Applies every document of a multi-document YAML text.
pub async fn apply_yaml(client: &kube::Client, cluster: &str, yaml: &str) -> Result<()> {
    let err = |action: String, message: String| Error::Kube {
        cluster: cluster.to_owned(),
        action,
        message,
    };
    // A CRD created a moment ago is listed in its group before its version is served
    // (404 for a few hundred milliseconds): discovery is tried again for a while.
    let mut tries = 0;
    let discovery = loop {
        match Discovery::new(client.clone()).run().await {
            Ok(d) => break d,
            Err(e) if tries < 40 => {
                tries += 1;
                tracing::debug!(%cluster, error = %e, "discovery failed; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(err("discovering API resources".into(), e.to_string())),
        }
    };
    let params = PatchParams::apply("ferry-testenv").force();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = serde_yaml_ng::Value::deserialize(doc)
            .map_err(|e| err("parsing a manifest".into(), e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_yaml_ng::from_value(value)
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

/// Installs CoreDNS, local-path-provisioner and the CSI driver for `nodes` and waits until
/// all serve.
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
    install_csi(client, cluster, nodes, images).await?;

    for (ns, name) in [
        ("kube-system", "coredns"),
        ("local-path-storage", "local-path-provisioner"),
        ("kube-system", "snapshot-controller"),
        ("csi-hostpath", "csi-hostpath-controller"),
    ] {
        wait_available(client, cluster, ns, name, Duration::from_secs(120)).await?;
    }
    wait_csi_registered(client, cluster, nodes, Duration::from_secs(120)).await
}

/// The snapshot CRDs, then the driver: its controller (which reaches every node's data
/// directory) and, per node, its node plugin with that node's kubelet root.
async fn install_csi(
    client: &kube::Client,
    cluster: &str,
    nodes: &[NodeInfo],
    images: &NodeImages,
) -> Result<()> {
    let mut names = Vec::new();
    for path in crate::bins::snapshot_crds(&Versions::pinned())? {
        let yaml = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
        apply_yaml(client, cluster, &yaml).await?;
        let name = serde_yaml_ng::from_str::<CustomResourceDefinition>(&yaml)
            .map_err(|e| Error::Kube {
                cluster: cluster.to_owned(),
                action: format!("reading {}", path.display()),
                message: e.to_string(),
            })?
            .metadata
            .name
            .unwrap_or_default();
        names.push(name);
    }
    // apply_yaml discovers the API anew, so the next call sees the CRDs once established.
    wait_established(client, cluster, &names, Duration::from_secs(60)).await?;

    let json = |v: serde_json::Value| v.to_string();
    let list = |items: Vec<String>| items.join(", ");
    let args = nodes
        .iter()
        .map(|n| json(format!("--data-dir={}={}", n.name, n.csi_data_dir().display()).into()))
        .collect();
    let mounts = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json(serde_json::json!({ "name": format!("data-{i}"), "mountPath": n.csi_data_dir() }))
        })
        .collect();
    let volumes = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json(serde_json::json!({
                "name": format!("data-{i}"),
                "hostPath": { "path": n.csi_data_dir(), "type": "DirectoryOrCreate" },
            }))
        })
        .collect();
    let controller = CSI_HOSTPATH
        .replace("${PLUGIN_IMAGE}", &images.csi_hostpath)
        .replace("${PROVISIONER_IMAGE}", &images.csi_provisioner)
        .replace("${SNAPSHOTTER_IMAGE}", &images.csi_snapshotter)
        .replace("${SNAPSHOT_CONTROLLER_IMAGE}", &images.snapshot_controller)
        .replace("${DATA_DIR_ARGS}", &list(args))
        .replace("${DATA_DIR_MOUNTS}", &list(mounts))
        .replace("${DATA_DIR_VOLUMES}", &list(volumes));
    apply_yaml(client, cluster, &controller).await?;
    for node in nodes {
        let plugin = CSI_HOSTPATH_NODE
            .replace("${NODE}", &node.name)
            .replace("${PLUGIN_IMAGE}", &images.csi_hostpath)
            .replace("${KUBELET_DIR}", &node.kubelet_dir().display().to_string())
            .replace("${DATA_DIR}", &node.csi_data_dir().display().to_string());
        apply_yaml(client, cluster, &plugin).await?;
    }
    Ok(())
}

async fn wait_established(
    client: &kube::Client,
    cluster: &str,
    names: &[String],
    timeout: Duration,
) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    for name in names {
        let established = |crd: CustomResourceDefinition| {
            crd.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        };
        if !poll_object(&api, name, deadline, established).await {
            return Err(Error::Kube {
                cluster: cluster.to_owned(),
                action: format!("waiting for CRD {name}"),
                message: format!("not established after {}s", timeout.as_secs()),
            });
        }
    }
    Ok(())
}

/// Waits until every node's kubelet lists the driver in its CSINode: the node plugin
/// registered, so pods with its volumes can start there and the provisioner knows the
/// node's topology.
async fn wait_csi_registered(
    client: &kube::Client,
    cluster: &str,
    nodes: &[NodeInfo],
    timeout: Duration,
) -> Result<()> {
    let api: Api<CSINode> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    for node in nodes {
        let registered = |n: CSINode| n.spec.drivers.iter().any(|d| d.name == CSI_DRIVER);
        if !poll_object(&api, &node.name, deadline, registered).await {
            let ds: Api<DaemonSet> = Api::namespaced(client.clone(), "csi-hostpath");
            let ready = ds
                .get_opt(&format!("csi-hostpath-node-{}", node.name))
                .await
                .ok()
                .flatten()
                .and_then(|d| d.status)
                .map_or(0, |s| s.number_ready);
            return Err(Error::Kube {
                cluster: cluster.to_owned(),
                action: format!("waiting for {CSI_DRIVER} on node {}", node.name),
                message: format!(
                    "not registered with the kubelet after {}s ({ready} node plugin pods \
                     ready); `kubectl -n csi-hostpath logs ds/csi-hostpath-node-{}` tells why",
                    timeout.as_secs(),
                    node.name
                ),
            });
        }
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
    let deadline = Instant::now() + timeout;
    for node in nodes {
        let ready = |n: Node| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        };
        if !poll_object(&api, &node.name, deadline, ready).await {
            let log = node.dir.join("logs/kubelet.log");
            return Err(Error::NotReady {
                component: format!("node {} of cluster {cluster}", node.name),
                seconds: timeout.as_secs(),
                tail: crate::process::log_tail(&log, 30),
                log,
            });
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
    let available = |d: Deployment| {
        d.status
            .and_then(|s| s.available_replicas)
            .unwrap_or_default()
            >= 1
    };
    if poll_object(&api, name, Instant::now() + timeout, available).await {
        return Ok(());
    }
    Err(Error::Kube {
        cluster: cluster.to_owned(),
        action: format!("waiting for Deployment {ns}/{name}"),
        message: format!(
            "not available after {}s; `kubectl -n {ns} describe pods` tells why",
            timeout.as_secs()
        ),
    })
}

/// Reads object `name` until `done` holds for it (true), or until `deadline` (false).
/// Read errors count as not done: the API server may still be settling.
async fn poll_object<K>(
    api: &Api<K>,
    name: &str,
    deadline: Instant,
    done: impl Fn(K) -> bool,
) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    loop {
        if api.get_opt(name).await.ok().flatten().is_some_and(&done) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
