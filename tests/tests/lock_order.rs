//! One lock order on every path that applies events (DESIGN.md, "Ingestion"): a customer's
//! webhooks and the line items that wake its waiting events, and then every such path at once
//! (line items, link_customer, a webhook, a catch-up event, a retrieved object, reprocess_events)
//! on several customers, never deadlock (40P01) and grant what a serial delivery grants. On the
//! 0.2.0 order (the event's row before the customer's lock) both tests see 40P01 in every run.
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

/// What one customer's round starts with: a Payment Link session waiting for its line items
/// (BL010) and a renewal waiting for its user (BL007, the customer is linked by nobody yet).
struct Waiting {
    user: String,
    customer: String,
    session: String,
}

async fn waiting_customer(owner: &tokio_postgres::Client) -> Waiting {
    let user = uuid::Uuid::new_v4().to_string();
    let customer = ids::customer();
    let session = ids::checkout_session();
    let sub = ids::long("sub");
    let now = unix_now();
    let pack = events::checkout_session(
        Shape::Basil,
        &events::Session {
            id: &session,
            mode: "payment",
            payment_status: "paid",
            customer: &customer,
            user_id: Some(&user),
            price_id: "price_pack",
            subscription: None,
            invoice: None,
            amount_total: 1800,
            request_id: None,
        },
    );
    let period = events::Period {
        start: now,
        end: now + 2_592_000,
    };
    let renewal = events::invoice(
        Shape::Basil,
        &events::Invoice {
            id: &ids::long("in"),
            subscription: &sub,
            customer: &customer,
            billing_reason: "subscription_cycle",
            paid: true,
            lines: vec![events::Line {
                price_id: "price_basic",
                amount: 2000,
                proration: false,
                period,
            }],
            user_id: None,
        },
    );
    for (event_type, object, code) in [
        ("checkout.session.completed", pack, "BL010"),
        ("invoice.paid", renewal, "BL007"),
    ] {
        let answer = events::deliver(owner, &events::event(Shape::Basil, event_type, now, object))
            .await
            .unwrap();
        assert_eq!(answer["code"], code, "{answer}");
    }
    Waiting {
        user,
        customer,
        session,
    }
}

/// A customer event of `customer` (which names no user, so it wakes without linking).
fn customer_event(customer: &str) -> Value {
    let object = json!({"id": customer, "object": "customer", "email": "buyer@example.test",
                        "metadata": {}, "deleted": false});
    events::event(Shape::Basil, "customer.updated", unix_now(), object)
}

#[tokio::test]
async fn every_path_that_applies_events_at_once_never_deadlocks_and_ends_like_a_serial_run() {
    // For a while, several customers at once: the worker storing line items, an operator linking
    // the customer, a webhook and a catch-up event of the same customer, an object the worker
    // retrieved, and reprocess_events, each from a session of its own, all started together.
    let (db, owner) = setup().await;
    const ROUNDS: usize = 6;
    const CUSTOMERS: usize = 3;
    let mut failures = Vec::new();
    let mut users = Vec::new();
    for round in 0..ROUNDS {
        let mut waiting = Vec::new();
        for _ in 0..CUSTOMERS {
            waiting.push(waiting_customer(&owner).await);
        }
        let paths = 5 * CUSTOMERS + 1;
        let barrier = Arc::new(Barrier::new(paths));
        let mut tasks = Vec::new();
        let reprocess = db.owner().await;
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            let outcome = reprocess
                .query_one(
                    "SELECT billing.reprocess_events(include_waiting => true)",
                    &[],
                )
                .await;
            ("reprocess", outcome.map(|_| ()))
        }));
        for w in &waiting {
            let clients = [
                db.owner().await,
                db.owner().await,
                db.owner().await,
                db.owner().await,
                db.owner().await,
            ];
            let [items, link, hook, api, retrieved] = clients;
            let (b, session) = (barrier.clone(), w.session.clone());
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                let list = line_items(&session);
                let outcome = items
                    .query_one(
                        "SELECT billing.store_line_items($1, $2)",
                        &[&session, &list],
                    )
                    .await;
                ("line items", outcome.map(|_| ()))
            }));
            let (b, user, customer) = (barrier.clone(), w.user.clone(), w.customer.clone());
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                let outcome = link
                    .query_one(
                        "SELECT billing.link_customer($1::text::uuid, $2)",
                        &[&user, &customer],
                    )
                    .await;
                ("link_customer", outcome.map(|_| ()))
            }));
            let (b, event) = (barrier.clone(), customer_event(&w.customer));
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                ("webhook", events::deliver(&hook, &event).await.map(|_| ()))
            }));
            let (b, event) = (barrier.clone(), customer_event(&w.customer).to_string());
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                let outcome = api
                    .query_one("SELECT billing.ingest_api_event($1)", &[&event])
                    .await;
                ("catch-up", outcome.map(|_| ()))
            }));
            let (b, object) = (
                barrier.clone(),
                customer_event(&w.customer)["data"]["object"].clone(),
            );
            tasks.push(tokio::spawn(async move {
                b.wait().await;
                let outcome = retrieved
                    .query_one(
                        "SELECT billing.ingest_retrieved(gen_random_uuid(), $1)",
                        &[&object],
                    )
                    .await;
                ("retrieved", outcome.map(|_| ()))
            }));
        }
        for task in tasks {
            if let (what, Err(e)) = task.await.unwrap() {
                let code = e.as_db_error().map(|d| d.code().code().to_string());
                failures.push(format!("round {round}, {what}: {code:?} {e}"));
            }
        }
        users.extend(waiting.into_iter().map(|w| w.user));
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // A serial run gives each user the session's 2 packs (2 x 500) and the renewal (1000).
    for user in &users {
        let balance = count(&owner, &format!("SELECT billing.token_balance('{user}')")).await;
        assert_eq!(balance, 2000, "{user}");
    }
    assert_eq!(
        count(
            &owner,
            "SELECT count(*) FROM billing.stripe_events WHERE processed_at IS NULL"
        )
        .await,
        0
    );
}
