//! Access control (DESIGN.md, "Security"), tested by connecting as each client role the way
//! PostgREST does: anon, two signed-in users (A and B) and service_role.
mod access_support;
mod common;

use access_support::*;
use common::add_request;
use serde_json::Value;
use stripe_billing_tests::pg::{assert_error, Caller, TestDb};
use tokio_postgres::Row;
use uuid::Uuid;

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
