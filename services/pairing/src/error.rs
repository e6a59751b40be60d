//! The pairing service's errors, and the one place that turns them into gRPC statuses
//! carrying a `ferry.v1.ErrorDetail`, so clients branch on a code and show the hint.

use ferry_proto::v1::{ErrorCode, ErrorDetail, ObjectRef};
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

    /// The gRPC code, the detail code and the next step for the user.
    fn classify(&self) -> (Code, ErrorCode, String) {
        use PairingError as E;
        let new_token = "create a new token on the destination with `ferry pair token create` \
                         and accept that one";
        match self {
            E::InvalidArgument { .. } => (
                Code::InvalidArgument,
                ErrorCode::InvalidArgument,
                "fix the request".into(),
            ),
            E::MalformedToken { .. } => (
                Code::InvalidArgument,
                ErrorCode::InvalidArgument,
                "copy the whole token printed by `ferry pair token create` on the destination, \
                 from `ferry-pair-v1.` to its last character"
                    .into(),
            ),
            E::UnsupportedTokenVersion { .. } => (
                Code::InvalidArgument,
                ErrorCode::InvalidArgument,
                "run the same Ferry version on both clusters, or create the token with this one"
                    .into(),
            ),
            E::TokenExpired { .. } => (
                Code::FailedPrecondition,
                ErrorCode::InvalidArgument,
                format!("{new_token}, within its TTL (--ttl)"),
            ),
            E::TokenUsed { .. } => (
                Code::AlreadyExists,
                ErrorCode::AlreadyExists,
                format!("a token pairs once; list pairs with `ferry pair list`, or {new_token}"),
            ),
            E::TokenAltered { .. } => (
                Code::InvalidArgument,
                ErrorCode::Integrity,
                format!("copy the token again exactly as printed, or {new_token}"),
            ),
            E::TokenUnknown { .. } => (
                Code::NotFound,
                ErrorCode::NotFound,
                format!(
                    "the token was altered or made by another Ferry (or its data directory was reset); {new_token}"
                ),
            ),
            E::SelfPairing { .. } => (
                Code::InvalidArgument,
                ErrorCode::InvalidArgument,
                "create the token on the destination cluster and accept it on the source".into(),
            ),
            E::PairNotFound { .. } => (
                Code::NotFound,
                ErrorCode::NotFound,
                "list pairs with `ferry pair list`".into(),
            ),
            E::PairExists { .. } => (
                Code::AlreadyExists,
                ErrorCode::AlreadyExists,
                "pick another pair name, or delete the existing pair first".into(),
            ),
            E::WrongRole { .. } => (
                Code::FailedPrecondition,
                ErrorCode::InvalidArgument,
                "run this on the pair's source cluster".into(),
            ),
            E::ApiUnreachable { .. } => (
                Code::Unavailable,
                ErrorCode::Unreachable,
                "check that the API server URL is reachable from this cluster (network, \
                 firewall, the CA in the token); pass the right one with --api-server-url \
                 when creating the token"
                    .into(),
            ),
            E::CredentialRejected { .. } => (
                Code::PermissionDenied,
                ErrorCode::PermissionDenied,
                format!(
                    "the credential was revoked (its ServiceAccount deleted) or altered; delete \
                     the pair, then {new_token}"
                ),
            ),
            E::PermissionsMissing { .. } => (
                Code::PermissionDenied,
                ErrorCode::PermissionDenied,
                "check ClusterRole ferry-migrator on the destination and its binding to the \
                 pair's ServiceAccount in ferry-system (services/pairing/README.md lists the rules)"
                    .into(),
            ),
            E::PeerUnreachable { .. } => (
                Code::Unavailable,
                ErrorCode::Unreachable,
                "check that Ferry runs on the other cluster and that its endpoint is reachable \
                 from here; pass the right one with --ferry-endpoint when creating the token"
                    .into(),
            ),
            E::Peer { status, .. } | E::ProfileCheck { status, .. } => {
                let hint = ferry_rpc::detail(status)
                    .map(|d| d.hint)
                    .unwrap_or_default();
                (status.code(), peer_code(status), hint)
            }
            E::PeerLostPair { .. } => (
                Code::FailedPrecondition,
                ErrorCode::NotFound,
                "delete the pair here with `ferry pair delete` and pair the clusters again".into(),
            ),
            E::ProfileMissing { profile, cluster } => (
                Code::FailedPrecondition,
                ErrorCode::NotFound,
                format!(
                    "create profile {profile} on cluster {cluster} pointing at the same bucket \
                     and prefix as on the other cluster: `ferry --context {cluster} profile \
                     create {profile} --s3 ... --credentials-secret ... --key-secret ...`"
                ),
            ),
            E::ProfileReadOnly {
                profile, cluster, ..
            } => (
                Code::FailedPrecondition,
                ErrorCode::PermissionDenied,
                format!(
                    "the source writes restore points: give cluster {cluster} an export or \
                     migration profile {profile} (`ferry --context {cluster} profile create \
                     {profile} --kind migration ...`)"
                ),
            ),
            E::RepositoryMismatch {
                profile,
                cluster,
                peer_cluster,
                ..
            } => (
                Code::FailedPrecondition,
                ErrorCode::InvalidArgument,
                format!(
                    "create profile {profile} on cluster {peer_cluster} pointing at the same \
                     bucket/prefix as on cluster {cluster} (delete the wrong one first with \
                     `ferry --context {peer_cluster} profile delete {profile}`)"
                ),
            ),
            E::PeerWithoutCatalog { cluster, .. } => (
                Code::FailedPrecondition,
                ErrorCode::MissingPrerequisite,
                format!(
                    "run `ferry serve` (the same version as here) on cluster {cluster}: it \
                     hosts the catalog next to the pairing service"
                ),
            ),
            E::Timeout { .. } => (
                Code::DeadlineExceeded,
                ErrorCode::Timeout,
                "the other side is slow or the network drops packets; retry, or raise \
                 --peer-timeout-seconds"
                    .into(),
            ),
            E::ForgetRefused { .. } => (
                Code::PermissionDenied,
                ErrorCode::PermissionDenied,
                "delete the pair with `ferry pair delete` on one of its two clusters".into(),
            ),
            E::Kube { source, .. } => kube_classify(source),
            E::CredentialNotIssued { .. } => (
                Code::FailedPrecondition,
                ErrorCode::MissingPrerequisite,
                "kube-controller-manager's serviceaccount-token controller fills these Secrets; \
                 if the cluster does not run it, start ferry-pairing with \
                 --credential-kind=token-request"
                    .into(),
            ),
            E::Unseal { .. } => (
                Code::FailedPrecondition,
                ErrorCode::Integrity,
                "the data directory's secret.key changed or the database was copied from \
                 elsewhere; delete the pair and pair the clusters again"
                    .into(),
            ),
            E::Store { .. } => (
                Code::Internal,
                ErrorCode::Internal,
                "check that the data directory is writable and not full".into(),
            ),
            E::Internal { .. } => (
                Code::Internal,
                ErrorCode::Internal,
                "report this as a bug".into(),
            ),
        }
    }

    /// The detail a status carries for this error.
    pub fn detail(&self) -> ErrorDetail {
        let (_, code, hint) = self.classify();
        let object = match self {
            PairingError::Kube { object, .. } => object.as_deref().cloned(),
            _ => None,
        };
        ErrorDetail {
            code: code as i32,
            message: self.to_string(),
            object,
            cluster: self.cluster().to_string(),
            hint,
        }
    }
}

fn peer_code(status: &Status) -> ErrorCode {
    match ferry_rpc::detail(status) {
        Some(d) => ErrorCode::try_from(d.code).unwrap_or(ErrorCode::Internal),
        None => match status.code() {
            Code::Unavailable => ErrorCode::Unreachable,
            Code::DeadlineExceeded => ErrorCode::Timeout,
            Code::Unimplemented => ErrorCode::MissingPrerequisite,
            _ => ErrorCode::Internal,
        },
    }
}

/// Network-level failures, as opposed to the API answering with an error.
pub(crate) fn is_network(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

fn kube_classify(e: &kube::Error) -> (Code, ErrorCode, String) {
    match e {
        kube::Error::Api(s) => match s.code {
            401 => (
                Code::PermissionDenied,
                ErrorCode::PermissionDenied,
                "the cluster does not accept Ferry's credential; check the kubeconfig or \
                 in-cluster ServiceAccount Ferry runs with"
                    .into(),
            ),
            403 => (
                Code::PermissionDenied,
                ErrorCode::PermissionDenied,
                "grant Ferry's own identity the rights listed in services/pairing/README.md \
                 (it creates ServiceAccounts, ClusterRoles and bindings for pairs)"
                    .into(),
            ),
            404 => (
                Code::NotFound,
                ErrorCode::NotFound,
                "the object is gone; retry, or check who removed it".into(),
            ),
            409 => (
                Code::Aborted,
                ErrorCode::Conflict,
                "another writer changed the object at the same time; retry".into(),
            ),
            _ => (
                Code::Unavailable,
                ErrorCode::Unreachable,
                "the Kubernetes API failed; retry, and check the API server's health".into(),
            ),
        },
        e if is_network(e) => (
            Code::Unavailable,
            ErrorCode::Unreachable,
            "check that the Kubernetes API server is up and reachable from Ferry".into(),
        ),
        _ => (
            Code::Internal,
            ErrorCode::Internal,
            "report this as a bug".into(),
        ),
    }
}

impl From<PairingError> for Status {
    fn from(e: PairingError) -> Status {
        let (code, _, _) = e.classify();
        ferry_rpc::status(code, e.detail())
    }
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
}
