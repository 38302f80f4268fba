//! The connection pool (see the module docs of [`crate::db`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

use super::{DbError, QUERY_TIMEOUT};

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

    use crate::db::DbError;

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
}
