//! Status from the jobs' own event streams: a running job's WatchJob stream wakes the
//! reconcile of the object it belongs to, so a Migration's or Restore's status follows
//! the job as it reports (at most once a second), not a timer. One stream per job, on a
//! task of its own; when it ends (the job's final report) the object is woken once more
//! to write the outcome. A slow timer stays behind it, for a stream that broke.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1::{JobRef, WatchJobRequest};
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::Ctx;

/// Wakes of one kind at most this often per job.
const WAKE_EVERY: Duration = Duration::from_secs(1);
/// How long a job whose stream could not be opened waits before its object is woken to
/// try again: a transfer service that is restarting is not asked in a tight loop.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Objects woken and not yet reconciled; more wakes of a full queue are dropped (the
/// reconcile they ask for is already due).
const QUEUED_WAKES: usize = 256;

/// The wakes of one kind's objects, and the stream its controller reconciles on.
pub struct Wakes<K: Resource<DynamicType = ()>> {
    tx: mpsc::Sender<ObjectRef<K>>,
    // Shared, so each leadership term's controller reads the same queue.
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<ObjectRef<K>>>>,
}

impl<K: Resource<DynamicType = ()>> Default for Wakes<K> {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUED_WAKES);
        Wakes {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Send + Sync + 'static> Wakes<K> {
    /// The objects to reconcile as their jobs report, for the controller of this term.
    pub fn stream(&self) -> impl Stream<Item = ObjectRef<K>> + Send + use<K> {
        futures::stream::unfold(self.rx.clone(), |rx| async move {
            let next = rx.lock().await.recv().await?;
            Some((next, rx))
        })
    }
}

/// The jobs whose streams are followed now.
#[derive(Default)]
pub struct Watched(Arc<Mutex<HashSet<String>>>);

/// Follows `job`'s event stream (unless it is followed already), waking `object` on
/// `wakes` as it reports and once when it ends.
pub(crate) fn follow<K>(ctx: &Ctx, wakes: &Wakes<K>, job: &str, object: ObjectRef<K>)
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let watched = ctx.watched.0.clone();
    if !watched.lock().insert(job.to_owned()) {
        return;
    }
    let mut transfer = ctx.transfer.clone();
    let tx = wakes.tx.clone();
    let id = job.to_owned();
    tokio::spawn(async move {
        let request = WatchJobRequest {
            job: Some(JobRef { id: id.clone() }),
        };
        match transfer.watch_job(request).await {
            Ok(events) => {
                let mut events = events.into_inner();
                let mut last: Option<Instant> = None;
                while let Some(Ok(_event)) = events.next().await {
                    if last.is_none_or(|t| t.elapsed() >= WAKE_EVERY) {
                        // A full queue already holds a wake; this one can go.
                        let _ = tx.try_send(object.clone());
                        last = Some(Instant::now());
                    }
                }
            }
            Err(status) => {
                tracing::debug!(job = %id, error = %status.message(),
                    "no event stream for the job; trying again shortly");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
        watched.lock().remove(&id);
        let _ = tx.send(object).await;
    });
}
