//! The worker end to end: real `stripe-billing-worker` processes against a test database and
//! the local Stripe emulator. Needs `cargo build -p stripe-billing-worker` first (the
//! worker is another package's binary) and the cluster of scripts/integration-test.sh.
//! Starting, refusing to start and stopping are in worker_lifecycle.rs; crashes, races and
//! database restarts in worker_resilience.rs.
mod common;
mod worker_support;

use common::set_config;

use std::time::Duration;

use serde_json::{json, Value};
use stripe_billing_tests::pg::{db_error, TestDb};
use uuid::Uuid;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);

impl Stack {
    /// Injects `fault`, queues a token-pack checkout for a new user, and waits for the worker
    /// to finish it. Returns the final row and how many Checkout Session calls the emulator saw
    /// under the request's idempotency key.
    async fn pack_checkout_after(&self, fault: Value) -> (Row, usize) {
        self.emulator.fault(fault).await;
        let mut api = self.db.api().await;
        let id = request_checkout(&mut api, Uuid::new_v4(), "price_pack", "").await;
        let done = finished(&self.owner, id, WAIT).await;
        let calls = self.emulator.checkout_calls(id).await.len();
        (done, calls)
    }
}

fn param<'a>(call: &'a Value, pointer: &str) -> &'a Value {
    call["params"].pointer(pointer).unwrap_or(&Value::Null)
}

/// A logged parameter as the form text the worker sent (the emulator logs typed values).
fn text(call: &Value, pointer: &str) -> String {
    match param(call, pointer) {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn checkouts_in_both_modes_and_the_portal_then_webhooks_close_the_loop() {
    let s = Stack::start(&[], &[]).await;
    let mut api = s.db.api().await;
    let user = Uuid::new_v4();

    let sub = request_checkout(
        &mut api,
        user,
        "price_pro",
        ", allow_promotion_codes => true",
    )
    .await;
    let done = finished(&s.owner, sub, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", s.worker.logs());
    let result = done.result.expect("result");
    let session = result["session_id"]
        .as_str()
        .expect("session id")
        .to_string();
    let customer = result["customer"].as_str().expect("customer").to_string();
    assert!(result["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("http")));

    // The parameters the worker sends, as Stripe received them.
    let calls = s.emulator.checkout_calls(sub).await;
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call["stripe_version"], "2025-03-31.basil");
    assert_eq!(text(call, "/mode"), "subscription");
    assert_eq!(text(call, "/customer"), customer.as_str());
    assert_eq!(
        text(call, "/client_reference_id"),
        user.to_string().as_str()
    );
    assert_eq!(text(call, "/line_items/0/price"), "price_pro");
    assert_eq!(text(call, "/metadata/request_id"), sub.to_string().as_str());
    assert_eq!(text(call, "/metadata/plan_id"), "pro");
    assert_eq!(
        text(call, "/subscription_data/metadata/user_id"),
        user.to_string().as_str()
    );
    assert_eq!(text(call, "/allow_promotion_codes"), "true");
    assert_eq!(text(call, "/tax_id_collection/enabled"), "true");
    assert_eq!(text(call, "/customer_update/name"), "auto");
    assert_eq!(
        text(call, "/customer_update/address"),
        "auto",
        "Stripe requires it for tax IDs of an existing customer"
    );
    assert!(param(call, "/discounts").is_null() && param(call, "/customer_creation").is_null());
    let customers = s.emulator.created("/v1/customers").await;
    assert_eq!(customers.len(), 1);
    assert!(
        customers[0]["idempotency_key"]
            .as_str()
            .unwrap()
            .starts_with("customer-"),
        "{customers:?}"
    );
    // The request's key, not the user's: a user's later request (after this customer was
    // deleted, say) must not replay the first one's customer (issue 13.6).
    assert_eq!(
        customers[0]["idempotency_key"],
        format!("customer-{sub}"),
        "{customers:?}"
    );
    assert_eq!(
        text(&customers[0], "/metadata/user_id"),
        user.to_string().as_str()
    );
    assert_eq!(
        text(&customers[0], "/email"),
        format!("{user}@example.test").as_str()
    );

    // The user pays: the emulator's signed webhooks reach the worker and grant the tokens.
    let report = s.emulator.complete_checkout(&session).await;
    for event in report["events"].as_array().expect("events") {
        assert_eq!(event["delivery"]["status"], 200, "{event}");
    }
    let balance: i64 = s
        .owner
        .query_one("SELECT billing.token_balance($1)", &[&user])
        .await
        .unwrap()
        .get(0);
    assert_eq!(balance, 1000);

    // A token pack in payment mode with a coupon reuses the customer.
    let pack = request_checkout(
        &mut api,
        user,
        "price_pack",
        ", quantity => 2, coupon => 'SPRING'",
    )
    .await;
    let done = finished(&s.owner, pack, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert_eq!(done.result.as_ref().unwrap()["customer"], customer.as_str());
    let call = &s.emulator.checkout_calls(pack).await[0];
    assert_eq!(text(call, "/mode"), "payment");
    assert_eq!(text(call, "/line_items/0/quantity"), "2");
    assert!(
        param(call, "/metadata/tokens").is_null(),
        "the request row holds the tokens"
    );
    assert_eq!(
        text(call, "/payment_intent_data/setup_future_usage"),
        "on_session",
        "the card is saved for the next pack"
    );
    assert!(param(call, "/subscription_data").is_null());
    assert_eq!(text(call, "/discounts/0/coupon"), "SPRING");
    assert!(param(call, "/allow_promotion_codes").is_null());
    assert_eq!(
        s.emulator.created("/v1/customers").await.len(),
        1,
        "one customer per user"
    );

    // The portal for the now-known customer.
    let portal = request_portal(&mut api, user)
        .await
        .expect("portal request");
    let done = finished(&s.owner, portal, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}");
    let result = done.result.unwrap();
    assert!(result["url"].as_str().is_some() && result["session_id"].as_str().is_some());
    let call = &s
        .emulator
        .calls("/v1/billing_portal/sessions", &format!("portal-{portal}"))
        .await[0];
    assert_eq!(text(call, "/customer"), customer.as_str());
    assert_eq!(text(call, "/return_url"), RETURN_URL);
}
#[tokio::test]
async fn a_portal_without_a_customer_is_refused_by_sql() {
    let db = TestDb::new().await;
    let mut api = db.api().await;
    let err = request_portal(&mut api, Uuid::new_v4())
        .await
        .expect_err("no customer");
    let (code, message) = db_error(&err);
    assert_eq!(code, "BL002");
    assert!(message.contains("no billing account"), "{message}");
}
#[tokio::test]
async fn an_unknown_price_fails_at_once_with_stripes_message() {
    let s = Stack::start(&[], &[]).await;
    let mut api = s.db.api().await;
    let id = request_checkout(&mut api, Uuid::new_v4(), "price_ghost", "").await;
    let done = finished(&s.owner, id, WAIT).await;
    assert_eq!(done.status, "failed");
    assert_eq!(done.attempts, 1);
    let error = done.error.unwrap();
    assert!(
        error.contains("No such price") && error.contains("price_ghost"),
        "{error}"
    );
    assert_eq!(s.emulator.checkout_calls(id).await.len(), 1);
}
#[tokio::test]
async fn a_checkout_retried_with_a_new_customer_is_a_new_call() {
    // The user's linked customer is gone from Stripe (deleted in the Dashboard, unheard of by
    // the worker): the session call is "No such customer", SQL forgets the link, and the retry
    // creates a customer and sends it. Under the first call's key Stripe would answer
    // `idempotency_error` for the other `customer`.
    let s = Stack::start(&[], &[]).await;
    let user = Uuid::new_v4();
    common::add_customer(&s.owner, user, "cus_goneFromStripe").await;
    let mut api = s.db.api().await;
    let id = request_checkout(&mut api, user, "price_pack", "").await;
    let done = finished(&s.owner, id, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}");
    let customer = done.result.as_ref().unwrap()["customer"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(customer, "cus_goneFromStripe");
    let calls = s.emulator.checkout_calls(id).await;
    let sent: Vec<(&str, &str, &Value)> = calls
        .iter()
        .map(|c| {
            (
                c["idempotency_key"].as_str().unwrap(),
                c["params"]["customer"].as_str().unwrap(),
                &c["status"],
            )
        })
        .collect();
    assert_eq!(sent.len(), 2, "{calls:?}");
    assert_eq!(sent[0].1, "cus_goneFromStripe", "{calls:?}");
    assert_eq!(sent[0].2, 400, "{calls:?}");
    assert_eq!(sent[1].1, customer, "{calls:?}");
    assert_eq!(sent[1].2, 200, "{calls:?}");
    assert_ne!(sent[0].0, sent[1].0, "another key for other parameters");
}
#[tokio::test]
async fn server_errors_are_retried_and_create_one_session() {
    let s = Stack::start(&[], &[]).await;
    let (done, calls) = s
        .pack_checkout_after(json!({"path": "/v1/checkout/sessions", "status": 500, "count": 2}))
        .await;
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert_eq!(done.attempts, 1, "retried within one claim");
    assert_eq!(calls, 3, "two failures, then success");
    assert_eq!(s.emulator.created("/v1/checkout/sessions").await.len(), 1);
}
#[tokio::test]
async fn rate_limits_with_should_retry_are_retried() {
    let s = Stack::start(&[], &[]).await;
    let (done, _) = s
        .pack_checkout_after(
            json!({"path": "/v1/*", "status": 429, "count": 2, "should_retry": true}),
        )
        .await;
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert_eq!(s.emulator.created("/v1/checkout/sessions").await.len(), 1);
}
#[tokio::test]
async fn should_retry_false_fails_even_a_server_error() {
    let s = Stack::start(&[], &[]).await;
    let (done, calls) = s
        .pack_checkout_after(json!({"path": "/v1/checkout/sessions", "status": 503,
                                        "should_retry": false, "message": "Do not repeat this"}))
        .await;
    assert_eq!(done.status, "failed");
    assert_eq!(done.error.as_deref(), Some("Do not repeat this"));
    assert_eq!(calls, 1);
}
#[tokio::test]
async fn retries_give_up_after_the_databases_max_attempts() {
    let s = Stack::start(&[], &[]).await;
    set_config(&s.owner, "request_max_attempts = 2").await;
    let (done, calls) = s
        .pack_checkout_after(json!({"path": "/v1/checkout/sessions", "status": 502, "count": 1000}))
        .await;
    assert_eq!(done.status, "failed");
    assert_eq!(done.attempts, 2);
    assert!(
        done.error.as_deref().unwrap().contains("HTTP 502"),
        "{done:?}"
    );
    // Three tries in each of the two claims, all with the request's one idempotency key.
    assert_eq!(calls, 6);
}
#[tokio::test]
async fn webhook_endpoint_answers_per_outcome() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, false).await;
    let worker = Worker::start(&db.dsn, None, &["--max-body-bytes", "4096"]).await;
    let body = event_body("evt_hook_1");
    let header = sign(&owner, &body, WEBHOOK_SECRET, now()).await;

    // No secret configured yet: 503, so Stripe retries once it is.
    let (status, answer) = post_webhook(&worker, body.clone().into_bytes(), Some(&header)).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("not configured"));
    owner
        .execute(
            "INSERT INTO billing.webhook_secrets (secret, livemode) VALUES ($1, false)",
            &[&WEBHOOK_SECRET],
        )
        .await
        .unwrap();

    let (status, answer) = post_webhook(&worker, body.clone().into_bytes(), None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("missing Stripe-Signature header"))
    );
    let forged = sign(&owner, &body, "whsec_someone_else", now()).await;
    let (status, answer) = post_webhook(&worker, body.clone().into_bytes(), Some(&forged)).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("signature"),
        "{answer}"
    );
    let stale = sign(&owner, &body, WEBHOOK_SECRET, now() - 3600).await;
    let (status, answer) = post_webhook(&worker, body.clone().into_bytes(), Some(&stale)).await;
    assert_eq!(status, 400, "{answer}");
    let (status, _) = post_webhook(&worker, body.clone().into_bytes(), Some("garbage")).await;
    assert_eq!(status, 400);
    let (status, answer) = post_webhook(&worker, vec![0xff, 0xfe, b'{'], Some(&header)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("the body is not valid UTF-8"))
    );
    let (status, _) = post_webhook(&worker, vec![b' '; 5000], Some(&header)).await;
    assert_eq!(status, 413);
    let stored: i64 = owner
        .query_one("SELECT count(*) FROM billing.stripe_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "refused deliveries store nothing");

    let (status, answer) = post_webhook(&worker, body.clone().into_bytes(), Some(&header)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["received"], true);
    assert_eq!(answer["event_id"], "evt_hook_1");
    assert_eq!(answer["duplicate"], false);
    let (status, answer) = post_webhook(&worker, body.into_bytes(), Some(&header)).await;
    assert_eq!((status, &answer["duplicate"]), (200, &json!(true)));

    let health: Value = reqwest::get(format!("{}/healthz", worker.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"ok": true, "database": true}));
}
#[tokio::test]
async fn an_event_that_fails_to_apply_is_still_acknowledged() {
    let s = Stack::start(&[], &[]).await;
    let mut api = s.db.api().await;
    let id = request_checkout(&mut api, Uuid::new_v4(), "price_pack", "").await;
    let done = finished(&s.owner, id, WAIT).await;
    let session = done.result.expect("result")["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The session id was already used as another grant's key: the grant cannot be made.
    s.owner
        .execute(
            "SELECT billing.grant_tokens(gen_random_uuid(), 1, grant_key => $1)",
            &[&session],
        )
        .await
        .unwrap();
    let report = s.emulator.complete_checkout(&session).await;
    let delivery = &report["events"][0]["delivery"];
    assert_eq!(delivery["status"], 200, "{report}");
    let answer: Value = serde_json::from_str(delivery["response_body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["received"], true);
    assert_eq!(answer["processed"], false);
    assert_eq!(answer["code"], "BL004", "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
}
