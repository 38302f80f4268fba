//! Database errors and which of them are worth another try. Callers back off and retry
//! transient errors (the database restarts, a connection drops, a lock is busy, the pool is
//! exhausted); a permanent one (a constraint, a revoked grant, a type mismatch) fails the same
//! way every time.
//!
//! The classification reads only what the errors carry: the SQLSTATE the server sent, whether
//! the connection is closed, an I/O error among the causes, and which step of the pool
//! failed. Never the message text, which changes between library versions.

use deadpool_postgres::PoolError;

use super::QUERY_TIMEOUT;

/// Why no client could be had, or a query did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Opening a connection failed.
    #[error("cannot connect to Postgres: {}", crate::error_chain(.0))]
    Connect(tokio_postgres::Error),
    /// A statement failed: the server raised an error, or the connection failed under it.
    #[error("{}", crate::error_chain(.0))]
    Query(#[from] tokio_postgres::Error),
    /// Opening a connection or running a statement took longer than [`QUERY_TIMEOUT`].
    #[error("Postgres did not answer within {}s", QUERY_TIMEOUT.as_secs())]
    Timeout,
    #[error("expected one row, got {0}")]
    RowCount(usize),
    /// Every connection of the pool stayed in use for the caller's whole wait.
    #[error("all {0} database connections are busy")]
    Busy(usize),
    /// The pool itself cannot hand out clients (closed, or built without a runtime): a bug,
    /// not an outage.
    #[error("the connection pool failed: {0}")]
    Pool(PoolError),
}

/// SQLSTATE classes worth another try: connection exceptions (08), transaction rollbacks such
/// as serialization failures and deadlocks (40), insufficient resources (53), operator
/// intervention such as a shutdown or restart (57) and system errors (58).
const TRANSIENT_CLASSES: [&str; 5] = ["08", "40", "53", "57", "58"];

/// `lock_not_available`, e.g. a `lock_timeout` ran out: the lock holder will finish.
const LOCK_NOT_AVAILABLE: &str = "55P03";

impl DbError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            // The server is down, restarting or out of connection slots, unless it answered
            // with a SQLSTATE that no retry changes (a wrong password, a missing database).
            DbError::Connect(e) => e
                .code()
                .is_none_or(|state| sqlstate_is_transient(state.code())),
            DbError::Query(e) => query_error_is_transient(e),
            DbError::Timeout | DbError::Busy(_) => true,
            DbError::RowCount(_) | DbError::Pool(_) => false,
        }
    }

    /// The server's error (SQLSTATE and message), if the server raised one.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            DbError::Query(e) => e.as_db_error(),
            _ => None,
        }
    }
}

/// A statement's error is transient by its SQLSTATE when the server sent one. Without one it
/// is transient when it concerns the connection (closed, or an I/O error among its causes)
/// and permanent otherwise: what is left are client-side conversions (a wrong column type)
/// and protocol errors, which repeating the statement cannot fix.
fn query_error_is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(state) => sqlstate_is_transient(state.code()),
        None => e.is_closed() || io_cause(e),
    }
}

fn sqlstate_is_transient(code: &str) -> bool {
    TRANSIENT_CLASSES.iter().any(|c| code.starts_with(c)) || code == LOCK_NOT_AVAILABLE
}

fn io_cause(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_that_are_transient() {
        let transient = sqlstate_is_transient;
        for code in [
            "08006", "08P01", "40001", "40P01", "53300", "57P01", "57P03", "58030", "55P03",
        ] {
            assert!(transient(code), "{code}");
        }
        for code in [
            "23505", "22023", "28P01", "42P01", "55000", "P0001", "BL008",
        ] {
            assert!(!transient(code), "{code}");
        }
    }

    #[test]
    fn pool_failures_that_are_transient() {
        assert!(DbError::Timeout.is_transient());
        assert!(DbError::Busy(3).is_transient());
        assert!(!DbError::RowCount(0).is_transient());
        assert!(!DbError::Pool(PoolError::Closed).is_transient());
    }
}
