//! Test support: a TCP server that accepts connections and never answers. A pool pointed at it
//! can have all its connections taken (each caller's connection attempt hangs) without a
//! Postgres, which is what the tests of the "busy" answers need.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Db, DbError};

/// The silent server; stops (closing every connection) on [`SilentServer::stop`].
pub struct SilentServer {
    port: u16,
    acceptor: JoinHandle<()>,
    accepted: mpsc::UnboundedReceiver<()>,
}

/// Callers whose connection attempts hang on the server, each holding one of the pool's slots.
pub struct Held(Vec<JoinHandle<Result<(), DbError>>>);

impl SilentServer {
    pub async fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (tx, accepted) = mpsc::unbounded_channel();
        let acceptor = tokio::spawn(async move {
            // Kept open, and silent, until the task ends.
            let mut open: Vec<TcpStream> = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
                let _ = tx.send(());
            }
        });
        SilentServer {
            port,
            acceptor,
            accepted,
        }
    }

    /// A connection configuration for the server.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("test")
            .dbname("test");
        config
    }

    /// Starts `n` callers of `db.get()` and returns once all of them are connecting.
    pub async fn hold_all(&mut self, db: &Db, n: usize) -> Held {
        let callers = (0..n)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { db.get().await.map(drop) })
            })
            .collect();
        for _ in 0..n {
            self.accepted.recv().await.expect("the server accepts");
        }
        Held(callers)
    }

    /// Closes the listener and every connection: hanging attempts fail, new ones are refused.
    pub async fn stop(self) {
        self.acceptor.abort();
        let _ = self.acceptor.await;
    }
}

impl Held {
    /// Waits until every caller has ended (and so given its slot back).
    pub async fn released(self) {
        for caller in self.0 {
            let _ = caller.await;
        }
    }
}
