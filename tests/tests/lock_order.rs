//! One lock order on every path that applies events (DESIGN.md, "Ingestion"): a customer's
//! webhooks and the line items that wake its waiting events, delivered at the same moment from
//! different sessions, never deadlock (40P01) and grant what a serial delivery grants.
mod webhook_support;

use std::sync::Arc;

use serde_json::{json, Value};
use stripe_billing_tests::events::{self, unix_now, Shape};
use stripe_emulator::store::ids;
use tokio::sync::Barrier;
use webhook_support::*;

/// Stripe's answer to GET /v1/checkout/sessions/{id}/line_items: two packs.
fn line_items(session: &str) -> Value {
    json!({"object": "list", "has_more": false, "url": format!("/v1/checkout/sessions/{session}/line_items"),
        "data": [{"id": ids::long("li"), "object": "item", "price": {"id": "price_pack", "object": "price"},
                  "quantity": 2, "amount_total": 1800, "currency": "usd"}]})
}

/// A customer.updated event of the test's customer, which wakes its waiting events.
fn customer_updated() -> Value {
    let object = json!({"id": CUSTOMER, "object": "customer", "email": "buyer@example.test",
                        "metadata": {"user_id": USER}, "deleted": false});
    events::event(Shape::Basil, "customer.updated", unix_now(), object)
}

#[tokio::test]
async fn line_items_and_webhooks_of_one_customer_at_once_never_deadlock() {
    let (db, owner) = setup().await;
    const ROUNDS: usize = 10;
    const SESSIONS: usize = 3;
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        // Sessions sold elsewhere (Payment Links) wait for their line items (BL010).
        let mut sessions = Vec::new();
        for _ in 0..SESSIONS {
            let session = ids::checkout_session();
            let waiting = pack_event(
                Shape::Basil,
                "checkout.session.completed",
                &session,
                "paid",
                None,
            );
            let answer = events::deliver(&owner, &waiting).await.unwrap();
            assert_eq!(answer["code"], "BL010", "{answer}");
            sessions.push(session);
        }
        // The worker stores each session's line items while webhooks of the same customer
        // arrive: a webhook holds the customer and wakes the waiting events, and so do the line
        // items, each from a session of its own, all started at once.
        let barrier = Arc::new(Barrier::new(2 * SESSIONS));
        let mut tasks = Vec::new();
        for session in sessions {
            let (items_client, hook_client) = (db.owner().await, db.owner().await);
            let b = barrier.clone();
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                let items = line_items(&session);
                let outcome = items_client
                    .query_one(
                        "SELECT billing.store_line_items($1, $2)",
                        &[&session, &items],
                    )
                    .await;
                ("line items", outcome.map(|_| ()))
            }));
            let b = barrier.clone();
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                (
                    "webhook",
                    events::deliver(&hook_client, &customer_updated())
                        .await
                        .map(|_| ()),
                )
            }));
        }
        for task in tasks {
            if let (what, Err(e)) = task.await.unwrap() {
                let code = e.as_db_error().map(|d| d.code().code().to_string());
                failures.push(format!("round {round}, {what}: {code:?} {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // What a serial delivery gives: each session granted once, 2 x 500.
    assert_eq!(balance(&owner).await, (ROUNDS * SESSIONS) as i64 * 1000);
    assert_eq!(
        count(
            &owner,
            "SELECT count(*) FROM billing.stripe_events WHERE processed_at IS NULL"
        )
        .await,
        0
    );
}
