//! The agent's errors and their kinds in the error contract (crates/rpc, docs/errors.md),
//! the one place that decides how each reads to a client.

use std::borrow::Cow;

use ferry_proto::v1::ErrorCode;
use ferry_rpc::{Kind, ServiceError};
use tonic::Status;

/// Everything an agent request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A profile is missing, unusable, or opens the wrong repository.
    #[error(transparent)]
    Profile(#[from] ferry_profile::ProfileError),

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

    /// The repository engine failed; `context` says at which step and on what.
    #[error("{context}: {source}")]
    Repo {
        context: String,
        #[source]
        source: Box<ferry_repo::Error>,
    },

    /// The agent is draining for shutdown and takes no new work.
    #[error("agent {node} is shutting down; retry on the agent after it restarts")]
    ShuttingDown { node: String },
}

impl AgentError {
    pub(crate) fn repo(context: impl Into<String>) -> impl FnOnce(ferry_repo::Error) -> Self {
        let context = context.into();
        move |source| AgentError::Repo {
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        AgentError::InvalidArgument {
            field,
            detail: detail.into(),
        }
    }

    /// The kind of failure and the next step for the user.
    fn class(&self) -> (Kind, &'static str) {
        match self {
            AgentError::Profile(e) => e.kind(),
            AgentError::InvalidArgument { .. } => {
                (Kind::new(ErrorCode::InvalidArgument), "fix the request")
            }
            AgentError::PathNotAllowed { .. } => (
                Kind::new(ErrorCode::PermissionDenied),
                "add the directory with --allow-root when starting the agent",
            ),
            AgentError::Volume { .. } => (
                Kind::new(ErrorCode::Volume),
                "check that the volume is mounted on this node at that path",
            ),
            AgentError::DuplicateOperation(_) => (
                Kind::new(ErrorCode::AlreadyExists),
                "pick a unique operation_id",
            ),
            AgentError::ShuttingDown { .. } => (
                Kind::new(ErrorCode::Unreachable),
                "retry once the agent is back",
            ),
            AgentError::Repo { source, .. } => match source.as_ref() {
                ferry_repo::Error::Corrupt { .. } | ferry_repo::Error::UnsafeName { .. } => (
                    Kind::new(ErrorCode::Integrity),
                    "run Verify with read_data to list every damaged object",
                ),
                e => ferry_profile::repo_kind(e),
            },
        }
    }
}

impl ServiceError for AgentError {
    fn kind(&self) -> Kind {
        self.class().0
    }

    fn hint(&self) -> Cow<'_, str> {
        self.class().1.into()
    }

    fn field(&self) -> Option<&str> {
        match self {
            AgentError::InvalidArgument { field, .. } => Some(field),
            AgentError::Profile(e) => e.field(),
            _ => None,
        }
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_profile::ProfileError;
    use ferry_repo::Error as R;

    /// One error of each kind the agent produces reaches a gRPC client with the code of
    /// the one table (crates/rpc) and the same detail types as from every service.
    #[tokio::test]
    async fn every_kind_reaches_a_client_by_the_one_table() {
        let repo = |source| AgentError::Repo {
            context: "backing up /data/db".into(),
            source: Box::new(source),
        };
        let errors = [
            AgentError::invalid("source_path", "empty; give an absolute path"),
            AgentError::Profile(ProfileError::NotFound {
                name: "main".into(),
                dir: "/etc/ferry/profiles".into(),
            }),
            AgentError::DuplicateOperation("op-1".into()),
            AgentError::PathNotAllowed {
                path: "/etc".into(),
                allowed: "/data".into(),
            },
            AgentError::ShuttingDown { node: "n1".into() },
            AgentError::Volume {
                path: "/data/db".into(),
                detail: "missing".into(),
            },
            repo(R::WrongKey {
                repo: "s3:http://127.0.0.1:9000/ferry/p".into(),
                fingerprint: "SHA256:x".into(),
                keys: Vec::new(),
            }),
            repo(R::Corrupt {
                what: "pack p1".into(),
                detail: "bad MAC".into(),
            }),
            repo(R::Locked {
                repo: "r".into(),
                key: "locks/l1".into(),
                holder: None,
            }),
            repo(R::Cancelled),
            repo(R::Internal("impossible".into())),
        ];
        let errors: Vec<&dyn ServiceError> = errors.iter().map(|e| e as _).collect();
        ferry_rpc::contract::assert_round_trip(&errors).await;
    }
}
