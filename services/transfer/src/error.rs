//! Errors of the transfer service.
//!
//! Policy: a [`TransferError`] stops a job (or refuses a request). Problems with one
//! object or one volume are not errors of the job until the job decides so: they are
//! failed `ObjectOutcome`s / `VolumeOutcome`s in the report, next to what worked.
//! Every variant names the cluster, the object or volume, and the next step; every one
//! maps to one `ErrorDetail` (for job reports) and one `tonic::Status` (for RPCs) here,
//! in one place.

use ferry_proto::v1::{ErrorCode, ErrorDetail, ObjectRef as ProtoObjectRef};
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
        "pre-flight on cluster {cluster} found {} problem(s): {}; fix them (or map them with \
         the namespace/storage-class mappings) and start the migration again",
        problems.len(), problems.join("; ")
    )]
    Preflight {
        cluster: String,
        problems: Vec<String>,
        missing_prerequisite: bool,
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
        match self {
            TransferError::Access(e) => match e.code() {
                Code::Unauthenticated => ErrorCode::Unauthenticated,
                Code::PermissionDenied => ErrorCode::PermissionDenied,
                _ => ErrorCode::Unreachable,
            },
            TransferError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            TransferError::JobNotFound { .. } => ErrorCode::NotFound,
            TransferError::UnknownCluster { .. } => ErrorCode::NotFound,
            TransferError::Cluster { .. } => ErrorCode::Unreachable,
            TransferError::Kube { source, .. } => match source.as_ref() {
                ferry_kube::Error::NamespaceNotFound { .. } => ErrorCode::NotFound,
                ferry_kube::Error::InvalidSpec { .. } => ErrorCode::InvalidArgument,
                e if !e.is_permanent() => ErrorCode::Unreachable,
                e if e.to_string().contains("forbidden") => ErrorCode::PermissionDenied,
                _ => ErrorCode::Internal,
            },
            TransferError::Object { .. } => ErrorCode::PermissionDenied,
            TransferError::Preflight {
                missing_prerequisite,
                ..
            } => {
                if *missing_prerequisite {
                    ErrorCode::MissingPrerequisite
                } else {
                    ErrorCode::PermissionDenied
                }
            }
            TransferError::Volume { .. } => ErrorCode::Volume,
            TransferError::Agent { code, .. } | TransferError::Handover { code, .. } => *code,
            TransferError::Repository { source, .. } => repo_code(source),
            TransferError::RestorePointNotFound { .. } => ErrorCode::NotFound,
            TransferError::ApplyFailed { .. } => ErrorCode::Conflict,
            TransferError::Cancelled { .. } => ErrorCode::Cancelled,
            TransferError::Interrupted { .. } => ErrorCode::Internal,
            TransferError::Store(_) | TransferError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The cluster the error concerns, if any.
    fn cluster(&self) -> String {
        match self {
            TransferError::Cluster { cluster, .. }
            | TransferError::UnknownCluster { cluster, .. }
            | TransferError::Kube { cluster, .. }
            | TransferError::Object { cluster, .. }
            | TransferError::Preflight { cluster, .. }
            | TransferError::Volume { cluster, .. }
            | TransferError::Agent { cluster, .. }
            | TransferError::ApplyFailed { cluster, .. } => cluster.clone(),
            TransferError::Access(e) => e.cluster().unwrap_or_default().to_owned(),
            _ => String::new(),
        }
    }

    /// The error as a job report or a status carries it.
    pub fn detail(&self) -> ErrorDetail {
        let hint = match self {
            TransferError::Cluster { hint, .. }
            | TransferError::UnknownCluster { hint, .. }
            | TransferError::Object { hint, .. }
            | TransferError::Volume { hint, .. }
            | TransferError::Agent { hint, .. }
            | TransferError::Handover { hint, .. }
            | TransferError::Repository { hint, .. }
            | TransferError::RestorePointNotFound { hint, .. }
            | TransferError::Interrupted { hint, .. } => hint.clone(),
            TransferError::InvalidArgument { .. } => "fix the request and send it again".into(),
            TransferError::Preflight { .. } => {
                "create what is missing on the destination or map it, then start again".into()
            }
            TransferError::Access(e) => e.hint().into(),
            TransferError::Cancelled { .. } => String::new(),
            _ => String::new(),
        };
        let object = match self {
            TransferError::Object { object, .. } => Some(proto_object(object)),
            _ => None,
        };
        ErrorDetail {
            code: self.code() as i32,
            message: self.to_string(),
            object,
            cluster: self.cluster(),
            hint,
        }
    }

    /// The error as an RPC answer.
    pub fn to_status(&self) -> Status {
        let code = match self.code() {
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::AlreadyExists | ErrorCode::Conflict => Code::AlreadyExists,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::Unreachable => Code::Unavailable,
            ErrorCode::MissingPrerequisite | ErrorCode::WrongKey => Code::FailedPrecondition,
            ErrorCode::RepositoryLocked => Code::Aborted,
            ErrorCode::Integrity => Code::DataLoss,
            ErrorCode::Cancelled => Code::Cancelled,
            ErrorCode::Timeout => Code::DeadlineExceeded,
            ErrorCode::Volume => Code::FailedPrecondition,
            ErrorCode::Internal | ErrorCode::Unspecified => Code::Internal,
        };
        ferry_rpc::status(code, self.detail())
    }
}

impl From<TransferError> for Status {
    fn from(e: TransferError) -> Self {
        e.to_status()
    }
}

fn repo_code(e: &ferry_repo::Error) -> ErrorCode {
    ferry_rpc::repo_error_parts(e).1
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
        (None, Code::Unavailable) => ErrorCode::Unreachable,
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
