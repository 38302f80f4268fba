//! Test databases on the throwaway cluster that `scripts/integration-test.sh` starts.
//!
//! Each test gets its own database with the extension freshly installed, so tests run in
//! parallel without seeing each other's rows. Clients connect exactly the way PostgREST does:
//! one transaction per request, `SET LOCAL ROLE`, and the JWT claims in `request.jwt.claims`.
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};
use uuid::Uuid;

/// Environment variable holding the libpq connection string of the test cluster.
pub const CLUSTER_ENV: &str = "STRIPE_BILLING_PG";

/// The client roles Supabase defines. Created once per cluster when absent.
pub const CLIENT_ROLES: [&str; 3] = ["anon", "authenticated", "service_role"];

/// Connection string of the test cluster; panics with instructions when it is not set.
pub fn cluster_dsn() -> String {
    std::env::var(CLUSTER_ENV).unwrap_or_else(|_| {
        panic!("{CLUSTER_ENV} is not set: run the integration tests with `make test` or scripts/integration-test.sh")
    })
}

/// Connects with a libpq-style connection string and drives the connection in the background.
pub async fn connect(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {dsn}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Connects, drives the connection in the background and `LISTEN`s on `channel`: every
/// notification the connection receives is sent to the returned receiver.
pub async fn listen(
    dsn: &str,
    channel: &str,
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<Notification>) {
    let (client, mut connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {dsn}: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    // Keep driving the connection even when nobody receives any more.
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))
        .await
        .expect("LISTEN");
    (client, rx)
}

/// A fresh database with `stripe_billing` installed and grants applied.
pub struct TestDb {
    pub dsn: String,
    pub name: String,
}

impl TestDb {
    /// Creates the database, installs the extension and applies the grants.
    pub async fn new() -> TestDb {
        TestDb::with_version(None).await
    }

    /// Like [`TestDb::new`], installing the given released version (its install script must be
    /// in the server's extension directory: `make install-history`) instead of the current one.
    pub async fn with_version(version: Option<&str>) -> TestDb {
        let db = TestDb::empty().await;
        let owner = db.owner().await;
        let create = match version {
            Some(v) => format!("CREATE EXTENSION stripe_billing VERSION '{v}'"),
            None => "CREATE EXTENSION stripe_billing".to_string(),
        };
        owner
            .batch_execute(&create)
            .await
            .unwrap_or_else(|e| match e.as_db_error() {
                Some(db) => panic!(
                    "{create}: {}: {} ({:?})",
                    db.code().code(),
                    db.message(),
                    db.where_()
                ),
                None => panic!("{create}: {e}"),
            });
        owner
            .batch_execute("SELECT billing.apply_grants()")
            .await
            .expect("apply grants");
        db
    }

    /// A new database without the extension (the client roles exist).
    pub async fn empty() -> TestDb {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let admin = connect(&cluster_dsn()).await;
        ensure_roles(&admin).await;
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let dsn = format!(
            "{} dbname={name}",
            cluster_dsn().replace("dbname=postgres", "")
        );
        TestDb { dsn, name }
    }

    /// A superuser connection (the extension owner).
    pub async fn owner(&self) -> Client {
        connect(&self.dsn).await
    }

    /// A connection that acts like PostgREST: `as_user`/`as_anon`/`as_service` wrap each call.
    pub async fn api(&self) -> Api {
        Api {
            client: connect(&self.dsn).await,
        }
    }
}

/// Creates anon, authenticated and service_role (as on Supabase) when the cluster lacks them.
pub async fn ensure_roles(admin: &Client) {
    for role in CLIENT_ROLES {
        let extra = if role == "service_role" {
            " BYPASSRLS"
        } else {
            ""
        };
        let sql = format!(
            "DO $$ BEGIN CREATE ROLE {role} NOLOGIN{extra}; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        );
        admin.batch_execute(&sql).await.expect("create client role");
    }
}

/// Who a PostgREST request runs as.
#[derive(Clone, Debug)]
pub enum Caller {
    Anon,
    User(Uuid),
    Service,
}

impl Caller {
    fn role(&self) -> &'static str {
        match self {
            Caller::Anon => "anon",
            Caller::User(_) => "authenticated",
            Caller::Service => "service_role",
        }
    }

    fn claims(&self) -> String {
        match self {
            Caller::Anon => r#"{"role":"anon"}"#.to_string(),
            Caller::User(id) => {
                format!(r#"{{"sub":"{id}","role":"authenticated","email":"{id}@example.test"}}"#)
            }
            Caller::Service => r#"{"role":"service_role"}"#.to_string(),
        }
    }
}

/// A connection that runs each call in its own transaction as a given caller.
pub struct Api {
    pub client: Client,
}

impl Api {
    /// Runs `sql` (one statement with parameters) as `caller` in a transaction, like PostgREST.
    pub async fn call(
        &mut self,
        caller: &Caller,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.call_with_headers(caller, "{}", sql, params).await
    }

    /// Like [`Api::call`], with the request headers PostgREST exposes as `request.headers`
    /// (a JSON object with lower-case names).
    pub async fn call_with_headers(
        &mut self,
        caller: &Caller,
        headers: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.call_raw(caller.role(), &caller.claims(), headers, sql, params)
            .await
    }

    /// Like [`Api::call`], with an explicit role and raw `request.jwt.claims` text (which need
    /// not be valid JSON), for testing how the extension reads malformed or unusual claims.
    pub async fn call_as(
        &mut self,
        role: &str,
        claims: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.call_raw(role, claims, "{}", sql, params).await
    }

    /// One PostgREST-style transaction: role, claims and headers as given, then `sql`.
    async fn call_raw(
        &mut self,
        role: &str,
        claims: &str,
        headers: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let tx = self.client.transaction().await?;
        tx.execute(
            "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
                    set_config('request.headers', $3, true)",
            &[&role, &claims, &headers],
        )
        .await?;
        let rows = tx.query(sql, params).await;
        match rows {
            Ok(rows) => {
                tx.commit().await?;
                Ok(rows)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

/// The SQLSTATE and message of a database error, for assertions.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a database error, got {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// Asserts that `result` failed with `sqlstate` and a message containing `needle`.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, tokio_postgres::Error>,
    sqlstate: &str,
    needle: &str,
) {
    match result {
        Ok(v) => panic!("expected error {sqlstate} ({needle}), got {v:?}"),
        Err(e) => {
            let (code, message) = db_error(&e);
            assert_eq!(code, sqlstate, "unexpected SQLSTATE for: {message}");
            assert!(
                message.contains(needle),
                "message {message:?} lacks {needle:?}"
            );
        }
    }
}
