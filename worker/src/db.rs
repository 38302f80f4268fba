//! A small set of Postgres clients. The worker keeps two: one for the claim loop, request
//! tasks and the health check, and a smaller one for the (unauthenticated) webhook endpoint,
//! so a burst of webhooks cannot starve the queue. A client whose connection dropped is
//! thrown away and a new one is connected on the next use, so a database restart heals by
//! itself; callers decide how long to back off, and [`is_transient`] whether to.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

/// How long a query may take before the client is considered stuck and discarded.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The client set; cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    idle: Mutex<Vec<Client>>,
    /// Bounds the number of open connections.
    permits: Arc<Semaphore>,
    max_connections: usize,
}

impl Db {
    /// Connections are opened lazily, at most `max_connections` at a time.
    pub fn new(config: tokio_postgres::Config, max_connections: usize) -> Db {
        let max_connections = max_connections.max(1);
        Db {
            inner: Arc::new(Inner {
                config,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(max_connections)),
                max_connections,
            }),
        }
    }

    /// A client: an idle one that is still connected, or a new connection. Waits as long as
    /// all connections are in use (the queue's own tasks, each of which finishes).
    pub async fn get(&self) -> Result<Conn, DbError> {
        let permit = self.permit().await?;
        self.connect_with(permit).await
    }

    /// Like [`Db::get`], but gives up with [`DbError::Busy`] when no connection frees up
    /// within `wait`, for callers that should answer "busy" rather than queue up.
    pub async fn get_within(&self, wait: Duration) -> Result<Conn, DbError> {
        let permit = tokio::time::timeout(wait, self.permit())
            .await
            .map_err(|_| DbError::Busy(self.inner.max_connections))??;
        self.connect_with(permit).await
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, DbError> {
        // The semaphore is never closed, so acquiring only fails in theory; treat it as busy.
        self.inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DbError::Busy(self.inner.max_connections))
    }

    /// Takes every connection's permit, as a burst of callers would (tests of the busy path).
    #[cfg(test)]
    pub async fn take_all(&self) -> OwnedSemaphorePermit {
        let all = u32::try_from(self.inner.max_connections).unwrap_or(u32::MAX);
        self.inner
            .permits
            .clone()
            .acquire_many_owned(all)
            .await
            .expect("the semaphore is never closed")
    }

    async fn connect_with(&self, permit: OwnedSemaphorePermit) -> Result<Conn, DbError> {
        let reused = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match reused {
            Some(client) => client,
            None => tokio::time::timeout(QUERY_TIMEOUT, connect(&self.inner.config))
                .await
                .map_err(|_| DbError::Timeout)?
                .map_err(DbError::Connect)?,
        };
        Ok(Conn {
            client: Some(client),
            db: self.inner.clone(),
            _permit: permit,
        })
    }
}

/// Opens a connection and drives it in the background.
async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Postgres connection closed");
        }
    });
    Ok(client)
}

/// A client on loan; goes back to the set when dropped, unless its connection is gone or a
/// query timed out on it.
pub struct Conn {
    client: Option<Client>,
    db: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Runs one statement with [`QUERY_TIMEOUT`]. A client that timed out is dropped rather
    /// than reused: it may be stuck behind a server that stopped answering.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let Some(client) = self.client.as_ref() else {
            return Err(DbError::Timeout);
        };
        match tokio::time::timeout(QUERY_TIMEOUT, client.query(sql, params)).await {
            Ok(result) => result.map_err(DbError::Query),
            Err(_) => {
                self.client = None;
                Err(DbError::Timeout)
            }
        }
    }

    /// Like [`Conn::query`] for a statement that returns exactly one row.
    pub async fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            1 => Ok(rows.remove(0)),
            n => Err(DbError::RowCount(n)),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                let mut idle = self.db.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.push(client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn unreachable_db(max: usize) -> Db {
        Db::new(
            tokio_postgres::Config::from_str("host=/nonexistent").unwrap(),
            max,
        )
    }

    #[tokio::test]
    async fn get_within_answers_busy_when_every_connection_is_taken() {
        let db = unreachable_db(2);
        // Hold both permits as two borrowed connections would.
        let held = (db.permit().await.unwrap(), db.permit().await.unwrap());
        let started = std::time::Instant::now();
        let err = db
            .get_within(Duration::from_millis(50))
            .await
            .err()
            .expect("busy");
        assert!(matches!(err, DbError::Busy(2)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.is_transient());
        // Once one is back, the wait ends with a connection attempt (failing here: no server).
        drop(held);
        let err = db
            .get_within(Duration::from_millis(50))
            .await
            .err()
            .expect("no server");
        assert!(matches!(err, DbError::Connect(_)), "{err}");
        assert!(err.is_transient(), "{err}");
    }

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
