//! Auto top-up end to end (issue 22, item 2): the real worker charges the card saved at checkout
//! off-session through the emulator's PaymentIntents, and the tokens come only from the
//! `payment_intent.succeeded` webhook: once, whether it arrives before the worker's answer or
//! many times; a declined card or one that needs authentication turns auto top-up off and tells
//! the user with a Checkout link; a refund of the top-up takes its tokens back. Both API shapes.
//! The SQL side alone (settings, crossing, limits): top_up_settings.rs.
mod worker_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stripe_billing_tests::pg::{Caller, TestDb};
use tokio_postgres::Client;
use uuid::Uuid;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);
const BASIL: &str = "2025-03-31.basil";
const LEGACY: &str = "2023-08-16";

/// A user who set auto top-up (pack of 500 tokens for 900 cents when the balance falls to 100
/// or below) and then bought the pack through Checkout, which saved their card.
struct World {
    _db: TestDb,
    owner: Client,
    emulator: Emulator,
    worker: Worker,
    user: Uuid,
    customer: String,
}

async fn world(version: &str, count_limit: i32) -> World {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    owner
        .batch_execute(
            "INSERT INTO billing.prices (stripe_price_id, unit_amount, currency, synced_at)
             VALUES ('price_pack', 900, 'usd', now());
             UPDATE billing.config SET checkout_success_url = 'https://app.example.test/ok';",
        )
        .await
        .unwrap();
    let port = free_port();
    let emulator = Emulator::delivering_to(port, &["--api-version", version]).await;
    let worker = Worker::start_on(port, &db.dsn, Some(&emulator.url), &[]).await;
    let mut api = db.api().await;
    let user = Uuid::new_v4();
    api.call(
        &Caller::User(user),
        &format!("SELECT billing.set_my_auto_top_up('pack', 100, {count_limit}, 10000)"),
        &[],
    )
    .await
    .unwrap();
    let session = checkout_session(&mut api, &owner, user, "price_pack", &worker).await;
    // The card is saved for off-session use, as the user has auto top-up.
    let created = emulator.created("/v1/checkout/sessions").await;
    assert_eq!(
        created.last().unwrap()["params"]["payment_intent_data"]["setup_future_usage"],
        "off_session"
    );
    emulator.complete_checkout(&session).await;
    wait_balance(&owner, user, 500, &worker, WAIT).await;
    let customer: String = owner
        .query_one(
            "SELECT stripe_customer_id FROM billing.customers WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    World {
        _db: db,
        owner,
        emulator,
        worker,
        user,
        customer,
    }
}

async fn spend(w: &World, amount: i64) -> Value {
    w.owner
        .query_one("SELECT billing.spend_tokens($1, $2)", &[&w.user, &amount])
        .await
        .unwrap()
        .get(0)
}

/// The one top_up request of the user, once it exists.
async fn top_up_request(w: &World) -> Uuid {
    let rows = w
        .owner
        .query(
            "SELECT id FROM billing.stripe_requests WHERE user_id = $1 AND kind = 'top_up'",
            &[&w.user],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "exactly one top-up request");
    rows[0].get(0)
}

async fn scalar(owner: &Client, sql: &str, user: Uuid) -> i64 {
    owner.query_one(sql, &[&user]).await.unwrap().get(0)
}

async fn auto_top_up_grants(w: &World) -> i64 {
    scalar(
        &w.owner,
        "SELECT count(*) FROM billing.token_grants WHERE user_id = $1 AND source = 'auto_top_up'",
        w.user,
    )
    .await
}

/// The worker's charges (not idempotent replays), whatever Stripe answered.
async fn intents_created(w: &World) -> Vec<Value> {
    w.emulator
        .requests()
        .await
        .into_iter()
        .filter(|r| r["path"] == "/v1/payment_intents" && r["replayed"] != true)
        .collect()
}

/// Waits until the emulator has sent `kind` and returns the event ids of that kind.
async fn wait_event(w: &World, kind: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let ids: Vec<String> = w
            .emulator
            .events()
            .await
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        if !ids.is_empty() {
            return ids;
        }
        assert!(Instant::now() < deadline, "no {kind}\n{}", w.worker.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn top_up_granted(version: &str) {
    let w = world(version, 3).await;
    // Eight spends at once take the balance from 500 to 100: one of them crosses.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let dsn = w._db.dsn.clone();
        let user = w.user;
        tasks.push(tokio::spawn(async move {
            let c = stripe_billing_tests::pg::connect(&dsn).await;
            c.query_one("SELECT billing.spend_tokens($1, 50)", &[&user])
                .await
                .map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let request = top_up_request(&w).await;
    wait_balance(&w.owner, w.user, 600, &w.worker, WAIT).await;
    let done = finished(&w.owner, request, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", w.worker.logs());
    let intent = done.result.unwrap()["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    let calls = intents_created(&w).await;
    assert_eq!(calls.len(), 1, "one charge");
    let p = &calls[0]["params"];
    assert_eq!(
        (p["amount"].clone(), p["currency"].clone()),
        (json!(900), json!("usd"))
    );
    assert_eq!(
        (p["off_session"].clone(), p["confirm"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(p["customer"], w.customer.as_str());
    assert!(p["payment_method"].as_str().unwrap().starts_with("pm_"));
    assert_eq!(
        calls[0]["idempotency_key"],
        format!("top_up-{request}").as_str()
    );
    // The grant is keyed by the PaymentIntent and the PaymentIntent is a purchase.
    let key: String = w
        .owner
        .query_one(
            "SELECT grant_key FROM billing.token_grants WHERE source = 'auto_top_up'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, intent);
    assert_eq!(
        scalar(
            &w.owner,
            "SELECT count(*) FROM billing.purchases WHERE user_id = $1 AND id LIKE 'pi\\_%'",
            w.user
        )
        .await,
        1
    );

    // A redelivered payment_intent.succeeded, many times and at once, grants nothing more.
    let event = wait_event(&w, "payment_intent.succeeded").await.remove(0);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = w.emulator.url.clone();
        let event = event.clone();
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/_emulator/events/{event}/deliver"))
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_success());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(balance(&w.owner, w.user).await, 600);
    assert_eq!(auto_top_up_grants(&w).await, 1);

    // A refund of the top-up takes its tokens back (its charge is the purchase's payment).
    let charge = w.emulator.charge_of(&intent).await;
    w.emulator
        .post(&format!("/_emulator/charges/{charge}/refund"), json!({}))
        .await;
    wait_balance(&w.owner, w.user, 100, &w.worker, WAIT).await;
}

#[tokio::test]
async fn crossing_spends_top_up_once_replays_grant_once_and_refunds_take_back_basil() {
    top_up_granted(BASIL).await;
}

#[tokio::test]
async fn crossing_spends_top_up_once_replays_grant_once_and_refunds_take_back_2023() {
    top_up_granted(LEGACY).await;
}

#[tokio::test]
async fn a_webhook_before_the_worker_s_answer_grants_once() {
    let w = world(BASIL, 3).await;
    // Hold the request row: the worker's outcome write waits while Stripe's webhook comes in.
    let mut blocker = stripe_billing_tests::pg::connect(&w._db.dsn).await;
    // Stripe takes its time to answer: long enough for the test to hold the row first.
    w.emulator
        .fault(json!({"path": "/v1/payment_intents", "method": "POST", "delay_ms": 1500}))
        .await;
    spend(&w, 450).await;
    let request = top_up_request(&w).await;
    wait_row(&w.owner, request, WAIT, |r| r.status == "running").await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM billing.stripe_requests WHERE id = $1 FOR UPDATE",
        &[&request],
    )
    .await
    .unwrap();
    wait_event(&w, "payment_intent.succeeded").await;
    wait_balance(&w.owner, w.user, 550, &w.worker, WAIT).await;
    assert_eq!(
        row(&w.owner, request).await.status,
        "running",
        "the answer is not recorded yet"
    );
    tx.rollback().await.unwrap();
    let done = finished(&w.owner, request, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(balance(&w.owner, w.user).await, 550);
    assert_eq!(auto_top_up_grants(&w).await, 1);
    assert_eq!(intents_created(&w).await.len(), 1);
}

/// A card that cannot be charged off-session: the top-up fails, auto top-up goes off, and the
/// user is told once, with a Checkout link for the same pack.
async fn failing_card(card: &str, code: &str) {
    let w = world(BASIL, 3).await;
    let (status, pm) = w
        .emulator
        .stripe(
            reqwest::Method::POST,
            &format!("/v1/payment_methods/{card}/attach"),
            &format!("customer={}", w.customer),
        )
        .await;
    assert_eq!(status, 200, "{pm}");
    spend(&w, 450).await;
    let request = top_up_request(&w).await;
    let done = finished(&w.owner, request, WAIT).await;
    assert_eq!(done.status, "failed", "{done:?}\n{}", w.worker.logs());
    assert_eq!(
        intents_created(&w).await[0]["params"]["payment_method"],
        pm["id"]
    );
    let (enabled, reason): (bool, Option<String>) = {
        let r = w
            .owner
            .query_one(
                "SELECT enabled, disabled_reason FROM billing.auto_top_ups WHERE user_id = $1",
                &[&w.user],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(!enabled);
    assert!(reason.unwrap().contains(code));
    // The link is made by the worker; then the user is told, once (the webhook's
    // payment_intent.payment_failed says the same).
    wait_event(&w, "payment_intent.payment_failed").await;
    let deadline = Instant::now() + WAIT;
    let payload: Value = loop {
        let rows = w
            .owner
            .query("SELECT payload FROM billing.notifications WHERE user_id = $1 AND kind = 'top_up_failed'", &[&w.user])
            .await
            .unwrap();
        if let Some(r) = rows.first() {
            break r.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "no notification\n{}",
            w.worker.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(payload["code"], code);
    let url = payload["checkout_url"].as_str().expect("a Checkout link");
    assert!(url.contains("cs_"), "{url}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        scalar(&w.owner, "SELECT count(*) FROM billing.notifications WHERE user_id = $1 AND kind = 'top_up_failed'", w.user).await,
        1
    );
    assert_eq!(balance(&w.owner, w.user).await, 50, "nothing granted");
    assert_eq!(auto_top_up_grants(&w).await, 0);
    // Off: the next crossing queues nothing until the user sets it again.
    w.owner
        .execute("SELECT billing.grant_tokens($1, 500)", &[&w.user])
        .await
        .unwrap();
    spend(&w, 500).await;
    assert_eq!(top_up_request(&w).await, request);
}

#[tokio::test]
async fn a_declined_card_turns_auto_top_up_off_with_a_checkout_link() {
    failing_card("pm_card_chargeCustomerFail", "card_declined").await;
}

#[tokio::test]
async fn a_card_needing_authentication_turns_auto_top_up_off_with_a_checkout_link() {
    failing_card("pm_card_authenticationRequired", "authentication_required").await;
}

#[tokio::test]
async fn past_the_monthly_limit_no_charge_and_one_notification() {
    let w = world(LEGACY, 1).await;
    spend(&w, 450).await;
    let request = top_up_request(&w).await;
    wait_balance(&w.owner, w.user, 550, &w.worker, WAIT).await;
    finished(&w.owner, request, WAIT).await;
    for _ in 0..2 {
        spend(&w, 500).await; // 50: crosses again, past the limit of one a month
        w.owner
            .execute("SELECT billing.grant_tokens($1, 500)", &[&w.user])
            .await
            .unwrap();
    }
    assert_eq!(top_up_request(&w).await, request, "no second top-up");
    assert_eq!(
        scalar(&w.owner, "SELECT count(*) FROM billing.notifications WHERE user_id = $1 AND kind = 'top_up_limit_reached'", w.user).await,
        1
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(intents_created(&w).await.len(), 1);
}

#[tokio::test]
async fn a_disputed_top_up_takes_its_tokens_back_until_the_dispute_is_won() {
    let w = world(LEGACY, 3).await;
    spend(&w, 450).await;
    let request = top_up_request(&w).await;
    wait_balance(&w.owner, w.user, 550, &w.worker, WAIT).await;
    let done = finished(&w.owner, request, WAIT).await;
    let intent = done.result.unwrap()["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    let charge = w.emulator.charge_of(&intent).await;
    let dispute = w
        .emulator
        .post(&format!("/_emulator/charges/{charge}/dispute"), json!({}))
        .await;
    // The funds are withdrawn: the top-up's 500 tokens go back.
    wait_balance(&w.owner, w.user, 50, &w.worker, WAIT).await;
    let id = dispute["object"]["id"]
        .as_str()
        .or_else(|| dispute["id"].as_str())
        .expect("the dispute's id")
        .to_string();
    w.emulator
        .post(
            &format!("/_emulator/disputes/{id}/close"),
            json!({"won": true}),
        )
        .await;
    wait_balance(&w.owner, w.user, 550, &w.worker, WAIT).await;
}
