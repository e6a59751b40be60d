//! Waiting for a cluster to get somewhere.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `f` every 200 ms until it holds; panics naming `what` once `timeout` has
/// passed. For tests only: a condition that never comes is a failed test.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
