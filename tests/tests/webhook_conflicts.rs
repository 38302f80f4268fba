//! A webhook whose delivery loses a deadlock is retried inside the worker before it answers:
//! Stripe gets its 200, not a 500 to retry minutes later. Needs `cargo build -p
//! stripe-billing-worker` first and the cluster of scripts/integration-test.sh.
//!
//! The deadlock is made by the test alone, with the locks a redelivery takes in order (the
//! customer's lock, then the stored event's row lock): the test holds the row, lets the
//! delivery take the customer's lock and wait for the row, then asks for the customer's lock
//! itself. Postgres ends the delivery's statement with 40P01 (its wait began first, so its
//! deadlock check normally runs first), the test commits, and the worker's next attempt goes
//! through.
mod worker_support;

use std::time::{Duration, Instant};

use serde_json::Value;
use stripe_billing_tests::events::{self, Shape};
use stripe_billing_tests::pg::{connect, TestDb};
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_webhook_that_loses_a_deadlock_is_retried_before_answering() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let customer = "cus_deadlock_test";
    let period = events::Period {
        start: now(),
        end: now() + 2_592_000,
    };
    let invoice = events::invoice(
        Shape::Basil,
        &events::Invoice {
            id: "in_deadlock_test",
            subscription: "sub_deadlock_test",
            customer,
            billing_reason: "subscription_cycle",
            paid: true,
            lines: vec![events::Line {
                price_id: "price_pro",
                amount: 2000,
                proration: false,
                period,
            }],
            user_id: None,
        },
    );
    let event = events::event(Shape::Basil, "invoice.paid", now(), invoice);

    // Stored, waiting for its user: a redelivery takes the row lock to try it again.
    let (body, header) = events::signed(&event, WEBHOOK_SECRET);
    let first: Value = owner
        .query_one(
            "SELECT billing.handle_stripe_webhook($1, $2)",
            &[&body, &header],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(first["processed"], false, "{first}");

    let worker = Worker::start(&db.dsn, None, &[]).await;
    let deadlocks_before = deadlocks(&owner).await;
    // Postgres checks a wait for a deadlock once, after deadlock_timeout (1 s): when a loaded
    // machine delays the test's lock past that, the test's own wait finds the cycle and the test
    // is the victim. That run shows nothing, so the scenario is played again.
    let mut tries = 0;
    let (status, answer) = loop {
        tries += 1;
        let held = (
            "SELECT 1 FROM billing.stripe_events WHERE id = $1 FOR UPDATE",
            event["id"].as_str(),
        );
        if let Some(answered) = deadlock_a_delivery(&db.dsn, &owner, &worker, &event, held).await {
            break answered;
        }
        assert!(
            tries < 5,
            "the test's session was the deadlock's victim {tries} times"
        );
    };
    assert_eq!(status, 200, "{answer}\n{}", worker.logs());
    assert_eq!(answer["event_id"], event["id"]);
    assert_eq!(answer["duplicate"], true, "{answer}");
    // The deadlock did happen (the statistics arrive a little after the statement ended).
    let deadline = Instant::now() + WAIT;
    while deadlocks(&owner).await <= deadlocks_before {
        assert!(Instant::now() < deadline, "no deadlock was detected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Delivers `event` through the worker while the test holds a row (`held`: a locking query and
/// its one parameter) the delivery needs after the customer's lock, then takes the customer's
/// lock to close the cycle; the answer, or None when the test's session was the one Postgres
/// ended.
async fn deadlock_a_delivery(
    dsn: &str,
    owner: &tokio_postgres::Client,
    worker: &Worker,
    event: &Value,
    held: (&str, Option<&str>),
) -> Option<(u16, Value)> {
    let locker = connect(dsn).await;
    locker.batch_execute("BEGIN").await.unwrap();
    locker.query(held.0, &[&held.1]).await.unwrap();
    let (body, header) = events::signed(event, WEBHOOK_SECRET);
    let url = worker.webhook_url();
    let delivery =
        tokio::spawn(async move { post_webhook_to(&url, body.into_bytes(), Some(&header)).await });
    wait_for_lock_wait(owner, "handle_stripe_webhook").await;
    let customer = event["data"]["object"]["customer"].as_str();
    // The cycle: Postgres ends one of the two statements, normally the delivery's.
    let won = match locker
        .query("SELECT billing._lock_customer($1)", &[&customer])
        .await
    {
        Ok(_) => true,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) => {
            false
        }
        Err(e) => panic!("taking the customer's lock: {e}"),
    };
    locker
        .batch_execute(if won { "COMMIT" } else { "ROLLBACK" })
        .await
        .unwrap();
    let answered = tokio::time::timeout(WAIT, delivery)
        .await
        .expect("the delivery is answered")
        .unwrap();
    won.then_some(answered)
}

#[tokio::test]
async fn an_effect_that_loses_a_deadlock_is_retried_not_stored_as_failed() {
    // The effects run in a subtransaction whose failures are stored with the event; a deadlock
    // there is not the event's fault, so it must reach the worker, which tries again.
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let (customer, sub) = ("cus_QeffectDeadlock", "sub_1QeffectDeadlock");
    let user = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
    let period = events::Period {
        start: now(),
        end: now() + 2_592_000,
    };
    let created = events::subscription(
        Shape::Basil,
        &events::Sub {
            id: sub,
            customer,
            status: "active",
            price_id: "price_pro",
            period,
            cancel_at_period_end: false,
            ended_at: None,
            user_id: Some(user),
        },
    );
    let (body, header) = events::signed(
        &events::event(
            Shape::Basil,
            "customer.subscription.created",
            now(),
            created,
        ),
        WEBHOOK_SECRET,
    );
    owner
        .query_one(
            "SELECT billing.handle_stripe_webhook($1, $2)",
            &[&body, &header],
        )
        .await
        .unwrap();
    let worker = Worker::start(&db.dsn, None, &[]).await;
    let mut tries = 0;
    let (status, answer, event) = loop {
        tries += 1;
        // A new renewal each try: the invoice's effect upserts the subscription row.
        let invoice = events::invoice(
            Shape::Basil,
            &events::Invoice {
                id: &format!("in_1QeffectDeadlock{tries}"),
                subscription: sub,
                customer,
                billing_reason: "subscription_cycle",
                paid: true,
                lines: vec![events::Line {
                    price_id: "price_pro",
                    amount: 2000,
                    proration: false,
                    period,
                }],
                user_id: Some(user),
            },
        );
        let event = events::event(Shape::Basil, "invoice.paid", now(), invoice);
        let held = (
            "SELECT 1 FROM billing.subscriptions WHERE stripe_subscription_id = $1 FOR UPDATE",
            Some(sub),
        );
        if let Some((status, answer)) =
            deadlock_a_delivery(&db.dsn, &owner, &worker, &event, held).await
        {
            break (status, answer, event);
        }
        assert!(
            tries < 5,
            "the test's session was the deadlock's victim {tries} times"
        );
    };
    assert_eq!(status, 200, "{answer}\n{}", worker.logs());
    assert_eq!(answer["processed"], true, "{answer}");
    let stored: (Option<String>, bool) = {
        let row = owner
            .query_one(
                "SELECT error_code, processed_at IS NOT NULL FROM billing.stripe_events WHERE id = $1",
                &[&event["id"].as_str()],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(stored, (None, true), "applied, with no deadlock stored");
}

/// Waits until a session running `query_part` waits for a lock.
async fn wait_for_lock_wait(owner: &tokio_postgres::Client, query_part: &str) {
    let deadline = Instant::now() + WAIT;
    let pattern = format!("%{query_part}%");
    loop {
        let waiting: i64 = owner
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE $1 AND pid <> pg_backend_pid()
                   AND datname = current_database()",
                &[&pattern],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the delivery never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deadlocks(owner: &tokio_postgres::Client) -> i64 {
    owner
        .query_one(
            "SELECT pg_stat_force_next_flush(), deadlocks FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(1)
}
