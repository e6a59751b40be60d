//! The crate's error type: callers tell "repository missing" from "wrong key" from
//! "network down" by variant, never by parsing strings.

use std::path::PathBuf;

use crate::backend::BackendError;

/// Everything that can go wrong in the repository engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The user's key did not unwrap the master key (AES-GCM tag mismatch).
    #[error(
        "wrong key for repository {repo}: the key does not unwrap the master key; \
         use the key file the repository was initialised with"
    )]
    WrongKey { repo: String },

    /// A repository object, snapshot or blob does not exist.
    #[error("{what} not found; {hint}")]
    NotFound { what: String, hint: String },

    /// Stored bytes failed authentication, hashing or parsing.
    #[error("corrupt {what}: {detail}; run `check --read-data` to list every damaged object")]
    Corrupt { what: String, detail: String },

    /// A local file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The storage backend failed (after its own retries).
    #[error(transparent)]
    Backend(#[from] BackendError),

    /// `init` found a repository already there.
    #[error("a repository already exists at {repo}: open it instead, or choose an empty location")]
    AlreadyExists { repo: String },

    /// A tree names an entry that would land outside the restore target.
    #[error("unsafe entry name {name:?} in tree {tree}: refusing to restore it")]
    UnsafeName { name: String, tree: String },

    /// Options, URLs or inputs the caller passed are not usable.
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },

    /// The repository was written by a newer format version.
    #[error(
        "repository format version {found} is not supported (this build reads {supported}); \
         upgrade ferry"
    )]
    UnsupportedVersion { found: u32, supported: u32 },

    /// The caller's cancellation token fired.
    #[error("operation cancelled")]
    Cancelled,

    /// A worker task panicked or was aborted: a bug, not an environment problem.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when retrying the same operation later may succeed (network, throttling).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Backend(e) => e.is_transient(),
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    /// True when the error says something does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Backend(e) => e.is_not_found(),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn join(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("worker task failed: {e}"))
    }
}
