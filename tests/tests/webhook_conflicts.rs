//! A webhook whose delivery loses a deadlock is retried inside the worker before it answers:
//! Stripe gets its 200, not a 500 to retry minutes later. Needs `cargo build -p
//! stripe-billing-worker` first and the cluster of scripts/integration-test.sh.
//!
//! The deadlock is made by the test alone, with the locks a redelivery takes in order (the
//! customer's lock, then the stored event's row lock): the test holds the row, lets the
//! delivery take the customer's lock and wait for the row, then asks for the customer's lock
//! itself. Postgres ends the delivery's statement with 40P01 (its wait began first, so its
//! deadlock check runs first), the test commits, and the worker's next attempt goes through.
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
    let event_id = event["id"].as_str().unwrap().to_string();

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
    let locker = connect(&db.dsn).await;
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .query(
            "SELECT 1 FROM billing.stripe_events WHERE id = $1 FOR UPDATE",
            &[&event_id],
        )
        .await
        .unwrap();
    let (body, header) = events::signed(&event, WEBHOOK_SECRET);
    let url = worker.webhook_url();
    let delivery =
        tokio::spawn(async move { post_webhook_to(&url, body.into_bytes(), Some(&header)).await });
    wait_for_lock_wait(&owner, "handle_stripe_webhook").await;
    let deadlocks_before = deadlocks(&owner).await;
    // The cycle: Postgres ends the delivery's statement, and this lock is granted.
    locker
        .query("SELECT billing._lock_customer($1)", &[&customer])
        .await
        .expect("the test's session is not the deadlock's victim");
    locker.batch_execute("COMMIT").await.unwrap();

    let (status, answer) = tokio::time::timeout(WAIT, delivery)
        .await
        .expect("the delivery is answered")
        .unwrap();
    assert_eq!(status, 200, "{answer}\n{}", worker.logs());
    assert_eq!(answer["event_id"], event_id.as_str());
    assert_eq!(answer["duplicate"], true, "{answer}");
    // The deadlock did happen (the statistics arrive a little after the statement ended).
    let deadline = Instant::now() + WAIT;
    while deadlocks(&owner).await <= deadlocks_before {
        assert!(Instant::now() < deadline, "no deadlock was detected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a session running `query_part` waits for a lock.
async fn wait_for_lock_wait(owner: &tokio_postgres::Client, query_part: &str) {
    let deadline = Instant::now() + WAIT;
    let pattern = format!("%{query_part}%");
    loop {
        let waiting: i64 = owner
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE $1 AND pid <> pg_backend_pid()",
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
