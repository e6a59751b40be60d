//! Who may start, see and stop jobs.
//!
//! Every call carries the caller's Kubernetes bearer token. The service asks the
//! cluster it runs in who that is (TokenReview), then asks each cluster a job touches
//! whether that user may do what the job would do for them (SubjectAccessReview):
//! read every resource type being captured in the namespace on the source, and create
//! them in the target namespace on the destination. The reviews on the destination go
//! through the pair's credential but are about the caller, so a pair is never a way
//! around the destination's RBAC; user names are taken to mean the same person on both
//! clusters, as they do with one identity provider.
//!
//! Administrators (members of the configured groups, or anyone allowed every verb on
//! every resource) may also migrate all namespaces at once and see every job. Anyone
//! else sees the jobs they started and those of namespaces whose pods they may list.

use std::collections::HashMap;

use ferry_authz::{Access, Authorizer, AuthzError, Caller, bearer, same_secret};
use ferry_proto::v1::{ClusterRef, Job};
use kube::api::{Api, ApiResource, DynamicObject};
use tonic::metadata::MetadataMap;

use crate::deps::Clusters;
use crate::error::{Result, TransferError};

pub use ferry_authz::{ON_BEHALF_OF_GROUP, ON_BEHALF_OF_USER};

/// The user scheduled jobs run as when their schedule names nobody.
pub const SCHEDULER_USER: &str = "system:ferry:scheduler";

/// Namespaces `--all-namespaces` never includes besides the cluster's own.
pub const FERRY_NAMESPACE: &str = "ferry-system";
const SYSTEM_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// How the service decides who may do what.
#[derive(Clone)]
pub struct AccessPolicy {
    /// Name of the cluster the service runs in, for messages.
    pub cluster_name: String,
    /// Members of these groups are administrators.
    pub admin_groups: Vec<String>,
    /// Secret of the in-process scheduler (random per process): a call bearing it acts
    /// for the user its metadata names.
    pub internal_token: Option<String>,
}

impl std::fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("cluster_name", &self.cluster_name)
            .field("admin_groups", &self.admin_groups)
            .field("internal_token", &self.internal_token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl AccessPolicy {
    pub fn new(cluster_name: impl Into<String>) -> AccessPolicy {
        AccessPolicy {
            cluster_name: cluster_name.into(),
            admin_groups: vec!["system:masters".into()],
            internal_token: None,
        }
    }
}

/// An identified caller, and whether they administer Ferry.
pub use ferry_authz::Identity as Actor;

/// The caller's own credential for a job's destination, and who that cluster says it
/// is: the job's writes there are made with it, and its reviews there are about that
/// identity, never a name the source asserts. Kept in memory only, never stored.
#[derive(Clone)]
pub struct DestinationCredential {
    pub bearer: String,
    /// Verified by the destination itself (SelfSubjectReview with `bearer`).
    pub who: Actor,
}

impl std::fmt::Debug for DestinationCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationCredential")
            .field("who", &self.who.caller.username)
            .finish_non_exhaustive()
    }
}

/// Who the caller's credential `bearer` for the cluster `r` names is, as that
/// cluster says (a SelfSubjectReview made with it): an identity the destination
/// verified itself.
pub(crate) async fn verify_destination(
    clusters: &dyn Clusters,
    r: Option<&ClusterRef>,
    bearer: &str,
) -> Result<DestinationCredential> {
    let cluster = clusters.cluster(r).await?;
    let refused = |message: String| {
        TransferError::Access(AuthzError::Unauthenticated {
            cluster: cluster.name.clone(),
            reason: format!(
                "the caller's credential for it as the destination: {message}; pass a \
                 valid token of yours for it (ferry migrate --to-context CONTEXT, or \
                 --to-token-file FILE)"
            ),
        })
    };
    let as_them = cluster
        .as_bearer(bearer, "")
        .map_err(|e| refused(e.to_string()))?;
    let who = ferry_kube::who_am_i(&as_them)
        .await
        .map_err(|e| refused(e.to_string()))?;
    if who.username.is_empty() {
        return Err(refused("the cluster names nobody for it".into()));
    }
    tracing::debug!(user = %who.username, cluster = %cluster.name, "destination identity verified");
    Ok(DestinationCredential {
        bearer: bearer.to_owned(),
        who: Actor {
            caller: ferry_authz::Caller {
                username: who.username,
                uid: who.uid,
                groups: who.groups,
            },
            admin: false,
        },
    })
}

/// Who a client acting for `actor` says it is (the impersonation headers).
pub(crate) fn act_as(actor: &Actor) -> ferry_kube::ActAs {
    ferry_kube::ActAs {
        username: actor.caller.username.clone(),
        uid: actor.caller.uid.clone(),
        groups: actor.caller.groups.clone(),
    }
}

/// Where a job writes, as its reviews see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    /// The destination cluster (None: this one).
    pub cluster: Option<&'a ClusterRef>,
    /// The namespace objects are created in there.
    pub namespace: &'a str,
    /// Objects already there are updated (the existing-object policy update), which
    /// needs patch as well as create.
    pub update: bool,
}

impl<'a> Target<'a> {
    /// The target of a job with `apply` options into `namespace` on `cluster`.
    pub fn of(
        cluster: Option<&'a ClusterRef>,
        namespace: &'a str,
        apply: Option<&ferry_proto::v1::ApplyOptions>,
    ) -> Self {
        let update = apply.is_some_and(|a| {
            a.existing_object_policy == ferry_proto::v1::ExistingObjectPolicy::Update as i32
        });
        Target {
            cluster,
            namespace,
            update,
        }
    }
}

/// Reviews for one request.
pub(crate) struct Gate<'a> {
    pub policy: &'a AccessPolicy,
    pub clusters: &'a dyn Clusters,
}

impl Gate<'_> {
    async fn authorizer(&self, r: Option<&ClusterRef>) -> Result<Authorizer> {
        let cluster = self.clusters.cluster(r).await?;
        let name = if r.is_none() || cluster.name == "local" {
            self.policy.cluster_name.clone()
        } else {
            cluster.name.clone()
        };
        Ok(Authorizer::new(cluster.client, &name)
            .with_admin_groups(self.policy.admin_groups.clone()))
    }

    /// Who is calling, from the request's metadata.
    pub async fn identify(&self, metadata: &MetadataMap) -> Result<Actor> {
        let token = bearer(metadata).ok_or(AuthzError::NoToken)?;
        let local = self.authorizer(None).await?;
        if let Some(internal) = &self.policy.internal_token
            && same_secret(&token, internal)
        {
            let mut actor = on_behalf_of(metadata);
            if !actor.admin {
                actor.admin = local.is_admin(&actor.caller).await?;
            }
            return Ok(actor);
        }
        let who = local.identify(metadata).await?;
        tracing::debug!(user = %who.caller.username, admin = who.admin, "caller identified");
        Ok(who)
    }

    /// Fails unless `actor` is an administrator of the cluster `r` names; `what` names
    /// the request that needs one.
    pub async fn require_admin(
        &self,
        actor: &Actor,
        r: Option<&ClusterRef>,
        what: &str,
    ) -> Result<()> {
        let authorizer = self.authorizer(r).await?;
        // An administrator here is not necessarily one there.
        if actor.admin && r.is_none() {
            return Ok(());
        }
        authorizer.require_admin(&actor.caller, what).await?;
        Ok(())
    }

    /// What a job reading `spec` from `source` and creating it in `target` on
    /// `destination` (None: no destination, an export) needs, reviewed for `actor` on
    /// the source and for `dest_actor` (the identity the destination verified, else
    /// `actor`) on the destination.
    pub async fn may_move(
        &self,
        actor: &Actor,
        source: Option<&ClusterRef>,
        spec: &ferry_kube::CaptureSpec,
        destination: Option<(Target<'_>, &Actor)>,
        quiesce: bool,
    ) -> Result<()> {
        let from = self.clusters.cluster(source).await?;
        let types = ferry_kube::types_present(&from, spec)
            .await
            .map_err(TransferError::kube("authorize", &from.name))?;
        self.may_read(actor, source, &spec.namespace, &types, quiesce)
            .await?;
        match destination {
            Some((target, dest_actor)) => self.may_create(dest_actor, target, &types).await,
            None => Ok(()),
        }
    }

    /// Whether `actor` may read objects of `types` in `namespace` on the cluster `r`
    /// names, as capturing them would (and stop its workloads when `quiesce`): what a
    /// migration or export of it needs, and a restore of what was captured there.
    pub async fn may_read(
        &self,
        actor: &Actor,
        r: Option<&ClusterRef>,
        namespace: &str,
        types: &[ApiResource],
        quiesce: bool,
    ) -> Result<()> {
        let mut read = vec![Access::see_namespace(namespace)];
        for t in types {
            read.push(Access::namespaced("get", &t.group, &t.plural, namespace));
            read.push(Access::namespaced("list", &t.group, &t.plural, namespace));
        }
        if quiesce {
            for workload in ["deployments", "statefulsets"] {
                read.push(Access::namespaced("patch", "apps", workload, namespace));
            }
        }
        read.sort();
        read.dedup();
        self.authorizer(r)
            .await?
            .require(&actor.caller, &read)
            .await?;
        Ok(())
    }

    /// Whether `actor` may create objects of `types` in the target's namespace on its
    /// cluster (and the namespace itself when it is not there yet), and patch them
    /// when the job updates what is there. The API server judges each write as the
    /// user again (the job writes as them); this refuses before anything moves.
    pub async fn may_create(
        &self,
        actor: &Actor,
        to_where: Target<'_>,
        types: &[ApiResource],
    ) -> Result<()> {
        let (dest_ref, target) = (to_where.cluster, to_where.namespace);
        let to = self.authorizer(dest_ref).await?;
        let dest = self.clusters.cluster(dest_ref).await?;
        let verbs: &[&str] = if to_where.update {
            &["create", "patch"]
        } else {
            &["create"]
        };
        let mut create: Vec<Access> = types
            .iter()
            .flat_map(|t| {
                verbs
                    .iter()
                    .map(|v| Access::namespaced(v, &t.group, &t.plural, target))
            })
            .collect();
        let namespaces: Api<DynamicObject> = Api::all_with(
            dest.client.clone(),
            &ferry_kube::resource::known::namespace(),
        );
        let exists = namespaces
            .get_opt(target)
            .await
            .map_err(|e| TransferError::Cluster {
                cluster: to.cluster().to_owned(),
                message: format!("reading namespace {target}: {e}"),
                hint: "check that the destination is reachable and the pair's credential works \
                       (ferry pair check)"
                    .into(),
            })?
            .is_some();
        if !exists {
            create.push(Access::cluster_wide("create", "", "namespaces"));
        }
        create.sort();
        create.dedup();
        to.require(&actor.caller, &create).await?;
        Ok(())
    }

    /// Whether `actor` may scale the workloads of `namespace` on the cluster `r` names.
    pub async fn may_scale(
        &self,
        actor: &Actor,
        r: Option<&ClusterRef>,
        namespace: &str,
    ) -> Result<()> {
        let needed: Vec<Access> = ["deployments", "statefulsets"]
            .into_iter()
            .map(|w| Access::namespaced("patch", "apps", w, namespace))
            .collect();
        self.authorizer(r)
            .await?
            .require(&actor.caller, &needed)
            .await?;
        Ok(())
    }

    /// Whether `actor` may see `job` (and so watch or cancel it).
    pub async fn may_see(
        &self,
        actor: &Actor,
        job: &Job,
        memo: &mut HashMap<String, bool>,
    ) -> Result<bool> {
        if actor.admin
            || (!job.requested_by.is_empty() && job.requested_by == actor.caller.username)
        {
            return Ok(true);
        }
        let Some(ns) = job.application.as_ref().map(|a| a.namespace.clone()) else {
            return Ok(false);
        };
        if let Some(known) = memo.get(&ns) {
            return Ok(*known);
        }
        let local = self.authorizer(None).await?;
        let ok = local
            .allowed(&actor.caller, &Access::see_namespace(&ns))
            .await?;
        memo.insert(ns, ok);
        Ok(ok)
    }

    /// Fails unless `actor` may see `job`; the error does not say whether it exists.
    pub async fn require_see(&self, actor: &Actor, job: &Job) -> Result<()> {
        if self.may_see(actor, job, &mut HashMap::new()).await? {
            return Ok(());
        }
        Err(TransferError::JobNotFound { id: job.id.clone() })
    }
}

/// Every namespace of the cluster `source` names but the cluster's own and Ferry's:
/// what `--all-namespaces` moves.
pub async fn list_namespaces(
    clusters: &dyn Clusters,
    source: Option<&ClusterRef>,
) -> Result<Vec<String>> {
    let cluster = clusters.cluster(source).await?;
    let api: Api<DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &ferry_kube::resource::known::namespace(),
    );
    let list = api
        .list(&Default::default())
        .await
        .map_err(|e| TransferError::Cluster {
            cluster: cluster.name.clone(),
            message: format!("listing namespaces: {e}"),
            hint: "check that the cluster is reachable and Ferry may list namespaces".into(),
        })?;
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .filter(|n| !SYSTEM_NAMESPACES.contains(&n.as_str()) && n != FERRY_NAMESPACE)
        .collect();
    names.sort();
    Ok(names)
}

/// The user the in-process scheduler names, or the scheduler itself.
fn on_behalf_of(metadata: &MetadataMap) -> Actor {
    match ferry_authz::on_behalf_of(metadata) {
        Some(caller) => Actor {
            caller,
            admin: false,
        },
        // Schedules made before their creators were recorded run as the scheduler,
        // which was trusted when it was configured.
        None => Actor {
            caller: Caller {
                username: SCHEDULER_USER.into(),
                uid: String::new(),
                groups: vec!["system:masters".into()],
            },
            admin: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduler_acts_for_the_named_user_only() {
        let mut md = MetadataMap::new();
        let me = on_behalf_of(&md);
        assert_eq!(me.caller.username, SCHEDULER_USER);
        assert!(me.admin);
        md.insert(ON_BEHALF_OF_USER, "alice".parse().unwrap());
        md.append(ON_BEHALF_OF_GROUP, "devs".parse().unwrap());
        md.append(ON_BEHALF_OF_GROUP, "system:authenticated".parse().unwrap());
        let alice = on_behalf_of(&md);
        assert_eq!(alice.caller.username, "alice");
        assert_eq!(alice.caller.groups, ["devs", "system:authenticated"]);
        assert!(!alice.admin);
    }
}
