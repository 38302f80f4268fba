//! Transaction conflicts, retried on the spot. A deadlock (`40P01`) or a serialization failure
//! (`40001`) rolls the statement back and says nothing about its input: the same call a moment
//! later normally goes through. Callers that must answer now (a webhook, before its response;
//! the catch-up, event by event) retry them here a few times with a short jittered wait instead
//! of failing the whole call ([`Conn::query_one_retrying_conflicts`]); whatever else failed is
//! returned at once.

use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{Conn, DbError};
use crate::backoff::Backoff;

/// Attempts in all, the first included.
pub const CONFLICT_TRIES: u32 = 4;

/// Short waits: the transaction we collided with is usually done within milliseconds, and a
/// webhook's sender is waiting for the answer.
const CONFLICT_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(20),
    cap: Duration::from_millis(200),
};

/// `serialization_failure` and `deadlock_detected`.
fn is_conflict_sqlstate(code: &str) -> bool {
    matches!(code, "40001" | "40P01")
}

impl DbError {
    /// Whether the statement lost a conflict with another transaction (and was rolled back).
    pub fn is_conflict(&self) -> bool {
        self.as_db_error()
            .is_some_and(|db| is_conflict_sqlstate(db.code().code()))
    }
}

/// How long to wait before trying again after the `failures`-th failure (1 = the first), or
/// None when the call is over: it did not lose a conflict, or it has been tried
/// [`CONFLICT_TRIES`] times.
fn retry_wait(conflict: bool, failures: u32) -> Option<Duration> {
    (conflict && failures < CONFLICT_TRIES)
        .then(|| CONFLICT_BACKOFF.full_jitter(failures, &mut rand::rng()))
}

impl Conn {
    /// Like [`Conn::query_one`], trying again while the statement loses a conflict with another
    /// transaction, up to [`CONFLICT_TRIES`] attempts; the last error is returned. Only for a
    /// statement safe to repeat outside a transaction of ours (it was rolled back).
    pub async fn query_one_retrying_conflicts(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError> {
        let mut failures = 0;
        loop {
            match self.query_one(sql, params).await {
                Err(e) => {
                    failures += 1;
                    let Some(wait) = retry_wait(e.is_conflict(), failures) else {
                        return Err(e);
                    };
                    tracing::debug!(error = %e, attempt = failures, "transaction conflict, retrying");
                    tokio::time::sleep(wait).await;
                }
                row => return row,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_deadlocks_and_serialization_failures_are_conflicts() {
        assert!(is_conflict_sqlstate("40001"));
        assert!(is_conflict_sqlstate("40P01"));
        // Transient, but not a conflict this call can win by repeating itself at once.
        for code in [
            "40003", "40000", "55P03", "57014", "08006", "23505", "22023", "BL007",
        ] {
            assert!(!is_conflict_sqlstate(code), "{code}");
        }
        assert!(!DbError::Timeout.is_conflict());
        assert!(!DbError::Busy(3).is_conflict());
    }

    #[test]
    fn a_conflict_is_tried_again_until_the_last_attempt() {
        for failures in 1..CONFLICT_TRIES {
            let wait = retry_wait(true, failures).expect("tried again");
            assert!(wait <= CONFLICT_BACKOFF.ceiling(failures), "{wait:?}");
        }
        assert_eq!(retry_wait(true, CONFLICT_TRIES), None, "every attempt lost");
        assert_eq!(CONFLICT_TRIES, 4);
    }

    #[test]
    fn other_errors_are_returned_at_once() {
        assert_eq!(retry_wait(false, 1), None);
    }

    #[test]
    fn the_waits_stay_short() {
        // A webhook's sender waits for the answer through every retry.
        let total: Duration = (1..CONFLICT_TRIES)
            .map(|f| CONFLICT_BACKOFF.ceiling(f))
            .sum();
        assert!(total <= Duration::from_millis(500), "{total:?}");
    }
}
