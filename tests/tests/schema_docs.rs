//! Docs are part of done: every function, table, view and column in schema billing carries a
//! COMMENT ON, checked against the installed extension.
use stripe_billing_tests::edition::{self, Edition};
use stripe_billing_tests::pg::TestDb;

#[tokio::test]
async fn every_object_in_schema_billing_is_commented() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    let missing: Vec<String> = owner
        .query(
            "SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p
             WHERE p.pronamespace = 'billing'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL
             UNION ALL
             SELECT 'relation ' || c.oid::regclass::text FROM pg_class c
             WHERE c.relnamespace = 'billing'::regnamespace AND c.relkind IN ('r', 'v')
               AND obj_description(c.oid, 'pg_class') IS NULL
             UNION ALL
             SELECT 'column ' || c.oid::regclass::text || '.' || a.attname FROM pg_class c
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.relnamespace = 'billing'::regnamespace AND c.relkind IN ('r', 'v')
               AND col_description(c.oid, a.attnum) IS NULL
             UNION ALL
             SELECT 'type ' || t.oid::regtype::text FROM pg_type t
             WHERE t.typnamespace = 'billing'::regnamespace AND t.typtype = 'c' AND t.typrelid IN (
                 SELECT oid FROM pg_class WHERE relkind = 'c') AND obj_description(t.oid, 'pg_type') IS NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        missing.is_empty(),
        "objects without COMMENT ON: {missing:#?}"
    );
    let functions: i64 = owner
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'billing'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        functions > 40,
        "the check saw the schema's functions ({functions})"
    );
}

/// pg_dump keeps the rows of every billing table (and the sequences behind identity columns),
/// which a plain dump of a database with an extension would otherwise skip. The pure-SQL
/// edition's tables belong to no extension, so pg_dump keeps them anyway: there the test dumps.
#[tokio::test]
async fn every_table_and_sequence_is_registered_for_pg_dump() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    if db.edition == Edition::Pure {
        return pure_sql_tables_are_dumped(&db, &owner).await;
    }
    let missing: Vec<String> = owner
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c
             WHERE c.relnamespace = 'billing'::regnamespace AND c.relkind IN ('r', 'S')
               AND c.oid <> ALL (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'stripe_billing')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        missing.is_empty(),
        "not registered with pg_extension_config_dump: {missing:?}"
    );
    let registered: i64 = owner
        .query_one(
            "SELECT cardinality(extconfig) FROM pg_extension WHERE extname = 'stripe_billing'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i32>(0)
        .into();
    assert!(registered >= 11, "{registered} objects registered");
}

async fn pure_sql_tables_are_dumped(db: &TestDb, owner: &tokio_postgres::Client) {
    let members: i64 = owner
        .query_one(
            "SELECT count(*) FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
             WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
               AND c.relnamespace = 'billing'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(members, 0, "billing tables belong to an extension");
    if !edition::full_installation() {
        // pg_dump refuses a server newer than itself, and the PostgreSQL 17 run has none of 17.
        eprintln!("skipped the dump: this server has no pg_dump of its version");
        return;
    }
    owner
        .batch_execute(
            "SELECT billing.grant_tokens('8d3f5c1e-2b4a-4c6d-9e8f-0a1b2c3d4e5f', 77, 'promo', grant_key => 'dumped-grant')",
        )
        .await
        .unwrap();
    let bindir = std::process::Command::new(shipped_sql::upgrade::pg_config())
        .arg("--bindir")
        .output()
        .expect("pg_config --bindir");
    let pg_dump =
        std::path::Path::new(String::from_utf8_lossy(&bindir.stdout).trim()).join("pg_dump");
    let out = std::process::Command::new(pg_dump)
        .args(["--data-only", "--schema=billing", "--dbname", &db.dsn])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(dump.contains("COPY billing.token_grants"), "{dump}");
    assert!(
        dump.contains("dumped-grant"),
        "the grant's row is not in the dump"
    );
    assert!(
        dump.contains("COPY billing.installation"),
        "the version record is not in the dump"
    );
}
