//! Object storage behind one async trait. Keys are relative, '/'-separated paths such as
//! `packs/ab/ab12…`; each backend maps them onto its own namespace (a directory, a
//! bucket prefix, a map).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

mod faulty;
mod insecure_tls;
mod local;
mod memory;
mod s3;
mod url;

pub use faulty::{FaultEffect, FaultRule, FaultyBackend};
pub use local::LocalBackend;
pub use memory::MemoryBackend;
pub use s3::{S3Backend, S3Options};
pub use url::{RepoUrl, open_backend};

/// The storage operation that failed, for error messages and fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    Get,
    GetRange,
    List,
    Delete,
    Head,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::GetRange => "get range of",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Head => "head",
        })
    }
}

/// Storage errors. Each names the backend and key; transient ones have already been
/// retried by the backend when it retries at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("{key} not found in {backend}")]
    NotFound { backend: String, key: String },

    #[error("{op} {key} in {backend}: {source}")]
    Io {
        backend: String,
        op: Op,
        key: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{op} {key} in {backend} failed after {attempts} attempt(s): {message}; \
         the store is unreachable or overloaded, retry later"
    )]
    Transient {
        backend: String,
        op: Op,
        key: String,
        attempts: u32,
        message: String,
        /// What the store said, as data: callers branch on it, never on `message`.
        reason: Reason,
    },

    #[error(
        "{op} {key} in {backend} was refused: {message}; \
         check the endpoint, bucket, credentials and permissions"
    )]
    Permanent {
        backend: String,
        op: Op,
        key: String,
        message: String,
        /// What the store said, as data: callers branch on it, never on `message`.
        reason: Reason,
    },

    #[error(
        "{op} {key}: short read from {backend}: wanted {wanted} bytes at offset {offset}, got {got}"
    )]
    ShortRead {
        backend: String,
        op: Op,
        key: String,
        offset: u64,
        wanted: u64,
        got: u64,
    },

    #[error("{op} {key}: injected fault")]
    Injected { op: Op, key: String },

    /// The object is larger than anything Ferry writes under that key; its body was
    /// not read.
    #[error(
        "{op} {key} in {backend}: the object is at least {size} bytes, over the {limit}-byte \
         limit for such objects; Ferry never writes one that large, so check who else \
         writes to the store"
    )]
    TooLarge {
        backend: String,
        op: Op,
        key: String,
        size: u64,
        limit: u64,
    },
}

/// Why a store refused or failed a call, carried from where the error is made so that
/// no caller has to read it back out of the message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Nothing more specific is known.
    #[default]
    Other,
    /// What an S3 server answered: its error code (`AccessDenied`, `NoSuchBucket`,
    /// `SlowDown`, ...; empty when the answer had no body, as to a HEAD) and the HTTP
    /// status.
    S3 {
        code: String,
        http_status: Option<u16>,
    },
    /// The endpoint's TLS certificate was not trusted (unknown issuer, self-signed,
    /// wrong name, expired); retrying does not help.
    UntrustedCertificate,
}

impl BackendError {
    /// What the store said, when it said something this crate understood.
    pub fn reason(&self) -> &Reason {
        match self {
            BackendError::Transient { reason, .. } | BackendError::Permanent { reason, .. } => {
                reason
            }
            _ => &Reason::Other,
        }
    }

    /// The store's own error code (S3's `Code`), if it sent one.
    pub fn store_code(&self) -> Option<&str> {
        match self.reason() {
            Reason::S3 { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of the store's answer, if it answered over HTTP.
    pub fn http_status(&self) -> Option<u16> {
        match self.reason() {
            Reason::S3 { http_status, .. } => *http_status,
            _ => None,
        }
    }

    /// True when a later retry of the same call may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::Transient { .. } | BackendError::Injected { .. } => true,
            BackendError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the repository root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the store last wrote the object, by the store's clock (S3's LastModified, a
    /// file's mtime). Prune compares it with the local clock to refuse on clock skew and
    /// judges other writers' locks by it; `None` when the store does not say.
    pub modified: Option<time::OffsetDateTime>,
}

/// A repository's storage. Implementations must make `put` atomic: a reader sees the
/// whole object or none of it, never a prefix.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// A short human description ("local:/srv/repo", "s3:http://host/bucket/prefix").
    fn describe(&self) -> String;

    /// Stores `data` under `key`, replacing any object there.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), BackendError>;

    /// Reads the whole object.
    async fn get(&self, key: &str) -> Result<Bytes, BackendError>;

    /// Reads the whole object, refusing one larger than `limit` bytes: a store anyone
    /// else can write to must not make the reader allocate without bound. Backends
    /// that can tell the size before reading the body check it first.
    async fn get_at_most(&self, key: &str, limit: u64) -> Result<Bytes, BackendError> {
        let data = self.get(key).await?;
        check_size(&self.describe(), Op::Get, key, data.len() as u64, limit)?;
        Ok(data)
    }

    /// Reads `length` bytes at `offset`; fewer bytes is an error.
    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, BackendError>;

    /// Lists every object whose key starts with `prefix` (such as "packs/"). The listing
    /// is complete or the call fails: a store that could only list part of the objects
    /// (a truncated page without a continuation token, an unreadable directory) must
    /// return an error, because prune treats what is not listed as absent.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), BackendError>;

    /// The object's size, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<u64>, BackendError>;

    /// Whether the object exists.
    async fn exists(&self, key: &str) -> Result<bool, BackendError> {
        Ok(self.head(key).await?.is_some())
    }
}

/// Shared handle to a backend.
pub type DynBackend = Arc<dyn Backend>;

/// Rejects keys that could leave the repository root on a path-based backend.
pub(crate) fn check_key(backend: &str, op: Op, key: &str) -> Result<(), BackendError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\0')
        || key.contains('\\')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(BackendError::Permanent {
            backend: backend.to_string(),
            op,
            key: key.to_string(),
            message: "invalid object key".into(),
            reason: Reason::Other,
        });
    }
    Ok(())
}

/// The error for an object over the caller's limit.
pub(crate) fn check_size(
    backend: &str,
    op: Op,
    key: &str,
    size: u64,
    limit: u64,
) -> Result<(), BackendError> {
    if size <= limit {
        return Ok(());
    }
    Err(BackendError::TooLarge {
        backend: backend.to_owned(),
        op,
        key: key.to_owned(),
        size,
        limit,
    })
}

/// The error for a ranged read that returned fewer bytes than asked for; every backend
/// checks this the same way, so a truncated object never passes as a short chunk.
pub(crate) fn check_range_len(
    backend: &str,
    key: &str,
    offset: u64,
    wanted: u64,
    got: usize,
) -> Result<(), BackendError> {
    if got as u64 == wanted {
        return Ok(());
    }
    Err(BackendError::ShortRead {
        backend: backend.to_owned(),
        op: Op::GetRange,
        key: key.to_owned(),
        offset,
        wanted,
        got: got as u64,
    })
}

#[cfg(test)]
pub(crate) mod conformance {
    use super::*;

    pub async fn run(b: &dyn Backend) {
        assert_eq!(b.head("config").await.unwrap(), None);
        assert!(!b.exists("config").await.unwrap());
        let err = b.get("config").await.unwrap_err();
        assert!(err.is_not_found(), "{err}");

        b.put("config", Bytes::from_static(b"{}")).await.unwrap();
        b.put("packs/ab/ab01", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        b.put("packs/cd/cd02", Bytes::from_static(b"xyz"))
            .await
            .unwrap();
        b.put("index/i1", Bytes::from_static(b"i")).await.unwrap();

        assert_eq!(b.get("config").await.unwrap(), Bytes::from_static(b"{}"));
        assert_eq!(b.head("packs/ab/ab01").await.unwrap(), Some(10));
        assert_eq!(
            b.get_range("packs/ab/ab01", 3, 4).await.unwrap(),
            Bytes::from_static(b"3456")
        );
        assert!(b.get_range("packs/ab/ab01", 8, 4).await.is_err());

        let mut packs = b.list("packs/").await.unwrap();
        packs.sort_by(|a, b| a.key.cmp(&b.key));
        let keys: Vec<(&str, u64)> = packs.iter().map(|o| (o.key.as_str(), o.size)).collect();
        assert_eq!(keys, vec![("packs/ab/ab01", 10), ("packs/cd/cd02", 3)]);
        // Every backend reports when the store wrote an object, close to now.
        let now = time::OffsetDateTime::now_utc();
        for o in &packs {
            let modified = o.modified.expect("a modification time");
            assert!(
                (now - modified).abs() < time::Duration::minutes(1),
                "{o:?} at {now}"
            );
        }
        assert!(b.list("snapshots/").await.unwrap().is_empty());

        // Overwrite replaces.
        b.put("index/i1", Bytes::from_static(b"second"))
            .await
            .unwrap();
        assert_eq!(
            b.get("index/i1").await.unwrap(),
            Bytes::from_static(b"second")
        );

        b.delete("index/i1").await.unwrap();
        b.delete("index/i1").await.unwrap();
        assert!(b.list("index/").await.unwrap().is_empty());
        assert!(b.put("../escape", Bytes::new()).await.is_err());
    }
}
