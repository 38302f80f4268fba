//! End to end with the real worker and the emulator: a subscriber's metered overage (issue 22,
//! item 4) reaches Stripe as exactly one Billing Meter event per spend, with the overage's
//! identifier, value and time, even when Stripe answers 5xx or the worker is killed while its
//! call is in flight. The SQL rules (limit, period, no repayment) are in overage.rs.
mod worker_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);
const METER: &str = "tokens_over";

/// A subscriber of `pro` (1000 tokens a period, 500 of overage on the meter `tokens_over`)
/// through a real Checkout, served by `worker`; returns the user and their Stripe customer.
async fn subscriber(
    db: &TestDb,
    owner: &Client,
    emulator: &Emulator,
    worker: &Worker,
) -> (Uuid, String) {
    owner
        .execute(
            "UPDATE billing.plans SET overage_limit = 500, meter_event_name = $1 WHERE id = 'pro'",
            &[&METER],
        )
        .await
        .unwrap();
    let (status, meter) = emulator
        .stripe(
            reqwest::Method::POST,
            "/v1/billing/meters",
            &format!(
                "display_name=Tokens+over&event_name={METER}&default_aggregation[formula]=sum"
            ),
        )
        .await;
    assert_eq!(status, 200, "{meter}");
    let mut api = db.api().await;
    let user = Uuid::new_v4();
    let session = checkout_session(&mut api, owner, user, "price_pro", worker).await;
    emulator.complete_checkout(&session).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let row = owner
            .query_opt(
                "SELECT stripe_customer_id FROM billing.subscriptions
                 WHERE user_id = $1 AND status = 'active' AND billing.token_balance($1) = 1000",
                &[&user],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return (user, row.get(0));
        }
        assert!(Instant::now() < deadline, "{}", worker.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Spends 1200 of the user's 1000 tokens: 200 of overage. Returns its meter_event request and identifier.
async fn overspend(owner: &Client, user: Uuid) -> (Uuid, String) {
    let spent: Value = owner
        .query_one("SELECT billing.spend_tokens($1, 1200)", &[&user])
        .await
        .unwrap()
        .get(0);
    assert_eq!(spent["balance"], 0);
    let row = owner
        .query_one(
            "SELECT request_id, identifier FROM billing.token_overages WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The meter events the emulator recorded for `customer`.
async fn recorded(emulator: &Emulator, customer: &str) -> Vec<Value> {
    let list = emulator
        .control(
            reqwest::Method::GET,
            &format!("/_emulator/meter_events?customer={customer}"),
            None,
        )
        .await;
    list["data"].as_array().unwrap().clone()
}

async fn overage_status(owner: &Client, identifier: &str) -> String {
    owner
        .query_one(
            "SELECT status FROM billing.token_overages WHERE identifier = $1",
            &[&identifier],
        )
        .await
        .unwrap()
        .get(0)
}

/// The one event of the spend, as Stripe recorded it.
fn assert_the_event(events: &[Value], identifier: &str) {
    assert_eq!(events.len(), 1, "one meter event per spend: {events:?}");
    let e = &events[0];
    assert_eq!(e["identifier"], identifier);
    assert_eq!(e["event_name"], METER);
    assert_eq!(e["payload"]["value"], "200");
}

#[tokio::test]
async fn overage_is_reported_once_through_stripe_5xx() {
    let Stack {
        db,
        owner,
        emulator,
        worker,
    } = Stack::start(&[], &[]).await;
    let (user, customer) = subscriber(&db, &owner, &emulator, &worker).await;

    // Stripe fails the first two calls with a 500 before doing anything.
    emulator
        .fault(json!({"path": "/v1/billing/meter_events", "status": 500, "count": 2}))
        .await;
    let (request, identifier) = overspend(&owner, user).await;
    let done = finished(&owner, request, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", worker.logs());
    assert_the_event(&recorded(&emulator, &customer).await, &identifier);
    assert_eq!(overage_status(&owner, &identifier).await, "reported");
    // Each try (the client's own retries, or later claims) sent the same event under the
    // same idempotency key: two 5xx, then the event.
    let key = format!("meter-{identifier}");
    let calls = emulator.calls("/v1/billing/meter_events", &key).await;
    assert_eq!(calls.len(), 3, "{:?}", emulator.requests().await);
    assert!(calls
        .iter()
        .all(|c| c["params"]["identifier"] == identifier.as_str()));
}

/// A worker is killed after Stripe recorded its meter event but before the answer arrived;
/// a second worker takes the row over once the lease has run out. With `forget_keys` Stripe no
/// longer has the idempotency key by then (it prunes keys after 24 hours), so only the
/// identifier keeps the event single.
async fn killed_after_stripe_recorded_it(forget_keys: bool) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let port = free_port();
    let emulator = Emulator::delivering_to(port, &[]).await;
    let lease = ["--lease-seconds", "2", "--stripe-timeout-ms", "1000"];
    let mut doomed = Worker::start_on(
        port,
        &db.dsn,
        Some(&emulator.url),
        &[&lease[..], &["--worker-id", "doomed"]].concat(),
    )
    .await;
    let (user, customer) = subscriber(&db, &owner, &emulator, &doomed).await;

    // Stripe records the event at once and holds its answer back; the worker dies waiting.
    emulator
        .fault(json!({"path": "/v1/billing/meter_events", "answer_delay_ms": 30000}))
        .await;
    let (request, identifier) = overspend(&owner, user).await;
    let deadline = Instant::now() + WAIT;
    while recorded(&emulator, &customer).await.is_empty() {
        assert!(Instant::now() < deadline, "{}", doomed.logs());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    doomed.signal("KILL");
    doomed.wait_exit(Duration::from_secs(10)).await;
    let orphan = row(&owner, request).await;
    assert_eq!(
        (orphan.status.as_str(), orphan.locked_by.as_deref()),
        ("running", Some("doomed"))
    );
    if forget_keys {
        emulator
            .control(reqwest::Method::DELETE, "/_emulator/idempotency_keys", None)
            .await;
    }

    let rescuer = Worker::start(
        &db.dsn,
        Some(&emulator.url),
        &[&lease[..], &["--worker-id", "rescuer"]].concat(),
    )
    .await;
    let done = finished(&owner, request, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", rescuer.logs());
    assert!(done.attempts >= 2, "{done:?}");
    assert_eq!(done.result.unwrap()["duplicate"], forget_keys);
    assert_the_event(&recorded(&emulator, &customer).await, &identifier);
    assert_eq!(overage_status(&owner, &identifier).await, "reported");
    // The rescuer's call, with the same key: Stripe's first answer replayed, or (the key
    // forgotten) the identifier refused.
    let key = format!("meter-{identifier}");
    let calls = emulator.calls("/v1/billing/meter_events", &key).await;
    let last = calls.last().expect("the rescuer's call");
    if forget_keys {
        assert_eq!(last["status"], 400, "{calls:?}");
    } else {
        assert_eq!(
            (&last["status"], &last["replayed"]),
            (&json!(200), &json!(true)),
            "{calls:?}"
        );
    }
}

#[tokio::test]
async fn overage_is_reported_once_when_the_worker_dies_before_stripe_answers() {
    killed_after_stripe_recorded_it(false).await;
}

#[tokio::test]
async fn overage_is_reported_once_when_stripe_no_longer_has_the_idempotency_key() {
    killed_after_stripe_recorded_it(true).await;
}

/// What the doctor prints for this database and emulator.
async fn doctor(db: &TestDb, emulator: &Emulator) -> String {
    let out = tokio::process::Command::new(worker_binary())
        .env_clear()
        .env("STRIPE_SECRET_KEY", SECRET_KEY)
        .args([
            "--database-url",
            &db.dsn,
            "--stripe-api-base",
            &emulator.url,
        ])
        .arg("doctor")
        .output()
        .await
        .expect("run the doctor");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stripe stays down for longer than the request's attempts last: the overage fails, the doctor
/// says so, and once Stripe is back the operator's `billing.retry_failed_meter_events()` reports
/// it, as the very event first tried, once.
#[tokio::test]
async fn a_meter_event_that_ran_out_of_attempts_is_reported_once_when_the_operator_retries() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    owner
        .batch_execute(
            "INSERT INTO billing.config (request_max_attempts) VALUES (1)
             ON CONFLICT (id) DO UPDATE SET request_max_attempts = 1",
        )
        .await
        .unwrap();
    let port = free_port();
    let emulator = Emulator::delivering_to(port, &[]).await;
    let worker = Worker::start_on(port, &db.dsn, Some(&emulator.url), &[]).await;
    let (user, customer) = subscriber(&db, &owner, &emulator, &worker).await;

    emulator
        .fault(json!({"path": "/v1/billing/meter_events", "status": 503, "count": 1000}))
        .await;
    let (request, identifier) = overspend(&owner, user).await;
    let done = finished(&owner, request, WAIT).await;
    assert_eq!(done.status, "failed", "{done:?}\n{}", worker.logs());
    assert_eq!(overage_status(&owner, &identifier).await, "failed");
    assert!(recorded(&emulator, &customer).await.is_empty());
    let report = doctor(&db, &emulator).await;
    assert!(
        report.contains(
            "! failed meter events: 1 overage meter events (200 tokens) failed and were never billed"
        ),
        "{report}"
    );
    assert!(
        report.contains("SELECT billing.retry_failed_meter_events();"),
        "{report}"
    );

    emulator
        .control(reqwest::Method::DELETE, "/_emulator/faults", None)
        .await;
    let retried: Value = owner
        .query_one("SELECT billing.retry_failed_meter_events()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(retried["requeued"], 1, "{retried}");
    let again: Uuid = owner
        .query_one(
            "SELECT request_id FROM billing.token_overages WHERE identifier = $1",
            &[&identifier],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(again, request);
    let done = finished(&owner, again, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", worker.logs());
    assert_the_event(&recorded(&emulator, &customer).await, &identifier);
    assert_eq!(overage_status(&owner, &identifier).await, "reported");
    let report = doctor(&db, &emulator).await;
    assert!(!report.contains("failed meter events"), "{report}");
}
