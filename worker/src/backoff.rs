//! Capped exponential backoff with jitter, and the wait the worker uses when Postgres is away.
//! (Stripe's own retry policy within one claim is in `stripe::retry`; when a request goes back
//! to the queue is the database's decision, `billing.fail_request`.) Waits grow exponentially
//! up to a cap, with jitter so that workers that failed together do not retry together.

use std::time::Duration;

use rand::Rng;

/// Between attempts to reach Postgres.
pub const DB_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    cap: Duration::from_secs(5),
};

/// Capped exponential backoff.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The longest wait after `failures` failures (1 = the first): `base * 2^(failures-1)`,
    /// never above the cap.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << exponent).min(self.cap)
    }

    /// "Full jitter": uniformly random in `[0, ceiling]`.
    pub fn full_jitter(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(failures);
        ceiling.mul_f64(rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::retry::STRIPE_BACKOFF;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = STRIPE_BACKOFF;
        assert_eq!(b.ceiling(0), Duration::from_millis(200));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(2), Duration::from_millis(400));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(6), Duration::from_millis(5000));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(5000));
        assert_eq!(DB_BACKOFF.ceiling(100), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut rng = rand::rng();
        for failures in 0..40 {
            for _ in 0..50 {
                let ceiling = STRIPE_BACKOFF.ceiling(failures);
                let full = STRIPE_BACKOFF.full_jitter(failures, &mut rng);
                assert!(full <= ceiling, "{full:?} > {ceiling:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads() {
        let mut rng = rand::rng();
        let waits: std::collections::HashSet<Duration> = (0..20)
            .map(|_| STRIPE_BACKOFF.full_jitter(5, &mut rng))
            .collect();
        assert!(waits.len() > 10, "jitter must actually vary: {waits:?}");
    }
}
