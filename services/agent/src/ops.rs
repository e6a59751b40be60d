//! Running operations: unique ids, cancellation, a concurrency limit, and draining on
//! shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::AgentError;

/// The operations this agent runs.
#[derive(Debug)]
pub struct Operations {
    running: Mutex<HashMap<String, CancellationToken>>,
    slots: Arc<Semaphore>,
    max: usize,
    draining: AtomicBool,
    changed: Notify,
    node: String,
}

/// Registration of one operation; dropping it unregisters the id.
#[derive(Debug)]
pub struct OperationGuard {
    ops: Arc<Operations>,
    id: String,
    pub cancel: CancellationToken,
}

impl Operations {
    pub fn new(max_concurrent: usize, node: String) -> Arc<Self> {
        let max = max_concurrent.max(1);
        Arc::new(Operations {
            running: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(max)),
            max,
            draining: AtomicBool::new(false),
            changed: Notify::new(),
            node,
        })
    }

    /// Registers `id`; fails if it is already running or the agent is draining.
    pub fn register(self: &Arc<Self>, id: &str) -> Result<OperationGuard, AgentError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(AgentError::ShuttingDown {
                node: self.node.clone(),
            });
        }
        let cancel = CancellationToken::new();
        let mut running = self.running.lock();
        if running.contains_key(id) {
            return Err(AgentError::DuplicateOperation(id.to_string()));
        }
        running.insert(id.to_string(), cancel.clone());
        Ok(OperationGuard {
            ops: self.clone(),
            id: id.to_string(),
            cancel,
        })
    }

    /// Cancels a running operation; false if no operation has that id.
    pub fn cancel(&self, id: &str) -> bool {
        match self.running.lock().get(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    pub fn running(&self) -> usize {
        self.running.lock().len()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Waits for a free slot, or for the operation to be cancelled first.
    pub async fn slot(&self, cancel: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            permit = self.slots.clone().acquire_owned() => permit.ok(),
            _ = cancel.cancelled() => None,
        }
    }

    /// Stops taking new operations, lets running ones finish for `grace`, then cancels
    /// the rest and waits (briefly) for them to wind down.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        if tokio::time::timeout(grace, self.idle()).await.is_err() {
            let ids: Vec<String> = {
                let running = self.running.lock();
                for token in running.values() {
                    token.cancel();
                }
                running.keys().cloned().collect()
            };
            tracing::warn!(?ids, "grace period over: cancelling running operations");
            let _ = tokio::time::timeout(Duration::from_secs(30), self.idle()).await;
        }
    }

    async fn idle(&self) {
        loop {
            let notified = self.changed.notified();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        self.ops.running.lock().remove(&self.id);
        self.ops.changed.notify_waiters();
    }
}
