//! The crate's error type: callers tell "repository missing" from "wrong key" from
//! "network down" by variant, never by parsing strings.

use std::path::PathBuf;

use crate::backend::BackendError;
use crate::keys::KeyInfo;
use crate::lock::LockInfo;

fn wrong_key_message(repo: &str, fingerprint: &str, keys: &[KeyInfo]) -> String {
    let listed: Vec<String> = keys.iter().map(ToString::to_string).collect();
    format!(
        "wrong key for repository {repo}: this key (fingerprint {fingerprint}) opens none of \
         the repository's keys: {}; use one of those keys, or add this key with \
         `ferry repo key add` using a key that works",
        listed.join(", ")
    )
}

fn locked_message(repo: &str, key: &str, holder: Option<&LockInfo>) -> String {
    let who = match holder {
        Some(h) => format!("{h}"),
        None => "an unreadable lock object".into(),
    };
    format!(
        "repository {repo} is locked by {key}: {who}; wait for it to finish, or if that \
         process is gone, remove the lock with `ferry repo unlock` once it has expired \
         (`unlock --remove-all` removes it at once)"
    )
}

fn skew_message(repo: &str, store_minus_local_ms: i64, max: std::time::Duration) -> String {
    let skew = std::time::Duration::from_millis(store_minus_local_ms.unsigned_abs());
    let direction = if store_minus_local_ms < 0 {
        "ahead of"
    } else {
        "behind"
    };
    format!(
        "this machine's clock is {:.0} s {direction} the clock of {repo}, more than the \
         {:.0} s allowed: prune judges other writers' locks and the age of packs by time, \
         so it refuses; fix the clock (NTP) or raise the limit (--max-clock-skew)",
        skew.as_secs_f64(),
        max.as_secs_f64()
    )
}

/// Everything that can go wrong in the repository engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The user's key unwraps the master key in none of the repository's key slots.
    /// The message names the key given (by fingerprint) and every key that would work;
    /// it never holds key material.
    #[error("{}", wrong_key_message(.repo, .fingerprint, .keys))]
    WrongKey {
        repo: String,
        /// The fingerprint of the key given, in this repository.
        fingerprint: String,
        /// The repository's keys, the primary first.
        keys: Vec<KeyInfo>,
    },

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
        "repository format version {found} is not supported (this build reads versions up to \
         {supported}); upgrade ferry"
    )]
    UnsupportedVersion { found: u32, supported: u32 },

    /// Another holder's lock conflicts with the one asked for: a writer met prune's
    /// exclusive lock, or prune/forget met any live lock. Nothing was changed.
    #[error("{}", locked_message(.repo, .key, .holder.as_deref()))]
    Locked {
        repo: String,
        /// The conflicting lock object.
        key: String,
        /// Its contents; `None` when it does not parse.
        holder: Option<Box<LockInfo>>,
    },

    /// The caller's own lock could not be refreshed for so long that a prune elsewhere
    /// may have taken it for stale; the caller stopped before committing anything.
    #[error(
        "the {purpose} lock {key} could not be refreshed in time, so a prune may have \
         treated it as stale; nothing was committed; check the connection to the store \
         and run the {purpose} again"
    )]
    LockLost { purpose: String, key: String },

    /// This machine's clock and the store's disagree by more than prune allows.
    #[error("{}", skew_message(.repo, *.store_minus_local_ms, *.max))]
    ClockSkew {
        repo: String,
        /// The store's clock minus this machine's, in milliseconds.
        store_minus_local_ms: i64,
        /// The allowed skew.
        max: std::time::Duration,
    },

    /// Prune or forget found a state in which deleting could lose data (a listing that
    /// failed or is incomplete, an unreadable index, a snapshot naming data no index
    /// lists) and stopped before deleting anything.
    #[error("{action} refused: {reason}")]
    Refused {
        action: &'static str,
        reason: String,
    },

    /// Input from outside the process (a repository's config or objects) asks for more
    /// than this build allows: memory, bytes or time. Refused before anything of that
    /// size was allocated.
    #[error("{what} is {found}, over this build's limit of {limit}; {hint}")]
    TooLarge {
        what: String,
        found: u64,
        limit: u64,
        hint: String,
    },

    /// Something inside a backed-up or restored tree was swapped for a symbolic link
    /// (or another kind of entry) while Ferry worked on it. Ferry never follows links
    /// inside a volume, so nothing outside it was read or written.
    #[error(
        "{path} became {found} during the {operation}; Ferry never follows symbolic links \
         or opens special files inside a volume, so nothing outside it was touched; run the \
         {operation} again once nothing else is changing the volume"
    )]
    Swapped {
        operation: &'static str,
        path: PathBuf,
        found: &'static str,
    },

    /// A sync restore found files of its target that are no longer as the snapshot
    /// restored there last left them: someone else wrote there since. Refused before
    /// anything in the target changed.
    #[error(
        "{target} changed since snapshot {snapshot} was restored there: {}; nothing was \
         changed",
        changed_list(.changed, *.more)
    )]
    DestinationChanged {
        target: PathBuf,
        snapshot: String,
        /// The first few changed paths, relative to the target.
        changed: Vec<String>,
        /// How many more changed.
        more: usize,
    },

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

    /// True when another process's lock stopped the call ([`Error::Locked`]) or the
    /// caller's own lock lapsed ([`Error::LockLost`]): nothing was changed, and running
    /// it again later (after the prune or backup holding the lock) may succeed.
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Locked { .. } | Error::LockLost { .. })
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

fn changed_list(changed: &[String], more: usize) -> String {
    let mut text = changed.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}
