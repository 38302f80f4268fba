//! How one claim of a request ended, and how Stripe's and the database's errors map onto
//! that. The worker only says whether a failure is transient and what Stripe answered; the
//! database decides what happens to the row (`billing.fail_request`: retried after a delay,
//! failed for good, or, when Stripe no longer has the user's customer, retried with a new one).

use serde_json::Value;

use crate::db::DbError;
use crate::stripe::{Rejection, StripeError};

/// How a request ended in this claim.
#[derive(Debug)]
pub enum Outcome {
    /// The result for `finish_request`.
    Done(Value),
    /// Transient (network, 429, 5xx, the database away): the row may be retried.
    Retry(String),
    /// Refused by Stripe or by the database: the row fails, unless the database knows better.
    Fail(Rejection),
}

impl Outcome {
    /// A refusal of our own making, with a message only.
    pub fn fail(message: impl Into<String>) -> Outcome {
        Outcome::Fail(Rejection::message(message))
    }
}

impl From<StripeError> for Outcome {
    fn from(e: StripeError) -> Outcome {
        match e {
            StripeError::Transient(message) => Outcome::Retry(message),
            StripeError::Rejected(rejection) => Outcome::Fail(rejection),
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
            // The database refused (e.g. a constraint): final.
            Some(db) => Outcome::fail(db.message()),
            None => Outcome::fail(e.to_string()),
        }
    }
}

/// A 2xx answer that lacks what we need is final: a retry with the same idempotency key
/// would replay the very same answer.
pub fn malformed(problem: String) -> Outcome {
    Outcome::fail(format!(
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
        let refused = Rejection {
            message: "No such customer: 'cus_1'".into(),
            code: Some("resource_missing".into()),
            param: Some("customer".into()),
            status: Some(400),
        };
        match Outcome::from(StripeError::Rejected(refused.clone())) {
            Outcome::Fail(r) => {
                assert_eq!(r, refused, "Stripe's code and param reach the database")
            }
            other => panic!("{other:?}"),
        }
        assert!(retry(DbError::Timeout.into()));
        assert!(retry(DbError::Busy(4).into()));
        assert!(fail(DbError::RowCount(0).into()));
    }
}
