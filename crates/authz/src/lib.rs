//! Who is calling and what they may do, decided by the cluster a request concerns.
//!
//! Every call to a Ferry carries the caller's own Kubernetes bearer token (the `ferry`
//! command takes it from the kubeconfig context). A Ferry never trusts what a caller
//! claims: it asks the cluster who the token belongs to (TokenReview) and whether that
//! user may do each thing a job would do on their behalf (SubjectAccessReview). The
//! pair's own credential, which Ferry uses to do the work, is never a way around this.
//!
//! ```no_run
//! # async fn demo(client: kube::Client, token: &str) -> Result<(), ferry_authz::AuthzError> {
//! use ferry_authz::{Access, Authorizer};
//!
//! let cluster = Authorizer::new(client, "b");
//! let caller = cluster.authenticate(token).await?;
//! cluster
//!     .require(&caller, &[Access::namespaced("create", "apps", "deployments", "shop")])
//!     .await?;
//! # Ok(()) }
//! ```

mod args;

use std::fmt;

use futures::future::try_join_all;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

pub use args::{AccessArgs, AccessConfigError};

/// Metadata key the caller's token travels in.
pub const AUTHORIZATION: &str = "authorization";

/// Metadata a trusted in-process caller (the scheduler) names the user it acts for
/// with; a service honours it only on calls bearing that caller's own secret.
pub const ON_BEHALF_OF_USER: &str = "x-ferry-on-behalf-of-user";
/// Groups of that user; repeated.
pub const ON_BEHALF_OF_GROUP: &str = "x-ferry-on-behalf-of-group";

/// SubjectAccessReviews in flight at once for one call that filters a listing.
const REVIEW_CONCURRENCY: usize = 8;

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// The request carried no bearer token.
    #[error("the request carries no Kubernetes bearer token")]
    NoToken,

    /// The cluster does not know the token.
    #[error("cluster {cluster} does not accept the caller's token ({reason})")]
    Unauthenticated { cluster: String, reason: String },

    /// The caller lacks rights the request needs.
    #[error("{user} may not {} on cluster {cluster}", describe_all(.missing))]
    Denied {
        user: String,
        cluster: String,
        missing: Vec<Access>,
    },

    /// The request is for administrators only.
    #[error(
        "{user} is not an administrator of cluster {cluster} (a member of {groups}, or \
         allowed every verb on every resource), which {what} needs"
    )]
    NotAdmin {
        user: String,
        cluster: String,
        groups: String,
        what: String,
    },

    /// An internal call (one Ferry component to another) did not bear the
    /// deployment's internal credential.
    #[error(
        "{what} on cluster {cluster} answers only Ferry's own components, and the call does \
         not bear their internal credential"
    )]
    NotInternal { cluster: String, what: String },

    /// This component was started without the internal credential, so it cannot tell its
    /// own deployment's calls from anyone else's and refuses them all.
    #[error(
        "{what} on cluster {cluster} has no internal credential configured and refuses every \
         call"
    )]
    NoInternalCredential { cluster: String, what: String },

    /// The cluster could not answer a review.
    #[error("asking cluster {cluster} who the caller is or what they may do failed: {source}")]
    Review {
        cluster: String,
        #[source]
        source: kube::Error,
    },
}

impl AuthzError {
    /// The kind of this refusal in the error contract (crates/rpc).
    pub fn kind(&self) -> ferry_rpc::Kind {
        use ferry_proto::v1::ErrorCode;
        ferry_rpc::Kind::new(match self {
            AuthzError::NoToken | AuthzError::Unauthenticated { .. } => ErrorCode::Unauthenticated,
            AuthzError::Denied { .. } | AuthzError::NotAdmin { .. } => ErrorCode::PermissionDenied,
            AuthzError::NotInternal { .. } => ErrorCode::PermissionDenied,
            AuthzError::NoInternalCredential { .. } => ErrorCode::MissingPrerequisite,
            AuthzError::Review { .. } => ErrorCode::Unreachable,
        })
    }

    /// The gRPC code for this refusal.
    pub fn code(&self) -> tonic::Code {
        self.kind().grpc()
    }

    /// The error as an RPC answer, with an ErrorDetail carrying the hint.
    pub fn to_status(&self) -> tonic::Status {
        ferry_rpc::ServiceError::to_status(self)
    }
}

impl ferry_rpc::ServiceError for AuthzError {
    fn kind(&self) -> ferry_rpc::Kind {
        AuthzError::kind(self)
    }

    fn hint(&self) -> std::borrow::Cow<'_, str> {
        AuthzError::hint(self).into()
    }

    fn cluster(&self) -> &str {
        AuthzError::cluster(self).unwrap_or_default()
    }
}

impl AuthzError {
    /// The cluster that answered, when one did.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            AuthzError::NoToken => None,
            AuthzError::Unauthenticated { cluster, .. }
            | AuthzError::Denied { cluster, .. }
            | AuthzError::NotAdmin { cluster, .. }
            | AuthzError::NotInternal { cluster, .. }
            | AuthzError::NoInternalCredential { cluster, .. }
            | AuthzError::Review { cluster, .. } => Some(cluster),
        }
    }

    /// The next step, for an error detail's hint.
    pub fn hint(&self) -> &'static str {
        match self {
            AuthzError::NoToken => {
                "call with a Kubernetes bearer token: use a kubeconfig context whose user has \
                 a token, or pass --token"
            }
            AuthzError::Unauthenticated { .. } => "log in again, or use another context or token",
            AuthzError::Denied { .. } => {
                "ask an administrator for a Role granting what is missing, or pick a namespace \
                 you may access"
            }
            AuthzError::NotAdmin { .. } => {
                "name the namespaces you may access instead, or ask an administrator to run it"
            }
            AuthzError::NotInternal { .. } => {
                "call Ferry's public services (through the gateway) instead; internal calls \
                 come only from Ferry's own components, which mount the internal credential"
            }
            AuthzError::NoInternalCredential { .. } => {
                "start every Ferry component with --internal-token-file naming the same \
                 Secret's file (the Helm chart mounts it)"
            }
            AuthzError::Review { .. } => {
                "check that the cluster is reachable and that Ferry may create TokenReviews and \
                 SubjectAccessReviews there"
            }
        }
    }
}

fn describe_all(missing: &[Access]) -> String {
    missing
        .iter()
        .map(Access::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The caller, as the cluster knows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("username", &self.username)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// One thing a caller may or may not do: a verb on a resource, in a namespace or
/// cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    pub verb: String,
    /// API group; empty for the core group.
    pub group: String,
    /// Resource, plural ("deployments").
    pub resource: String,
    /// None: cluster-wide (all namespaces for namespaced resources).
    pub namespace: Option<String>,
    /// A subresource ("token" of serviceaccounts); empty for the resource itself.
    pub subresource: String,
    /// One object by name; empty for any.
    pub name: String,
}

impl Access {
    pub fn namespaced(verb: &str, group: &str, resource: &str, namespace: &str) -> Access {
        Access {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: Some(namespace.into()),
            subresource: String::new(),
            name: String::new(),
        }
    }

    pub fn cluster_wide(verb: &str, group: &str, resource: &str) -> Access {
        Access {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: None,
            subresource: String::new(),
            name: String::new(),
        }
    }

    /// The same access to `subresource` of one object, `name`.
    pub fn of_object(mut self, name: &str, subresource: &str) -> Access {
        self.name = name.into();
        self.subresource = subresource.into();
        self
    }

    /// What acting as ServiceAccount `name` of `namespace` takes in Kubernetes: getting
    /// tokens for it (TokenRequest), which whoever may run pods as it can do in effect.
    pub fn act_as_service_account(namespace: &str, name: &str) -> Access {
        Access::namespaced("create", "", "serviceaccounts", namespace).of_object(name, "token")
    }

    /// What seeing a namespace means to Ferry, whatever it holds: listing its pods. Who
    /// has it sees that namespace's jobs, restore points and application.
    pub fn see_namespace(namespace: &str) -> Access {
        Access::namespaced("list", "", "pods", namespace)
    }

    /// "create deployments.apps in namespace shop".
    pub fn describe(&self) -> String {
        let what = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        let what = match (self.subresource.is_empty(), self.name.is_empty()) {
            (true, true) => what,
            (true, false) => format!("{what} named {}", self.name),
            (false, true) => format!("{what}/{}", self.subresource),
            (false, false) => format!("{what}/{} of {}", self.subresource, self.name),
        };
        match &self.namespace {
            Some(ns) => format!("{} {what} in namespace {ns}", self.verb),
            None => format!("{} {what} in all namespaces", self.verb),
        }
    }
}

/// A DNS subdomain name (RFC 1123), as Kubernetes names ServiceAccounts and
/// cluster-scoped objects.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The user name and groups Kubernetes gives ServiceAccount `name` of `namespace`
/// (what its tokens authenticate as). Derived from the name alone, never recorded, so a
/// run acting as it is judged by the RBAC that holds for it then.
pub fn service_account_identity(namespace: &str, name: &str) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{namespace}:{name}"),
        vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ],
    )
}

/// A caller the cluster vouched for, and whether they administer Ferry.
#[derive(Debug, Clone)]
pub struct Identity {
    pub caller: Caller,
    pub admin: bool,
}

/// Reviews against one cluster.
#[derive(Clone)]
pub struct Authorizer {
    client: kube::Client,
    cluster: String,
    admin_groups: Vec<String>,
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("cluster", &self.cluster)
            .field("admin_groups", &self.admin_groups)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Reviews through `client` (which must be allowed to create TokenReviews and
    /// SubjectAccessReviews); `cluster` names the cluster in errors.
    pub fn new(client: kube::Client, cluster: &str) -> Authorizer {
        Authorizer {
            client,
            cluster: cluster.into(),
            admin_groups: vec!["system:masters".into()],
        }
    }

    /// Members of these groups are administrators (default: system:masters), besides
    /// anyone the cluster lets do everything everywhere.
    pub fn with_admin_groups(mut self, groups: Vec<String>) -> Authorizer {
        self.admin_groups = groups;
        self
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Who `token` belongs to, by TokenReview.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthzError> {
        if token.trim().is_empty() {
            return Err(AuthzError::NoToken);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthzError::Review {
                cluster: self.cluster.clone(),
                source,
            })?;
        let status = answer.status.unwrap_or_default();
        match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Ok(Caller {
                username: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
            }),
            _ => Err(AuthzError::Unauthenticated {
                cluster: self.cluster.clone(),
                reason: status
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "token not recognised".into()),
            }),
        }
    }

    /// Who the bearer token of `metadata` belongs to, and whether they administer Ferry.
    pub async fn identify(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Identity, AuthzError> {
        let token = bearer(metadata).ok_or(AuthzError::NoToken)?;
        let caller = self.authenticate(&token).await?;
        let admin = self.is_admin(&caller).await?;
        Ok(Identity { caller, admin })
    }

    /// Who a call is made by, for services that record their callers: the user a call
    /// bearing `internal` (the deployment's own credential: the controller, acting for
    /// an object's creator) names in its on-behalf headers, else the bearer of the
    /// caller's own token. A call bearing `internal` that names nobody is refused, so
    /// the credential never stands for a user of its own.
    pub async fn identify_acting(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        internal: Option<&str>,
    ) -> Result<Identity, AuthzError> {
        let bears_internal = internal
            .zip(bearer(metadata))
            .is_some_and(|(internal, token)| same_secret(internal, &token));
        if !bears_internal {
            return self.identify(metadata).await;
        }
        let caller = on_behalf_of(metadata).ok_or_else(|| AuthzError::Unauthenticated {
            cluster: self.cluster.clone(),
            reason: format!(
                "a call bearing the internal credential must name the user it acts for \
                 ({ON_BEHALF_OF_USER})"
            ),
        })?;
        let admin = self.is_admin(&caller).await?;
        Ok(Identity { caller, admin })
    }

    /// The rule of services whose calls need no more than a signed-in caller, and an
    /// administrator for those `admin_for` names. A call bearing `internal` (this
    /// process's own secret, its scheduler's) passes.
    pub async fn review(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        admin_for: Option<&str>,
        internal: Option<&str>,
    ) -> Result<(), AuthzError> {
        if let (Some(internal), Some(token)) = (internal, bearer(metadata))
            && same_secret(internal, &token)
        {
            return Ok(());
        }
        let who = self.identify(metadata).await?;
        match admin_for {
            Some(what) if !who.admin => self.require_admin(&who.caller, what).await,
            _ => Ok(()),
        }
    }

    /// Whom a call that shows namespaces' contents must be narrowed for: None when it
    /// may show everything (it bears `internal`, this deployment's own credential, or
    /// comes from an administrator), else the signed-in caller.
    pub async fn narrowed_for(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        internal: Option<&str>,
    ) -> Result<Option<Caller>, AuthzError> {
        if let (Some(internal), Some(token)) = (internal, bearer(metadata))
            && same_secret(internal, &token)
        {
            return Ok(None);
        }
        let who = self.identify(metadata).await?;
        Ok((!who.admin).then_some(who.caller))
    }

    /// The namespaces of `names` that `caller` may see ([`Access::see_namespace`]),
    /// asked a few at a time.
    pub async fn visible_namespaces(
        &self,
        caller: &Caller,
        names: &[String],
    ) -> Result<std::collections::HashSet<String>, AuthzError> {
        let mut visible = std::collections::HashSet::new();
        for chunk in names.chunks(REVIEW_CONCURRENCY) {
            let asks: Vec<Access> = chunk.iter().map(|ns| Access::see_namespace(ns)).collect();
            let answers = try_join_all(asks.iter().map(|a| self.allowed(caller, a))).await?;
            visible.extend(
                chunk
                    .iter()
                    .zip(answers)
                    .filter(|(_, ok)| *ok)
                    .map(|(ns, _)| ns.clone()),
            );
        }
        Ok(visible)
    }

    /// Whether `caller` may do `access`, by SubjectAccessReview.
    pub async fn allowed(&self, caller: &Caller, access: &Access) -> Result<bool, AuthzError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.username.clone()),
                uid: Some(caller.uid.clone()).filter(|u| !u.is_empty()),
                groups: Some(caller.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.clone()),
                    group: Some(access.group.clone()),
                    resource: Some(access.resource.clone()),
                    namespace: access.namespace.clone(),
                    subresource: Some(access.subresource.clone()).filter(|s| !s.is_empty()),
                    name: Some(access.name.clone()).filter(|n| !n.is_empty()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthzError::Review {
                cluster: self.cluster.clone(),
                source,
            })?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }

    /// Succeeds when `caller` may do every one of `needed`; otherwise names all that
    /// are missing at once, so one fix covers them.
    pub async fn require(&self, caller: &Caller, needed: &[Access]) -> Result<(), AuthzError> {
        let answers = try_join_all(needed.iter().map(|a| self.allowed(caller, a))).await?;
        let missing: Vec<Access> = needed
            .iter()
            .zip(answers)
            .filter(|(_, ok)| !ok)
            .map(|(a, _)| a.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        tracing::info!(user = %caller.username, cluster = %self.cluster, missing = missing.len(), "request refused");
        Err(AuthzError::Denied {
            user: caller.username.clone(),
            cluster: self.cluster.clone(),
            missing,
        })
    }

    /// Succeeds when `caller` is an administrator; `what` names the request that needs one.
    pub async fn require_admin(&self, caller: &Caller, what: &str) -> Result<(), AuthzError> {
        if self.is_admin(caller).await? {
            return Ok(());
        }
        Err(AuthzError::NotAdmin {
            user: caller.username.clone(),
            cluster: self.cluster.clone(),
            groups: self.admin_groups.join(", "),
            what: what.into(),
        })
    }

    /// An administrator: in an administrator group, or allowed every verb on every
    /// resource in every namespace (cluster-admin).
    pub async fn is_admin(&self, caller: &Caller) -> Result<bool, AuthzError> {
        if caller.groups.iter().any(|g| self.admin_groups.contains(g)) {
            return Ok(true);
        }
        self.allowed(caller, &Access::cluster_wide("*", "*", "*"))
            .await
    }
}

/// The `--internal-token-file` of a standalone service is unusable.
#[derive(Debug, thiserror::Error)]
#[error(
    "--internal-token-file {path}: {detail}; mount the Secret holding the deployment's \
     internal credential there (the Helm chart's <release>-internal)"
)]
pub struct InternalTokenError {
    pub path: String,
    pub detail: String,
}

/// The secret a deployment's components share (the internal credential): the scheduler's
/// calls bearing it act for the users they name, and internal APIs answer only it. The
/// trimmed contents of `path`, at least 32 characters.
pub fn read_internal_token(path: &std::path::Path) -> Result<String, InternalTokenError> {
    let bad = |detail: String| InternalTokenError {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.trim();
    if token.len() < 32 {
        return Err(bad(
            "holds fewer than 32 characters; make a long random secret".into(),
        ));
    }
    Ok(token.to_owned())
}

/// Whether two secrets are equal, compared without an early exit so timing says nothing
/// of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Admits a call only when it bears `internal`, the deployment's internal credential;
/// with none configured, admits nothing (fails closed). `what` names the service for
/// the refusal.
pub fn require_internal(
    metadata: &tonic::metadata::MetadataMap,
    internal: Option<&str>,
    cluster: &str,
    what: &str,
) -> Result<(), AuthzError> {
    let Some(internal) = internal else {
        return Err(AuthzError::NoInternalCredential {
            cluster: cluster.to_owned(),
            what: what.to_owned(),
        });
    };
    match bearer(metadata) {
        None => Err(AuthzError::NoToken),
        Some(token) if same_secret(&token, internal) => Ok(()),
        Some(_) => Err(AuthzError::NotInternal {
            cluster: cluster.to_owned(),
            what: what.to_owned(),
        }),
    }
}

/// Stands in for a user name a header cannot carry: it holds no rights.
const UNENCODABLE_USER: &str = "system:ferry:unencodable-user";

/// Marks a call (which must bear the internal credential) as made for `user` and
/// `groups`: the service then reviews that user's rights, never the caller's. A name
/// that cannot travel in a header becomes one that holds no rights, so the call is
/// refused rather than made with the caller's own.
pub fn act_for(metadata: &mut tonic::metadata::MetadataMap, user: &str, groups: &[String]) {
    let user = user
        .parse()
        .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static(UNENCODABLE_USER));
    metadata.insert(ON_BEHALF_OF_USER, user);
    for g in groups {
        if let Ok(g) = g.parse() {
            metadata.append(ON_BEHALF_OF_GROUP, g);
        }
    }
}

/// The user (and groups) a call's on-behalf headers name ([`act_for`]); None when
/// they name nobody. Trust them only on a call bearing the internal credential.
pub fn on_behalf_of(metadata: &tonic::metadata::MetadataMap) -> Option<Caller> {
    let user = metadata
        .get(ON_BEHALF_OF_USER)
        .and_then(|v| v.to_str().ok())
        .filter(|u| !u.is_empty())?;
    Some(Caller {
        username: user.to_owned(),
        uid: String::new(),
        groups: metadata
            .get_all(ON_BEHALF_OF_GROUP)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect(),
    })
}

/// The bearer token of a request's metadata, if it has one.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    bearer_in(metadata, AUTHORIZATION)
}

pub use ferry_proto::DESTINATION_AUTHORIZATION;

/// The caller's bearer token for the job's destination
/// ([`DESTINATION_AUTHORIZATION`]), if the call carries one.
pub fn destination_bearer(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    bearer_in(metadata, DESTINATION_AUTHORIZATION)
}

fn bearer_in(metadata: &tonic::metadata::MetadataMap, key: &str) -> Option<String> {
    let value = metadata.get(key)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn bearer_tokens_come_from_the_authorization_header() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer(&md), None);
        md.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&md).as_deref(), Some("abc"));
        md.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&md), None);
    }

    #[test]
    fn denials_name_every_missing_right() {
        let e = AuthzError::Denied {
            user: "alice".into(),
            cluster: "b".into(),
            missing: vec![
                Access::namespaced("create", "apps", "deployments", "shop"),
                Access::cluster_wide("list", "", "namespaces"),
            ],
        };
        let text = e.to_string();
        assert!(text.starts_with("alice may not create deployments.apps in namespace shop, list namespaces in all namespaces on cluster b"), "{text}");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            Access::act_as_service_account("shop", "mover").describe(),
            "create serviceaccounts/token of mover in namespace shop"
        );
    }

    #[test]
    fn service_accounts_are_named_as_their_tokens_name_them() {
        let (user, groups) = service_account_identity("shop", "mover");
        assert_eq!(user, "system:serviceaccount:shop:mover");
        assert_eq!(
            groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:shop",
                "system:authenticated"
            ]
        );
    }
}
