//! Applications of the local cluster: its namespaces, with what Ferry would capture
//! from each.
//!
//! Counting lists every namespaced type once across all namespaces (metadata only),
//! not once per namespace, so a page costs as many list calls as the cluster has types.
//! The exclusions mirror ferry-kube's capture: ServiceAccounts and their tokens, the
//! root-CA ConfigMap, Events, Endpoints, objects being deleted, and objects owned by
//! another listed object (claims excepted: a claim is the handle of its data).

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::discovery::{Discovery, Scope};
use kube::{Api, Client};

use crate::error::{CatalogError, kube_message, kube_status};
use crate::quantity::parse_quantity;

/// Namespaces of the cluster itself and of Ferry: never applications.
pub const SYSTEM_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    crate::config::DEFAULT_NAMESPACE,
];

const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// Types listed at once.
const LIST_CONCURRENCY: usize = 4;
const LIST_PAGE: u32 = 500;

/// What ListApplications reports for one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AppCounts {
    pub namespace: String,
    pub object_count: u64,
    pub volume_count: u32,
    pub requested_storage_bytes: u64,
}

/// The application namespaces of the cluster, sorted (Terminating ones left out).
pub(crate) async fn namespaces(
    client: &Client,
    cluster: &str,
    also_skip: &str,
) -> Result<Vec<String>, CatalogError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let items = list_all(&api, cluster, "listing namespaces", "list on namespaces").await?;
    let mut names: Vec<String> = items
        .into_iter()
        .filter(|ns| {
            ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
                && ns.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|ns| ns.metadata.name)
        .filter(|n| !SYSTEM_NAMESPACES.contains(&n.as_str()) && n != also_skip)
        .collect();
    names.sort();
    Ok(names)
}

/// Counts for each of `wanted` (namespaces).
pub(crate) async fn count(
    client: &Client,
    cluster: &str,
    wanted: &[String],
) -> Result<Vec<AppCounts>, CatalogError> {
    let wanted_set: HashSet<&str> = wanted.iter().map(String::as_str).collect();
    let types = listable_types(client, cluster).await?;

    // namespace -> (group, kind, metadata) of every object listed there.
    let listed: Vec<(ApiResource, Vec<ObjectMeta>)> = stream::iter(types)
        .map(|ar| async move {
            let metas = list_metadata(client, cluster, &ar).await?;
            Ok::<_, CatalogError>((ar, metas))
        })
        .buffer_unordered(LIST_CONCURRENCY)
        .try_collect()
        .await?;
    let mut by_ns: HashMap<&str, Vec<(&ApiResource, &ObjectMeta)>> = HashMap::new();
    for (ar, metas) in &listed {
        for m in metas {
            if let Some(ns) = m.namespace.as_deref().filter(|n| wanted_set.contains(n)) {
                by_ns.entry(ns).or_default().push((ar, m));
            }
        }
    }

    let claims = claims(client, cluster).await?;
    Ok(wanted
        .iter()
        .map(|ns| {
            let objects = by_ns
                .get(ns.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let (volume_count, requested_storage_bytes) =
                claims.get(ns.as_str()).copied().unwrap_or_default();
            AppCounts {
                namespace: ns.clone(),
                object_count: captured_count(objects),
                volume_count,
                requested_storage_bytes,
            }
        })
        .collect())
}

/// How many of one namespace's objects capture would keep.
fn captured_count(objects: &[(&ApiResource, &ObjectMeta)]) -> u64 {
    let uids: HashSet<&str> = objects
        .iter()
        .filter_map(|(_, m)| m.uid.as_deref())
        .collect();
    objects
        .iter()
        .filter(|(ar, m)| {
            if m.deletion_timestamp.is_some() {
                return false;
            }
            let name = m.name.as_deref().unwrap_or_default();
            match (ar.group.as_str(), ar.kind.as_str()) {
                ("", "ServiceAccount") => return false,
                ("", "ConfigMap") if name == ROOT_CA_CONFIGMAP => return false,
                // Metadata lists carry no Secret type; token Secrets carry this annotation.
                ("", "Secret")
                    if m.annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(SA_NAME_ANNOTATION)) =>
                {
                    return false;
                }
                ("", "PersistentVolumeClaim") => return true,
                _ => {}
            }
            !m.owner_references
                .iter()
                .flatten()
                .any(|r| uids.contains(r.uid.as_str()))
        })
        .count() as u64
}

/// Namespaced types that capture would list: listable, gettable, creatable, and not
/// excluded by type.
async fn listable_types(client: &Client, cluster: &str) -> Result<Vec<ApiResource>, CatalogError> {
    // Aggregated discovery is two requests; older servers need the per-group walk.
    let discovery = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(d) => d,
        Err(_) => Discovery::new(client.clone())
            .run()
            .await
            .map_err(|source| CatalogError::Kube {
                action: "discovering resource types".into(),
                cluster: cluster.to_string(),
                message: kube_message(&source),
                next_step: "check that the API server is reachable".into(),
                http_status: kube_status(&source),
                object: None,
                source: Box::new(source),
            })?,
    };
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.resources_by_stability() {
            let usable = caps.scope == Scope::Namespaced
                && ["list", "get", "create"]
                    .iter()
                    .all(|v| caps.supports_operation(v));
            let excluded = matches!(
                (ar.group.as_str(), ar.kind.as_str()),
                ("", "Event")
                    | ("events.k8s.io", "Event")
                    | ("", "Endpoints")
                    | ("discovery.k8s.io", "EndpointSlice")
            );
            if usable && !excluded {
                out.push(ar);
            }
        }
    }
    Ok(out)
}

async fn list_metadata(
    client: &Client,
    cluster: &str,
    ar: &ApiResource,
) -> Result<Vec<ObjectMeta>, CatalogError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let mut lp = ListParams::default().limit(LIST_PAGE);
    let mut out = Vec::new();
    loop {
        let page = match api.list_metadata(&lp).await {
            Ok(p) => p,
            // A type the catalog may not list, or one removed since discovery, is left
            // out of the counts rather than failing the whole listing.
            Err(e) if matches!(kube_status(&e), Some(403..=405)) => {
                tracing::debug!(cluster, resource = %ar.plural, error = %kube_message(&e),
                    "not counted");
                return Ok(Vec::new());
            }
            Err(source) => {
                return Err(CatalogError::Kube {
                    action: format!("listing {}", ar.plural),
                    cluster: cluster.to_string(),
                    message: kube_message(&source),
                    next_step: "check that the API server is reachable, then retry".into(),
                    http_status: kube_status(&source),
                    object: None,
                    source: Box::new(source),
                });
            }
        };
        out.extend(page.items.into_iter().map(|o| o.metadata));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

/// Per namespace: claims (not being deleted) and the storage they request.
async fn claims(
    client: &Client,
    cluster: &str,
) -> Result<BTreeMap<String, (u32, u64)>, CatalogError> {
    let api: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let items = list_all(
        &api,
        cluster,
        "listing persistentvolumeclaims",
        "list on persistentvolumeclaims in all namespaces",
    )
    .await?;
    let mut out: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    for pvc in items {
        if pvc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(ns) = pvc.metadata.namespace.clone() else {
            continue;
        };
        let requested = pvc
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| parse_quantity(&q.0))
            .unwrap_or(0);
        let entry = out.entry(ns).or_default();
        entry.0 += 1;
        entry.1 = entry.1.saturating_add(requested);
    }
    Ok(out)
}

async fn list_all<K>(
    api: &Api<K>,
    cluster: &str,
    action: &str,
    permission: &str,
) -> Result<Vec<K>, CatalogError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut lp = ListParams::default().limit(LIST_PAGE);
    let mut out = Vec::new();
    loop {
        let page = api.list(&lp).await.map_err(|source| {
            let http_status = kube_status(&source);
            CatalogError::Kube {
                action: action.to_string(),
                cluster: cluster.to_string(),
                message: kube_message(&source),
                next_step: match http_status {
                    Some(401 | 403) => format!("grant the catalog's service account {permission}"),
                    _ => "check that the API server is reachable, then retry".into(),
                },
                http_status,
                object: None,
                source: Box::new(source),
            }
        })?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn ar(group: &str, kind: &str) -> ApiResource {
        ApiResource {
            group: group.into(),
            version: "v1".into(),
            api_version: if group.is_empty() {
                "v1".into()
            } else {
                format!("{group}/v1")
            },
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
        }
    }

    fn meta(name: &str, uid: &str, owner: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            uid: Some(uid.into()),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    uid: o.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn counts_what_capture_would_keep() {
        let (deploy, rs, pvc, sa, cm) = (
            ar("apps", "Deployment"),
            ar("apps", "ReplicaSet"),
            ar("", "PersistentVolumeClaim"),
            ar("", "ServiceAccount"),
            ar("", "ConfigMap"),
        );
        let metas = [
            meta("web", "d1", None),
            meta("web-1", "r1", Some("d1")),
            meta("data", "p1", Some("s1")),
            meta("default", "sa1", None),
            meta(ROOT_CA_CONFIGMAP, "c1", None),
            meta("settings", "c2", Some("elsewhere")),
        ];
        let objects = vec![
            (&deploy, &metas[0]),
            (&rs, &metas[1]),
            (&pvc, &metas[2]),
            (&sa, &metas[3]),
            (&cm, &metas[4]),
            (&cm, &metas[5]),
        ];
        // web, data (claims always), settings (its owner was not listed).
        assert_eq!(captured_count(&objects), 3);
    }
}
