//! How one claim of a request ended, and how Stripe's and the database's errors map onto
//! that: retried later (the row goes back to the queue) or failed for good.

use serde_json::Value;

use crate::db::DbError;
use crate::stripe::StripeError;

/// How a request ended in this claim.
#[derive(Debug)]
pub enum Outcome {
    /// The result for `finish_request`.
    Done(Value),
    /// Transient: back to the queue.
    Retry(String),
    /// Permanent: the row fails with this message.
    Fail(String),
}

impl From<StripeError> for Outcome {
    fn from(e: StripeError) -> Outcome {
        match e {
            StripeError::Transient(message) => Outcome::Retry(message),
            StripeError::Rejected(message) => Outcome::Fail(message),
        }
    }
}

impl From<DbError> for Outcome {
    fn from(e: DbError) -> Outcome {
        if e.is_transient() {
            // Unreachable, restarting or a lost race: the next claim may get through.
            return Outcome::Retry(e.to_string());
        }
        match e.as_db_error() {
            // The database refused (e.g. the user already has another customer): final.
            Some(db) => Outcome::Fail(db.message().to_string()),
            None => Outcome::Fail(e.to_string()),
        }
    }
}

/// A 2xx answer that lacks what we need is final: a retry with the same idempotency key
/// would replay the very same answer.
pub fn malformed(problem: String) -> Outcome {
    Outcome::Fail(format!(
        "{problem}; Stripe replays this answer for the same idempotency key, so the request is not retried"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_of_failures() {
        let retry = |o: Outcome| matches!(o, Outcome::Retry(_));
        let fail = |o: Outcome| matches!(o, Outcome::Fail(_));
        assert!(retry(StripeError::Transient("HTTP 502".into()).into()));
        assert!(fail(StripeError::Rejected("No such price".into()).into()));
        assert!(retry(DbError::Timeout.into()));
        assert!(retry(DbError::Busy(4).into()));
        assert!(fail(DbError::RowCount(0).into()));
    }
}
