//! A token bucket in front of every Stripe call, so a backlog is drained at the rate Stripe
//! allows (25/s in test mode, about 100/s live) instead of provoking 429s.
//!
//! Hand-written rather than `governor` on purpose: governor's waiting (`until_ready`) sleeps
//! and then checks again without reserving a cell, so callers that wait together race and
//! are not served in arrival order, and its burst is a whole number of cells where
//! `--rate-limit` may be fractional. Reserving here keeps the order and makes the waits exact
//! and testable without a clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Refills `rate` tokens per second up to `burst`; each call takes one. Callers that find the
/// bucket empty reserve a future token (the count goes negative) and sleep until it is theirs,
/// which keeps waiting callers in arrival order without a queue.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter for `rate` calls per second with a burst of one second's worth (at least 1).
    pub fn new(rate: f64) -> RateLimiter {
        let burst = rate.max(1.0);
        RateLimiter {
            rate,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// Takes a token at `now` and returns how long the caller must wait before using it.
    pub fn reserve(&self, now: Instant) -> Duration {
        // A poisoned lock only means another caller panicked mid-update; the numbers are
        // still usable.
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now.max(b.at);
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate)
        }
    }

    /// Waits for a token. Returns false if `abort` was cancelled while waiting.
    pub async fn acquire(&self, abort: &CancellationToken) -> bool {
        let wait = self.reserve(Instant::now());
        crate::telemetry::rate_limit_wait(wait);
        if wait.is_zero() {
            return !abort.is_cancelled();
        }
        crate::shutdown::sleep(wait, abort).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_the_rate() {
        let limiter = RateLimiter::new(2.0);
        let t0 = Instant::now();
        assert_eq!(limiter.reserve(t0), Duration::ZERO);
        assert_eq!(limiter.reserve(t0), Duration::ZERO);
        // The bucket is empty: the next callers wait 0.5 s, 1 s, ... in turn.
        assert_eq!(limiter.reserve(t0), Duration::from_millis(500));
        assert_eq!(limiter.reserve(t0), Duration::from_millis(1000));
        // Time refills it again, never beyond the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(limiter.reserve(later), Duration::ZERO);
        assert_eq!(limiter.reserve(later), Duration::ZERO);
        assert!(limiter.reserve(later) > Duration::ZERO);
    }

    #[test]
    fn fractional_rates_allow_one_call_at_a_time() {
        let limiter = RateLimiter::new(0.5);
        let t0 = Instant::now();
        assert_eq!(limiter.reserve(t0), Duration::ZERO);
        assert_eq!(limiter.reserve(t0), Duration::from_secs(2));
    }

    #[test]
    fn sustained_rate_is_respected() {
        let limiter = RateLimiter::new(25.0);
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..125).map(|_| limiter.reserve(t0)).collect();
        // 25 at once, then 100 more spread over 4 seconds.
        assert_eq!(waits.iter().filter(|w| w.is_zero()).count(), 25);
        let last = waits.last().unwrap().as_secs_f64();
        assert!((last - 4.0).abs() < 1e-6, "{last}");
    }
}
