//! Access control (DESIGN.md, "Security"), tested by connecting as each client role the way
//! PostgREST does: anon, two signed-in users (A and B) and service_role.
mod common;

use common::{add_customer, add_project, add_request, add_subscription, seed_plans};
use serde_json::Value;
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::pg::{assert_error, Api, Caller, TestDb};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Tables and views a signed-in user may read, with row-level security on user_id.
const USER_TABLES: [&str; 8] = [
    "projects",
    "customers",
    "subscriptions",
    "token_grants",
    "token_spends",
    "token_spend_allocations",
    "token_grant_balances",
    "stripe_requests",
];
/// Rows of each USER_TABLES entry that seed() gives user A and user B (more, so counts tell
/// the users apart).
const ROWS_A: [i64; 8] = [1, 1, 1, 2, 1, 1, 2, 1];
const ROWS_B: [i64; 8] = [2, 1, 2, 3, 2, 3, 3, 2];

struct Seeded {
    db: TestDb,
    owner: Client,
    a: Uuid,
    b: Uuid,
    project_a: Uuid,
    project_b: Uuid,
}

/// Rows in every user table for users A and B, plus an event, a webhook secret and config.
async fn seed() -> Seeded {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed_plans(&owner).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let project_a = add_project(&owner, a).await;
    let project_b = add_project(&owner, b).await;
    add_project(&owner, b).await;
    add_customer(&owner, a, "cus_a").await;
    add_customer(&owner, b, "cus_b").await;
    add_subscription(&owner, a, "sub_a", "active").await;
    add_subscription(&owner, b, "sub_b1", "canceled").await;
    add_subscription(&owner, b, "sub_b2", "active").await;
    let ledger: [(&str, Params); 8] = [
        ("SELECT billing.grant_tokens($1, 100)", &[&a]),
        (
            "SELECT billing.grant_tokens($1, 50, project_id => $2)",
            &[&a, &project_a],
        ),
        ("SELECT billing.spend_tokens($1, 30)", &[&a]),
        ("SELECT billing.grant_tokens($1, 200)", &[&b]),
        (
            "SELECT billing.grant_tokens($1, 20, expires_at => now() + interval '1 day')",
            &[&b],
        ),
        (
            "SELECT billing.grant_tokens($1, 10, project_id => $2)",
            &[&b, &project_b],
        ),
        // Takes the 20 expiring tokens first, then 10 of the 200: two allocations.
        ("SELECT billing.spend_tokens($1, 30)", &[&b]),
        (
            "SELECT billing.spend_tokens($1, 5, project_id => $2)",
            &[&b, &project_b],
        ),
    ];
    for (sql, params) in ledger {
        owner.execute(sql, params).await.expect(sql);
    }
    add_request(&owner, a, "checkout").await;
    add_request(&owner, b, "checkout").await;
    add_request(&owner, b, "portal").await;
    owner
        .batch_execute(
            "INSERT INTO billing.stripe_events (id, type, livemode, created, payload)
                 VALUES ('evt_test_1', 'invoice.paid', false, now(), '{}');
             INSERT INTO billing.webhook_secrets (secret) VALUES ('whsec_test123');
             UPDATE billing.config SET checkout_success_url = 'https://app.example.test/ok';",
        )
        .await
        .expect("seed privileged tables");
    Seeded {
        db,
        owner,
        a,
        b,
        project_a,
        project_b,
    }
}

/// (rows visible, of which owned by `user`) in `table` as `caller`.
async fn visible(api: &mut Api, caller: &Caller, table: &str, user: Uuid) -> (i64, i64) {
    let sql = format!("SELECT count(*), count(*) FILTER (WHERE user_id = $1) FROM billing.{table}");
    let rows = api
        .call(caller, &sql, &[&user])
        .await
        .unwrap_or_else(|e| panic!("{caller:?} reading {table}: {e}"));
    (rows[0].get(0), rows[0].get(1))
}

fn balances(row: &Row) -> Vec<i64> {
    (0..row.len()).map(|i| row.get(i)).collect()
}

#[tokio::test]
async fn users_read_only_their_own_rows() {
    let s = seed().await;
    let mut api = s.db.api().await;
    for (i, table) in USER_TABLES.iter().enumerate() {
        let total: i64 = s
            .owner
            .query_one(&format!("SELECT count(*) FROM billing.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(total, ROWS_A[i] + ROWS_B[i], "seeded rows of {table}");
        let as_a = visible(&mut api, &Caller::User(s.a), table, s.a).await;
        assert_eq!(as_a, (ROWS_A[i], ROWS_A[i]), "user A reading {table}");
        let as_b = visible(&mut api, &Caller::User(s.b), table, s.b).await;
        assert_eq!(as_b, (ROWS_B[i], ROWS_B[i]), "user B reading {table}");
        // Signed in without a user id: nothing is theirs.
        let sql = format!("SELECT count(*) FROM billing.{table}");
        let rows = api
            .call_as("authenticated", r#"{"role":"authenticated"}"#, &sql, &[])
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), 0, "no sub reading {table}");
        let all = visible(&mut api, &Caller::Service, table, s.a).await;
        assert_eq!(all, (total, ROWS_A[i]), "service_role reading {table}");
    }
}

#[tokio::test]
async fn users_cannot_use_privileged_functions_or_tables() {
    let s = seed().await;
    let mut api = s.db.api().await;
    let a = Caller::User(s.a);
    let grant = "INSERT INTO billing.token_grants (user_id, source, tokens, remaining) \
                 VALUES ($1, 'manual', 1000, 1000)";
    let denied: [(&str, Params, &str); 15] = [
        (
            "SELECT billing.grant_tokens($1, 1000)",
            &[&s.a],
            "function grant_tokens",
        ),
        (
            "SELECT billing.spend_tokens($1, 10)",
            &[&s.b],
            "function spend_tokens",
        ),
        (
            "SELECT billing.spend_tokens($1, 10)",
            &[&s.a],
            "function spend_tokens",
        ),
        (
            "SELECT count(*) FROM billing.stripe_events",
            &[],
            "table stripe_events",
        ),
        (
            "SELECT count(*) FROM billing.webhook_secrets",
            &[],
            "table webhook_secrets",
        ),
        ("SELECT count(*) FROM billing.config", &[], "table config"),
        (grant, &[&s.a], "table token_grants"),
        (grant, &[&s.b], "table token_grants"),
        (
            "UPDATE billing.token_grants SET remaining = tokens WHERE user_id = $1",
            &[&s.a],
            "table token_grants",
        ),
        (
            "INSERT INTO billing.stripe_requests (user_id, kind) VALUES ($1, 'checkout')",
            &[&s.b],
            "table stripe_requests",
        ),
        (
            "SELECT * FROM billing.claim_requests('w1', 10, 30)",
            &[],
            "function claim_requests",
        ),
        (
            "SELECT billing.finish_request(gen_random_uuid(), 'w1', '{}')",
            &[],
            "function finish_request",
        ),
        (
            "SELECT billing.fail_request(gen_random_uuid(), 'w1', 'boom', 1)",
            &[],
            "function fail_request",
        ),
        ("SELECT * FROM billing.health()", &[], "function health"),
        ("SELECT billing.prune()", &[], "function prune"),
    ];
    for (sql, params, what) in denied {
        let needle = format!("permission denied for {what}");
        assert_error(api.call(&a, sql, params).await, "42501", &needle);
    }
    assert_error(
        api.call(&a, "SELECT billing.token_balance($1)", &[&s.b])
            .await,
        "42501",
        "you can only read your own balance",
    );
    // Nothing above changed the ledger: A still has 100 - 30 own tokens, B 200 + 20 - 30.
    let row = s
        .owner
        .query_one(
            "SELECT billing.token_balance($1), billing.token_balance($2),
                    (SELECT count(*) FROM billing.token_grants)",
            &[&s.a, &s.b],
        )
        .await
        .unwrap();
    assert_eq!(balances(&row), [70, 190, 5]);
}

#[tokio::test]
async fn users_spend_and_read_their_own_tokens() {
    let s = seed().await;
    let mut api = s.db.api().await;
    let a = Caller::User(s.a);
    let spent: Value = api
        .call(&a, "SELECT billing.spend_my_tokens(20)", &[])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(
        (&spent["amount"], &spent["balance"]),
        (&20.into(), &50.into())
    );
    let own = api
        .call(
            &a,
            "SELECT billing.token_balance(), billing.token_balance($1), billing.token_balance(NULL, $2)",
            &[&s.a, &s.project_a],
        )
        .await
        .unwrap();
    assert_eq!(balances(&own[0]), [50, 50, 50]);
    let spent: Value = api
        .call(&a, "SELECT billing.spend_my_tokens(7, $1)", &[&s.project_a])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(spent["balance"], 43);
    // B's project is not A's to spend from.
    assert_error(
        api.call(&a, "SELECT billing.spend_my_tokens(1, $1)", &[&s.project_b])
            .await,
        "P0002",
        "unknown project",
    );
    // The spends went to A's ledger only.
    let rows = s
        .owner
        .query(
            "SELECT user_id, sum(amount)::bigint FROM billing.token_spends GROUP BY user_id ORDER BY 2",
            &[],
        )
        .await
        .unwrap();
    let sums: Vec<(Uuid, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(sums, [(s.b, 35), (s.a, 57)]);
    let row = s
        .owner
        .query_one("SELECT billing.token_balance($1)", &[&s.b])
        .await
        .unwrap();
    assert_eq!(balances(&row), [190]);
}

#[tokio::test]
async fn anon_can_do_nothing() {
    let s = seed().await;
    let mut api = s.db.api().await;
    let request = add_request(&s.owner, s.a, "checkout").await;
    let denied: [(&str, Params); 15] = [
        ("SELECT count(*) FROM billing.plans", &[]),
        ("SELECT count(*) FROM billing.token_grants", &[]),
        ("SELECT count(*) FROM billing.token_grant_balances", &[]),
        ("SELECT count(*) FROM billing.stripe_requests", &[]),
        ("SELECT count(*) FROM billing.subscriptions", &[]),
        ("SELECT billing.token_balance($1)", &[&s.a]),
        ("SELECT billing.token_balance()", &[]),
        ("SELECT billing.current_user_id()", &[]),
        ("SELECT billing.spend_my_tokens(1)", &[]),
        (
            "SELECT billing.request_checkout('price_pack', success_url => 'https://x.test', \
             cancel_url => 'https://x.test')",
            &[],
        ),
        ("SELECT billing.request_portal('https://x.test')", &[]),
        ("SELECT billing.await_request($1, 0)", &[&request]),
        ("SELECT billing.grant_tokens($1, 10)", &[&s.a]),
        ("SELECT * FROM billing.claim_requests('w1')", &[]),
        ("SELECT * FROM billing.health()", &[]),
    ];
    for (sql, params) in denied {
        let result = api.call(&Caller::Anon, sql, params).await;
        assert!(result.is_err(), "anon ran {sql}: {result:?}");
        assert_error(result, "42501", "permission denied");
    }
}

#[tokio::test]
async fn service_role_grants_spends_and_reads_everything() {
    let s = seed().await;
    let mut api = s.db.api().await;
    let svc = Caller::Service;
    let granted: Value = api
        .call(&svc, "SELECT billing.grant_tokens($1, 1000)", &[&s.a])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(granted["tokens"], 1000);
    assert_eq!(granted["user_id"], s.a.to_string());
    assert_eq!(granted["duplicate"], false);
    let spent: Value = api
        .call(&svc, "SELECT billing.spend_tokens($1, 25)", &[&s.b])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(spent["balance"], 165);
    let balance = api
        .call(
            &svc,
            "SELECT billing.token_balance($1), billing.token_balance($2)",
            &[&s.a, &s.b],
        )
        .await
        .unwrap();
    assert_eq!(balances(&balance[0]), [1070, 165]);
    let texts = |rows: Vec<Row>| rows.iter().map(|r| r.get(0)).collect::<Vec<String>>();
    let events = api
        .call(&svc, "SELECT id FROM billing.stripe_events", &[])
        .await
        .unwrap();
    assert_eq!(texts(events), ["evt_test_1"]);
    let secrets = api
        .call(&svc, "SELECT secret FROM billing.webhook_secrets", &[])
        .await
        .unwrap();
    assert_eq!(texts(secrets), ["whsec_test123"]);
    let config = api
        .call(&svc, "SELECT checkout_success_url FROM billing.config", &[])
        .await
        .unwrap();
    assert_eq!(texts(config), ["https://app.example.test/ok"]);
    api.call(
        &svc,
        "INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) \
         VALUES ('big', 'price_big', 'Big', 'token_pack', 5000)",
        &[],
    )
    .await
    .expect("service_role edits the catalog");
}

fn claims_with_sub(sub: &str) -> String {
    format!(r#"{{"sub":"{sub}","role":"authenticated"}}"#)
}

#[tokio::test]
async fn current_user_id_reads_the_sub_claim() {
    let db = TestDb::new().await;
    let mut api = db.api().await;
    let a = Uuid::new_v4();
    let sql = "SELECT billing.current_user_id()";
    let got: Option<Uuid> = api.call(&Caller::User(a), sql, &[]).await.unwrap()[0].get(0);
    assert_eq!(got, Some(a));
    let upper = claims_with_sub(&a.to_string().to_uppercase());
    let got: Option<Uuid> = api
        .call_as("authenticated", &upper, sql, &[])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(got, Some(a), "upper-case uuid");
    for claims in [r#"{"role":"authenticated"}"#, "", r#"{"sub":null}"#] {
        let got: Option<Uuid> = api
            .call_as("authenticated", claims, sql, &[])
            .await
            .unwrap()[0]
            .get(0);
        assert_eq!(got, None, "claims {claims:?}");
    }
    assert_error(
        api.call_as("authenticated", "not json", sql, &[]).await,
        "22P02",
        "request.jwt.claims is not valid JSON",
    );
    for sub in ["alice", "12345", "0000-not-a-uuid", ""] {
        assert_error(
            api.call_as("authenticated", &claims_with_sub(sub), sql, &[])
                .await,
            "22P02",
            "not a user id",
        );
    }
    // Older PostgREST versions set one setting per claim.
    let mut owner = db.owner().await;
    let tx = owner.transaction().await.unwrap();
    let row = tx
        .query_one(
            "SELECT set_config('request.jwt.claim.sub', $1, true), billing.current_user_id()",
            &[&a.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<Uuid>>(1), Some(a));
    tx.rollback().await.unwrap();
}

const REPORT: &str = "SELECT object_type, object_name, problem FROM billing.security_report()";

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
