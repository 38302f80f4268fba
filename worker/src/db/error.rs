//! Database errors and which of them are worth another try. Callers back off and retry
//! transient errors (the database restarts, a connection drops, a lock is busy); a permanent
//! one (a constraint, a revoked grant, a type mismatch) fails the same way every time.

use super::QUERY_TIMEOUT;

/// Why no client could be had, or a query did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to Postgres: {}", crate::error_chain(.0))]
    Connect(tokio_postgres::Error),
    #[error("{}", crate::error_chain(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("Postgres did not answer within {}s", QUERY_TIMEOUT.as_secs())]
    Timeout,
    #[error("expected one row, got {0}")]
    RowCount(usize),
    #[error("all {0} database connections are busy")]
    Busy(usize),
}

/// SQLSTATE classes worth another try: connection exceptions (08), transaction rollbacks such
/// as serialization failures and deadlocks (40), insufficient resources (53), operator
/// intervention such as a shutdown or restart (57) and system errors (58).
const TRANSIENT_CLASSES: [&str; 5] = ["08", "40", "53", "57", "58"];

/// `lock_not_available`, e.g. a `lock_timeout` ran out: the lock holder will finish.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Whether the same statement may succeed later. Errors without a SQLSTATE are transient when
/// they concern the connection (it dropped, timed out or could not be opened) and permanent
/// when they are client-side conversions (a wrong column type), which repeating cannot fix.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if let Some(state) = e.code() {
        return sqlstate_is_transient(state.code());
    }
    if e.is_closed() || io_cause(e) {
        return true;
    }
    // tokio-postgres does not expose its error kinds; these are the Display texts of the
    // connection-level ones without an io::Error cause (e.g. the connect timeout).
    matches!(
        e.to_string().as_str(),
        "timeout waiting for server"
            | "error connecting to server"
            | "error communicating with the server"
            | "error performing TLS handshake"
            | "unexpected message from server"
            | "error parsing response from server"
    )
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

impl DbError {
    /// Whether trying again later may succeed (see [`is_transient`]).
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Connect(e) | DbError::Query(e) => is_transient(e),
            DbError::Timeout | DbError::Busy(_) => true,
            DbError::RowCount(_) => false,
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
}
