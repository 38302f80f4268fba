//! Bad input to the privileged and worker-facing functions gets a deliberate SQLSTATE and a
//! message a user can act on, and changes nothing. (The client-facing functions are covered in
//! ledger_guards.rs, requests.rs, request_workers.rs, access.rs, webhook_signatures.rs and
//! signature_sql.rs.)
use stripe_billing_tests::pg::{assert_error, TestDb};
use tokio_postgres::Client;

const USER: &str = "5a0c7b9e-1d2f-4a3b-8c4d-6e7f8a9b0c1d";

async fn owner() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let client = db.owner().await;
    (db, client)
}

async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM billing.{table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn link_customer_validates_and_refuses_relinking() {
    let (_db, c) = owner().await;
    let call = |user: Option<&'static str>, customer: Option<&'static str>| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT billing.link_customer($1::text::uuid, $2)",
                &[&user, &customer],
            )
            .await
        }
    };
    assert_error(
        call(None, Some("cus_A")).await,
        "22004",
        "user_id must not be NULL",
    );
    assert_error(
        call(Some(USER), None).await,
        "22004",
        "stripe_customer_id must not be NULL",
    );
    assert_error(
        call(Some(USER), Some("acct_1")).await,
        "22023",
        "must be a Stripe customer id",
    );
    assert_eq!(count(&c, "customers").await, 0);

    let linked: String = call(Some(USER), Some("cus_A")).await.unwrap().get(0);
    assert_eq!(linked, "cus_A");
    let again: String = call(Some(USER), Some("cus_A")).await.unwrap().get(0);
    assert_eq!(again, "cus_A", "idempotent");
    assert_error(
        call(Some(USER), Some("cus_B")).await,
        "BL008",
        "already has Stripe customer cus_A",
    );
    assert_error(
        call(Some("6b1d8c0f-2e3a-4b4c-9d5e-7f8a9b0c1d2e"), Some("cus_A")).await,
        "BL008",
        "already belongs to another user",
    );
    assert_eq!(count(&c, "customers").await, 1);
}

#[tokio::test]
async fn worker_api_rejects_bad_arguments() {
    let (_db, c) = owner().await;
    assert_error(
        c.query("SELECT * FROM billing.claim_requests(NULL)", &[])
            .await,
        "22004",
        "worker must not be NULL",
    );
    for args in ["'w', 0", "'w', 1001", "'w', 1, 0", "'w', NULL"] {
        assert_error(
            c.query(
                &format!("SELECT * FROM billing.claim_requests({args})"),
                &[],
            )
            .await,
            "22023",
            "max_count must be 1 to 1000 and lease_seconds positive",
        );
    }
    let id: uuid::Uuid = c
        .query_one(
            &format!("INSERT INTO billing.stripe_requests (user_id, kind) VALUES ('{USER}', 'portal') RETURNING id"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    c.query("SELECT * FROM billing.claim_requests('w')", &[])
        .await
        .unwrap();
    for result in ["NULL", "'[1]'::jsonb", "'\"url\"'::jsonb"] {
        assert_error(
            c.query_one(
                &format!("SELECT billing.finish_request($1, 'w', {result})"),
                &[&id],
            )
            .await,
            "22023",
            "result must be a JSON object",
        );
    }
    assert_error(
        c.query_one("SELECT billing.fail_request($1, 'w', NULL, 1)", &[&id])
            .await,
        "22004",
        "error must not be NULL",
    );
    let status: String = c
        .query_one(
            "SELECT status FROM billing.stripe_requests WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "running", "failed calls left the claim as it was");
}

#[tokio::test]
async fn reprocess_events_rejects_a_non_positive_limit() {
    let (_db, c) = owner().await;
    for limit in ["0", "-1", "NULL"] {
        assert_error(
            c.query_one(&format!("SELECT billing.reprocess_events({limit})"), &[])
                .await,
            "22023",
            "max_events must be positive",
        );
    }
}

#[tokio::test]
async fn webhook_helpers_handle_nulls_and_garbage() {
    let (_db, c) = owner().await;
    assert_error(
        c.query_one(
            "SELECT billing._verify_webhook_signature('{}', 't=1,v1=00', NULL)",
            &[],
        )
        .await,
        "55000",
        "no webhook signing secret",
    );
    assert_error(
        c.query_one(
            "SELECT billing._verify_webhook_signature('{}', 't=1,v1=00', ARRAY[NULL, ''])",
            &[],
        )
        .await,
        "55000",
        "no webhook signing secret",
    );
    let null: Option<serde_json::Value> = c
        .query_one("SELECT billing._normalize_event(NULL)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(null, None, "strict: NULL in, NULL out");
    assert_error(
        c.query_one("SELECT billing._normalize_event('{')", &[])
            .await,
        "22032",
        "not valid JSON",
    );
    assert_error(
        c.query_one(
            "SELECT billing._normalize_event('{\"object\":\"event\"}')",
            &[],
        )
        .await,
        "22023",
        "no valid evt_ id",
    );
}

#[tokio::test]
async fn catalog_and_secret_constraints_explain_themselves() {
    let (_db, c) = owner().await;
    assert_error(
        c.execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES ('p', 'price_1', 'P', 'subscription', 5)",
            &[],
        )
        .await,
        "23514",
        "plans_tokens_match_kind",
    );
    assert_error(
        c.execute(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ('sk_live_oops')",
            &[],
        )
        .await,
        "23514",
        "webhook_secrets_secret_check",
    );
    assert_eq!(count(&c, "plans").await, 0);
    assert_eq!(count(&c, "webhook_secrets").await, 0);
}

#[tokio::test]
async fn catch_up_and_backfill_functions_refuse_what_stripe_would_never_send() {
    let (_db, c) = owner().await;
    let one = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await }
    };
    assert_error(
        one("SELECT billing.ingest_api_event(NULL)").await,
        "22004",
        "payload must not be NULL",
    );
    assert_error(
        one("SELECT billing.ingest_api_event('{\"object\": \"list\"}')").await,
        "22023",
        "not a Stripe event",
    );
    // Our own synthetic events never come from Stripe's API.
    assert_error(
        one(r#"SELECT billing.ingest_api_event('{"id": "evt_retrieved_1", "object": "event", "type": "billing.subscription.retrieved", "created": 1, "data": {"object": {"object": "subscription", "id": "sub_1"}}}')"#).await,
        "22023",
        "is not one Stripe sends",
    );
    for margin in ["NULL", "-1", "86401"] {
        let sql = format!("SELECT billing.catch_up_since({margin})");
        assert_error(
            c.query_one(sql.as_str(), &[]).await,
            "22023",
            "margin_seconds must be between 0 and 86400",
        );
    }
    assert_error(
        one("SELECT billing.record_catch_up(NULL, 1, 1)").await,
        "22004",
        "checked_until must not be NULL",
    );
    assert_error(
        one("SELECT billing.record_catch_up(now() + interval '1 day', 1, 1)").await,
        "22023",
        "must not be in the future",
    );
    assert_error(
        one("SELECT billing.record_catch_up(now(), -1, 0)").await,
        "22023",
        "counts not negative",
    );
    assert_error(
        one(r#"SELECT billing.adopt_customer('{"object": "subscription", "id": "sub_1"}')"#).await,
        "22023",
        "customer must be a Stripe customer object",
    );
    assert_error(
        one("SELECT billing.adopt_customer(NULL)").await,
        "22023",
        "customer must be a Stripe customer object",
    );
    assert_error(
        one(r#"SELECT billing.adopt_subscription('{"object": "customer", "id": "cus_1"}')"#).await,
        "22023",
        "subscription must be a Stripe subscription object",
    );
    assert_error(
        one(r#"SELECT billing.adopt_subscription('{"object": "subscription", "id": "sub_1", "customer": "cus_1"}', NULL)"#).await,
        "22004",
        "retrieved_at must not be NULL",
    );
    // Nothing was stored by any of them.
    assert_eq!(count(&c, "stripe_events").await, 0);
    assert_eq!(count(&c, "event_sync").await, 0);
    assert_eq!(count(&c, "customers").await, 0);
    // A customer nobody can place is skipped with the reason, not linked.
    let skipped: serde_json::Value = one(
        r#"SELECT billing.adopt_customer('{"object": "customer", "id": "cus_Qx1", "metadata": {"user_id": "not-a-uuid"}}')"#,
    )
    .await
    .unwrap()
    .get(0);
    assert_eq!(skipped["outcome"], "skipped");
    assert_eq!(count(&c, "customers").await, 0);
}

/// The subscription-status calls refuse a missing user plainly, and change nothing.
#[tokio::test]
async fn subscription_status_refuses_a_missing_user() {
    let (_db, c) = owner().await;
    assert_error(
        c.query("SELECT * FROM billing.subscription_status(NULL)", &[])
            .await,
        "22004",
        "user_id must not be NULL when the caller is not signed in",
    );
    assert_error(
        c.query("SELECT * FROM billing.subscription_status()", &[])
            .await,
        "22004",
        "user_id must not be NULL",
    );
    // Not signed in: there is no "my".
    assert_error(
        c.query("SELECT * FROM billing.my_subscription()", &[])
            .await,
        "28000",
        "not authenticated: no user id in request.jwt.claims",
    );
    // A user with no subscription is an answer, not an error.
    let row = c
        .query_one(
            "SELECT active, status FROM billing.subscription_status($1::text::uuid)",
            &[&USER],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(count(&c, "subscriptions").await, 0);
}
