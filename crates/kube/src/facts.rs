//! Cluster facts: zones with workers and storage classes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::ListParams;
use tracing::instrument;

use crate::error::{Error, Result, status_code};
use crate::{Cluster, ClusterFacts, LEGACY_ZONE_LABEL, StorageClassInfo, ZONE_LABEL};

const DEFAULT_CLASS_ANNOTATIONS: &[&str] = &[
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

impl ClusterFacts {
    /// Reads the zones of the cluster's worker nodes and its storage classes.
    ///
    /// A 403 is not an error here: a namespace admin often may not list nodes, and a
    /// migration can still go on, only without zone placement. What could not be read is
    /// said in [`ClusterFacts::unknown`].
    #[instrument(skip_all, fields(cluster = %cluster.name))]
    pub async fn gather(cluster: &Cluster) -> Result<ClusterFacts> {
        let mut facts = ClusterFacts::default();

        let nodes: Api<Node> = Api::all(cluster.client.clone());
        match list_all(&nodes).await {
            Ok(nodes) => facts.zones = worker_zones(&nodes),
            Err(e) if status_code(&e) == Some(403) => facts.unknown.push(format!(
                "zones: may not list nodes on cluster {} ({}); volumes get no zone placement \
                 unless the user may list nodes",
                cluster.name,
                crate::error::api_message(&e)
            )),
            Err(source) => {
                return Err(Error::List {
                    cluster: cluster.name.clone(),
                    resource: "nodes".into(),
                    namespace: "(cluster-scoped)".into(),
                    next_step: "check that the API server is reachable".into(),
                    source: Box::new(source),
                });
            }
        }

        let classes: Api<StorageClass> = Api::all(cluster.client.clone());
        match list_all(&classes).await {
            Ok(classes) => facts.storage_classes = storage_classes(&classes),
            Err(e) if status_code(&e) == Some(403) => facts.unknown.push(format!(
                "storage classes: may not list storageclasses on cluster {} ({})",
                cluster.name,
                crate::error::api_message(&e)
            )),
            Err(source) => {
                return Err(Error::List {
                    cluster: cluster.name.clone(),
                    resource: "storageclasses.storage.k8s.io".into(),
                    namespace: "(cluster-scoped)".into(),
                    next_step: "check that the API server is reachable".into(),
                    source: Box::new(source),
                });
            }
        }
        Ok(facts)
    }
}

async fn list_all<K>(api: &Api<K>) -> Result<Vec<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

/// Zones that have a node able to run the application: control-plane nodes and cordoned
/// nodes do not count, because a volume placed there could never be mounted.
pub(crate) fn worker_zones(nodes: &[Node]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| {
            let labels = n.metadata.labels.as_ref();
            let control_plane = labels.is_some_and(|l| {
                l.contains_key("node-role.kubernetes.io/control-plane")
                    || l.contains_key("node-role.kubernetes.io/master")
            });
            let cordoned = n
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            !control_plane && !cordoned
        })
        .filter_map(|n| {
            let labels = n.metadata.labels.as_ref()?;
            labels
                .get(ZONE_LABEL)
                .or_else(|| labels.get(LEGACY_ZONE_LABEL))
                .cloned()
        })
        .collect()
}

fn storage_classes(classes: &[StorageClass]) -> BTreeMap<String, StorageClassInfo> {
    classes
        .iter()
        .filter_map(|sc| {
            let name = sc.metadata.name.clone()?;
            let is_default = sc.metadata.annotations.as_ref().is_some_and(|a| {
                DEFAULT_CLASS_ANNOTATIONS
                    .iter()
                    .any(|k| a.get(*k).is_some_and(|v| v == "true"))
            });
            Some((
                name.clone(),
                StorageClassInfo {
                    name,
                    provisioner: sc.provisioner.clone(),
                    is_default,
                    volume_binding_mode: sc.volume_binding_mode.clone(),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(zone: Option<&str>, extra: &[(&str, &str)], cordoned: bool) -> Node {
        let mut labels = serde_json::Map::new();
        if let Some(z) = zone {
            labels.insert(ZONE_LABEL.into(), z.into());
        }
        for (k, v) in extra {
            labels.insert((*k).into(), (*v).into());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "n", "labels": labels },
            "spec": { "unschedulable": cordoned }
        }))
        .unwrap()
    }

    #[test]
    fn only_schedulable_workers_give_zones() {
        let nodes = vec![
            node(Some("z1"), &[], false),
            node(
                Some("z2"),
                &[("node-role.kubernetes.io/control-plane", "")],
                false,
            ),
            node(Some("z3"), &[], true),
            node(None, &[], false),
            node(Some("z1"), &[], false),
        ];
        assert_eq!(
            worker_zones(&nodes).into_iter().collect::<Vec<_>>(),
            vec!["z1".to_owned()]
        );
    }
}
