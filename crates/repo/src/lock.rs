//! Writer locks (`locks/<id>`): plaintext JSON with an expiry, refreshed while the
//! writer runs. This version writes and removes them; honouring other writers' locks
//! (for prune) comes with prune.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::id::Id;

/// Contents of a lock object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub hostname: String,
    pub pid: u32,
    /// What the holder is doing ("backup", …).
    pub purpose: String,
    pub exclusive: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

/// The host's name, for snapshots and locks.
pub(crate) fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// A held lock; call [`LockGuard::release`] when done. Dropping it stops the refresh,
/// and the lock then lapses at its expiry.
#[derive(Debug)]
pub(crate) struct LockGuard {
    backend: DynBackend,
    key: String,
    stop: CancellationToken,
    refresher: Option<JoinHandle<()>>,
}

fn encode(info: &LockInfo) -> Result<Bytes> {
    serde_json::to_vec(info)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(format!("serializing a lock: {e}")))
}

impl LockGuard {
    pub async fn acquire(backend: DynBackend, purpose: &str, ttl: Duration) -> Result<Self> {
        let key = format!("locks/{}", Id::random()?);
        let now = OffsetDateTime::now_utc();
        let mut info = LockInfo {
            hostname: hostname(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
            exclusive: false,
            created: now,
            expires: now + ttl,
        };
        backend.put(&key, encode(&info)?).await?;
        let stop = CancellationToken::new();
        let refresher = {
            let (backend, key, stop) = (backend.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(ttl / 3) => {}
                    }
                    info.expires = OffsetDateTime::now_utc() + ttl;
                    let Ok(bytes) = encode(&info) else { break };
                    if let Err(e) = backend.put(&key, bytes).await {
                        tracing::warn!(%key, error = %e, "could not refresh lock");
                    }
                }
            })
        };
        Ok(LockGuard {
            backend,
            key,
            stop,
            refresher: Some(refresher),
        })
    }

    pub async fn release(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(h) = self.refresher.take() {
            let _ = h.await;
        }
        self.backend.delete(&self.key).await?;
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
