//! Errors of the scheduler, and the one place that turns them into gRPC statuses
//! carrying a `ferry.v1.ErrorDetail` (code, message, next step).
//!
//! Policy: a [`SchedulerError`] refuses a request or stops the service. A run whose job
//! fails is not an error of the scheduler: the job's own `ErrorDetail` is kept in the
//! run (see [`crate::jobs::JobError`]), and the run ends FAILED.

use ferry_proto::v1::{ErrorCode, ErrorDetail};
use tonic::{Code, Status};

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

    /// The gRPC code, the detail code and the next step for the user.
    fn classify(&self) -> (Code, ErrorCode, String) {
        match self {
            SchedulerError::InvalidArgument { hint, .. } => (
                Code::InvalidArgument,
                ErrorCode::InvalidArgument,
                hint.clone(),
            ),
            SchedulerError::Unsupported { hint, .. } => (
                Code::Unimplemented,
                ErrorCode::InvalidArgument,
                hint.clone(),
            ),
            SchedulerError::NotFound { .. } => (
                Code::NotFound,
                ErrorCode::NotFound,
                "list schedules with ListSchedules; name one by its id or its name".into(),
            ),
            SchedulerError::NameTaken { .. } => (
                Code::AlreadyExists,
                ErrorCode::AlreadyExists,
                "pick another name, or delete the existing schedule first".into(),
            ),
            SchedulerError::RunInProgress { run_id, job_id, .. } => {
                let job = if job_id.is_empty() {
                    String::new()
                } else {
                    format!(", or cancel its job {job_id} with CancelJob")
                };
                (
                    Code::FailedPrecondition,
                    ErrorCode::Conflict,
                    format!("wait for run {run_id} to finish (ListRuns shows it){job}"),
                )
            }
            SchedulerError::Upstream { error } => (
                if error.retryable {
                    Code::Unavailable
                } else {
                    Code::FailedPrecondition
                },
                ErrorCode::try_from(error.detail.code).unwrap_or(ErrorCode::Internal),
                error.detail.hint.clone(),
            ),
            SchedulerError::Access(e) => (
                e.code(),
                match e.code() {
                    Code::Unauthenticated => ErrorCode::Unauthenticated,
                    Code::PermissionDenied => ErrorCode::PermissionDenied,
                    _ => ErrorCode::Unreachable,
                },
                e.hint().into(),
            ),
            SchedulerError::NotYours { .. } => (
                Code::PermissionDenied,
                ErrorCode::PermissionDenied,
                "ask its creator or an administrator".into(),
            ),
            SchedulerError::Store(_) => (
                Code::Internal,
                ErrorCode::Internal,
                "check the scheduler's data directory (scheduler.db): disk space and \
                 permissions"
                    .into(),
            ),
            SchedulerError::Internal(_) => (
                Code::Internal,
                ErrorCode::Internal,
                "report this as a bug".into(),
            ),
        }
    }

    /// The error as a status or a run carries it.
    pub fn detail(&self) -> ErrorDetail {
        let (_, code, hint) = self.classify();
        ferry_rpc::error_detail(code, self.to_string(), hint)
    }

    /// The error as an RPC answer.
    pub fn to_status(&self) -> Status {
        let (code, _, _) = self.classify();
        ferry_rpc::status(code, self.detail())
    }
}

impl From<SchedulerError> for Status {
    fn from(e: SchedulerError) -> Self {
        e.to_status()
    }
}
