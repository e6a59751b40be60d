//! How repository and profile failures read to a client: their kind in the error
//! contract (crates/rpc) and the next step. One mapping for every service that opens
//! repositories through profiles; a service may still word a hint its own way (the
//! catalog names the key Secret, say).

use ferry_proto::v1::ErrorCode;
use ferry_rpc::Kind;

use crate::ProfileError;

/// The kind of a repository-engine failure and the next step.
pub fn repo_kind(e: &ferry_repo::Error) -> (Kind, &'static str) {
    use ferry_repo::Error as R;
    match e {
        R::WrongKey { .. } => (
            Kind::new(ErrorCode::WrongKey),
            "use one of the keys the message lists, or add this key with `ferry repo key add` \
             using a key that works",
        ),
        R::Corrupt { .. } | R::UnsafeName { .. } => (
            Kind::new(ErrorCode::Integrity),
            "run a check with read_data to list every damaged object",
        ),
        R::UnsupportedVersion { .. } => (
            Kind::precondition(ErrorCode::Internal),
            "upgrade ferry to read this repository",
        ),
        R::Cancelled => (Kind::new(ErrorCode::Cancelled), ""),
        R::Locked { .. } | R::LockLost { .. } => (
            Kind::new(ErrorCode::RepositoryLocked),
            "another writer or a prune holds the repository; retry when it is done (stale \
             locks lapse at their expiry, or remove them with `ferry repo unlock`)",
        ),
        R::ClockSkew { .. } => (
            Kind::precondition(ErrorCode::Internal),
            "set this host's clock right (NTP) and run it again",
        ),
        R::Refused { .. } => (
            Kind::precondition(ErrorCode::Integrity),
            "nothing was deleted; run a check, fix what it names, then prune again",
        ),
        R::DestinationChanged { .. } => (
            Kind::precondition(ErrorCode::Conflict),
            "copy away what should be kept, then run it again allowing the destination's \
             changes to be overwritten",
        ),
        R::Invalid { .. } => (
            Kind::new(ErrorCode::InvalidArgument),
            "fix the request or the profile",
        ),
        R::AlreadyExists { .. } => (
            Kind::new(ErrorCode::AlreadyExists),
            "use the existing repository",
        ),
        R::Io { .. } => (
            Kind::new(ErrorCode::Volume),
            "check the volume path, its permissions and free space on this node",
        ),
        e if e.is_not_found() => (
            Kind::new(ErrorCode::NotFound),
            "check the id and that the profile points at the right repository",
        ),
        e if e.is_transient() => (
            Kind::new(ErrorCode::Unreachable),
            "the object store is unreachable or overloaded; retry later",
        ),
        R::Backend(_) => (
            Kind::precondition(ErrorCode::PermissionDenied),
            "check the profile's endpoint, bucket and credentials",
        ),
        _ => (Kind::new(ErrorCode::Internal), "report this as a bug"),
    }
}

impl ProfileError {
    /// The kind of this failure and the next step.
    pub fn kind(&self) -> (Kind, &'static str) {
        match self {
            ProfileError::InvalidName { .. } => {
                (Kind::new(ErrorCode::InvalidArgument), "fix the request")
            }
            ProfileError::NotFound { .. } => (
                Kind::new(ErrorCode::NotFound),
                "create the profile on the agent's node or fix the request's profile name",
            ),
            ProfileError::Invalid { .. } => (
                Kind::precondition(ErrorCode::InvalidArgument),
                "fix the profile file",
            ),
            ProfileError::RepositoryMismatch { .. } => (
                Kind::precondition(ErrorCode::InvalidArgument),
                "point the profile back at the expected repository",
            ),
            ProfileError::TlsCertificate { .. } => (
                Kind::precondition(ErrorCode::Unreachable),
                "trust the endpoint's certificate on this node, or set verifyTls: false in the \
                 profile for a test setup",
            ),
            ProfileError::Repo { source, .. } => repo_kind(source),
            ProfileError::File { .. } | ProfileError::Seal { .. } => (
                Kind::new(ErrorCode::Internal),
                "check that the profiles directory is writable and its sealing key readable",
            ),
            ProfileError::Catalog { code, .. } => (
                Kind::precondition(*code),
                "check the profile with the catalog (`ferry profile list` names it) and that this \
                 component bears the deployment's internal credential",
            ),
            ProfileError::Internal { .. } => {
                (Kind::new(ErrorCode::Internal), "report this as a bug")
            }
        }
    }

    /// The request field at fault, if the request is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ProfileError::InvalidName { .. } => Some("repository.profile"),
            _ => None,
        }
    }
}
