//! ClusterRole `ferry-migrator`: the rules a pair's credential gets on the destination,
//! kept up to date, and the installation's own role that owns what pairing makes.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::error::{PairingError, Result};

use super::{MANAGER, object};

/// The ClusterRole every pair's ServiceAccount is bound to on the destination.
pub const CLUSTER_ROLE: &str = "ferry-migrator";

const WRITE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

const READ: &[&str] = &["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// What a migration does on the destination. Custom resources are granted per group of
/// the CRDs present when a token is made (RBAC cannot say "every custom group"; a
/// wildcard group would grant every built-in too). Impersonation only when the
/// destination trusts its sources' identities.
pub fn migrator_rules(crd_groups: &[String], trust_source_identities: bool) -> Vec<PolicyRule> {
    let mut rules = vec![
        rule(
            &[""],
            &[
                "namespaces",
                "configmaps",
                "secrets",
                "services",
                "persistentvolumeclaims",
                "persistentvolumes",
                "pods",
                "replicationcontrollers",
                "limitranges",
                "resourcequotas",
            ],
            WRITE,
        ),
        // ServiceAccounts are never moved (design: they and their tokens stay behind);
        // reading them lets pre-flight say which ones a workload misses.
        rule(&[""], &["serviceaccounts", "nodes"], READ),
        // Why a mover pod does not start, as kubectl describe shows it.
        rule(&[""], &["events"], &["list"]),
        rule(
            &["apps"],
            &[
                "deployments",
                "statefulsets",
                "daemonsets",
                "replicasets",
                "deployments/scale",
                "statefulsets/scale",
                "replicasets/scale",
            ],
            WRITE,
        ),
        rule(&["batch"], &["jobs", "cronjobs"], WRITE),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            WRITE,
        ),
        // RBAC's own escalation check still applies: these succeed only for rules the
        // migrator itself holds.
        rule(
            &["rbac.authorization.k8s.io"],
            &["roles", "rolebindings"],
            WRITE,
        ),
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            READ,
        ),
        // Pre-flight checks that every cluster-scoped object the application names
        // exists here (crates/kube's preflight reads each of these kinds); one it may
        // not read would be a warning where a missing one must stop the migration.
        rule(&["storage.k8s.io"], &["storageclasses"], READ),
        rule(&["scheduling.k8s.io"], &["priorityclasses"], READ),
        rule(&["networking.k8s.io"], &["ingressclasses"], READ),
        rule(&["rbac.authorization.k8s.io"], &["clusterroles"], READ),
        rule(&["node.k8s.io"], &["runtimeclasses"], READ),
        rule(
            &["authorization.k8s.io"],
            &["selfsubjectaccessreviews", "subjectaccessreviews"],
            &["create"],
        ),
        // The destination's agent relay admits callers that may use its agents (restore
        // a volume's data on a node): the pair's source, with this credential.
        rule(&["ferry.dev"], &["agents"], &["use"]),
    ];
    if trust_source_identities {
        // A job without its user's own credential for this cluster writes as the user
        // the source names, judged by this cluster's RBAC, escalation check and
        // admission as theirs: the administrator trusts the sources' identities.
        rules.push(rule(
            &[""],
            &["users", "groups", "serviceaccounts"],
            &["impersonate"],
        ));
        rules.push(rule(
            &["authentication.k8s.io"],
            &["uids", "userextras/*"],
            &["impersonate"],
        ));
    }
    if !crd_groups.is_empty() {
        let groups: Vec<&str> = crd_groups.iter().map(String::as_str).collect();
        rules.push(rule(&groups, &["*"], WRITE));
    }
    rules
}

/// Writes ClusterRole `ferry-migrator` (server-side apply, so repeated and concurrent
/// calls converge), granting the custom-resource groups present now. `owner` (the
/// installation's own ClusterRole) makes the garbage collector remove it with Ferry.
pub async fn ensure_cluster_role(
    client: &kube::Client,
    cluster: &str,
    owner: Option<&OwnerReference>,
    trust_source_identities: bool,
) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut groups: Vec<String> = crds
        .list_metadata(&ListParams::default())
        .await
        .map_err(PairingError::kube(
            cluster,
            "listing CustomResourceDefinitions",
            None,
        ))?
        .items
        .into_iter()
        .filter_map(|crd| {
            // metadata.name is "<plural>.<group>"; the group is what RBAC needs.
            crd.metadata
                .name
                .and_then(|n| n.split_once('.').map(|(_, g)| g.to_string()))
        })
        .collect();
    groups.sort();
    groups.dedup();
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(CLUSTER_ROLE.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                MANAGER.to_string(),
            )])),
            owner_references: owner.map(|o| vec![o.clone()]),
            ..Default::default()
        },
        rules: Some(migrator_rules(&groups, trust_source_identities)),
        ..Default::default()
    };
    Api::<ClusterRole>::all(client.clone())
        .patch(
            CLUSTER_ROLE,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&role),
        )
        .await
        .map_err(PairingError::kube(
            cluster,
            format!("applying ClusterRole {CLUSTER_ROLE}"),
            object(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "",
                CLUSTER_ROLE,
            ),
        ))?;
    Ok(())
}

/// An owner reference to ClusterRole `name` (the installation's own, made by the Helm
/// chart): what pairing makes is removed by the garbage collector when it goes.
pub async fn cluster_role_owner(
    client: &kube::Client,
    cluster: &str,
    name: &str,
) -> Result<OwnerReference> {
    let role = Api::<ClusterRole>::all(client.clone())
        .get(name)
        .await
        .map_err(PairingError::kube(
            cluster,
            format!(
                "reading ClusterRole {name}, the owner of what pairing makes (--owner-cluster-role)"
            ),
            object("rbac.authorization.k8s.io/v1", "ClusterRole", "", name),
        ))?;
    Ok(OwnerReference {
        api_version: "rbac.authorization.k8s.io/v1".into(),
        kind: "ClusterRole".into(),
        name: name.into(),
        uid: role.metadata.uid.unwrap_or_default(),
        ..Default::default()
    })
}
