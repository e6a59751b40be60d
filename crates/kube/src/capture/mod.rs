//! Capture: read an application's objects from its namespace on the source cluster.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{ApiResource, DynamicObject, ListParams, TypeMeta};
use kube::discovery::{Discovery, Scope};
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, info, instrument};

use crate::deps::{Dependency, dependencies_of};
use crate::error::{Error, Result, api_message, status_code};
use crate::resource::{Phase, known, matches_type, qualified_plural};
use crate::{Cluster, ClusterFacts, LEGACY_ZONE_LABEL, ObjectRef, ZONE_LABEL};

/// Namespaces of the cluster itself: never moved.
const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];
/// The ConfigMap the root-CA publisher puts in every namespace; the destination's own
/// publisher writes the destination's CA there.
const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

/// What to capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSpec {
    /// The application's namespace.
    pub namespace: String,
    /// Narrows the application to objects with these labels (`app=web,tier!=cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// Only these resource types (see [`matches_type`] for how they may be named);
    /// empty means every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_resources: Vec<String>,
    /// Never these resource types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_resources: Vec<String>,
    /// Objects per list request; lists are paged so a large namespace never needs one
    /// huge response.
    pub page_size: u32,
    /// How many resource types are listed at once.
    pub concurrency: usize,
}

impl CaptureSpec {
    pub fn new(namespace: impl Into<String>) -> Self {
        CaptureSpec {
            namespace: namespace.into(),
            label_selector: None,
            include_resources: Vec::new(),
            exclude_resources: Vec::new(),
            page_size: 250,
            concurrency: 4,
        }
    }
}

/// One captured object with the resource type it was read as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedObject {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

impl CapturedObject {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::of(&self.resource, &self.object)
    }
}

/// Why something was not captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ExclusionReason {
    /// ServiceAccounts belong to the cluster they were made in: their tokens are signed
    /// by its keys.
    ServiceAccount,
    /// A token Secret of a ServiceAccount: only valid on the source.
    ServiceAccountToken { service_account: String },
    /// The root-CA ConfigMap every namespace gets from its own cluster.
    RootCaConfigMap,
    /// Anything in kube-system and the other namespaces of the cluster itself.
    SystemNamespace,
    /// Events describe the source's history, not the application.
    Event,
    /// Endpoints and EndpointSlices are computed from Services on each cluster.
    Endpoints,
    /// Made by a controller from another captured object, which will make it again on
    /// the destination.
    OwnedBy { owner: ObjectRef },
    /// Cluster-scoped: must already exist on the destination.
    ClusterScoped,
    /// Left out by the capture spec's include or exclude lists.
    FilteredOut,
    /// Being deleted on the source.
    Terminating,
    /// Ferry's own objects (group ferry.dev: Migrations, ClusterPairs) drive the
    /// source's Ferry; on the destination they would start work of their own.
    FerryObject,
}

impl std::fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExclusionReason::ServiceAccount => {
                write!(
                    f,
                    "ServiceAccounts are never moved: the destination makes its own"
                )
            }
            ExclusionReason::ServiceAccountToken { service_account } => write!(
                f,
                "token of ServiceAccount {service_account}: only valid on the source cluster"
            ),
            ExclusionReason::RootCaConfigMap => {
                write!(f, "the destination publishes its own root CA here")
            }
            ExclusionReason::SystemNamespace => {
                write!(
                    f,
                    "system namespaces belong to the cluster, not an application"
                )
            }
            ExclusionReason::Event => write!(f, "events are the source's history"),
            ExclusionReason::Endpoints => {
                write!(f, "endpoints are computed from Services on every cluster")
            }
            ExclusionReason::OwnedBy { owner } => {
                write!(f, "owned by {owner}, whose controller recreates it")
            }
            ExclusionReason::ClusterScoped => {
                write!(f, "cluster-scoped: must already exist on the destination")
            }
            ExclusionReason::FilteredOut => {
                write!(f, "left out by the include/exclude resource lists")
            }
            ExclusionReason::Terminating => write!(f, "being deleted on the source"),
            ExclusionReason::FerryObject => write!(
                f,
                "Ferry's own objects drive the source's Ferry, not the application"
            ),
        }
    }
}

/// Something not captured, and why. `name` is absent when a whole resource type was
/// left out without listing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub reason: ExclusionReason,
}

/// A bound PVC's volume as the source has it: what the destination must recreate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedVolume {
    pub pvc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// e.g. "1Gi": the PV's capacity, else the claim's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    #[serde(default)]
    pub access_modes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    /// The zone the PV is pinned to, from its node affinity or labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// The namespace's own labels and annotations, carried to the destination namespace
/// (e.g. Pod Security admission labels).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceMetadata {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Everything captured from one application: serializable, so it can be stored in a
/// restore point and planned later against any destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Captured {
    pub cluster: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    pub namespace_metadata: NamespaceMetadata,
    /// In apply order, then by type and name.
    pub objects: Vec<CapturedObject>,
    /// Every resource type that was listed: a later purge only touches these types.
    pub resources: Vec<ApiResource>,
    pub excluded: Vec<Exclusion>,
    /// Cluster-scoped objects the captured objects need, by their source names.
    pub dependencies: Vec<Dependency>,
    pub volumes: Vec<CapturedVolume>,
    /// The source's zones and storage classes.
    pub facts: ClusterFacts,
}

/// A namespaced resource type discovery reports and capture may list.
#[derive(Debug, Clone)]
struct Listable {
    ar: ApiResource,
}

/// Reads the application described by `spec` from `cluster`.
#[instrument(skip_all, fields(cluster = %cluster.name, namespace = %spec.namespace))]
pub async fn capture(cluster: &Cluster, spec: &CaptureSpec) -> Result<Captured> {
    validate(spec)?;
    let namespace_metadata = read_namespace(cluster, &spec.namespace).await?;

    let mut captured = Captured {
        cluster: cluster.name.clone(),
        namespace: spec.namespace.clone(),
        label_selector: spec.label_selector.clone(),
        namespace_metadata,
        objects: Vec::new(),
        resources: Vec::new(),
        excluded: Vec::new(),
        dependencies: Vec::new(),
        volumes: Vec::new(),
        facts: ClusterFacts::default(),
    };

    if SYSTEM_NAMESPACES.contains(&spec.namespace.as_str()) {
        let ns = known::namespace();
        captured.excluded.push(Exclusion {
            api_version: ns.api_version,
            kind: ns.kind,
            namespace: None,
            name: Some(spec.namespace.clone()),
            reason: ExclusionReason::SystemNamespace,
        });
        return Ok(captured);
    }

    let (listable, type_exclusions) = discover(cluster, spec).await?;
    captured.excluded.extend(type_exclusions);

    let listed: Vec<(ApiResource, Vec<DynamicObject>)> = stream::iter(listable)
        .map(|l| async move {
            let items = list_paged(cluster, spec, &l.ar).await?;
            Ok::<_, Error>((l.ar, items))
        })
        .buffer_unordered(spec.concurrency.max(1))
        .try_collect()
        .await?;

    let mut all: Vec<CapturedObject> = Vec::new();
    for (ar, items) in listed {
        captured.resources.push(ar.clone());
        for mut obj in items {
            // List items carry no apiVersion/kind; a stored object must say what it is.
            obj.types = Some(TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            });
            all.push(CapturedObject {
                resource: ar.clone(),
                object: obj,
            });
        }
    }
    captured
        .resources
        .sort_by(|a, b| (&a.group, &a.kind).cmp(&(&b.group, &b.kind)));

    let (kept, excluded) = classify(all);
    captured.excluded.extend(excluded);
    captured.objects = kept;
    sort_objects(&mut captured.objects);
    captured.excluded.sort_by(|a, b| {
        (&a.kind, &a.name, &a.api_version).cmp(&(&b.kind, &b.name, &b.api_version))
    });

    let values: Vec<(ApiResource, Value)> = captured
        .objects
        .iter()
        .map(|o| Ok((o.resource.clone(), to_value(o)?)))
        .collect::<Result<_>>()?;
    captured.dependencies = dependencies_of(values.iter().map(|(a, v)| (a, v)));
    for dep in &captured.dependencies {
        captured.excluded.push(Exclusion {
            api_version: dep.kind.object_api_version().to_owned(),
            kind: dep.kind.object_kind().to_owned(),
            namespace: None,
            name: Some(dep.name.clone()),
            reason: ExclusionReason::ClusterScoped,
        });
    }

    captured.volumes = read_volumes(cluster, &captured.objects).await?;
    captured.facts = ClusterFacts::gather(cluster).await?;
    info!(
        objects = captured.objects.len(),
        excluded = captured.excluded.len(),
        dependencies = captured.dependencies.len(),
        volumes = captured.volumes.len(),
        "captured"
    );
    Ok(captured)
}

/// The resource types `spec` would capture objects of on `cluster`: what a caller must
/// be allowed to read there (and create on the destination) before a job reads
/// anything for them. Cheap next to a capture: one list of at most one object per type.
#[instrument(skip_all, fields(cluster = %cluster.name, namespace = %spec.namespace))]
pub async fn types_present(cluster: &Cluster, spec: &CaptureSpec) -> Result<Vec<ApiResource>> {
    validate(spec)?;
    if SYSTEM_NAMESPACES.contains(&spec.namespace.as_str()) {
        return Ok(Vec::new());
    }
    let (listable, _) = discover(cluster, spec).await?;
    let one = CaptureSpec {
        page_size: 1,
        ..spec.clone()
    };
    let present: Vec<Option<ApiResource>> = stream::iter(listable)
        .map(|l| {
            let one = &one;
            async move {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(cluster.client.clone(), &one.namespace, &l.ar);
                let mut lp = ListParams::default().limit(1);
                if let Some(sel) = &one.label_selector {
                    lp = lp.labels(sel);
                }
                let page = api.list(&lp).await.map_err(|source| Error::List {
                    cluster: cluster.name.clone(),
                    resource: qualified_plural(&l.ar),
                    namespace: one.namespace.clone(),
                    next_step: "check that the API server is reachable and the label selector \
                                is valid"
                        .into(),
                    source: Box::new(source),
                })?;
                Ok::<_, Error>((!page.items.is_empty()).then_some(l.ar))
            }
        })
        .buffer_unordered(spec.concurrency.max(1) * 2)
        .try_collect()
        .await?;
    let mut present: Vec<ApiResource> = present.into_iter().flatten().collect();
    present.sort_by(|a, b| (&a.group, &a.plural).cmp(&(&b.group, &b.plural)));
    Ok(present)
}

fn validate(spec: &CaptureSpec) -> Result<()> {
    if spec.namespace.is_empty() {
        return Err(Error::InvalidSpec {
            field: "namespace",
            message: "an application needs a namespace".into(),
        });
    }
    if spec.page_size == 0 {
        return Err(Error::InvalidSpec {
            field: "page_size",
            message: "must be at least 1".into(),
        });
    }
    Ok(())
}

pub(crate) fn to_value(o: &CapturedObject) -> Result<Value> {
    serde_json::to_value(&o.object).map_err(|source| Error::Serde {
        object: Box::new(o.object_ref()),
        source,
    })
}

async fn read_namespace(cluster: &Cluster, namespace: &str) -> Result<NamespaceMetadata> {
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &known::namespace());
    let ns = api
        .get_opt(namespace)
        .await
        .map_err(|source| Error::Object {
            cluster: cluster.name.clone(),
            action: "reading",
            object: Box::new(ObjectRef::new(&known::namespace(), None, namespace)),
            next_step: "the user needs get on the namespace".into(),
            source: Box::new(source),
        })?;
    let Some(ns) = ns else {
        return Err(Error::NamespaceNotFound {
            cluster: cluster.name.clone(),
            namespace: namespace.to_owned(),
        });
    };
    let mut labels: BTreeMap<String, String> = ns.labels().clone();
    // Set by the API server from the name; the destination sets its own.
    labels.remove("kubernetes.io/metadata.name");
    let mut annotations: BTreeMap<String, String> = ns.annotations().clone();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    Ok(NamespaceMetadata {
        labels,
        annotations,
    })
}

/// Every namespaced resource type that can be listed, read and created, after the spec's
/// include and exclude lists; and the types left out on purpose, as exclusions.
async fn discover(
    cluster: &Cluster,
    spec: &CaptureSpec,
) -> Result<(Vec<Listable>, Vec<Exclusion>)> {
    let discovery = run_discovery(cluster).await?;

    let mut listable = Vec::new();
    let mut excluded = Vec::new();
    let mut include_matched = vec![false; spec.include_resources.len()];
    let type_exclusion = |ar: &ApiResource, reason| Exclusion {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
        namespace: Some(spec.namespace.clone()),
        name: None,
        reason,
    };
    for group in discovery.groups() {
        // Every resource at its most stable version, including those only served in a
        // version other than the group's preferred one.
        for (ar, caps) in group.resources_by_stability() {
            for (i, p) in spec.include_resources.iter().enumerate() {
                if matches_type(p, &ar) {
                    include_matched[i] = true;
                }
            }
            let wanted = spec.include_resources.is_empty()
                || spec.include_resources.iter().any(|p| matches_type(p, &ar));
            let unwanted = spec.exclude_resources.iter().any(|p| matches_type(p, &ar));
            if caps.scope == Scope::Cluster {
                // Only worth saying when the user asked for it by name.
                if !spec.include_resources.is_empty() && wanted {
                    excluded.push(type_exclusion(&ar, ExclusionReason::ClusterScoped));
                }
                continue;
            }
            let usable = ["list", "get", "create"]
                .iter()
                .all(|v| caps.supports_operation(v));
            if !usable {
                continue;
            }
            if let Some(reason) = excluded_type(&ar) {
                excluded.push(type_exclusion(&ar, reason));
                continue;
            }
            if !wanted || unwanted {
                excluded.push(type_exclusion(&ar, ExclusionReason::FilteredOut));
                continue;
            }
            listable.push(Listable { ar });
        }
    }
    if let Some((p, _)) = spec
        .include_resources
        .iter()
        .zip(&include_matched)
        .find(|(_, m)| !**m)
    {
        return Err(Error::InvalidSpec {
            field: "include_resources",
            message: format!(
                "cluster {} serves no resource type named {p:?}; name types like kubectl \
                 does (deployments, Deployment.apps, widgets.example.com)",
                cluster.name
            ),
        });
    }
    debug!(types = listable.len(), "discovered");
    Ok((listable, excluded))
}

/// Aggregated discovery (two requests, one consistent answer, so CRDs coming and going
/// meanwhile cannot fail it half-way), else per-group discovery for older servers.
pub(crate) async fn run_discovery(cluster: &Cluster) -> Result<Discovery> {
    match Discovery::new(cluster.client.clone())
        .run_aggregated()
        .await
    {
        Ok(d) => Ok(d),
        Err(e) => {
            debug!(error = %e, "aggregated discovery failed; trying per-group discovery");
            Discovery::new(cluster.client.clone())
                .run()
                .await
                .map_err(|source| Error::Discovery {
                    cluster: cluster.name.clone(),
                    source: Box::new(source),
                })
        }
    }
}

/// Types never moved, decided without listing them.
fn excluded_type(ar: &ApiResource) -> Option<ExclusionReason> {
    match (ar.group.as_str(), ar.kind.as_str()) {
        ("", "Event") | ("events.k8s.io", "Event") => Some(ExclusionReason::Event),
        ("", "Endpoints") | ("discovery.k8s.io", "EndpointSlice") => {
            Some(ExclusionReason::Endpoints)
        }
        ("ferry.dev", _) => Some(ExclusionReason::FerryObject),
        _ => None,
    }
}

async fn list_paged(
    cluster: &Cluster,
    spec: &CaptureSpec,
    ar: &ApiResource,
) -> Result<Vec<DynamicObject>> {
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), &spec.namespace, ar);
    let mut lp = ListParams::default().limit(spec.page_size);
    if let Some(sel) = &spec.label_selector {
        lp = lp.labels(sel);
    }
    let mut items = Vec::new();
    loop {
        let page = api.list(&lp).await.map_err(|source| {
            let next_step = match status_code(&source) {
                Some(403) => format!(
                    "grant the user list on {} in {}, or leave the type out with \
                     exclude_resources",
                    qualified_plural(ar),
                    spec.namespace
                ),
                Some(410) => "the list changed faster than it could be paged; capture again \
                              or raise page_size"
                    .into(),
                Some(400) => "check the label selector".into(),
                _ => "check that the API server is reachable, then capture again".into(),
            };
            Error::List {
                cluster: cluster.name.clone(),
                resource: qualified_plural(ar),
                namespace: spec.namespace.clone(),
                next_step,
                source: Box::new(source),
            }
        })?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

/// Splits listed objects into those to move and those not to, with reasons.
pub(crate) fn classify(all: Vec<CapturedObject>) -> (Vec<CapturedObject>, Vec<Exclusion>) {
    let by_uid: HashMap<String, ObjectRef> = all
        .iter()
        .filter_map(|o| Some((o.object.metadata.uid.clone()?, o.object_ref())))
        .collect();

    let mut kept = Vec::new();
    let mut excluded = Vec::new();
    for o in all {
        let reason = exclusion_reason(&o, &by_uid);
        match reason {
            None => kept.push(o),
            Some(reason) => excluded.push(Exclusion {
                api_version: o.resource.api_version.clone(),
                kind: o.resource.kind.clone(),
                namespace: o.object.metadata.namespace.clone(),
                name: o.object.metadata.name.clone(),
                reason,
            }),
        }
    }
    (kept, excluded)
}

fn exclusion_reason(
    o: &CapturedObject,
    by_uid: &HashMap<String, ObjectRef>,
) -> Option<ExclusionReason> {
    let meta = &o.object.metadata;
    let name = meta.name.as_deref().unwrap_or_default();
    if meta.deletion_timestamp.is_some() {
        return Some(ExclusionReason::Terminating);
    }
    match (o.resource.group.as_str(), o.resource.kind.as_str()) {
        ("", "ServiceAccount") => return Some(ExclusionReason::ServiceAccount),
        ("", "ConfigMap") if name == ROOT_CA_CONFIGMAP => {
            return Some(ExclusionReason::RootCaConfigMap);
        }
        ("", "Secret") => {
            let is_token = o.object.data.get("type").and_then(Value::as_str) == Some(SA_TOKEN_TYPE);
            if is_token {
                let service_account = meta
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(SA_NAME_ANNOTATION))
                    .cloned()
                    .unwrap_or_default();
                return Some(ExclusionReason::ServiceAccountToken { service_account });
            }
        }
        // A claim is the handle of its data: even when a StatefulSet owns it (retention
        // policy Delete), it is moved so the volume can be restored under it.
        ("", "PersistentVolumeClaim") => return None,
        _ => {}
    }
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find_map(|r| by_uid.get(&r.uid))?;
    Some(ExclusionReason::OwnedBy {
        owner: owner.clone(),
    })
}

pub(crate) fn sort_objects(objects: &mut [CapturedObject]) {
    objects.sort_by(|a, b| {
        let key = |o: &CapturedObject| {
            (
                Phase::of(&o.resource.group, &o.resource.kind),
                o.resource.group.clone(),
                o.resource.kind.clone(),
                o.object.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// Reads the PVs bound to captured claims, for their size, modes and zone. PVs are
/// cluster-scoped, so a user without rights on them still gets the claim's own view.
async fn read_volumes(
    cluster: &Cluster,
    objects: &[CapturedObject],
) -> Result<Vec<CapturedVolume>> {
    let pvs: Api<DynamicObject> =
        Api::all_with(cluster.client.clone(), &known::persistent_volume());
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for o in objects {
        if !o.resource.group.is_empty() || o.resource.kind != "PersistentVolumeClaim" {
            continue;
        }
        let pvc = &o.object.data;
        let name = o.object.name_any();
        if !seen.insert(name.clone()) {
            continue;
        }
        let pv_name = pvc
            .pointer("/spec/volumeName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let mut vol = CapturedVolume {
            pvc: name,
            pv: pv_name.clone(),
            storage_class: pvc
                .pointer("/spec/storageClassName")
                .or_else(|| {
                    pvc.pointer("/metadata/annotations")
                        .and_then(|a| a.get(crate::deps::LEGACY_CLASS_ANNOTATION))
                })
                .and_then(Value::as_str)
                .map(str::to_owned),
            capacity: pvc
                .pointer("/status/capacity/storage")
                .or_else(|| pvc.pointer("/spec/resources/requests/storage"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            access_modes: string_list(pvc.pointer("/spec/accessModes")),
            volume_mode: pvc
                .pointer("/spec/volumeMode")
                .and_then(Value::as_str)
                .map(str::to_owned),
            zone: None,
        };
        if let Some(pv_name) = &pv_name {
            match pvs.get_opt(pv_name).await {
                Ok(Some(pv)) => {
                    if let Some(cap) = pv
                        .data
                        .pointer("/spec/capacity/storage")
                        .and_then(Value::as_str)
                    {
                        vol.capacity = Some(cap.to_owned());
                    }
                    vol.zone = pv_zone(&pv);
                }
                Ok(None) => {}
                Err(e) if status_code(&e) == Some(403) => {
                    debug!(pv = %pv_name, error = %api_message(&e), "may not read the PV; zone unknown");
                }
                Err(source) => {
                    return Err(Error::Object {
                        cluster: cluster.name.clone(),
                        action: "reading",
                        object: Box::new(ObjectRef::new(
                            &known::persistent_volume(),
                            None,
                            pv_name,
                        )),
                        next_step: "check that the API server is reachable, then capture again"
                            .into(),
                        source: Box::new(source),
                    });
                }
            }
        }
        out.push(vol);
    }
    Ok(out)
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A PV's zone: a node-affinity term on the zone label with one value, else its labels.
fn pv_zone(pv: &DynamicObject) -> Option<String> {
    let terms = pv
        .data
        .pointer("/spec/nodeAffinity/required/nodeSelectorTerms")
        .and_then(Value::as_array);
    for term in terms.into_iter().flatten() {
        for expr in term
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expr.get("key").and_then(Value::as_str);
            let is_in = expr.get("operator").and_then(Value::as_str) == Some("In");
            if matches!(key, Some(ZONE_LABEL | LEGACY_ZONE_LABEL)) && is_in {
                let values = string_list(expr.get("values"));
                if let [one] = values.as_slice() {
                    return Some(one.clone());
                }
            }
        }
    }
    let labels = pv.metadata.labels.as_ref()?;
    labels
        .get(ZONE_LABEL)
        .or_else(|| labels.get(LEGACY_ZONE_LABEL))
        .cloned()
}

#[cfg(test)]
mod tests;
