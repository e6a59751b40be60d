//! The agent's errors, and the one place that turns them into gRPC statuses carrying a
//! `ferry.v1.ErrorDetail`, so clients branch on a code instead of parsing text.

use ferry_proto::v1::{ErrorCode, ErrorDetail};
use tonic::{Code, Status};

/// Everything an agent request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The request names a profile this agent does not have.
    #[error(
        "profile {name:?} not found in {dir}; create {dir}/{name}.yaml (see services/agent/README.md) \
         or use a profile this agent has"
    )]
    ProfileNotFound { name: String, dir: String },

    /// A profile exists but cannot be used.
    #[error("profile {name:?} ({path}) is not usable: {detail}")]
    ProfileInvalid {
        name: String,
        path: String,
        detail: String,
    },

    /// A request field is missing or malformed.
    #[error("invalid {field}: {detail}")]
    InvalidArgument { field: &'static str, detail: String },

    /// A path lies outside the directories this agent was allowed to touch.
    #[error(
        "{path} is outside the directories this agent may read and write ({allowed}); \
         start the agent with --allow-root for it, or pass a path under one of those"
    )]
    PathNotAllowed { path: String, allowed: String },

    /// A volume path is missing or unusable.
    #[error("volume path {path}: {detail}")]
    Volume { path: String, detail: String },

    /// Another running operation already uses this id.
    #[error("operation {0:?} is already running on this agent; pick a unique operation_id")]
    DuplicateOperation(String),

    /// The profile now points at a different repository than the caller expects.
    #[error(
        "profile {profile:?} opens repository {found}, the request expects {expected}; \
         the profile was changed to another repository: fix the profile or the request"
    )]
    RepositoryMismatch {
        profile: String,
        expected: String,
        found: String,
    },

    /// The S3 endpoint's TLS certificate was refused (unknown issuer, self-signed,
    /// wrong name, expired). Retrying does not help.
    #[error(
        "profile {profile:?}: the TLS certificate of S3 endpoint {endpoint} is not trusted \
         ({detail}); give the endpoint a certificate from a CA this node trusts, or, in a test \
         setup with a self-signed certificate only, set verifyTls: false in the profile"
    )]
    TlsCertificate {
        profile: String,
        endpoint: String,
        detail: String,
    },

    /// The repository engine failed; `context` says at which step and on what.
    #[error("{context}: {source}")]
    Repo {
        context: String,
        #[source]
        source: ferry_repo::Error,
    },

    /// The agent is draining for shutdown and takes no new work.
    #[error("agent {node} is shutting down; retry on the agent after it restarts")]
    ShuttingDown { node: String },
}

impl AgentError {
    pub(crate) fn repo(context: impl Into<String>) -> impl FnOnce(ferry_repo::Error) -> Self {
        let context = context.into();
        move |source| AgentError::Repo { context, source }
    }

    pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        AgentError::InvalidArgument {
            field,
            detail: detail.into(),
        }
    }

    /// The gRPC code, the detail code and the next step for the user.
    fn classify(&self) -> (Code, ErrorCode, &'static str) {
        match self {
            AgentError::ProfileNotFound { .. } => (
                Code::NotFound,
                ErrorCode::NotFound,
                "create the profile on the agent's node or fix the request's profile name",
            ),
            AgentError::ProfileInvalid { .. } => (
                Code::FailedPrecondition,
                ErrorCode::InvalidArgument,
                "fix the profile file",
            ),
            AgentError::InvalidArgument { .. } => (
                Code::InvalidArgument,
                ErrorCode::InvalidArgument,
                "fix the request",
            ),
            AgentError::PathNotAllowed { .. } => (
                Code::PermissionDenied,
                ErrorCode::PermissionDenied,
                "add the directory with --allow-root when starting the agent",
            ),
            AgentError::Volume { .. } => (
                Code::FailedPrecondition,
                ErrorCode::Volume,
                "check that the volume is mounted on this node at that path",
            ),
            AgentError::DuplicateOperation(_) => (
                Code::AlreadyExists,
                ErrorCode::AlreadyExists,
                "pick a unique operation_id",
            ),
            AgentError::RepositoryMismatch { .. } => (
                Code::FailedPrecondition,
                ErrorCode::InvalidArgument,
                "point the profile back at the expected repository",
            ),
            AgentError::TlsCertificate { .. } => (
                Code::FailedPrecondition,
                ErrorCode::Unreachable,
                "trust the endpoint's certificate on this node, or set verifyTls: false in the \
                 profile for a test setup",
            ),
            AgentError::ShuttingDown { .. } => (
                Code::Unavailable,
                ErrorCode::Unreachable,
                "retry once the agent is back",
            ),
            AgentError::Repo { source, .. } => match source {
                ferry_repo::Error::Corrupt { .. } | ferry_repo::Error::UnsafeName { .. } => (
                    Code::DataLoss,
                    ErrorCode::Integrity,
                    "run Verify with read_data to list every damaged object",
                ),
                e => ferry_rpc::repo_error_parts(e),
            },
        }
    }

    /// The detail a status carries for this error.
    pub fn detail(&self) -> ErrorDetail {
        let (_, code, hint) = self.classify();
        ErrorDetail {
            code: code as i32,
            message: self.to_string(),
            object: None,
            cluster: String::new(),
            hint: hint.to_string(),
        }
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        let (code, _, _) = e.classify();
        ferry_rpc::status(code, e.detail())
    }
}
