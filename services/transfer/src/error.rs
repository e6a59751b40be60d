//! Errors of the transfer service.
//!
//! Policy: a [`TransferError`] stops a job (or refuses a request). Problems with one
//! object or one volume are not errors of the job until the job decides so: they are
//! failed `ObjectOutcome`s / `VolumeOutcome`s in the report, next to what worked.
//! Every variant names the cluster, the object or volume, and the next step; its kind
//! in the error contract (crates/rpc, docs/errors.md) is decided here, in one place, and
//! gives one `ErrorDetail` (for job reports) and one `tonic::Status` (for RPCs).

use std::borrow::Cow;

use ferry_proto::v1::{ErrorCode, ErrorDetail, ObjectRef as ProtoObjectRef};
use ferry_rpc::{Kind, ServiceError};
use tonic::{Code, Status};

/// An error that stops a job or refuses a request.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The caller is unknown, or may not do what the request would do on their behalf;
    /// nothing was started.
    #[error(transparent)]
    Access(#[from] ferry_authz::AuthzError),

    /// A request field is missing or malformed; nothing was started.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },

    /// No job with this id.
    #[error("job {id} not found; list jobs with `ferry jobs list`")]
    JobNotFound { id: String },

    /// A cluster reference names no cluster this service knows (no such pair or
    /// context).
    #[error("cluster {cluster}: {message}; {hint}")]
    UnknownCluster {
        cluster: String,
        message: String,
        hint: String,
    },

    /// A cluster reference could not be turned into a client.
    #[error("cluster {cluster}: {message}; {hint}")]
    Cluster {
        cluster: String,
        message: String,
        hint: String,
    },

    /// A step of ferry-kube failed as a whole (discovery, a list, activation).
    #[error("{step} on cluster {cluster}: {source}")]
    Kube {
        step: &'static str,
        cluster: String,
        #[source]
        source: Box<ferry_kube::Error>,
    },

    /// Reading or writing one Kubernetes object failed in a way that stops the step.
    #[error("{action} {object} on cluster {cluster}: {message}; {hint}")]
    Object {
        action: &'static str,
        cluster: String,
        object: Box<ferry_kube::ObjectRef>,
        message: String,
        hint: String,
    },

    /// Pre-flight found problems on the destination; nothing was written.
    #[error(
        "pre-flight on cluster {cluster} found {} problem(s): {}; nothing was written{}; fix \
         them (or map them with the namespace/storage-class mappings) and start the migration \
         again",
        problems.len(), problems.join("; "),
        if planned.is_empty() { String::new() } else { format!(" ({planned})") }
    )]
    Preflight {
        cluster: String,
        problems: Vec<String>,
        missing_prerequisite: bool,
        /// What the apply would have written, e.g. "3 object(s) would have been applied
        /// into namespace shop: ..."; empty without a plan.
        planned: String,
    },

    /// A volume cannot be moved (no hostPath/local path, unbound claim).
    #[error("volume of claim {namespace}/{pvc} on cluster {cluster}: {message}; {hint}")]
    Volume {
        cluster: String,
        namespace: String,
        pvc: String,
        message: String,
        hint: String,
    },

    /// An agent could not be reached or refused or failed an operation.
    #[error("agent on cluster {cluster} (node {node}) {what}: {message}; {hint}")]
    Agent {
        cluster: String,
        node: String,
        /// What it was asked, naming the claim: "backing up claim data-db-0".
        what: String,
        code: ErrorCode,
        message: String,
        hint: String,
    },

    /// The repository could not be opened, read or written.
    #[error("repository of profile {profile}: {action}: {source}; {hint}")]
    Repository {
        profile: String,
        action: &'static str,
        hint: String,
        #[source]
        source: Box<ferry_repo::Error>,
    },

    /// The token issuer (the catalog) refused or failed to make the migration token.
    #[error("issuing the migration token through profile {profile}: {message}; {hint}")]
    Handover {
        profile: String,
        code: ErrorCode,
        message: String,
        hint: String,
    },

    /// The repository holds no restore point with this id (or none of the namespace
    /// the request named).
    #[error("restore point {id} not found in the repository of profile {profile}; {hint}")]
    RestorePointNotFound {
        id: String,
        profile: String,
        hint: String,
    },

    /// The restore point is outside what the profile may read: the profile was made from
    /// a migration token that named another namespace or restore point.
    #[error(
        "restore point {id} of namespace {namespace} is outside what profile {profile} may \
         read ({scope}, as its migration token named)"
    )]
    OutsideProfileScope {
        id: String,
        namespace: String,
        profile: String,
        scope: String,
    },

    /// Apply wrote some objects and failed others.
    #[error(
        "apply on cluster {cluster}: {failed} of {total} object(s) failed (first: {first}); \
         {applied} object(s) were applied and stay on the destination; fix the failures and \
         start the migration again (objects already applied are re-applied unchanged)"
    )]
    ApplyFailed {
        cluster: String,
        failed: usize,
        applied: usize,
        total: usize,
        first: String,
    },

    /// Cutover was asked of a job that is not a warm migration still syncing.
    #[error("job {id} cannot cut over: {why}; {hint}")]
    NoCutover {
        id: String,
        why: String,
        hint: String,
    },

    /// The job was cancelled.
    #[error("cancelled: {reason}")]
    Cancelled { reason: String },

    /// The service stopped while the job ran a step that cannot be repeated safely.
    #[error(
        "the transfer service stopped while step {step} was running, and that step cannot be \
         repeated safely; {hint}"
    )]
    Interrupted { step: String, hint: String },

    /// The state database failed.
    #[error("job state: {0}; check the transfer service's data directory")]
    Store(#[from] ferry_store::StoreError),

    /// A bug or an unexpected state in Ferry itself.
    #[error("internal error: {0}; report this as a bug")]
    Internal(String),
}

pub type Result<T, E = TransferError> = std::result::Result<T, E>;

impl TransferError {
    /// The same error naming the cluster `name` where it named it `key`: agents are
    /// found by a cluster's key (a pair's id), users know its name.
    pub(crate) fn naming(mut self, key: &str, name: &str) -> Self {
        if let TransferError::Cluster { cluster, .. }
        | TransferError::UnknownCluster { cluster, .. }
        | TransferError::Agent { cluster, .. } = &mut self
            && cluster == key
        {
            *cluster = name.to_owned();
        }
        self
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        TransferError::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    pub fn kube(step: &'static str, cluster: &str) -> impl FnOnce(ferry_kube::Error) -> Self {
        let cluster = cluster.to_owned();
        move |source| TransferError::Kube {
            step,
            cluster,
            source: Box::new(source),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self, TransferError::Cancelled { .. })
    }

    /// The error code clients branch on.
    pub fn code(&self) -> ErrorCode {
        ServiceError::kind(self).code
    }

    /// The error as a job report or a status carries it.
    pub fn detail(&self) -> ErrorDetail {
        ServiceError::detail(self)
    }

    /// The error as an RPC answer.
    pub fn to_status(&self) -> Status {
        ServiceError::to_status(self)
    }
}

impl ServiceError for TransferError {
    fn kind(&self) -> Kind {
        match self {
            TransferError::Access(e) => e.kind(),
            TransferError::InvalidArgument { .. } => Kind::new(ErrorCode::InvalidArgument),
            TransferError::JobNotFound { .. } => Kind::new(ErrorCode::NotFound),
            TransferError::UnknownCluster { .. } => Kind::new(ErrorCode::NotFound),
            TransferError::Cluster { .. } => Kind::new(ErrorCode::Unreachable),
            TransferError::Kube { source, .. } => kube_step_kind(source).0,
            TransferError::Object { .. } => Kind::new(ErrorCode::PermissionDenied),
            TransferError::Preflight {
                missing_prerequisite,
                ..
            } => Kind::new(if *missing_prerequisite {
                ErrorCode::MissingPrerequisite
            } else {
                ErrorCode::PermissionDenied
            }),
            TransferError::Volume { .. } => Kind::new(ErrorCode::Volume),
            TransferError::Agent { code, .. } | TransferError::Handover { code, .. } => {
                Kind::new(*code)
            }
            TransferError::Repository { source, .. } => ferry_profile::repo_kind(source).0,
            TransferError::RestorePointNotFound { .. } => Kind::new(ErrorCode::NotFound),
            TransferError::OutsideProfileScope { .. } => Kind::new(ErrorCode::PermissionDenied),
            TransferError::ApplyFailed { .. } | TransferError::NoCutover { .. } => {
                Kind::new(ErrorCode::Conflict)
            }
            TransferError::Cancelled { .. } => Kind::new(ErrorCode::Cancelled),
            TransferError::Interrupted { .. }
            | TransferError::Store(_)
            | TransferError::Internal(_) => Kind::new(ErrorCode::Internal),
        }
    }

    fn hint(&self) -> Cow<'_, str> {
        match self {
            TransferError::Cluster { hint, .. }
            | TransferError::UnknownCluster { hint, .. }
            | TransferError::Object { hint, .. }
            | TransferError::Volume { hint, .. }
            | TransferError::Agent { hint, .. }
            | TransferError::Handover { hint, .. }
            | TransferError::Repository { hint, .. }
            | TransferError::RestorePointNotFound { hint, .. }
            | TransferError::NoCutover { hint, .. }
            | TransferError::Interrupted { hint, .. } => hint.into(),
            TransferError::InvalidArgument { .. } => "fix the request and send it again".into(),
            TransferError::OutsideProfileScope { .. } => {
                "restore what the token named, or ask the source cluster for a migration token \
                 that names this restore point and make a profile from it"
                    .into()
            }
            TransferError::Preflight {
                missing_prerequisite: true,
                ..
            } => "create what is missing on the destination or map it, then start again".into(),
            TransferError::Preflight { .. } => {
                "give each right that is missing to whom its problem names, then start again".into()
            }
            TransferError::Access(e) => e.hint().into(),
            TransferError::Kube { source, .. } => kube_step_kind(source).1.into(),
            TransferError::ApplyFailed { .. } => {
                "fix the failures and start the migration again".into()
            }
            TransferError::JobNotFound { .. } => "list jobs with `ferry jobs list`".into(),
            TransferError::Store(_) => {
                "check the transfer service's data directory (disk space, permissions)".into()
            }
            TransferError::Internal(_) => "report this as a bug".into(),
            TransferError::Cancelled { .. } => "".into(),
        }
    }

    fn cluster(&self) -> &str {
        match self {
            TransferError::Cluster { cluster, .. }
            | TransferError::UnknownCluster { cluster, .. }
            | TransferError::Kube { cluster, .. }
            | TransferError::Object { cluster, .. }
            | TransferError::Preflight { cluster, .. }
            | TransferError::Volume { cluster, .. }
            | TransferError::Agent { cluster, .. }
            | TransferError::ApplyFailed { cluster, .. } => cluster,
            TransferError::Access(e) => e.cluster().unwrap_or_default(),
            _ => "",
        }
    }

    fn object(&self) -> Option<ProtoObjectRef> {
        match self {
            TransferError::Object { object, .. } => Some(proto_object(object)),
            _ => None,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            TransferError::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<TransferError> for Status {
    fn from(e: TransferError) -> Self {
        e.to_status()
    }
}

/// A ferry-kube step's failure: its own cases, else the Kubernetes API's answer as the
/// contract classifies it.
fn kube_step_kind(e: &ferry_kube::Error) -> (Kind, &'static str) {
    match e {
        ferry_kube::Error::NamespaceNotFound { .. } => (
            Kind::new(ErrorCode::NotFound),
            "check the namespace and the cluster it is read from",
        ),
        ferry_kube::Error::InvalidSpec { .. } => {
            (Kind::new(ErrorCode::InvalidArgument), "fix the request")
        }
        e => match e.kube_source() {
            Some(source) => ferry_rpc::kube_kind(source),
            None => (Kind::new(ErrorCode::Internal), "report this as a bug"),
        },
    }
}

/// A ferry-kube object reference as the API names it.
pub fn proto_object(o: &ferry_kube::ObjectRef) -> ProtoObjectRef {
    ProtoObjectRef {
        api_version: o.api_version.clone(),
        kind: o.kind.clone(),
        namespace: o.namespace.clone().unwrap_or_default(),
        name: o.name.clone(),
    }
}

/// Turns an agent's status into an error naming the volume and the agent.
pub fn agent_error(
    cluster: &str,
    node: &str,
    action: &'static str,
    pvc: &str,
    status: &Status,
) -> TransferError {
    let detail = ferry_rpc::detail(status);
    let code = match (&detail, status.code()) {
        (_, Code::Cancelled) => ErrorCode::Cancelled,
        (Some(d), _) => ErrorCode::try_from(d.code).unwrap_or(ErrorCode::Volume),
        // No detail: the agent did not answer this itself. Its connection or stream
        // broke (killed, restarted, network), so it is worth trying again.
        (None, Code::Unavailable | Code::Unknown | Code::Internal) => ErrorCode::Unreachable,
        (None, _) => ErrorCode::Volume,
    };
    let hint = detail
        .as_ref()
        .map(|d| d.hint.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            "check that the agent runs on that node and can read the volume's path".into()
        });
    TransferError::Agent {
        cluster: cluster.to_owned(),
        node: if node.is_empty() {
            "any".into()
        } else {
            node.to_owned()
        },
        what: format!("{action} claim {pvc}"),
        code,
        message: status.message().to_owned(),
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of each kind the transfer service produces reaches a gRPC client with
    /// the code of the one table (crates/rpc) and the same detail types as from every
    /// service.
    #[tokio::test]
    async fn every_kind_reaches_a_client_by_the_one_table() {
        let agent = |code| TransferError::Agent {
            cluster: "a".into(),
            node: "n1".into(),
            what: "backing up claim data-db-0".into(),
            code,
            message: "it failed".into(),
            hint: "see the agent's log".into(),
        };
        let errors = [
            TransferError::invalid("namespace", "empty"),
            TransferError::JobNotFound { id: "j1".into() },
            TransferError::Object {
                action: "creating",
                cluster: "b".into(),
                object: Box::new(ferry_kube::ObjectRef {
                    api_version: "apps/v1".into(),
                    kind: "StatefulSet".into(),
                    namespace: Some("shop".into()),
                    name: "db".into(),
                }),
                message: "forbidden".into(),
                hint: "grant the pair's credential create on statefulsets".into(),
            },
            TransferError::Access(ferry_authz::AuthzError::NoToken),
            TransferError::Cluster {
                cluster: "b".into(),
                message: "unreachable".into(),
                hint: "check the pair".into(),
            },
            TransferError::Preflight {
                cluster: "b".into(),
                problems: vec!["StorageClass fast is missing".into()],
                missing_prerequisite: true,
                planned: "2 object(s) would have been applied into namespace shop".into(),
            },
            TransferError::ApplyFailed {
                cluster: "b".into(),
                failed: 1,
                applied: 2,
                total: 3,
                first: "Service shop/db exists".into(),
            },
            TransferError::Volume {
                cluster: "a".into(),
                namespace: "shop".into(),
                pvc: "data-db-0".into(),
                message: "no local path".into(),
                hint: "use a hostPath or local volume".into(),
            },
            agent(ErrorCode::WrongKey),
            agent(ErrorCode::RepositoryLocked),
            agent(ErrorCode::Integrity),
            agent(ErrorCode::AlreadyExists),
            agent(ErrorCode::Timeout),
            TransferError::Cancelled {
                reason: "cancelled by alice".into(),
            },
            TransferError::Interrupted {
                step: "apply".into(),
                hint: "start the migration again".into(),
            },
        ];
        let errors: Vec<&dyn ServiceError> = errors.iter().map(|e| e as _).collect();
        ferry_rpc::contract::assert_round_trip(&errors).await;
    }
}
