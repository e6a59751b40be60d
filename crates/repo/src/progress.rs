//! Progress of long operations, published through a `tokio::sync::watch` channel the
//! caller passes in (the receiver always sees the latest state, never a backlog).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Backup progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupProgress {
    /// Files and device images found by the walk.
    pub files_total: u64,
    /// Files finished (read or taken unchanged from the parent).
    pub files_done: u64,
    /// Files taken unchanged from the parent snapshot without reading.
    pub files_unchanged: u64,
    /// Logical bytes of all files.
    pub bytes_total: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes of chunks new to the repository.
    pub bytes_new: u64,
    /// Pack bytes uploaded.
    pub bytes_uploaded: u64,
    pub chunks_new: u64,
    pub chunks_reused: u64,
    pub packs_uploaded: u64,
    pub elapsed: Duration,
    /// Set on the final update.
    pub done: bool,
}

/// Restore progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreProgress {
    pub files_total: u64,
    pub files_done: u64,
    /// Logical bytes of all files.
    pub bytes_total: u64,
    /// Bytes written (holes excluded).
    pub bytes_written: u64,
    /// Pack bytes downloaded.
    pub bytes_downloaded: u64,
    pub elapsed: Duration,
    pub done: bool,
}

/// Lock-free counters that workers bump; the reporter turns them into snapshots.
#[derive(Debug)]
pub(crate) struct Counters<const N: usize> {
    values: [AtomicU64; N],
    start: Instant,
}

impl<const N: usize> Counters<N> {
    pub fn new() -> Arc<Self> {
        Arc::new(Counters {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            start: Instant::now(),
        })
    }

    pub fn add(&self, i: usize, n: u64) {
        self.values[i].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, i: usize) -> u64 {
        self.values[i].load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Publishes `snap()` periodically until finished, then once more with the final state.
#[derive(Debug)]
pub(crate) struct Reporter {
    stop: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl Reporter {
    pub fn spawn<P, F>(tx: Option<watch::Sender<P>>, snap: F) -> Self
    where
        P: Send + Sync + 'static,
        F: Fn(bool) -> P + Send + Sync + 'static,
    {
        let stop = CancellationToken::new();
        let handle = tx.map(|tx| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => { tx.send_replace(snap(false)); }
                    }
                }
                tx.send_replace(snap(true));
            })
        });
        Reporter { stop, handle }
    }

    /// Sends the final update and waits for it to be published.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
