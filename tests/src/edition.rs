//! Which edition of stripe_billing the integration tests install, and the Supabase-like setup the
//! pure-SQL edition is tested in (DESIGN.md, "Two editions").
//!
//! `STRIPE_BILLING_EDITION=pure` switches the whole suite to the pure-SQL edition: each test
//! database is prepared the way hosted Supabase prepares a project, and the generated migration
//! is applied by the role Supabase users apply migrations as. What is reproduced, from the
//! roles and grants supabase/postgres sets up (`migrations/db/init-scripts/` and
//! `migrations/db/migrations/` of that repository):
//! - the cluster's superuser is `supabase_admin`; `postgres` is NOSUPERUSER with CREATEDB,
//!   CREATEROLE, REPLICATION and BYPASSRLS, a member of the API roles (on PostgreSQL 16 and
//!   later with their ADMIN OPTION), and its search_path is `"$user", public, extensions`;
//! - `anon`, `authenticated` (NOLOGIN) and `service_role` (NOLOGIN BYPASSRLS), and
//!   `authenticator`, which PostgREST logs in as; statement timeouts: anon 3 s, authenticated
//!   8 s, authenticator 8 s (the test API applies the role's timeout the way PostgREST does);
//! - per database: pgcrypto in schema `extensions` (owned by the superuser), USAGE on it for the
//!   API roles, ALL on the database for `postgres`, and the default privileges Supabase gives the
//!   API roles in schema `public`.
//!
//! Not reproduced: supautils (so `postgres` cannot create event triggers here, which hosted
//! Supabase's supautils allows), pgsodium/Vault (a stand-in view is used where needed),
//! PostgREST and Supavisor themselves.
use tokio_postgres::Client;

/// The environment variable that picks the edition: `pure` or unset (the extension).
pub const EDITION_ENV: &str = "STRIPE_BILLING_EDITION";

/// The role that installs the pure-SQL edition and owns schema billing there, as on Supabase.
pub const PURE_INSTALLER: &str = "postgres";

/// Which edition a test database gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edition {
    /// `CREATE EXTENSION stripe_billing` by a superuser.
    Extension,
    /// The generated migration, applied by a non-superuser in a Supabase-like database.
    Pure,
}

impl Edition {
    /// The edition this test run installs, from `STRIPE_BILLING_EDITION`.
    pub fn current() -> Edition {
        match std::env::var(EDITION_ENV).as_deref() {
            Err(_) | Ok("") | Ok("extension") => Edition::Extension,
            Ok("pure") => Edition::Pure,
            Ok(other) => panic!("{EDITION_ENV}={other}: expected `pure` or `extension`"),
        }
    }
}

/// Set to `1` by the run against PostgreSQL 17 (`make test-integration-pg17`): its server comes
/// from scripts/pg17.sh, which has no build of the extension and no pg_dump of its version. The
/// few tests that need either skip that part there and say so; every other test runs in full.
pub const SERVER_ONLY_ENV: &str = "STRIPE_BILLING_SERVER_ONLY";

/// Whether this run's server has the extension built for it and PostgreSQL's client programs of
/// its own version (false only for the PostgreSQL 17 run, see [`SERVER_ONLY_ENV`]).
pub fn full_installation() -> bool {
    !matches!(std::env::var(SERVER_ONLY_ENV).as_deref(), Ok("1"))
}

/// Supabase's roles, created once per cluster by its superuser. Run as one statement per line
/// so that a second test binary finding them made is not an error.
const SUPABASE_ROLES: &[&str] = &[
    "CREATE ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS",
    "ALTER ROLE postgres SET search_path TO \"$user\", public, extensions",
    "CREATE ROLE anon NOLOGIN",
    "CREATE ROLE authenticated NOLOGIN",
    "CREATE ROLE service_role NOLOGIN BYPASSRLS",
    "CREATE ROLE authenticator LOGIN NOINHERIT",
    "GRANT anon, authenticated, service_role TO authenticator",
    // PostgreSQL 16 took from CREATEROLE the right to grant any role: granting a role now needs
    // its ADMIN OPTION. Supabase gives postgres that option on 16 and later (its migration
    // grant_with_admin_to_postgres_16_and_above), so that postgres can still make a worker role
    // a member of service_role.
    "DO $v$ BEGIN IF current_setting('server_version_num')::int >= 160000 THEN
        GRANT anon, authenticated, service_role TO postgres WITH ADMIN OPTION;
     ELSE
        GRANT anon, authenticated, service_role TO postgres;
     END IF; END $v$",
    "ALTER ROLE anon SET statement_timeout = '3s'",
    "ALTER ROLE authenticated SET statement_timeout = '8s'",
    "ALTER ROLE authenticator SET statement_timeout = '8s'",
];

/// Creates Supabase's roles when the cluster lacks them (`admin` is its superuser).
pub async fn ensure_supabase_roles(admin: &Client) {
    // Test binaries run at once: one of them makes the roles, the others wait for it.
    admin
        .batch_execute("SELECT pg_advisory_lock(hashtext('stripe_billing supabase roles'))")
        .await
        .expect("lock");
    // The last statement's effect marks a finished setup.
    let done: bool = admin
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
                            WHERE r.rolname = 'authenticator')",
            &[],
        )
        .await
        .expect("look for Supabase's roles")
        .get(0);
    if !done {
        for sql in SUPABASE_ROLES {
            let guarded = format!(
                "DO $$ BEGIN EXECUTE {}; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
                quote_literal(sql)
            );
            admin
                .batch_execute(&guarded)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    admin
        .batch_execute("SELECT pg_advisory_unlock(hashtext('stripe_billing supabase roles'))")
        .await
        .expect("unlock");
}

/// What a new Supabase project's database has before the user applies a migration, set up by
/// the superuser in the database `admin` is connected to.
pub async fn prepare_supabase_database(admin: &Client, database: &str) {
    admin
        .batch_execute(&format!(
            "GRANT ALL ON DATABASE {database} TO postgres;
             CREATE SCHEMA IF NOT EXISTS extensions;
             CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions;
             GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;
             GRANT ALL ON SCHEMA extensions TO postgres;
             GRANT USAGE ON SCHEMA public TO postgres, anon, authenticated, service_role;
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
             ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
             ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
             ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;"
        ))
        .await
        .expect("prepare a Supabase-like database");
}

/// Applies the current pure-SQL migration as the installer (`installer` is connected as it),
/// in one transaction as `supabase db push` does. Without supautils the installer cannot create
/// the event trigger, so this also takes the step the README gives for that case: new functions
/// of the installer stop being executable by PUBLIC.
pub async fn apply_pure_migration(installer: &mut Client) {
    let script = shipped_sql::pure_sql::current_install_script();
    let tx = installer.transaction().await.expect("begin");
    tx.batch_execute(&script)
        .await
        .unwrap_or_else(|e| panic!("applying the pure-SQL migration failed: {e:?}"));
    tx.commit().await.expect("commit the migration");
    let has_event_trigger: bool = installer
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'billing_new_functions_private')",
            &[],
        )
        .await
        .expect("look for the event trigger")
        .get(0);
    if !has_event_trigger {
        installer
            .batch_execute(&format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {PURE_INSTALLER} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC"
            ))
            .await
            .expect("revoke PUBLIC's default EXECUTE");
    }
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
