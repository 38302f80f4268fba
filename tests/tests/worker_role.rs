//! The worker as it should run in production: a plain login role that is a member of
//! `service_role` (the worker API) and `authenticated` (to run the HTTP API's calls as the
//! user), not a superuser. Everything the worker does — catch-up at start, the queue, webhooks,
//! the HTTP API — works with exactly those rights.
mod worker_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stripe_billing_tests::jwt::{hs256, user_claims, TEST_JWT_SECRET};
use stripe_billing_tests::pg::TestDb;
use uuid::Uuid;
use worker_support::*;

#[tokio::test]
async fn a_worker_with_only_service_role_and_authenticated_serves_everything() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let role = format!("billing_worker_{}", Uuid::new_v4().simple());
    owner
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT service_role, authenticated TO {role};"
        ))
        .await
        .unwrap();
    let dsn = db.dsn.replace("user=postgres", &format!("user={role}"));
    assert_ne!(dsn, db.dsn, "the worker connects as the plain role");
    let superuser: bool = owner
        .query_one(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser);

    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/api/stripe/webhook");
    let emulator = Emulator::start(Some(&hook)).await;
    let worker = Worker::start_on(
        port,
        &dsn,
        Some(&emulator.url),
        &["--jwt-secret", TEST_JWT_SECRET],
    )
    .await;

    // The HTTP API, as the brief's front end calls it.
    let user = Uuid::new_v4();
    let token = hs256(TEST_JWT_SECRET, &user_claims(user));
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/api/stripe/checkout", worker.base))
        .bearer_auth(&token)
        .json(&json!({"priceId": "price_pack", "successUrl": OK_URL, "cancelUrl": CANCEL_URL}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = answer["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}\n{}", worker.logs()))
        .to_string();

    // The webhook of the payment, handled by the same role.
    emulator.complete_checkout(&session).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let balance: i64 = owner
            .query_one("SELECT billing.token_balance($1)", &[&user])
            .await
            .unwrap()
            .get(0);
        if balance == 500 {
            break;
        }
        assert!(Instant::now() < deadline, "no grant:\n{}", worker.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The queue (RPC path), and the catch-up that ran at start.
    let mut api = db.api().await;
    let other = Uuid::new_v4();
    let id = request_checkout(&mut api, other, "price_pack", "").await;
    let done = finished(&owner, id, Duration::from_secs(20)).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", worker.logs());
    let synced: i64 = owner
        .query_one(
            "SELECT count(*) FROM billing.event_sync WHERE last_run_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(synced, 1, "{}", worker.logs());
    assert!(!worker.logs().contains("ERROR"), "{}", worker.logs());
}
