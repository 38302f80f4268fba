//! A pool of Postgres clients on `deadpool-postgres`. What the worker adds to it: a 30 s
//! bound on every query (a client whose query timed out is closed, not reused), a maximum
//! lifetime per connection, a cached prepared statement per SQL text and client, the "busy"
//! answer for callers that must not queue up, and the mapping of the pool's errors onto
//! [`DbError`].
//!
//! **Lifetime.** A session keeps what the server gave it at connect time: the role's settings
//! (`ALTER ROLE … SET statement_timeout`), a changed `search_path`, the cached plans of a
//! replaced function. A connection older than its maximum lifetime is closed when it would be
//! handed out again (never in the middle of a use), so such changes reach the worker within
//! that time without a restart.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{
    BuildError, Connect, Hook, HookError, Manager, ManagerConfig, Metrics, Object, Pool, PoolError,
    QueueMode, RecyclingMethod, Runtime, TimeoutType, Timeouts,
};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::tls::{DbConfig, Tls};

use super::{DbError, QUERY_TIMEOUT};

/// A pool of clients; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    /// A pool of at most `max_connections` (at least one) clients, opened lazily, each
    /// closed once it is older than `max_lifetime`.
    pub fn new(
        config: impl Into<DbConfig>,
        max_connections: usize,
        max_lifetime: Duration,
    ) -> Result<Db, BuildError> {
        let DbConfig { pg, tls } = config.into();
        let manager = Manager::from_connect(
            pg,
            Connector { tls },
            ManagerConfig {
                // Checks `is_closed()` only: a dead connection that is not yet known to be
                // dead fails its next query, which callers retry as transient anyway.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            // The client returned last is the one most likely to be still alive.
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            // No wait limit by default: the queue's callers are its own tasks, each of which
            // gives its client back. Callers that must not queue use `get_within`.
            .wait_timeout(None)
            .create_timeout(Some(QUERY_TIMEOUT))
            .recycle_timeout(Some(QUERY_TIMEOUT))
            // A connection the server closed (say, a restart) is dropped quietly here, before
            // deadpool's own recycle check would log a warning for each one: the callers
            // already log the outage once, with what they were doing.
            .pre_recycle(Hook::sync_fn(move |client, metrics| {
                if client.is_closed() {
                    Err(HookError::message("the connection is closed"))
                } else if outlived(metrics, max_lifetime) {
                    Err(HookError::message(
                        "the connection reached its maximum lifetime",
                    ))
                } else {
                    Ok(())
                }
            }))
            .build()?;
        Ok(Db { pool })
    }

    /// A client: an idle one that is still connected, or a new connection. Waits as long as
    /// all connections are in use.
    pub async fn get(&self) -> Result<Conn, DbError> {
        let timeouts = self.pool.timeouts();
        self.get_with(&timeouts).await
    }

    /// Like [`Db::get`], but gives up with [`DbError::Busy`] when no connection frees up
    /// within `wait`, for callers that should answer "busy" rather than queue up.
    pub async fn get_within(&self, wait: Duration) -> Result<Conn, DbError> {
        let timeouts = Timeouts {
            wait: Some(wait),
            ..self.pool.timeouts()
        };
        self.get_with(&timeouts).await
    }

    async fn get_with(&self, timeouts: &Timeouts) -> Result<Conn, DbError> {
        match self.pool.timeout_get(timeouts).await {
            Ok(client) => Ok(Conn {
                client: Some(client),
            }),
            Err(PoolError::Timeout(TimeoutType::Wait)) => {
                Err(DbError::Busy(self.pool.status().max_size))
            }
            Err(PoolError::Timeout(TimeoutType::Create | TimeoutType::Recycle)) => {
                Err(DbError::Timeout)
            }
            Err(PoolError::Backend(e)) => Err(DbError::Connect(e)),
            Err(e) => Err(DbError::Pool(e)),
        }
    }
}

/// Whether a connection with these metrics is too old to be handed out again.
fn outlived(metrics: &Metrics, max_lifetime: Duration) -> bool {
    metrics.age() >= max_lifetime
}

/// Opens connections with the TLS that `sslmode` asks for and drives each in a task of its
/// own. A connection that ends is logged at debug level only: a
/// restart ends them all at once, and the callers report the outage.
struct Connector {
    tls: Tls,
}

type Connecting<'a> = Pin<
    Box<dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>> + Send + 'a>,
>;

impl Connect for Connector {
    fn connect(&self, config: &tokio_postgres::Config) -> Connecting<'_> {
        let config = config.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let (client, connection) = config.connect(tls).await?;
            let driver = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "Postgres connection closed");
                }
            });
            Ok((client, driver))
        })
    }
}

/// A client on loan; goes back to the pool when dropped, unless a query timed out on it.
pub struct Conn {
    /// None once a query timed out and the client was discarded.
    client: Option<Object>,
}

impl Conn {
    /// Runs one statement with [`QUERY_TIMEOUT`]. The statement is prepared once per client
    /// and then reused: the worker runs the same few statements over and over. A client
    /// that timed out is closed rather than reused: it may be stuck behind a server that
    /// stopped answering.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let Some(client) = self.client.as_ref() else {
            return Err(DbError::Timeout);
        };
        let run = async {
            let statement = client.prepare_cached(sql).await?;
            client.query(&statement, params).await
        };
        match tokio::time::timeout(QUERY_TIMEOUT, run).await {
            Ok(result) => result.map_err(DbError::Query),
            Err(_) => {
                self.discard();
                Err(DbError::Timeout)
            }
        }
    }

    /// Runs statements without parameters (`BEGIN`, `COMMIT`, `ROLLBACK`) with
    /// [`QUERY_TIMEOUT`]; like [`Conn::query`], a client that timed out is closed.
    pub async fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        let Some(client) = self.client.as_ref() else {
            return Err(DbError::Timeout);
        };
        match tokio::time::timeout(QUERY_TIMEOUT, client.batch_execute(sql)).await {
            Ok(result) => result.map_err(DbError::Query),
            Err(_) => {
                self.discard();
                Err(DbError::Timeout)
            }
        }
    }

    /// Runs `work` in a transaction: committed when it succeeds, rolled back when it fails. A
    /// client whose rollback fails is closed, so no pooled client is left inside a transaction.
    pub async fn in_transaction<T, F>(&mut self, work: F) -> Result<T, DbError>
    where
        F: AsyncFnOnce(&mut Conn) -> Result<T, DbError>,
    {
        self.batch("BEGIN").await?;
        match work(self).await {
            Ok(value) => {
                if let Err(e) = self.batch("COMMIT").await {
                    self.discard();
                    return Err(e);
                }
                Ok(value)
            }
            Err(e) => {
                if self.batch("ROLLBACK").await.is_err() {
                    self.discard();
                }
                Err(e)
            }
        }
    }

    /// Closes the connection instead of returning it to the pool: whatever the session holds
    /// (an advisory lock) goes with it.
    pub fn discard(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::SilentServer;
    use std::time::Instant;

    const LIFETIME: Duration = Duration::from_secs(600);

    #[test]
    fn connections_older_than_their_lifetime_are_not_reused() {
        let born = |ago: Duration| Metrics {
            created: Instant::now() - ago,
            recycled: Some(Instant::now()),
            recycle_count: 50,
        };
        assert!(!outlived(&born(Duration::ZERO), LIFETIME));
        assert!(!outlived(&born(Duration::from_secs(599)), LIFETIME));
        assert!(outlived(&born(Duration::from_secs(600)), LIFETIME));
        // Age counts from the connect, not from the last use: a busy connection ages too.
        assert!(outlived(&born(Duration::from_secs(3600)), LIFETIME));
    }

    #[tokio::test]
    async fn get_within_answers_busy_when_every_connection_is_taken() {
        let mut server = SilentServer::start().await;
        let db = Db::new(server.config(), 2, LIFETIME).unwrap();
        // Two callers take both connections (their connection attempts hang on the server).
        let held = server.hold_all(&db, 2).await;
        let started = std::time::Instant::now();
        let err = db
            .get_within(Duration::from_millis(50))
            .await
            .err()
            .expect("busy");
        assert!(matches!(err, DbError::Busy(2)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.is_transient());
        // Once they are back, the wait ends with a connection attempt (failing here: the
        // server is gone).
        server.stop().await;
        held.released().await;
        let err = db
            .get_within(Duration::from_millis(50))
            .await
            .err()
            .expect("no server");
        assert!(matches!(err, DbError::Connect(_)), "{err}");
        assert!(err.is_transient(), "{err}");
    }
}
