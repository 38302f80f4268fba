//! Test databases on the throwaway cluster that `scripts/integration-test.sh` starts.
//!
//! Each test gets its own database with stripe_billing freshly installed, so tests run in
//! parallel without seeing each other's rows: the extension, or with
//! `STRIPE_BILLING_EDITION=pure` the pure-SQL edition in a Supabase-like database (see
//! [`crate::edition`]). Clients connect exactly the way PostgREST does: one transaction per
//! request, `SET LOCAL ROLE` (and the role's statement timeout), and the JWT claims in
//! `request.jwt.claims`.
use crate::edition::{self, Edition};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_postgres::types::{FromSqlOwned, ToSql};
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
    /// Connects as the role that installed stripe_billing: the cluster's superuser for the
    /// extension, Supabase's non-superuser `postgres` for the pure-SQL edition.
    pub dsn: String,
    pub name: String,
    pub edition: Edition,
}

impl TestDb {
    /// Creates the database and installs the current version of this run's edition.
    pub async fn new() -> TestDb {
        TestDb::with_version(None).await
    }

    /// Like [`TestDb::new`], installing the given released version (its install script must be
    /// in the server's extension directory: `make install-history`) instead of the current one.
    /// Only the extension has released versions to install.
    pub async fn with_version(version: Option<&str>) -> TestDb {
        TestDb::install(Edition::current(), version).await
    }

    /// A database with the current version of `edition`, whichever edition this run is for (the
    /// comparisons of tests/tests/editions.rs). On a cluster not set up like Supabase's, the
    /// pure-SQL edition is installed by the superuser.
    pub async fn with_edition(edition: Edition) -> TestDb {
        TestDb::install(edition, None).await
    }

    async fn install(edition: Edition, version: Option<&str>) -> TestDb {
        let db = TestDb::empty_for(edition).await;
        match edition {
            Edition::Extension => {
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
            }
            Edition::Pure => {
                assert!(
                    version.is_none(),
                    "the pure-SQL edition has no released version {version:?} to install"
                );
                edition::apply_pure_migration(&mut db.owner().await).await;
            }
        }
        db
    }

    /// A new database without stripe_billing (the client roles exist; for the pure-SQL edition,
    /// prepared like a new Supabase project).
    pub async fn empty() -> TestDb {
        TestDb::empty_for(Edition::current()).await
    }

    /// A new database ready for `edition`: for the pure-SQL edition, prepared like a new Supabase
    /// project on a Supabase-like cluster, or with pgcrypto in schema extensions on another.
    pub async fn empty_for(edition: Edition) -> TestDb {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let supabase_like = Edition::current() == Edition::Pure;
        let admin = connect(&cluster_dsn()).await;
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        if supabase_like {
            edition::ensure_supabase_roles(&admin).await;
        } else {
            ensure_roles(&admin).await;
        }
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let admin_dsn = database_dsn(&cluster_dsn(), &name);
        let dsn = match (edition, supabase_like) {
            (Edition::Pure, true) => {
                edition::prepare_supabase_database(&connect(&admin_dsn).await, &name).await;
                with_user(&admin_dsn, edition::PURE_INSTALLER)
            }
            (Edition::Pure, false) => {
                connect(&admin_dsn)
                    .await
                    .batch_execute(
                        "CREATE SCHEMA extensions; CREATE EXTENSION pgcrypto WITH SCHEMA extensions",
                    )
                    .await
                    .expect("pgcrypto in schema extensions");
                admin_dsn
            }
            (Edition::Extension, _) => admin_dsn,
        };
        TestDb { dsn, name, edition }
    }

    /// A connection as the role that installed stripe_billing (see [`TestDb::dsn`]).
    pub async fn owner(&self) -> Client {
        connect(&self.dsn).await
    }

    /// A superuser connection to this database (the extension's owner, or Supabase's
    /// `supabase_admin`), for what only a superuser may do.
    pub async fn superuser(&self) -> Client {
        connect(&database_dsn(&cluster_dsn(), &self.name)).await
    }

    /// A connection that acts like PostgREST: `as_user`/`as_anon`/`as_service` wrap each call.
    pub async fn api(&self) -> Api {
        Api {
            client: connect(&self.dsn).await,
        }
    }
}

/// `dsn` (a libpq key=value string) pointed at `database`.
pub fn database_dsn(dsn: &str, database: &str) -> String {
    let kept: Vec<&str> = dsn
        .split_whitespace()
        .filter(|kv| !kv.starts_with("dbname="))
        .collect();
    format!("{} dbname={database}", kept.join(" "))
}

/// `dsn` (a libpq key=value string) connecting as `user`.
pub fn with_user(dsn: &str, user: &str) -> String {
    let kept: Vec<&str> = dsn
        .split_whitespace()
        .filter(|kv| !kv.starts_with("user="))
        .collect();
    format!("{} user={user}", kept.join(" "))
}

/// Installs this run's edition into the database `admin_dsn` names (a superuser connection, e.g.
/// of a cluster a test starts itself) and returns the DSN of the role that owns it.
pub async fn install_current(admin_dsn: &str) -> String {
    let admin = connect(admin_dsn).await;
    match Edition::current() {
        Edition::Extension => {
            ensure_roles(&admin).await;
            admin
                .batch_execute("CREATE EXTENSION stripe_billing; SELECT billing.apply_grants();")
                .await
                .expect("install the extension");
            admin_dsn.to_string()
        }
        Edition::Pure => {
            edition::ensure_supabase_roles(&admin).await;
            let database: String = admin
                .query_one("SELECT current_database()", &[])
                .await
                .expect("current_database")
                .get(0);
            edition::prepare_supabase_database(&admin, &database).await;
            let installer = with_user(admin_dsn, edition::PURE_INSTALLER);
            edition::apply_pure_migration(&mut connect(&installer).await).await;
            installer
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

    /// The first column of the first row an [`Api::call`] returns.
    pub async fn one<T: FromSqlOwned>(
        &mut self,
        caller: &Caller,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<T, tokio_postgres::Error> {
        self.call(caller, sql, params)
            .await
            .map(|rows| rows[0].get(0))
    }

    /// A team `owner` creates with `billing.create_team(name)`; its account id.
    pub async fn create_team(&mut self, owner: Uuid, name: &str) -> Uuid {
        self.one(
            &Caller::User(owner),
            "SELECT billing.create_team($1)",
            &[&name],
        )
        .await
        .unwrap_or_else(|e| panic!("create_team({name}): {e}"))
    }

    /// `billing.set_team_member(team, who, role)` called by `by`: the member's JSON.
    pub async fn set_member(
        &mut self,
        by: Uuid,
        team: Uuid,
        who: Uuid,
        role: &str,
    ) -> Result<serde_json::Value, tokio_postgres::Error> {
        self.one(
            &Caller::User(by),
            "SELECT billing.set_team_member($1, $2, $3)",
            &[&team, &who, &role],
        )
        .await
    }

    /// Asserts that each statement, run with `params` as its caller, fails with its SQLSTATE
    /// and a message containing its needle: `(caller, sql, sqlstate, needle)`.
    pub async fn assert_refused(
        &mut self,
        params: &[&(dyn ToSql + Sync)],
        refusals: &[(&Caller, &str, &str, &str)],
    ) {
        for (caller, sql, sqlstate, needle) in refusals {
            match self.call(caller, sql, params).await {
                Ok(rows) => panic!("{sql} as {caller:?}: expected {sqlstate}, got {rows:?}"),
                Err(e) => {
                    let (code, message) = db_error(&e);
                    assert_eq!(
                        (code.as_str(), message.contains(needle)),
                        (*sqlstate, true),
                        "{sql} as {caller:?}: {message}"
                    );
                }
            }
        }
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
        // PostgREST also applies the role's own statement_timeout (Supabase: anon 3 s,
        // authenticated 8 s) for the request.
        tx.execute(
            "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
                    set_config('request.headers', $3, true), \
                    (SELECT set_config('statement_timeout', substr(c, length('statement_timeout=') + 1), true) \
                     FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) c \
                     WHERE r.rolname = $1 AND s.setdatabase = 0 AND c LIKE 'statement_timeout=%')",
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

/// The first column of the one row `sql` returns; panics naming the statement on an error.
pub async fn one<T: FromSqlOwned>(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T {
    match client.query_one(sql, params).await {
        Ok(row) => row.get(0),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// The first column of every row `sql` returns, in order.
pub async fn column<T: FromSqlOwned>(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Vec<T> {
    match client.query(sql, params).await {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => panic!("{sql}: {e}"),
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
