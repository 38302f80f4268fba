//! Access control (DESIGN.md, "Security") beyond reading rows: security_report() flags each
//! weakening, SECURITY DEFINER functions pin search_path, apply_grants() is idempotent and takes
//! back stray grants, and a monitoring role sees only the health figures.
mod access_support;
mod common;

use access_support::*;
use common::seed_plans;
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::pg::{assert_error, Caller, TestDb};
use tokio_postgres::Row;
use uuid::Uuid;

/// The security report: one row per weakening found.
const REPORT: &str = "SELECT object_type, object_name, problem FROM billing.security_report()";

/// The report's rows as (object type, object name, problem).
fn report_rows(rows: Vec<Row>) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn security_report_is_empty_after_install_and_flags_each_weakening() {
    let db = TestDb::new().await;
    let mut owner = db.owner().await;
    let report = report_rows(owner.query(REPORT, &[]).await.expect("security_report"));
    assert!(report.is_empty(), "fresh install: {report:?}");
    let grant_tokens =
        "billing.grant_tokens(uuid,bigint,text,timestamp with time zone,uuid,text,jsonb)";
    let schema_owner: String = owner
        .query_one(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'billing'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let functions_added_later = format!(
        "missing or disabled: new functions in billing would be executable by PUBLIC (create it as a superuser, \
         or run ALTER DEFAULT PRIVILEGES FOR ROLE {schema_owner} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC)"
    );
    // What keeps functions added later private: the event trigger (the extension), or where the
    // installer may not create one (the pure-SQL edition here), its revoked default privilege.
    let unprotect_later_functions = match db.edition {
        Edition::Extension => {
            "ALTER EVENT TRIGGER billing_new_functions_private DISABLE".to_string()
        }
        Edition::Pure => format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {schema_owner} GRANT EXECUTE ON FUNCTIONS TO PUBLIC"
        ),
    };
    let cases = [
        (
            "GRANT EXECUTE ON FUNCTION \
             billing.grant_tokens(uuid,bigint,text,timestamptz,uuid,text,jsonb) TO authenticated",
            (
                "function",
                grant_tokens,
                "executable by authenticated but not part of its API",
            ),
        ),
        (
            "ALTER TABLE billing.token_grants DISABLE ROW LEVEL SECURITY",
            (
                "table",
                "billing.token_grants",
                "row level security is not enabled",
            ),
        ),
        (
            "GRANT SELECT ON billing.stripe_events TO anon",
            (
                "table",
                "billing.stripe_events",
                "anon has SELECT but should not",
            ),
        ),
        (
            "GRANT EXECUTE ON FUNCTION \
             billing.grant_tokens(uuid,bigint,text,timestamptz,uuid,text,jsonb) TO PUBLIC",
            ("function", grant_tokens, "executable by PUBLIC"),
        ),
        (
            unprotect_later_functions.as_str(),
            (
                "event trigger",
                "billing_new_functions_private",
                functions_added_later.as_str(),
            ),
        ),
        (
            "ALTER FUNCTION billing.grant_tokens(uuid,bigint,text,timestamptz,uuid,text,jsonb) \
             RESET search_path",
            (
                "function",
                grant_tokens,
                "SECURITY DEFINER without a pinned search_path",
            ),
        ),
    ];
    for (change, (kind, name, problem)) in cases {
        let tx = owner.transaction().await.unwrap();
        tx.batch_execute(change).await.expect(change);
        let mut report = report_rows(tx.query(REPORT, &[]).await.expect("security_report"));
        // PUBLIC may run it, so every client role may too: those rows are the same finding.
        report
            .retain(|(_, _, p)| !p.starts_with("executable by anon") || !change.contains("PUBLIC"));
        report.retain(|(_, _, p)| {
            !p.starts_with("executable by authenticated") || !change.contains("PUBLIC")
        });
        let expected = (kind.to_string(), name.to_string(), problem.to_string());
        assert_eq!(report, [expected], "after {change}");
        tx.rollback().await.unwrap();
    }
    // A function added to billing later is nobody's until granted: the event trigger takes
    // PUBLIC's default EXECUTE away at once (or, without it, the owner's default privileges
    // never give it).
    owner
        .batch_execute(
            "CREATE FUNCTION billing.added_later() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        )
        .await
        .unwrap();
    let public: bool = owner
        .query_one(
            "SELECT has_function_privilege('anon', 'billing.added_later()', 'EXECUTE')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!public, "anon may run a function added later");
    owner
        .batch_execute("DROP FUNCTION billing.added_later()")
        .await
        .unwrap();
    let report = report_rows(owner.query(REPORT, &[]).await.unwrap());
    assert!(report.is_empty(), "after the rollbacks: {report:?}");
}

#[tokio::test]
async fn security_definer_functions_pin_a_safe_search_path() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    let rows = owner
        .query(
            "SELECT p.oid::regprocedure::text,
                    (SELECT substr(c, length('search_path=') + 1) FROM unnest(p.proconfig) c
                     WHERE c LIKE 'search_path=%')
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'billing' AND p.prosecdef ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let functions: Vec<(String, Option<String>)> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for name in [
        "grant_tokens",
        "spend_tokens",
        "spend_my_tokens",
        "request_checkout",
        "request_portal",
        "await_request",
        "claim_requests",
        "finish_request",
        "fail_request",
    ] {
        let prefix = format!("billing.{name}(");
        assert!(
            functions.iter().any(|(f, _)| f.starts_with(&prefix)),
            "{name} is not SECURITY DEFINER: {functions:?}"
        );
    }
    for (function, path) in &functions {
        let path = path
            .as_deref()
            .unwrap_or_else(|| panic!("{function} has no pinned search_path"));
        let schemas: Vec<&str> = path
            .split(',')
            .map(|s| s.trim().trim_matches('"'))
            .collect();
        assert_eq!(
            schemas.last(),
            Some(&"pg_temp"),
            "{function}: pg_temp must come last in {path:?}"
        );
        assert!(
            !schemas.iter().any(|s| *s == "public" || *s == "$user"),
            "{function}: search_path {path:?} includes a schema clients may write to"
        );
    }
}

#[tokio::test]
async fn apply_grants_is_idempotent() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed_plans(&owner).await;
    for _ in 0..2 {
        let applied: String = owner
            .query_one("SELECT billing.apply_grants()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(applied, "granted to: anon, authenticated, service_role");
        let report = report_rows(owner.query(REPORT, &[]).await.unwrap());
        assert!(report.is_empty(), "after apply_grants: {report:?}");
    }
    // The grants still work: users read the catalog, anon still cannot.
    let mut api = db.api().await;
    let user = Caller::User(Uuid::new_v4());
    let plans = api
        .call(&user, "SELECT id FROM billing.plans ORDER BY id", &[])
        .await
        .unwrap();
    let plans: Vec<String> = plans.iter().map(|r| r.get(0)).collect();
    assert_eq!(plans, ["pack", "pro"]);
    assert_error(
        api.call(&Caller::Anon, "SELECT id FROM billing.plans", &[])
            .await,
        "42501",
        "permission denied",
    );
}

#[tokio::test]
async fn apply_grants_takes_back_stray_grants_to_client_roles() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(
            "GRANT EXECUTE ON FUNCTION billing.grant_tokens(uuid,bigint,text,timestamptz,uuid,text,jsonb) TO authenticated;
             GRANT SELECT ON billing.webhook_secrets TO anon;",
        )
        .await
        .unwrap();
    let before = report_rows(owner.query(REPORT, &[]).await.unwrap());
    assert_eq!(before.len(), 2, "{before:?}");
    owner
        .batch_execute("SELECT billing.apply_grants()")
        .await
        .unwrap();
    let after = report_rows(owner.query(REPORT, &[]).await.unwrap());
    assert!(after.is_empty(), "{after:?}");
}

#[tokio::test]
async fn a_monitoring_role_granted_health_reads_the_figures_and_nothing_else() {
    let s = seed().await;
    let mut api = s.db.api().await;
    let figures = api
        .call(
            &Caller::Service,
            "SELECT requests_pending, events_failed FROM billing.health()",
            &[],
        )
        .await
        .expect("service_role reads the figures");
    assert_eq!(figures.len(), 1);
    // A role of the operator's monitoring, granted only the function (cluster-wide, so its
    // name is this database's). The owner joins it to act as it: the pure-SQL edition's owner is
    // no superuser, and on PostgreSQL 15 creating a role does not make one a member.
    let role = format!("monitor_{}", s.db.name);
    s.owner
        .batch_execute(&format!(
            "CREATE ROLE {role} NOLOGIN; GRANT USAGE ON SCHEMA billing TO {role};
             GRANT EXECUTE ON FUNCTION billing.health() TO {role};
             GRANT {role} TO CURRENT_USER;"
        ))
        .await
        .unwrap();
    let tx = |sql: &str| format!("BEGIN; SET LOCAL ROLE {role}; {sql}");
    let read = s
        .owner
        .simple_query(&tx("SELECT requests_pending FROM billing.health();"))
        .await;
    s.owner.batch_execute("ROLLBACK").await.unwrap();
    assert!(read.is_ok(), "{read:?}");
    let table = s
        .owner
        .simple_query(&tx("SELECT count(*) FROM billing.stripe_events;"))
        .await;
    s.owner.batch_execute("ROLLBACK").await.unwrap();
    let err = table.expect_err("the tables stay closed");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    // Not a client role: the security report stays empty.
    let report = report_rows(s.owner.query(REPORT, &[]).await.unwrap());
    assert!(report.is_empty(), "{report:?}");
    s.owner
        .batch_execute(&format!(
            "REVOKE ALL ON FUNCTION billing.health() FROM {role}; REVOKE USAGE ON SCHEMA billing FROM {role}; DROP ROLE {role};"
        ))
        .await
        .unwrap();
}
