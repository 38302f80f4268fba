//! The pure-SQL edition's migrations (DESIGN.md, "Two editions"): the committed file is what
//! the sources generate, the install refuses a database it does not fit, an upgrade migration
//! made from a hand-written part and the replayed code gives the schema a fresh install of the
//! new version has and keeps the data, and security_report() says what to do when the installer
//! could not create the event trigger. On a Supabase-like cluster (STRIPE_BILLING_EDITION=pure)
//! the migrations run as Supabase's non-superuser postgres; on another, as the superuser.
use std::path::{Path, PathBuf};

use shipped_sql::{pure_sql, upgrade};
use stripe_billing_tests::catalog;
use stripe_billing_tests::edition::{self, Edition};
use stripe_billing_tests::pg::{db_error, TestDb};
use tokio_postgres::Client;

#[test]
fn the_committed_migrations_are_generated_from_the_current_sources() {
    for (path, generated) in pure_sql::generate_current().expect("generate") {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is out of date: run `make supabase-sql` and commit the result",
            path.display()
        );
    }
}

/// Applies `script` in one transaction, as `supabase db push` does.
async fn apply(client: &mut Client, script: &str) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(script).await?;
    tx.commit().await
}

/// Applies `script` the way `psql -v ON_ERROR_STOP=1 -f` does without `--single-transaction`:
/// each statement commits on its own and the first error stops the rest. A refusal must come
/// before any statement with an effect, or such a run leaves a half-made install behind.
/// `client_encoding` is the encoding psql is told to speak. Err: psql's error output.
fn apply_with_psql(dsn: &str, script: &str, client_encoding: &str) -> Result<(), String> {
    let bindir = std::process::Command::new(upgrade::pg_config())
        .arg("--bindir")
        .output()
        .expect("pg_config --bindir");
    let psql = Path::new(String::from_utf8_lossy(&bindir.stdout).trim()).join("psql");
    let file = std::env::temp_dir().join(format!(
        "stripe_billing_refused_{}_{}.sql",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&file, script).unwrap();
    let out = std::process::Command::new(psql)
        .env("PGCLIENTENCODING", client_encoding)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&file)
        .args(["--dbname", dsn])
        .output()
        .expect("run psql");
    let _ = std::fs::remove_file(&file);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Relations and functions in schema billing (none when it does not exist).
async fn billing_objects(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'billing')
                  + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = 'billing')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn supabase_like() -> bool {
    Edition::current() == Edition::Pure
}

#[tokio::test]
async fn the_install_refuses_a_database_it_does_not_fit() {
    let script = pure_sql::current_install_script();
    let version = upgrade::current_version();

    // Twice: the second finds the first.
    let db = TestDb::with_edition(Edition::Pure).await;
    let err = apply(&mut db.owner().await, &script).await.unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "BL014".into(),
            format!("stripe_billing {version} is already installed in schema billing; this migration installs {version}")
        )
    );

    // Beside the extension (on a server that has it: not the PostgreSQL 17 run).
    if edition::full_installation() {
        let ext = TestDb::with_edition(Edition::Extension).await;
        let err = apply(&mut ext.owner().await, &script).await.unwrap_err();
        assert_eq!(
            db_error(&err).1,
            "stripe_billing is installed here as an extension; the pure-SQL edition cannot go beside it"
        );
    } else {
        eprintln!("skipped the step beside the extension: this server has no build of it");
    }

    // Over a schema of the same name that is someone else's.
    let taken = TestDb::empty_for(Edition::Pure).await;
    let mut owner = taken.owner().await;
    owner.batch_execute("CREATE SCHEMA billing").await.unwrap();
    let err = apply(&mut owner, &script).await.unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "BL014".into(),
            "a schema billing exists that stripe_billing did not create".into()
        )
    );
    // Also when psql runs it statement by statement (checked below: nothing left behind).
    let refused = apply_with_psql(&taken.dsn, &script, "UTF8").unwrap_err();
    assert!(
        refused.contains("a schema billing exists that stripe_billing did not create"),
        "{refused}"
    );

    // With pgcrypto somewhere else than Supabase keeps it.
    let elsewhere = TestDb::empty_for(Edition::Pure).await;
    elsewhere
        .superuser()
        .await
        .batch_execute(
            "DROP EXTENSION pgcrypto; CREATE SCHEMA crypto; CREATE EXTENSION pgcrypto WITH SCHEMA crypto",
        )
        .await
        .unwrap();
    let err = apply(&mut elsewhere.owner().await, &script)
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "BL014".into(),
            "pgcrypto is installed in schema crypto, and stripe_billing calls extensions.hmac()"
                .into()
        )
    );
    let refused = apply_with_psql(&elsewhere.dsn, &script, "UTF8").unwrap_err();
    assert!(
        refused.contains("pgcrypto is installed in schema crypto"),
        "{refused}"
    );

    // In a database whose encoding is not UTF-8 (Stripe signs UTF-8 bytes).
    let ascii = TestDb::empty_for(Edition::Pure).await;
    let ascii_name = format!("{}_ascii", ascii.name);
    ascii
        .superuser()
        .await
        .batch_execute(&format!(
            "CREATE DATABASE {ascii_name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ))
        .await
        .unwrap();
    let mut client = stripe_billing_tests::pg::connect(&stripe_billing_tests::pg::database_dsn(
        &ascii.dsn,
        &ascii_name,
    ))
    .await;
    // A UTF-8 client (tokio-postgres, like most drivers) has the server refuse the script's
    // non-ASCII text before anything runs; a client in the database's own encoding (psql there)
    // reaches the guard, which runs here on its own.
    assert!(apply(&mut client, &script).await.is_err());
    let guard = script
        .split_inclusive("$guard$;")
        .next()
        .expect("the guard comes first");
    assert!(guard.is_ascii(), "the guard must run in any encoding");
    let err = apply(&mut client, guard).await.unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "BL014".into(),
            "the database encoding is SQL_ASCII; stripe_billing needs UTF8".into()
        )
    );
    // psql in the database's own encoding runs the whole script statement by statement, and
    // the guard stops it before anything else.
    let ascii_dsn = stripe_billing_tests::pg::database_dsn(&ascii.dsn, &ascii_name);
    let refused = apply_with_psql(&ascii_dsn, &script, "SQL_ASCII").unwrap_err();
    assert!(
        refused.contains("the database encoding is SQL_ASCII; stripe_billing needs UTF8"),
        "{refused}"
    );
    let schemas: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'billing'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0, "the refused script left schema billing behind");

    // Without pgcrypto at all, it is created where Supabase keeps it (it is a trusted
    // extension, so the installer may).
    let bare = TestDb::empty_for(Edition::Pure).await;
    bare.superuser()
        .await
        .batch_execute("DROP EXTENSION pgcrypto")
        .await
        .unwrap();
    apply(&mut bare.owner().await, &script)
        .await
        .expect("install where pgcrypto is missing");
    let schema: String = bare
        .owner()
        .await
        .query_one(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgcrypto'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schema, "extensions");
    // Each refusal left nothing behind.
    for db in [&taken, &elsewhere] {
        let tables: i64 = db
            .owner()
            .await
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'billing'::regnamespace",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        assert_eq!(tables, 0, "{}", db.name);
        assert_eq!(billing_objects(&db.owner().await).await, 0, "{}", db.name);
    }
    let schemas: i64 = elsewhere
        .owner()
        .await
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'billing'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0, "the refused script left schema billing behind");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the sources in which the next version has been developed: `0.2.0--NEXT.sql` adds
/// a column to billing.config (also in the schema file, as for a real change), and a code file
/// gains a function.
fn next_version_sources(next: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("stripe_billing_next_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    copy_dir(&upgrade::repo_root().join("sql"), &root.join("sql"));
    let column = "ALTER TABLE billing.config ADD COLUMN upgrade_probe integer;\n\
                  COMMENT ON COLUMN billing.config.upgrade_probe IS 'Added by the next version.';\n";
    let settings = root.join("sql/settings/schema.sql");
    let mut schema = std::fs::read_to_string(&settings).unwrap();
    schema.push_str(column);
    std::fs::write(&settings, schema).unwrap();
    let support = root.join("sql/support/functions.sql");
    let mut code = std::fs::read_to_string(&support).unwrap();
    code.push_str(
        "\nCREATE OR REPLACE FUNCTION billing._upgrade_probe() RETURNS integer LANGUAGE sql IMMUTABLE RETURN 42;\n\
         COMMENT ON FUNCTION billing._upgrade_probe() IS 'Internal: added by the next version.';\n",
    );
    std::fs::write(&support, code).unwrap();
    let current = upgrade::current_version();
    std::fs::write(
        root.join(format!("sql/upgrades/{current}--{next}.sql")),
        format!("-- The next version's state change.\n{column}-- @replay\n"),
    )
    .unwrap();
    root
}

const USER: &str = "8d3f5c1e-2b4a-4c6d-9e8f-0a1b2c3d4e5f";

/// A grant of 500 and a spend of 120: the balance an upgrade must keep is 380.
async fn fill_ledger(owner: &Client) {
    owner
        .execute(
            "SELECT billing.grant_tokens($1::text::uuid, 500, 'promo', grant_key => 'before-upgrade')",
            &[&USER],
        )
        .await
        .unwrap();
    owner
        .execute(
            "SELECT billing.spend_tokens($1::text::uuid, 120, idempotency_key => 'job-1')",
            &[&USER],
        )
        .await
        .unwrap();
}

async fn balance(owner: &Client) -> i64 {
    owner
        .query_one("SELECT billing.token_balance($1::text::uuid)", &[&USER])
        .await
        .unwrap()
        .get(0)
}

async fn installed(client: &Client) -> (String, String, bool) {
    let row = client
        .query_one(
            "SELECT edition, version, upgraded_at IS NOT NULL FROM billing.installation",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn an_upgrade_migration_gives_the_fresh_schema_of_the_next_version_and_keeps_the_data() {
    let current = upgrade::current_version();
    let next = "99.0.0";
    let root = next_version_sources(next);
    let upgrade_script = pure_sql::upgrade_script(&root, current, next).expect("generate");
    let fresh_script = pure_sql::install_script(&root, next).expect("generate");

    let old = TestDb::with_edition(Edition::Pure).await;
    let mut owner = old.owner().await;
    fill_ledger(&owner).await;
    apply(&mut owner, &upgrade_script)
        .await
        .expect("the upgrade migration applies");
    assert_eq!(
        installed(&owner).await,
        ("pure-sql".into(), next.into(), true)
    );
    assert_eq!(
        balance(&owner).await,
        380,
        "the ledger survives the upgrade"
    );
    let probe: i32 = owner
        .query_one("SELECT billing._upgrade_probe()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(probe, 42, "the replayed code has the new function");

    let fresh = TestDb::empty_for(Edition::Pure).await;
    apply(&mut fresh.owner().await, &fresh_script)
        .await
        .expect("a fresh install of the next version");
    let (upgraded, fresh_catalog) = (
        catalog::catalog_snapshot(&owner).await,
        catalog::catalog_snapshot(&fresh.owner().await).await,
    );
    let (only_upgraded, only_fresh) = catalog::snapshot_diff(&upgraded, &fresh_catalog);
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "upgraded differs from fresh.\nonly after the upgrade:\n{}\n\nonly in a fresh install:\n{}",
        only_upgraded.join("\n"),
        only_fresh.join("\n")
    );

    // Applied again, or to a database at another version, it refuses and changes nothing.
    let err = apply(&mut owner, &upgrade_script).await.unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "BL014".into(),
            format!(
                "stripe_billing {next} is installed; this migration upgrades {current} to {next}"
            )
        )
    );
    let none = TestDb::empty_for(Edition::Pure).await;
    let err = apply(&mut none.owner().await, &upgrade_script)
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&err),
        (
            "BL014".into(),
            format!("no pure-SQL stripe_billing is installed here; this migration upgrades {current} to {next}")
        )
    );
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn without_the_event_trigger_the_security_report_says_what_to_run() {
    let db = TestDb::empty_for(Edition::Pure).await;
    let mut owner = db.owner().await;
    apply(&mut owner, &pure_sql::current_install_script())
        .await
        .unwrap();
    let rows = security_report(&owner).await;
    let event_trigger: bool = owner
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'billing_new_functions_private')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if !supabase_like() {
        // A superuser installed it: the event trigger exists, nothing is left to do.
        assert!(event_trigger);
        assert!(rows.is_empty(), "{rows:?}");
        return;
    }
    // Supabase's postgres may not create event triggers without supautils (not in this cluster).
    assert!(!event_trigger);
    assert_eq!(
        rows,
        [
            "event trigger billing_new_functions_private: missing or disabled: new functions in billing would be executable by PUBLIC \
             (create it as a superuser, or run ALTER DEFAULT PRIVILEGES FOR ROLE postgres REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC)"
        ]
    );
    // Until then a function added to billing is anyone's; after the statement it names, it is
    // nobody's until granted, and the report is clean.
    let anon_may_run = |name: &'static str| {
        format!("SELECT has_function_privilege('anon', 'billing.{name}()', 'EXECUTE')")
    };
    owner
        .batch_execute(
            "CREATE FUNCTION billing.before_fix() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        )
        .await
        .unwrap();
    let before: bool = owner
        .query_one(&anon_may_run("before_fix"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(before, "PUBLIC's default EXECUTE");
    owner
        .batch_execute(
            "DROP FUNCTION billing.before_fix();
             ALTER DEFAULT PRIVILEGES FOR ROLE postgres REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
             CREATE FUNCTION billing.after_fix() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        )
        .await
        .unwrap();
    let after: bool = owner
        .query_one(&anon_may_run("after_fix"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !after,
        "a function added after the fix is executable by anon"
    );
    owner
        .batch_execute("DROP FUNCTION billing.after_fix()")
        .await
        .unwrap();
    assert!(security_report(&owner).await.is_empty());
}

async fn security_report(client: &Client) -> Vec<String> {
    client
        .query(
            "SELECT format('%s %s: %s', object_type, object_name, problem) FROM billing.security_report()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn every_released_pure_edition_upgrades_to_the_fresh_schema_and_keeps_its_data() {
    // The committed install migrations of released versions are history: each, with data in
    // it, upgraded by the committed upgrade migrations in order, must equal a fresh install.
    let root = upgrade::repo_root();
    let current = upgrade::current_version();
    let released: Vec<String> = upgrade::released_versions(&root)
        .unwrap()
        .into_iter()
        .filter(|v| pure_sql::has_pure_edition(v) && v != current)
        .collect();
    assert!(!released.is_empty(), "0.2.0 had a pure-SQL edition");
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let fresh = TestDb::with_edition(Edition::Pure).await;
    let fresh_catalog = catalog::catalog_snapshot(&fresh.owner().await).await;
    for version in released {
        let db = TestDb::empty_for(Edition::Pure).await;
        let mut owner = db.owner().await;
        apply(&mut owner, &read(pure_sql::install_path(&root, &version)))
            .await
            .unwrap_or_else(|e| panic!("installing {version}: {e:?}"));
        fill_ledger(&owner).await;
        let mut at = version.clone();
        for step in upgrade::released_versions(&root)
            .unwrap()
            .into_iter()
            .chain([current.to_string()])
            .filter(|v| upgrade::version_key(v) > upgrade::version_key(&version))
        {
            apply(&mut owner, &read(pure_sql::upgrade_path(&root, &at, &step)))
                .await
                .unwrap_or_else(|e| panic!("upgrading {at} to {step}: {e:?}"));
            at = step;
        }
        assert_eq!(
            installed(&owner).await,
            ("pure-sql".into(), current.into(), true)
        );
        assert_eq!(
            balance(&owner).await,
            380,
            "the ledger survives the upgrade from {version}"
        );
        let upgraded = catalog::catalog_snapshot(&owner).await;
        let (only_upgraded, only_fresh) = catalog::snapshot_diff(&upgraded, &fresh_catalog);
        assert!(
            only_upgraded.is_empty() && only_fresh.is_empty(),
            "{version} upgraded differs from fresh.\nonly after the upgrade:\n{}\n\nonly in a fresh install:\n{}",
            only_upgraded.join("\n"),
            only_fresh.join("\n")
        );
    }
}
