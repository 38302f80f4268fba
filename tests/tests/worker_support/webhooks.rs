//! Webhooks sent to the worker by hand: signed or not, a minimal event body, and a lock that
//! holds every delivery at its INSERT so a test can keep deliveries in flight.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::Client;

use super::Worker;

/// POSTs a webhook body with an optional Stripe-Signature header; returns (status, JSON).
pub async fn post_webhook(worker: &Worker, body: Vec<u8>, signature: Option<&str>) -> (u16, Value) {
    post_webhook_to(&worker.webhook_url(), body, signature).await
}

/// [`post_webhook`] by URL, for a spawned task that cannot borrow the worker.
pub async fn post_webhook_to(url: &str, body: Vec<u8>, signature: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url).body(body);
    if let Some(sig) = signature {
        req = req.header("Stripe-Signature", sig);
    }
    let resp = req.send().await.expect("webhook POST");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A Stripe-Signature header for `body`, made by the extension's own helper.
pub async fn sign(owner: &Client, body: &str, secret: &str, t: i64) -> String {
    owner
        .query_one(
            "SELECT billing.stripe_signature_header($1, $2, $3)",
            &[&body, &secret, &t],
        )
        .await
        .expect("sign")
        .get(0)
}

pub fn now() -> i64 {
    stripe_billing_tests::events::unix_now()
}

/// A minimal signed-webhook body (a `customer.created` event of a new customer) with id `id`.
pub fn event_body(id: &str) -> String {
    json!({
        "id": id, "object": "event", "type": "customer.created", "api_version": "2025-03-31.basil",
        "created": now(), "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": {"id": stripe_emulator::store::ids::customer(), "object": "customer"}}
    })
    .to_string()
}

/// Holds a lock on `billing.stripe_events` that lets readers through but makes every webhook
/// wait at its INSERT (so a test can keep webhook requests in flight); released on ROLLBACK.
pub async fn block_event_inserts(dsn: &str) -> Client {
    let locker = stripe_billing_tests::pg::connect(dsn).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE billing.stripe_events IN SHARE MODE")
        .await
        .expect("lock stripe_events");
    locker
}

/// Waits until `n` sessions wait for the lock of [`block_event_inserts`].
pub async fn wait_blocked_inserts(owner: &Client, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let waiting: i64 = owner
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'billing.stripe_events'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} of {n} webhooks blocked"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
