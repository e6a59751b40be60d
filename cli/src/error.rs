//! The command line's errors. Each variant maps to one exit status, so scripts can tell
//! "repository missing" from "wrong key" from "interrupted" without parsing messages.

use std::path::PathBuf;

/// Everything a `ferry` command can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Arguments are missing or malformed. Exit status 2.
    #[error("{0}")]
    Usage(String),

    /// The key file is missing, unreadable or empty. Exit status 1.
    #[error(
        "key file {} (from --key-file or FERRY_KEY_FILE) {problem}; pass the key file the \
         repository was created with, or for a new repository create one with: \
         head -c 32 /dev/urandom > ferry.key",
        path.display()
    )]
    KeyFile { path: PathBuf, problem: String },

    /// Nothing answers at the repository location. Exit status 10.
    #[error(
        "no repository at {repo}: its config object does not exist; check -r/--repo \
         (or FERRY_REPOSITORY), or create one with: ferry repo -r {repo} init"
    )]
    RepositoryNotFound { repo: String },

    /// The key does not unlock the repository. Exit status 12.
    #[error(
        "wrong key for repository {repo}: key file {} does not unlock it; use the key file \
         the repository was created with",
        key_file.display()
    )]
    WrongKey { repo: String, key_file: PathBuf },

    /// `check` finished and found damage. Exit status 1.
    #[error(
        "check found {0} problem(s) (listed above); restore what you can from other \
         snapshots and back up again"
    )]
    CheckFailed(usize),

    /// Ctrl-C or SIGTERM stopped the command. Exit status 130.
    #[error("interrupted; no snapshot or partial state was made visible")]
    Interrupted,

    /// The repository engine failed. Exit status 1.
    #[error(transparent)]
    Repo(ferry_repo::Error),

    /// `ferry serve` could not start or stopped abnormally. Exit status 1.
    #[error("serve: {0}")]
    Serve(Box<crate::serve::ServeError>),

    /// `ferry service` could not start its component or it stopped abnormally. Exit
    /// status 1.
    #[error("service {component}: {source:#}")]
    Service {
        component: &'static str,
        source: anyhow::Error,
    },

    /// A call to a Ferry failed; the message names the call, the Ferry and the hint.
    /// Exit status 1.
    #[error(transparent)]
    Client(#[from] ferry_client::ClientError),

    /// `ferry version` reached no Ferry (it printed the client's version). Exit status 1.
    #[error("the server's version is unknown: {0}")]
    ServerVersion(String),

    /// `pair check` found failing checks. Exit status 1.
    #[error(
        "{0} pair check(s) failed (listed above); fix what their hints say and run `ferry pair check` again"
    )]
    PairCheckFailed(usize),

    /// Ctrl-C stopped following jobs that go on (no `--cancel-on-interrupt`). Exit
    /// status 14.
    #[error("{}", detached_message(ids))]
    Detached { ids: Vec<String> },

    /// A followed job ended without succeeding. Exit status 13.
    #[error(
        "job {id} ended {state} (report above); see it again with: ferry jobs get {id} --show-objects"
    )]
    JobEnded { id: String, state: String },

    /// A waited-for schedule run (an import policy's) ended without succeeding. Exit
    /// status 13.
    #[error("run {run} of {schedule} ended {state}: {reason}")]
    RunEnded {
        run: String,
        schedule: String,
        state: String,
        reason: String,
    },

    /// Writing the command's output failed (e.g. a closed pipe). Exit status 1.
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ferry_repo::Error> for Error {
    fn from(e: ferry_repo::Error) -> Self {
        match e {
            ferry_repo::Error::Cancelled => Error::Interrupted,
            e => Error::Repo(e),
        }
    }
}

impl From<crate::serve::ServeError> for Error {
    fn from(e: crate::serve::ServeError) -> Self {
        Error::Serve(Box::new(e))
    }
}

/// "stopped following job J; it goes on: ..." with the commands that follow and
/// cancel each job.
fn detached_message(ids: &[String]) -> String {
    let mut text = match ids {
        [one] => format!("stopped following job {one}; it goes on"),
        _ => format!("stopped following jobs {}; they go on", ids.join(", ")),
    };
    for id in ids {
        text.push_str(&format!(
            "\n  follow it: ferry jobs watch {id}\n  cancel it: ferry jobs cancel {id}"
        ));
    }
    text
}

impl Error {
    /// The process exit status for this error (restic's numbering where it has one).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::RepositoryNotFound { .. } => 10,
            Error::WrongKey { .. } => 12,
            Error::Interrupted => 130,
            Error::JobEnded { .. } | Error::RunEnded { .. } => 13,
            Error::Detached { .. } => 14,
            Error::KeyFile { .. }
            | Error::CheckFailed(_)
            | Error::Repo(_)
            | Error::Serve(_)
            | Error::Service { .. }
            | Error::Client(_)
            | Error::ServerVersion(_)
            | Error::PairCheckFailed(_)
            | Error::Output(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(
            Error::RepositoryNotFound { repo: "r".into() }.exit_code(),
            10
        );
        let wrong = Error::WrongKey {
            repo: "r".into(),
            key_file: "k".into(),
        };
        assert_eq!(wrong.exit_code(), 12);
        assert_eq!(Error::from(ferry_repo::Error::Cancelled).exit_code(), 130);
        assert_eq!(Error::CheckFailed(3).exit_code(), 1);
        let detached = Error::Detached {
            ids: vec!["j1".into(), "j2".into()],
        };
        assert_eq!(detached.exit_code(), 14);
        let text = detached.to_string();
        assert!(
            text.starts_with("stopped following jobs j1, j2; they go on")
                && text.contains("cancel it: ferry jobs cancel j1")
                && text.contains("cancel it: ferry jobs cancel j2"),
            "{text}"
        );
    }
}
