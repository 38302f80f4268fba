//! Which failed Stripe calls are worth another try, how often, and how long to wait between
//! tries.
//!
//! Stripe's guidance: retry network errors, 409 (a concurrent request with the same
//! idempotency key), 429 and 5xx, and let the `Stripe-Should-Retry` header override that in
//! both directions. The waits are a [`Backoff`] (capped, jittered).

use std::time::Duration;

use crate::backoff::Backoff;

/// Tries of one Stripe call within one claim; after that the row goes back to the queue.
pub const TRIES_PER_CLAIM: u32 = 3;

/// Between tries of one Stripe call.
pub const STRIPE_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(200),
    cap: Duration::from_secs(5),
};

/// What to do after a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transient: the same call may succeed later.
    Retry,
    /// The request itself is wrong; repeating it cannot help.
    Fail,
}

/// Classifies an HTTP error answer from Stripe. `should_retry` is the `Stripe-Should-Retry`
/// header when present: Stripe knows better than the status code (e.g. a 500 that must not
/// be repeated, or a 400 caused by a lock timeout).
pub fn classify(status: u16, should_retry: Option<bool>) -> Verdict {
    match should_retry {
        Some(true) => Verdict::Retry,
        Some(false) => Verdict::Fail,
        None if status == 409 || status == 429 || status >= 500 => Verdict::Retry,
        None => Verdict::Fail,
    }
}

/// Parses a `Stripe-Should-Retry` header value; anything but true/false counts as absent.
pub fn parse_should_retry(value: &str) -> Option<bool> {
    match value.trim() {
        v if v.eq_ignore_ascii_case("true") => Some(true),
        v if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_stripe() {
        for status in [409, 429, 500, 502, 503, 504] {
            assert_eq!(classify(status, None), Verdict::Retry, "{status}");
        }
        for status in [400, 401, 402, 403, 404] {
            assert_eq!(classify(status, None), Verdict::Fail, "{status}");
        }
        // The header wins in both directions.
        assert_eq!(classify(500, Some(false)), Verdict::Fail);
        assert_eq!(classify(429, Some(false)), Verdict::Fail);
        assert_eq!(classify(400, Some(true)), Verdict::Retry);
    }

    #[test]
    fn should_retry_header_values() {
        assert_eq!(parse_should_retry("true"), Some(true));
        assert_eq!(parse_should_retry(" False "), Some(false));
        assert_eq!(parse_should_retry("maybe"), None);
        assert_eq!(parse_should_retry(""), None);
    }
}
