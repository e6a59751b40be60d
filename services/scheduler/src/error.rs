//! Errors of the scheduler, and the one place that decides their kinds in the error
//! contract (crates/rpc, docs/errors.md).
//!
//! Policy: a [`SchedulerError`] refuses a request or stops the service. A run whose job
//! fails is not an error of the scheduler: the job's own `ErrorDetail` is kept in the
//! run (see [`crate::jobs::JobError`]), and the run ends FAILED.

use std::borrow::Cow;

use ferry_proto::v1::{ErrorCode, ErrorDetail};
use ferry_rpc::{Kind, ServiceError};
use tonic::Status;

/// Everything a scheduler request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// A request field is missing or malformed; nothing was changed.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: String,
        message: String,
        /// The next step for the user.
        hint: String,
    },

    /// Something the API allows that this build does not do yet.
    #[error("{what} is not supported by this scheduler yet")]
    Unsupported { what: String, hint: String },

    /// No schedule has this id or name.
    #[error("schedule {schedule:?} not found")]
    NotFound { schedule: String },

    /// Another schedule has this name.
    #[error("a schedule named {name:?} already exists")]
    NameTaken { name: String },

    /// RunNow while a run of the same schedule is going: runs never overlap.
    #[error(
        "schedule {schedule:?} has run {run_id} in progress; runs of one schedule never overlap"
    )]
    RunInProgress {
        schedule: String,
        run_id: String,
        /// The job the run is waiting on, if it started one.
        job_id: String,
    },

    /// Another service could not answer what the request needs checked (the catalog,
    /// for an import policy's profile).
    #[error("{}", error.detail.message)]
    Upstream {
        /// What it said, and whether asking again later may work.
        error: crate::jobs::JobError,
    },

    /// The caller is unknown, or may not touch this schedule.
    #[error(transparent)]
    Access(#[from] ferry_authz::AuthzError),

    /// The caller may not see or change this schedule: it is someone else's.
    #[error("{user} did not create schedule {schedule:?} and is not an administrator")]
    NotYours { user: String, schedule: String },

    /// The state database failed.
    #[error("schedule state: {0}")]
    Store(#[from] ferry_store::StoreError),

    /// A bug or an unexpected state in the scheduler itself.
    #[error("internal error in the scheduler: {0}")]
    Internal(String),
}

pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;

impl SchedulerError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        SchedulerError::InvalidArgument {
            field: field.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// The error as a status or a run carries it.
    pub fn detail(&self) -> ErrorDetail {
        ServiceError::detail(self)
    }

    /// The error as an RPC answer.
    pub fn to_status(&self) -> Status {
        ServiceError::to_status(self)
    }
}

impl ServiceError for SchedulerError {
    fn kind(&self) -> Kind {
        match self {
            SchedulerError::InvalidArgument { .. } => Kind::new(ErrorCode::InvalidArgument),
            SchedulerError::Unsupported { .. } => Kind::unsupported(ErrorCode::InvalidArgument),
            SchedulerError::NotFound { .. } => Kind::new(ErrorCode::NotFound),
            SchedulerError::NameTaken { .. } => Kind::new(ErrorCode::AlreadyExists),
            SchedulerError::RunInProgress { .. } => Kind::new(ErrorCode::Conflict),
            SchedulerError::Upstream { error } => {
                let code = ErrorCode::try_from(error.detail.code).unwrap_or(ErrorCode::Internal);
                // A dependency that may answer later is UNAVAILABLE whatever it said; one
                // that refused will refuse again until its state changes.
                if error.retryable {
                    Kind::retry_later(code)
                } else {
                    Kind::precondition(code)
                }
            }
            SchedulerError::Access(e) => e.kind(),
            SchedulerError::NotYours { .. } => Kind::new(ErrorCode::PermissionDenied),
            SchedulerError::Store(_) | SchedulerError::Internal(_) => {
                Kind::new(ErrorCode::Internal)
            }
        }
    }

    fn hint(&self) -> Cow<'_, str> {
        match self {
            SchedulerError::InvalidArgument { hint, .. }
            | SchedulerError::Unsupported { hint, .. } => hint.into(),
            SchedulerError::NotFound { .. } => {
                "list schedules with ListSchedules; name one by its id or its name".into()
            }
            SchedulerError::NameTaken { .. } => {
                "pick another name, or delete the existing schedule first".into()
            }
            SchedulerError::RunInProgress { run_id, job_id, .. } => {
                let job = if job_id.is_empty() {
                    String::new()
                } else {
                    format!(", or cancel its job {job_id} with CancelJob")
                };
                format!("wait for run {run_id} to finish (ListRuns shows it){job}").into()
            }
            SchedulerError::Upstream { error } => error.detail.hint.as_str().into(),
            SchedulerError::Access(e) => e.hint().into(),
            SchedulerError::NotYours { .. } => "ask its creator or an administrator".into(),
            SchedulerError::Store(_) => "check the scheduler's data directory (scheduler.db): \
                                         disk space and permissions"
                .into(),
            SchedulerError::Internal(_) => "report this as a bug".into(),
        }
    }

    fn cluster(&self) -> &str {
        match self {
            SchedulerError::Upstream { error } => &error.detail.cluster,
            _ => "",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            SchedulerError::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<SchedulerError> for Status {
    fn from(e: SchedulerError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of each kind the scheduler produces reaches a gRPC client with the code
    /// of the one table (crates/rpc) and the same detail types as from every service.
    #[tokio::test]
    async fn every_kind_reaches_a_client_by_the_one_table() {
        let errors = [
            SchedulerError::invalid("every", "zero", "give an interval such as 1h"),
            SchedulerError::NotFound {
                schedule: "nightly".into(),
            },
            SchedulerError::NameTaken {
                name: "nightly".into(),
            },
            SchedulerError::RunInProgress {
                schedule: "nightly".into(),
                run_id: "r1".into(),
                job_id: "j1".into(),
            },
            SchedulerError::NotYours {
                user: "alice".into(),
                schedule: "nightly".into(),
            },
            SchedulerError::Access(ferry_authz::AuthzError::NoToken),
            SchedulerError::Upstream {
                error: crate::jobs::JobError {
                    detail: Box::new(ferry_rpc::error_detail(
                        ErrorCode::Unreachable,
                        "the catalog at 127.0.0.1:1 is unreachable",
                        "check that the catalog runs",
                    )),
                    retryable: true,
                },
            },
            SchedulerError::Internal("impossible".into()),
        ];
        let errors: Vec<&dyn ServiceError> = errors.iter().map(|e| e as _).collect();
        ferry_rpc::contract::assert_round_trip(&errors).await;
    }
}
