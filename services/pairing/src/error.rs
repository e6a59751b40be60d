//! The pairing service's errors, and the one place that decides their kinds in the error
//! contract (crates/rpc, docs/errors.md), so clients branch on a code and show the hint.

use std::borrow::Cow;

use ferry_proto::v1::{ErrorCode, ErrorDetail, ObjectRef};
use ferry_rpc::{Kind, ServiceError};
use tonic::{Code, Status};

/// Everything a pairing request, or a caller of [`crate::Pairs`], can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// A request field is missing or malformed.
    #[error("invalid {field}: {detail}")]
    InvalidArgument { field: &'static str, detail: String },

    /// The token text cannot be read.
    #[error("the pairing token is malformed: {detail}")]
    MalformedToken { detail: String },

    /// The token is in a format this build does not know.
    #[error("the pairing token is format version {found}; this Ferry reads version 1 only")]
    UnsupportedTokenVersion { found: String },

    /// The token's expiry has passed.
    #[error("the pairing token for destination {destination} expired at {expired_at}")]
    TokenExpired {
        destination: String,
        expired_at: String,
    },

    /// The token paired once already.
    #[error("this token was already used: {detail}")]
    TokenUsed { destination: String, detail: String },

    /// The token's content differs from what the destination issued.
    #[error(
        "the pairing token was altered: its content does not match what destination {destination} issued"
    )]
    TokenAltered { destination: String },

    /// The destination has no record of the token.
    #[error("destination {destination} has no record of this pairing token")]
    TokenUnknown { destination: String },

    /// A token was accepted on the cluster that issued it.
    #[error(
        "the pairing token was created on cluster {cluster} itself; a cluster cannot pair with itself"
    )]
    SelfPairing { cluster: String },

    /// No pair with that id or name.
    #[error("pair {pair:?} not found on cluster {cluster}")]
    PairNotFound { pair: String, cluster: String },

    /// A pair with that name or id exists already.
    #[error("a pair named {name:?} already exists on cluster {cluster}")]
    PairExists { name: String, cluster: String },

    /// The operation needs the other role (say, a destination client on the destination).
    #[error("pair {pair} on cluster {cluster}: {detail}")]
    WrongRole {
        pair: String,
        cluster: String,
        detail: &'static str,
    },

    /// The Kubernetes API of a cluster could not be reached.
    #[error("the Kubernetes API of cluster {cluster} at {url} is unreachable: {detail}")]
    ApiUnreachable {
        cluster: String,
        url: String,
        detail: String,
    },

    /// The API answered but does not accept the pair's credential.
    #[error(
        "the Kubernetes API of cluster {cluster} at {url} rejected the pair's credential: {detail}"
    )]
    CredentialRejected {
        cluster: String,
        url: String,
        detail: String,
    },

    /// The pair's credential authenticates but may not do what a migration needs.
    #[error("the pair's credential on cluster {cluster} may not: {}", missing.join(", "))]
    PermissionsMissing {
        cluster: String,
        missing: Vec<String>,
    },

    /// The other side's Ferry could not be reached.
    #[error("Ferry of cluster {cluster} at {endpoint} is unreachable: {detail}")]
    PeerUnreachable {
        cluster: String,
        endpoint: String,
        detail: String,
    },

    /// The other side's Ferry answered with an error; its detail is passed on.
    #[error("Ferry of cluster {cluster} at {endpoint}: {}", status.message())]
    Peer {
        cluster: String,
        endpoint: String,
        status: Box<Status>,
    },

    /// The other side's Ferry answers but no longer has the pair.
    #[error("cluster {cluster} no longer has pair {pair} (it was deleted there)")]
    PeerLostPair { pair: String, cluster: String },

    /// A check or call ran out of time.
    #[error("{what} on cluster {cluster} took longer than {seconds}s")]
    Timeout {
        what: String,
        cluster: String,
        seconds: u64,
    },

    /// A cluster has no profile of the name a repository check asked for.
    #[error("cluster {cluster} has no profile {profile:?}")]
    ProfileMissing { profile: String, cluster: String },

    /// A cluster's catalog could not prove the profile works; its detail is passed on.
    #[error("profile {profile:?} on cluster {cluster}: {}", status.message())]
    ProfileCheck {
        profile: String,
        cluster: String,
        status: Box<Status>,
    },

    /// The profile must write on that cluster (the source's) but may not.
    #[error("profile {profile:?} on cluster {cluster} may not write: {detail}")]
    ProfileReadOnly {
        profile: String,
        cluster: String,
        detail: String,
    },

    /// The two clusters' profiles of one name open different repositories.
    #[error(
        "profile {profile:?} opens repository {repository_id} on cluster {cluster} but \
         repository {peer_repository_id} on cluster {peer_cluster}: the clusters would not \
         share restore points"
    )]
    RepositoryMismatch {
        profile: String,
        cluster: String,
        repository_id: String,
        peer_cluster: String,
        peer_repository_id: String,
    },

    /// The other side's Ferry serves pairing but no catalog.
    #[error(
        "Ferry of cluster {cluster} at {endpoint} does not serve the catalog \
         (CatalogService/CheckProfile): {detail}"
    )]
    PeerWithoutCatalog {
        cluster: String,
        endpoint: String,
        detail: String,
    },

    /// ForgetPair came with the wrong token id: not from the pair's other side.
    #[error(
        "refusing to forget pair {pair} on cluster {cluster}: the request does not come from the pair's other side"
    )]
    ForgetRefused { pair: String, cluster: String },

    /// RenewPairCredential came from someone who is not the pair's source, or for a
    /// credential that does not expire.
    #[error("refusing to renew the credential of pair {pair} on cluster {cluster}: {reason}")]
    RenewRefused {
        pair: String,
        cluster: String,
        reason: String,
    },

    /// A call to a Kubernetes API failed.
    #[error("{action} on cluster {cluster}: {source}")]
    Kube {
        cluster: String,
        action: String,
        object: Option<Box<ObjectRef>>,
        #[source]
        source: Box<kube::Error>,
    },

    /// The cluster did not produce a token for the ServiceAccount in time.
    #[error(
        "cluster {cluster} did not fill in token Secret {namespace}/{secret} within {waited_seconds}s"
    )]
    CredentialNotIssued {
        cluster: String,
        namespace: String,
        secret: String,
        waited_seconds: u64,
    },

    /// Stored credentials do not open with this data directory's key.
    #[error("the stored credentials of pair {pair} on cluster {cluster} do not open: {source}")]
    Unseal {
        pair: String,
        cluster: String,
        #[source]
        source: Box<ferry_store::StoreError>,
    },

    /// The state database failed.
    #[error("pairing state of cluster {cluster}: {source}")]
    Store {
        cluster: String,
        #[source]
        source: Box<ferry_store::StoreError>,
    },

    /// A bug or an impossible state.
    #[error("internal error in the pairing service: {detail}")]
    Internal { detail: String },
}

/// Result alias for the crate.
pub type Result<T, E = PairingError> = std::result::Result<T, E>;

impl PairingError {
    pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        PairingError::InvalidArgument {
            field,
            detail: detail.into(),
        }
    }

    /// A closure for `map_err` on a Kubernetes call.
    pub(crate) fn kube(
        cluster: &str,
        action: impl Into<String>,
        object: Option<ObjectRef>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let cluster = cluster.to_string();
        let action = action.into();
        move |source| PairingError::Kube {
            cluster,
            action,
            object: object.map(Box::new),
            source: Box::new(source),
        }
    }

    /// What a catalog's CheckProfile status means for profile `profile` of `cluster`:
    /// NOT_FOUND is a missing profile, anything else passes its detail on.
    pub fn from_profile_status(cluster: &str, profile: &str, status: Status) -> Self {
        if status.code() == Code::NotFound {
            PairingError::ProfileMissing {
                profile: profile.to_string(),
                cluster: cluster.to_string(),
            }
        } else {
            PairingError::ProfileCheck {
                profile: profile.to_string(),
                cluster: cluster.to_string(),
                status: Box::new(status),
            }
        }
    }

    /// True when the failure is the network or a busy server, worth retrying as is.
    pub fn is_transient(&self) -> bool {
        match self {
            PairingError::ApiUnreachable { .. }
            | PairingError::PeerUnreachable { .. }
            | PairingError::Timeout { .. } => true,
            PairingError::Kube { source, .. } => is_network(source),
            PairingError::Peer { status, .. } | PairingError::ProfileCheck { status, .. } => {
                matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
            }
            _ => false,
        }
    }

    fn cluster(&self) -> &str {
        use PairingError as E;
        match self {
            E::TokenExpired { destination, .. }
            | E::TokenUsed { destination, .. }
            | E::TokenAltered { destination }
            | E::TokenUnknown { destination } => destination,
            E::SelfPairing { cluster }
            | E::PairNotFound { cluster, .. }
            | E::PairExists { cluster, .. }
            | E::WrongRole { cluster, .. }
            | E::ApiUnreachable { cluster, .. }
            | E::CredentialRejected { cluster, .. }
            | E::PermissionsMissing { cluster, .. }
            | E::PeerUnreachable { cluster, .. }
            | E::Peer { cluster, .. }
            | E::ForgetRefused { cluster, .. }
            | E::RenewRefused { cluster, .. }
            | E::PeerLostPair { cluster, .. }
            | E::ProfileMissing { cluster, .. }
            | E::ProfileCheck { cluster, .. }
            | E::ProfileReadOnly { cluster, .. }
            | E::RepositoryMismatch {
                peer_cluster: cluster,
                ..
            }
            | E::PeerWithoutCatalog { cluster, .. }
            | E::Timeout { cluster, .. }
            | E::Kube { cluster, .. }
            | E::CredentialNotIssued { cluster, .. }
            | E::Unseal { cluster, .. }
            | E::Store { cluster, .. } => cluster,
            E::InvalidArgument { .. }
            | E::MalformedToken { .. }
            | E::UnsupportedTokenVersion { .. }
            | E::Internal { .. } => "",
        }
    }

    /// The kind of failure and the next step for the user.
    fn class(&self) -> (Kind, Cow<'_, str>) {
        use PairingError as E;
        let new_token = "create a new token on the destination with `ferry pair token create` \
                         and accept that one";
        let fixed = |kind: Kind, hint: &'static str| (kind, Cow::Borrowed(hint));
        match self {
            E::InvalidArgument { .. } => fixed(Kind::new(ErrorCode::InvalidArgument), "fix the request"),
            E::MalformedToken { .. } => fixed(
                Kind::new(ErrorCode::InvalidArgument),
                "copy the whole token printed by `ferry pair token create` on the destination, \
                 from `ferry-pair-v1.` to its last character",
            ),
            E::UnsupportedTokenVersion { .. } => fixed(
                Kind::new(ErrorCode::InvalidArgument),
                "run the same Ferry version on both clusters, or create the token with this one",
            ),
            E::TokenExpired { .. } => (
                Kind::precondition(ErrorCode::InvalidArgument),
                format!("{new_token}, within its TTL (--ttl)").into(),
            ),
            E::TokenUsed { .. } => (
                Kind::new(ErrorCode::AlreadyExists),
                format!("a token pairs once; list pairs with `ferry pair list`, or {new_token}")
                    .into(),
            ),
            // The caller's input is what is damaged, not stored data.
            E::TokenAltered { .. } => (
                Kind::in_request(ErrorCode::Integrity),
                format!("copy the token again exactly as printed, or {new_token}").into(),
            ),
            E::TokenUnknown { .. } => (
                Kind::new(ErrorCode::NotFound),
                format!(
                    "the token was altered or made by another Ferry (or its data directory was reset); {new_token}"
                )
                .into(),
            ),
            E::SelfPairing { .. } => fixed(
                Kind::new(ErrorCode::InvalidArgument),
                "create the token on the destination cluster and accept it on the source",
            ),
            E::PairNotFound { .. } => fixed(
                Kind::new(ErrorCode::NotFound),
                "list pairs with `ferry pair list`",
            ),
            E::PairExists { .. } => fixed(
                Kind::new(ErrorCode::AlreadyExists),
                "pick another pair name, or delete the existing pair first",
            ),
            E::WrongRole { .. } => fixed(
                Kind::precondition(ErrorCode::InvalidArgument),
                "run this on the pair's source cluster",
            ),
            E::ApiUnreachable { .. } => fixed(
                Kind::new(ErrorCode::Unreachable),
                "check that the API server URL is reachable from this cluster (network, \
                 firewall, the CA in the token); pass the right one with --api-server-url \
                 when creating the token",
            ),
            E::CredentialRejected { .. } => (
                Kind::new(ErrorCode::PermissionDenied),
                format!(
                    "the credential was revoked (its ServiceAccount deleted) or altered; delete \
                     the pair, then {new_token}"
                )
                .into(),
            ),
            E::PermissionsMissing { .. } => fixed(
                Kind::new(ErrorCode::PermissionDenied),
                "check ClusterRole ferry-migrator on the destination and its binding to the \
                 pair's ServiceAccount in ferry-system (services/pairing/README.md lists the rules)",
            ),
            E::PeerUnreachable { .. } => fixed(
                Kind::new(ErrorCode::Unreachable),
                "check that Ferry runs on the other cluster and that its endpoint is reachable \
                 from here; pass the right one with --ferry-endpoint when creating the token",
            ),
            E::PeerLostPair { .. } => fixed(
                Kind::precondition(ErrorCode::NotFound),
                "delete the pair here with `ferry pair delete` and pair the clusters again",
            ),
            E::Peer { .. }
            | E::ProfileCheck { .. }
            | E::ProfileMissing { .. }
            | E::ProfileReadOnly { .. }
            | E::RepositoryMismatch { .. }
            | E::PeerWithoutCatalog { .. } => self.peer_class(),
            E::Timeout { .. } => fixed(
                Kind::new(ErrorCode::Timeout),
                "the other side is slow or the network drops packets; retry, or raise \
                 --peer-timeout-seconds",
            ),
            E::ForgetRefused { .. } => fixed(
                Kind::new(ErrorCode::PermissionDenied),
                "delete the pair with `ferry pair delete` on one of its two clusters",
            ),
            E::RenewRefused { .. } => fixed(
                Kind::precondition(ErrorCode::PermissionDenied),
                "only the pair's source renews its credential, and only one from the \
                 TokenRequest API expires; pair again (`ferry pair create`) if it is lost",
            ),
            E::Kube { source, .. } => kube_class(source),
            E::CredentialNotIssued { .. } => fixed(
                Kind::new(ErrorCode::MissingPrerequisite),
                "kube-controller-manager's serviceaccount-token controller fills these Secrets; \
                 if the cluster does not run it, start ferry-pairing with \
                 --credential-kind=token-request",
            ),
            E::Unseal { .. } => fixed(
                Kind::precondition(ErrorCode::Integrity),
                "the data directory's secret.key changed or the database was copied from \
                 elsewhere; delete the pair and pair the clusters again",
            ),
            E::Store { .. } => fixed(
                Kind::new(ErrorCode::Internal),
                "check that the data directory is writable and not full",
            ),
            E::Internal { .. } => fixed(Kind::new(ErrorCode::Internal), "report this as a bug"),
        }
    }

    /// The kind and next step of what the other cluster answered, and of a failed check
    /// of the pair's profiles.
    fn peer_class(&self) -> (Kind, Cow<'_, str>) {
        use PairingError as E;
        match self {
            // The other side's failure is passed on as it was classified there.
            E::Peer { status, .. } | E::ProfileCheck { status, .. } => (
                Kind::of_status(status),
                ferry_rpc::detail(status)
                    .map(|d| d.hint)
                    .unwrap_or_default()
                    .into(),
            ),
            E::ProfileMissing { profile, cluster } => (
                Kind::precondition(ErrorCode::NotFound),
                format!(
                    "create profile {profile} on cluster {cluster} pointing at the same bucket \
                     and prefix as on the other cluster: `ferry --context {cluster} profile \
                     create {profile} --s3 ... --credentials-secret ... --key-secret ...`"
                )
                .into(),
            ),
            E::ProfileReadOnly {
                profile, cluster, ..
            } => (
                Kind::precondition(ErrorCode::PermissionDenied),
                format!(
                    "the source writes restore points: give cluster {cluster} an export or \
                     migration profile {profile} (`ferry --context {cluster} profile create \
                     {profile} --kind migration ...`)"
                )
                .into(),
            ),
            E::RepositoryMismatch {
                profile,
                cluster,
                peer_cluster,
                ..
            } => (
                Kind::precondition(ErrorCode::InvalidArgument),
                format!(
                    "create profile {profile} on cluster {peer_cluster} pointing at the same \
                     bucket/prefix as on cluster {cluster} (delete the wrong one first with \
                     `ferry --context {peer_cluster} profile delete {profile}`)"
                )
                .into(),
            ),
            E::PeerWithoutCatalog { cluster, .. } => (
                Kind::new(ErrorCode::MissingPrerequisite),
                format!(
                    "run `ferry serve` (the same version as here) on cluster {cluster}: it \
                     hosts the catalog next to the pairing service"
                )
                .into(),
            ),
            _ => (
                Kind::new(ErrorCode::Internal),
                Cow::Borrowed("report this as a bug"),
            ),
        }
    }

    /// The detail a status carries for this error.
    pub fn detail(&self) -> ErrorDetail {
        ServiceError::detail(self)
    }
}

impl ServiceError for PairingError {
    fn kind(&self) -> Kind {
        self.class().0
    }

    fn hint(&self) -> Cow<'_, str> {
        self.class().1
    }

    fn cluster(&self) -> &str {
        PairingError::cluster(self)
    }

    fn object(&self) -> Option<ObjectRef> {
        match self {
            PairingError::Kube { object, .. } => object.as_deref().cloned(),
            _ => None,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            PairingError::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Network-level failures, as opposed to the API answering with an error.
pub(crate) fn is_network(e: &kube::Error) -> bool {
    ferry_rpc::kube_is_network(e)
}

impl From<PairingError> for Status {
    fn from(e: PairingError) -> Status {
        e.to_status()
    }
}

/// The kind of a failed call on this cluster's API, with the hint for a refusal naming
/// the rights pairing needs.
fn kube_class(source: &kube::Error) -> (Kind, Cow<'static, str>) {
    let (kind, hint) = ferry_rpc::kube_kind(source);
    let hint = match ferry_rpc::kube_http_status(source) {
        Some(403) => {
            "grant Ferry's own identity the rights listed in services/pairing/README.md \
             (it creates ServiceAccounts, ClusterRoles and bindings for pairs)"
        }
        _ => hint,
    };
    (kind, Cow::Borrowed(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_details_pass_through_with_their_hint() {
        let remote = ferry_rpc::status(
            Code::AlreadyExists,
            ferry_rpc::error_detail(ErrorCode::AlreadyExists, "used", "make a new one"),
        );
        let e = PairingError::Peer {
            cluster: "b".into(),
            endpoint: "127.0.0.1:1".into(),
            status: Box::new(remote),
        };
        let status = Status::from(e);
        assert_eq!(status.code(), Code::AlreadyExists);
        let d = ferry_rpc::detail(&status).expect("detail");
        assert_eq!(d.code, ErrorCode::AlreadyExists as i32);
        assert_eq!(d.hint, "make a new one");
        assert_eq!(d.cluster, "b");
        assert!(d.message.contains("127.0.0.1:1"), "{}", d.message);
    }

    #[test]
    fn every_detail_names_a_next_step() {
        let errors = [
            PairingError::MalformedToken { detail: "x".into() },
            PairingError::TokenExpired {
                destination: "b".into(),
                expired_at: "t".into(),
            },
            PairingError::TokenUsed {
                destination: "b".into(),
                detail: "x".into(),
            },
            PairingError::TokenAltered {
                destination: "b".into(),
            },
            PairingError::PermissionsMissing {
                cluster: "b".into(),
                missing: vec!["create namespaces".into()],
            },
        ];
        for e in errors {
            let d = e.detail();
            assert!(!d.hint.is_empty(), "{e}");
            assert_ne!(d.code, ErrorCode::Unspecified as i32, "{e}");
        }
    }

    /// One error of each kind the pairing service produces reaches a gRPC client with
    /// the code of the one table (crates/rpc) and the same detail types as from every
    /// service.
    #[tokio::test]
    async fn every_kind_reaches_a_client_by_the_one_table() {
        let conflict = kube::Error::Api(Box::new(kube::core::Status {
            code: 409,
            message: "the object has been modified".into(),
            ..Default::default()
        }));
        let errors = [
            PairingError::invalid("name", "empty"),
            PairingError::PairNotFound {
                pair: "p1".into(),
                cluster: "a".into(),
            },
            PairingError::PairExists {
                name: "p1".into(),
                cluster: "a".into(),
            },
            PairingError::PermissionsMissing {
                cluster: "b".into(),
                missing: vec!["create namespaces".into()],
            },
            PairingError::PeerUnreachable {
                cluster: "b".into(),
                endpoint: "127.0.0.1:1".into(),
                detail: "connection refused".into(),
            },
            PairingError::PeerWithoutCatalog {
                cluster: "b".into(),
                endpoint: "127.0.0.1:1".into(),
                detail: "unimplemented".into(),
            },
            PairingError::kube(
                "a",
                "updating ServiceAccount ferry-system/p1",
                Some(ObjectRef {
                    api_version: "v1".into(),
                    kind: "ServiceAccount".into(),
                    namespace: "ferry-system".into(),
                    name: "p1".into(),
                }),
            )(conflict),
            PairingError::Timeout {
                what: "checking the pair".into(),
                cluster: "b".into(),
                seconds: 10,
            },
            PairingError::Internal {
                detail: "impossible".into(),
            },
        ];
        let errors: Vec<&dyn ServiceError> = errors.iter().map(|e| e as _).collect();
        ferry_rpc::contract::assert_round_trip(&errors).await;
    }
}
