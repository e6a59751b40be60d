//! A client-side rate limit, like client-go's QPS/burst: an apply of thousands of
//! objects must not flood the destination's API server (which would throttle it with
//! 429s, or worse, starve its other clients). The bucket is governor's (GCRA).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};

#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// None: no limit.
    limiter: Option<DefaultDirectRateLimiter>,
}

impl RateLimiter {
    /// `qps <= 0` means no limit; `burst` requests may go at once (at least one).
    pub(crate) fn new(qps: f32, burst: u32) -> Self {
        let limiter = (qps > 0.0 && qps.is_finite()).then(|| {
            let period = Duration::from_secs_f64(1.0 / f64::from(qps));
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            // A period under a nanosecond is no limit worth keeping.
            let quota = Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                .allow_burst(burst);
            DefaultDirectRateLimiter::direct(quota)
        });
        RateLimiter { limiter }
    }

    /// Waits for one request's turn.
    pub(crate) async fn acquire(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn burst_then_qps() {
        let limiter = RateLimiter::new(20.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(40),
            "the burst is free"
        );
        for _ in 0..10 {
            limiter.acquire().await;
        }
        // Ten more at 20 per second: about half a second (a loaded machine may be late,
        // never early).
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(5),
            "10 more at 20 qps take half a second, took {took:?}"
        );
    }

    #[tokio::test]
    async fn zero_qps_is_unlimited() {
        let limiter = RateLimiter::new(0.0, 1);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
