//! The HTTP API's per-user rate limit: a token bucket per `sub`, refilled at
//! `--api-rate-limit` calls per minute up to `--api-burst`. It protects the worker and the
//! database from one account's loop; what a user may have in progress (BL011) and everything
//! else about what may be bought stays in SQL.
//!
//! The buckets live in this process: with several workers behind a load balancer a user gets
//! each worker's allowance. Full buckets are dropped now and then, so the map holds only the
//! users seen lately.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the map holds this many users, full buckets are dropped.
const PRUNE_AT: usize = 10_000;

pub struct UserLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl UserLimit {
    pub fn new(per_minute: u32, burst: u32) -> UserLimit {
        UserLimit {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call from `user`'s bucket at `now`; Err with the wait until the next one is
    /// allowed when the bucket is empty (nothing is taken then).
    pub fn check(&self, user: &str, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another caller panicked mid-update.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(user) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.level(now, rate, burst) < burst);
        }
        let bucket = buckets.entry(user.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = bucket.level(now, self.per_second, self.burst);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

impl Bucket {
    fn level(&self, now: Instant, per_second: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * per_second).min(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limit = UserLimit::new(60, 3); // one a second, three at once
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.check("a", t0), Ok(()));
        }
        let wait = limit.check("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Another user has a bucket of their own.
        assert_eq!(limit.check("b", t0), Ok(()));
        // Half a second later: still waiting, half as long.
        let wait = limit
            .check("a", t0 + Duration::from_millis(500))
            .unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(limit.check("a", t0 + Duration::from_secs(1)), Ok(()));
        // The bucket never holds more than the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limit.check("a", later), Ok(()));
        }
        assert!(limit.check("a", later).is_err());
    }

    #[test]
    fn full_buckets_are_pruned() {
        let limit = UserLimit::new(60, 1);
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            limit.check(&i.to_string(), t0).unwrap();
        }
        // A minute later every bucket is full again: the next new user's arrival drops them.
        let later = t0 + Duration::from_secs(60);
        limit.check("newcomer", later).unwrap();
        assert_eq!(limit.buckets.lock().unwrap().len(), 1);
        // A bucket that is not full stays (its user is still being limited).
        let limit = UserLimit::new(1, 1);
        for i in 0..PRUNE_AT {
            limit.check(&i.to_string(), t0).unwrap();
        }
        limit
            .check("newcomer", t0 + Duration::from_secs(30))
            .unwrap();
        assert_eq!(limit.buckets.lock().unwrap().len(), PRUNE_AT + 1);
    }
}
