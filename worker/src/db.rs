//! A small set of Postgres clients shared by the claim loop, request tasks and the webhook
//! endpoint. A client whose connection dropped is thrown away and a new one is connected on
//! the next use, so a database restart heals by itself; callers decide how long to back off.

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
}

impl DbError {
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
}

impl Db {
    /// Connections are opened lazily, at most `max_connections` at a time.
    pub fn new(config: tokio_postgres::Config, max_connections: usize) -> Db {
        Db {
            inner: Arc::new(Inner {
                config,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(max_connections.max(1))),
            }),
        }
    }

    /// A client: an idle one that is still connected, or a new connection.
    pub async fn get(&self) -> Result<Conn, DbError> {
        // The semaphore is never closed, so acquiring only fails in theory; treat it as busy.
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DbError::Timeout)?;
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
