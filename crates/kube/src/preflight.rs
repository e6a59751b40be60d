//! Pre-flight: everything that can be known wrong about a destination before anything
//! is written, all reported at once so a user fixes them in one round.

use std::collections::BTreeSet;

use futures::{StreamExt, stream};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersion;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, instrument};

use crate::deps::{Dependency, DependencyKind};
use crate::error::{Error, Result, api_message, status_code};
use crate::plan::Plan;
use crate::resource::known;
use crate::{Cluster, MIGRATION_LABEL, ObjectRef, Problem, ProblemKind};

/// Whose rights to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Options of a pre-flight check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightOptions {
    /// Check this user's rights (SubjectAccessReview, which needs the right to create
    /// SubjectAccessReviews) instead of the client's own (SelfSubjectAccessReview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// Also check the rights a purge needs (list and delete).
    #[serde(default)]
    pub purge: bool,
}

/// Checks `plan` against the destination as the client's own user. The plan's own
/// problems come first; an empty list (or only warnings) means apply may start.
pub async fn preflight(cluster: &Cluster, plan: &Plan) -> Result<Vec<Problem>> {
    preflight_with(cluster, plan, &PreflightOptions::default()).await
}

/// [`preflight`] with options.
#[instrument(skip_all, fields(cluster = %cluster.name, namespace = %plan.namespace))]
pub async fn preflight_with(
    cluster: &Cluster,
    plan: &Plan,
    opts: &PreflightOptions,
) -> Result<Vec<Problem>> {
    let mut problems = plan.problems.clone();
    let ns_state = namespace_state(cluster, plan, &mut problems).await?;

    for dep in &plan.dependencies {
        if let Some(p) = check_dependency(cluster, dep).await? {
            problems.push(p);
        }
    }

    let checks = access_checks(plan, ns_state, opts.purge, cluster.acting_for.is_some());
    let results: Vec<Result<Option<Problem>>> = stream::iter(checks)
        .map(|check| async move { check_access(cluster, opts, check).await })
        .buffered(8)
        .collect()
        .await;
    for r in results {
        if let Some(p) = r? {
            problems.push(p);
        }
    }
    debug!(problems = problems.len(), "pre-flight done");
    Ok(problems)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamespaceState {
    Missing,
    /// Exists, made by this migration: Ferry applies it.
    Ours,
    /// Exists, made by someone else: Ferry writes into it and leaves it as it is.
    Theirs,
    /// The user may not read it; assume it must be created.
    Unknown,
}

async fn namespace_state(
    cluster: &Cluster,
    plan: &Plan,
    problems: &mut Vec<Problem>,
) -> Result<NamespaceState> {
    let ar = known::namespace();
    let api: Api<DynamicObject> = Api::all_with(cluster.ferry_client().clone(), &ar);
    let ns_ref = ObjectRef::new(&ar, None, &plan.namespace);
    match api.get_opt(&plan.namespace).await {
        Ok(None) => Ok(NamespaceState::Missing),
        Ok(Some(ns)) => {
            if ns.data.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
                problems.push(Problem::error(
                    ProblemKind::NamespaceTerminating,
                    Some(ns_ref),
                    format!(
                        "namespace {} is being deleted on cluster {}; wait until it is gone or \
                         choose another target namespace",
                        plan.namespace, cluster.name
                    ),
                ));
            }
            let ours = ns
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MIGRATION_LABEL))
                .is_some_and(|id| id == &plan.migration_id);
            Ok(if ours {
                NamespaceState::Ours
            } else {
                NamespaceState::Theirs
            })
        }
        Err(e) if status_code(&e) == Some(403) => {
            problems.push(Problem::warning(
                ProblemKind::CannotVerify,
                Some(ns_ref),
                format!(
                    "may not read namespace {} on cluster {} ({}); the apply assumes it exists \
                     and writes into it: if it does not, an admin must create it first",
                    plan.namespace,
                    cluster.name,
                    api_message(&e)
                ),
            ));
            Ok(NamespaceState::Unknown)
        }
        Err(source) => Err(Error::Object {
            cluster: cluster.name.clone(),
            action: "reading",
            object: Box::new(ns_ref),
            next_step: "check that the API server is reachable, then run the pre-flight again"
                .into(),
            source: Box::new(source),
        }),
    }
}

async fn check_dependency(cluster: &Cluster, dep: &Dependency) -> Result<Option<Problem>> {
    let needed_by = needed_by(dep);
    let missing = |next: &str| {
        Some(Problem::error(
            ProblemKind::MissingDependency {
                kind: dep.kind.object_kind().to_owned(),
                name: dep.name.clone(),
            },
            None,
            format!(
                "{dep} is missing on cluster {} ({needed_by}); {next}",
                cluster.name
            ),
        ))
    };
    if let DependencyKind::Api {
        group,
        version,
        plural,
        ..
    } = &dep.kind
    {
        return match serves(cluster, group, version, plural).await {
            Ok(true) => Ok(None),
            Ok(false) => Ok(missing(
                "install the CustomResourceDefinition on the destination first",
            )),
            Err(source) => Err(Error::Discovery {
                cluster: cluster.name.clone(),
                source: Box::new(source),
            }),
        };
    }
    let ar = match dep.kind {
        DependencyKind::StorageClass => known::storage_class(),
        DependencyKind::PriorityClass => known::priority_class(),
        DependencyKind::IngressClass => known::ingress_class(),
        DependencyKind::ClusterRole => known::cluster_role(),
        DependencyKind::RuntimeClass => known::runtime_class(),
        DependencyKind::Api { .. } => return Ok(None),
    };
    let next = match dep.kind {
        DependencyKind::StorageClass => {
            "create it on the destination or map it to an existing class (storage class mapping)"
        }
        _ => "create it on the destination first",
    };
    let api: Api<DynamicObject> = Api::all_with(cluster.ferry_client().clone(), &ar);
    match api.get_opt(&dep.name).await {
        Ok(Some(_)) => Ok(None),
        Ok(None) => Ok(missing(next)),
        Err(e) if status_code(&e) == Some(403) => Ok(Some(Problem::warning(
            ProblemKind::CannotVerify,
            None,
            format!(
                "cannot check that {dep} exists on cluster {} ({needed_by}): {}; check it by \
                 hand or let the user get {}",
                cluster.name,
                api_message(&e),
                ar.plural
            ),
        ))),
        Err(source) => Err(Error::Object {
            cluster: cluster.name.clone(),
            action: "reading",
            object: Box::new(ObjectRef::new(&ar, None, &dep.name)),
            next_step: "check that the API server is reachable, then run the pre-flight again"
                .into(),
            source: Box::new(source),
        }),
    }
}

/// Whether `cluster` serves `plural` at `group/version`, by discovery: open to every
/// authenticated user, so it needs no rights on CRDs, and it covers aggregated APIs.
pub(crate) async fn serves(
    cluster: &Cluster,
    group: &str,
    version: &str,
    plural: &str,
) -> Result<bool, kube::Error> {
    let gv = GroupVersion::gv(group, version);
    match kube::discovery::pinned_group(cluster.ferry_client(), &gv).await {
        Ok(g) => Ok(g
            .versioned_resources(version)
            .iter()
            .any(|(ar, _)| ar.plural == plural)),
        Err(e) if status_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e),
    }
}

fn needed_by(dep: &Dependency) -> String {
    let mut names: Vec<String> = dep
        .required_by
        .iter()
        .take(3)
        .map(ToString::to_string)
        .collect();
    if dep.required_by.len() > 3 {
        names.push(format!("{} more", dep.required_by.len() - 3));
    }
    format!("needed by {}", names.join(", "))
}

const GRANT_IT: &str = "grant it with a Role or ClusterRole before migrating";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AccessCheck {
    /// Checked for Ferry's own client, not the user it acts for: the objects Ferry
    /// writes as itself (PersistentVolumes).
    own: bool,
    verb: &'static str,
    group: String,
    resource: String,
    namespace: Option<String>,
}

/// The rights an apply of `plan` needs: read, create and patch (server-side apply may
/// create) for every type; list and delete too for a purge.
fn access_checks(
    plan: &Plan,
    ns: NamespaceState,
    purge: bool,
    acting: bool,
) -> BTreeSet<AccessCheck> {
    let mut checks = BTreeSet::new();
    let mut add = |verbs: &[&'static str], ar: &ApiResource, namespace: Option<&str>| {
        for verb in verbs {
            checks.insert(AccessCheck {
                own: acting && crate::apply::written_as_ferry(ar),
                verb,
                group: ar.group.clone(),
                resource: ar.plural.clone(),
                namespace: namespace.map(str::to_owned),
            });
        }
    };
    for o in &plan.objects {
        if o.resource.kind == "Namespace" && o.resource.group.is_empty() {
            match ns {
                NamespaceState::Missing => add(&["get", "create", "patch"], &o.resource, None),
                NamespaceState::Ours => add(&["get", "patch"], &o.resource, None),
                // Unknown: already reported; the apply leaves it alone.
                NamespaceState::Theirs | NamespaceState::Unknown => {}
            }
        } else if o.namespaced {
            add(
                &["get", "create", "patch"],
                &o.resource,
                Some(&plan.namespace),
            );
        } else {
            add(&["get", "create", "patch"], &o.resource, None);
        }
    }
    if purge {
        for ar in &plan.resources {
            add(&["list", "delete"], ar, Some(&plan.namespace));
        }
    }
    checks
}

async fn check_access(
    cluster: &Cluster,
    opts: &PreflightOptions,
    check: AccessCheck,
) -> Result<Option<Problem>> {
    let attrs = ResourceAttributes {
        verb: Some(check.verb.to_owned()),
        group: Some(check.group.clone()),
        resource: Some(check.resource.clone()),
        namespace: check.namespace.clone(),
        ..Default::default()
    };
    let pp = PostParams::default();
    let client = if check.own {
        cluster.ferry_client()
    } else {
        &cluster.client
    };
    let (allowed, reason, subject) = match &opts.subject {
        None => {
            let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(attrs),
                    ..Default::default()
                },
                ..Default::default()
            };
            let out = api
                .create(&pp, &review)
                .await
                .map_err(|source| review_error(cluster, source))?;
            let status = out.status.unwrap_or_default();
            (status.allowed, status.reason, None)
        }
        Some(subject) => {
            let api: Api<SubjectAccessReview> = Api::all(cluster.ferry_client().clone());
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    resource_attributes: Some(attrs),
                    user: Some(subject.user.clone()),
                    groups: Some(subject.groups.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let out = api
                .create(&pp, &review)
                .await
                .map_err(|source| review_error(cluster, source))?;
            let status = out.status.unwrap_or_default();
            (status.allowed, status.reason, Some(&subject.user))
        }
    };
    if allowed {
        return Ok(None);
    }
    let resource = if check.group.is_empty() {
        check.resource.clone()
    } else {
        format!("{}.{}", check.resource, check.group)
    };
    let place = match &check.namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "(cluster-scoped)".to_owned(),
    };
    let why = reason
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let right = format!("{} {resource} {place}", check.verb);
    // The client's own rights may be Ferry's (a pair's credential), not the user's.
    let acting = cluster.acting_for.as_ref().filter(|_| !check.own);
    let (who, next) = match (subject.or(acting), &cluster.credential) {
        (Some(user), _) => (format!("user {user}"), GRANT_IT.to_owned()),
        (None, Some(c)) => (c.who.clone(), c.grant.clone()),
        (None, None) => ("the user".to_owned(), GRANT_IT.to_owned()),
    };
    Ok(Some(Problem::error(
        ProblemKind::Forbidden {
            verb: check.verb.to_owned(),
            group: check.group.clone(),
            resource: check.resource.clone(),
            namespace: check.namespace.clone(),
        },
        None,
        format!(
            "{who} may not {right} on cluster {}{why}; {next}",
            cluster.name
        ),
    )))
}

fn review_error(cluster: &Cluster, source: kube::Error) -> Error {
    Error::Object {
        cluster: cluster.name.clone(),
        action: "creating an access review",
        object: Box::new(ObjectRef {
            api_version: "authorization.k8s.io/v1".into(),
            kind: "SubjectAccessReview".into(),
            namespace: None,
            name: String::new(),
        }),
        next_step: "checking another user's rights needs create on subjectaccessreviews; \
                    check your own instead, or ask an admin"
            .into(),
        source: Box::new(source),
    }
}
