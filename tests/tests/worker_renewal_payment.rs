//! End to end with the real worker and the emulator (basil): renewals cost no Stripe call, and
//! a refund of a renewal still takes its tokens back: the worker lists the PaymentIntent's
//! invoice payments once, when the refund needs them (issue 20). The rules, and the renewal
//! whose `invoice_payment.paid` arrives, are pinned in renewal_payment.rs.
mod worker_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);

/// The Stripe API calls the worker made (the emulator's log, without the test's own control
/// calls) whose path starts with `prefix`.
async fn calls(emulator: &Emulator, prefix: &str) -> Vec<Value> {
    emulator
        .requests()
        .await
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .collect()
}

async fn get(emulator: &Emulator, path: &str) -> Value {
    let (status, v) = emulator.stripe(reqwest::Method::GET, path, "").await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// Waits until the request queue is drained (whatever the applied events asked for is served).
async fn drained(owner: &Client, worker: &Worker) {
    let deadline = Instant::now() + WAIT;
    loop {
        let open: i64 = owner
            .query_one(
                "SELECT count(*) FROM billing.stripe_requests WHERE status IN ('pending', 'running')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{}", worker.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn basil_renewals_cost_no_call_and_their_refunds_still_take_tokens() {
    let Stack {
        db,
        owner,
        emulator,
        worker,
    } = Stack::start(&["--api-version", "2025-03-31.basil"], &[]).await;

    let mut api = db.api().await;
    let user = Uuid::new_v4();
    let session = checkout_session(&mut api, &owner, user, "price_pro", &worker).await;
    emulator.complete_checkout(&session).await;
    wait_balance(&owner, user, 1000, &worker, WAIT).await;
    let sub: String = owner
        .query_one(
            "SELECT stripe_subscription_id FROM billing.subscriptions WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);

    // Two renewals; the emulator sends no invoice_payment.paid (the endpoint may not get it
    // either): their invoices name no payment, and nothing is asked of Stripe for them.
    for want in [2000, 3000] {
        emulator
            .post(&format!("/_emulator/subscriptions/{sub}/renew"), json!({}))
            .await;
        wait_balance(&owner, user, want, &worker, WAIT).await;
    }
    drained(&owner, &worker).await;
    assert_eq!(
        calls(&emulator, "/v1/invoices/").await.len(),
        0,
        "no retrieval per renewal"
    );

    // A refund of the last renewal asks the worker to list its PaymentIntent's invoice
    // payments, and takes its share with the answer: 1000 of 2000 is half of the renewal's 1000 tokens.
    let invoice = get(&emulator, &format!("/v1/subscriptions/{sub}")).await["latest_invoice"]
        .as_str()
        .unwrap()
        .to_string();
    let paid = get(
        &emulator,
        &format!("/v1/invoices/{invoice}?expand[]=payments"),
    )
    .await;
    let intent = paid["payments"]["data"][0]["payment"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    let charge = emulator.charge_of(&intent).await;
    emulator
        .post(
            &format!("/_emulator/charges/{charge}/refund"),
            json!({"amount": 1000}),
        )
        .await;
    wait_balance(&owner, user, 2500, &worker, WAIT).await;
    // A second refund of that payment applies at once: it was looked up.
    emulator
        .post(
            &format!("/_emulator/charges/{charge}/refund"),
            json!({"amount": 500}),
        )
        .await;
    wait_balance(&owner, user, 2250, &worker, WAIT).await;
    drained(&owner, &worker).await;

    // One lookup, for the refund that needed it, with the parameters Stripe documents.
    let lookups = calls(&emulator, "/v1/invoice_payments").await;
    assert_eq!(lookups.len(), 1, "{lookups:?}");
    assert_eq!(lookups[0]["params"]["payment"]["type"], "payment_intent");
    assert_eq!(lookups[0]["params"]["payment"]["payment_intent"], intent);
    let waiting: i64 = owner
        .query_one(
            "SELECT count(*) FROM billing.stripe_events WHERE processed_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0, "{}", worker.logs());
}
