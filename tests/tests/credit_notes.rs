//! Credit notes give back money as Stripe says they did (issue 20, item 6): a mixed credit note
//! (2025-05-28.basil) only through its post-payment part, and a credit note's refund with the
//! amount and status Stripe has for it, retrieved when no event said (before basil a credit
//! note names its refund without an amount, and before 2024-10-28.acacia Stripe sends no
//! `refund.*` event for a charge's refund).
//!
//! The events are the emulator's; a mixed credit note is the emulator's credit note as the
//! 2025-05-28.basil version renders it (`type` `mixed`, `pre_payment_amount`,
//! `post_payment_amount`: https://docs.stripe.com/changelog/basil/2025-05-28/partial-payments),
//! which the emulator does not issue (it credits paid invoices only).
mod common;
mod refunds_support;
mod worker_support;

use std::time::{Duration, Instant};

use refunds_support::*;
use serde_json::{json, Value};
use stripe_billing_tests::events;
use tokio_postgres::Client;
use uuid::Uuid;
use worker_support::{checkout_session, free_port, seed, Emulator, Worker};

const LEGACY: &str = "2023-08-16";
const BASIL: &str = "2025-03-31.basil";

/// The emulator's credit note event as 2025-05-28.basil renders a credit note of `total` whose
/// first `pre` lowered what was due: `type` `post_payment`, `pre_payment` or `mixed`, and the two
/// amounts.
fn as_of_2025_05_28(event: &Value, total: i64, pre: i64) -> Value {
    let mut e = event.clone();
    e["id"] = json!(events::event_id());
    e["api_version"] = json!("2025-05-28.basil");
    let o = &mut e["data"]["object"];
    let kind = match (pre, total - pre) {
        (0, _) => "post_payment",
        (_, 0) => "pre_payment",
        _ => "mixed",
    };
    o["type"] = json!(kind);
    o["amount"] = json!(total);
    o["total"] = json!(total);
    o["subtotal"] = json!(total);
    o["pre_payment_amount"] = json!(pre);
    o["post_payment_amount"] = json!(total - pre);
    e
}

/// The story delivered in order and then in reverse, each time into a fresh database where
/// `bought` was delivered first: the balance each ends with.
async fn balances(shop: &Shop, bought: &[Value], story: &[Value]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for (name, events) in [
        ("in order", story.to_vec()),
        ("reversed", story.iter().rev().cloned().collect()),
    ] {
        let (_db, owner) = setup().await;
        deliver_all(&owner, shop, bought).await;
        deliver_all(&owner, shop, &events).await;
        assert_books(&owner).await;
        out.push((name.to_string(), balance(&owner, shop.user).await));
    }
    out
}

#[tokio::test]
async fn a_mixed_credit_note_takes_back_only_its_post_payment_part() {
    // A 2000 invoice (1000 tokens) and a credit note of 800 credited to the customer's balance.
    let shop = Shop::open(BASIL).await;
    let (invoice, _) = shop.subscribe().await;
    let bought = shop.em.events().await;
    shop.credit_note(&invoice, 300, "").await;
    let note = shop.em.events().await.last().unwrap().clone();
    // 500 of it lowered what was due, 300 went back: 300 of 2000 is 150 tokens. A pre-payment
    // note gives nothing back; a post-payment note of 800 gives back 800 (400 tokens).
    for (pre, want) in [(500, 1000 - 150), (800, 1000), (0, 1000 - 400)] {
        let story = [as_of_2025_05_28(&note, 800, pre)];
        for (order, got) in balances(&shop, &bought, &story).await {
            assert_eq!(got, want, "pre-payment {pre} of 800, {order}");
        }
    }
}

#[tokio::test]
async fn a_mixed_credit_note_that_also_refunds_counts_its_refund_once() {
    // 800 credited: 500 lowered what was due, 300 refunded (refunds[].amount_refunded). The
    // charge reports the 300; the note adds nothing to it.
    let shop = Shop::open(BASIL).await;
    let (invoice, _) = shop.subscribe().await;
    let bought = shop.em.events().await;
    shop.credit_note(&invoice, 300, "refund").await;
    let all = shop.em.events().await;
    let mut story: Vec<Value> = all[bought.len()..all.len() - 1].to_vec();
    story.push(as_of_2025_05_28(all.last().unwrap(), 800, 500));
    for (order, got) in balances(&shop, &bought, &story).await {
        assert_eq!(got, 1000 - 150, "{order}");
    }
}

/// The refund of a credit note: `refund_amount` of `amount` refunded, the rest credited to the
/// customer's balance. Returns the shop, what bought the invoice, and the events since.
async fn credit_note_with_refund(
    version: &str,
    amount: i64,
    refund_amount: i64,
) -> (Shop, Vec<Value>, Vec<Value>) {
    let shop = Shop::open(version).await;
    let (invoice, _) = shop.subscribe().await; // 1000 tokens for 2000
    let bought = shop.em.events().await;
    shop.em
        .post(
            &format!("/_emulator/invoices/{invoice}/credit_note"),
            json!({"amount": amount, "refund": true, "refund_amount": refund_amount}),
        )
        .await;
    let story = shop.em.events().await[bought.len()..].to_vec();
    (shop, bought, story)
}

/// The refund retrievals the events asked for: (object id, status).
async fn refund_retrievals(owner: &Client) -> Vec<(String, String)> {
    owner
        .query(
            "SELECT params ->> 'object_id', status FROM billing.stripe_requests
             WHERE kind = 'refresh' AND params ->> 'object_id' LIKE 're\\_%' ORDER BY created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_credit_notes_refund_that_no_event_reported_is_retrieved_for_its_amount() {
    // 800 credited, of which 300 refunded and 500 credited to the customer's balance: 800 went
    // back, 400 tokens. Before basil the note names its refund without an amount, and before
    // acacia no refund event reports it: the refund is retrieved. From basil on the note says.
    for version in [LEGACY, BASIL] {
        let (shop, bought, story) = credit_note_with_refund(version, 800, 300).await;
        let types: Vec<&str> = story.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let want: &[&str] = if version == LEGACY {
            &["charge.refunded", "credit_note.created"]
        } else {
            &["charge.refunded", "refund.created", "credit_note.created"]
        };
        assert_eq!(types, want, "{version}");
        for (order, events) in [
            ("in order", story.clone()),
            ("reversed", story.iter().rev().cloned().collect()),
        ] {
            let (_db, owner) = setup().await;
            deliver_all(&owner, &shop, &bought).await;
            deliver_all(&owner, &shop, &events).await;
            assert_eq!(balance(&owner, shop.user).await, 600, "{version} {order}");
            assert_books(&owner).await;
            let retrieved = refund_retrievals(&owner).await;
            if version == LEGACY {
                assert_eq!(retrieved.len(), 1, "{version} {order}: one retrieval");
                assert_eq!(retrieved[0].1, "succeeded");
            } else {
                assert_eq!(retrieved, [], "{version} {order}: the note said");
            }
        }
    }
}

#[tokio::test]
async fn a_credit_notes_refund_that_failed_stops_counting() {
    // 500 credited and refunded; the refund fails before anyone retrieved it, and its only
    // report (charge.refund.updated, before acacia) is lost. The retrieved refund says failed:
    // nothing went back. When the lost report arrives after all, nothing changes.
    let (shop, bought, story) = credit_note_with_refund(LEGACY, 500, 500).await;
    let charge = shop
        .get(&format!(
            "/v1/charges/{}?expand[]=refunds",
            story[0]["data"]["object"]["id"].as_str().unwrap()
        ))
        .await;
    let refund = charge["refunds"]["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    shop.em
        .post(&format!("/_emulator/refunds/{refund}/fail"), json!({}))
        .await;
    let lost = shop.em.events().await.last().unwrap().clone();
    assert_eq!(lost["type"], "charge.refund.updated");
    for (order, events) in [
        ("in order", story.clone()),
        ("reversed", story.iter().rev().cloned().collect()),
    ] {
        let (_db, owner) = setup().await;
        deliver_all(&owner, &shop, &bought).await;
        deliver_all(&owner, &shop, &events).await;
        assert_eq!(balance(&owner, shop.user).await, 1000, "{order}");
        deliver_all(&owner, &shop, std::slice::from_ref(&lost)).await;
        assert_eq!(
            balance(&owner, shop.user).await,
            1000,
            "{order}, the lost report"
        );
        assert_books(&owner).await;
    }
    // Had the refund not failed, the same events take a quarter.
    let (shop, bought, story) = credit_note_with_refund(LEGACY, 500, 500).await;
    let (_db, owner) = setup().await;
    deliver_all(&owner, &shop, &bought).await;
    deliver_all(&owner, &shop, &story).await;
    assert_eq!(balance(&owner, shop.user).await, 750);
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_worker_retrieves_a_credit_notes_refund() {
    // End to end on a 2023-08-16 account: the real worker takes the webhooks and serves the
    // refund's retrieval from the emulator.
    let db = stripe_billing_tests::pg::TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/api/stripe/webhook");
    let emulator = Emulator::start_with(Some(&hook), &["--api-version", LEGACY]).await;
    let worker = Worker::start_on(port, &db.dsn, Some(&emulator.url), &[]).await;
    let mut api = db.api().await;
    let user = Uuid::new_v4();
    let session = checkout_session(&mut api, &owner, user, "price_pro", &worker).await;
    emulator.complete_checkout(&session).await;
    let (status, s) = emulator
        .stripe(
            reqwest::Method::GET,
            &format!("/v1/checkout/sessions/{session}"),
            "",
        )
        .await;
    assert_eq!(status, 200, "{s}");
    let (_, sub) = emulator
        .stripe(
            reqwest::Method::GET,
            &format!("/v1/subscriptions/{}", s["subscription"].as_str().unwrap()),
            "",
        )
        .await;
    let invoice = sub["latest_invoice"].as_str().unwrap();
    emulator
        .post(
            &format!("/_emulator/invoices/{invoice}/credit_note"),
            json!({"amount": 800, "refund": true, "refund_amount": 300}),
        )
        .await;
    // 800 of 2000 went back (300 refunded, 500 credited): 600 of 1000 tokens left.
    let deadline = Instant::now() + WAIT;
    loop {
        let held: i64 = owner
            .query_one("SELECT billing.token_balance($1)", &[&user])
            .await
            .unwrap()
            .get(0);
        if held == 600 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "balance {held}, retrievals {:?}\n{}",
            refund_retrievals(&owner).await,
            worker.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let retrieved = refund_retrievals(&owner).await;
    assert_eq!(retrieved.len(), 1, "{retrieved:?}");
    assert_eq!(retrieved[0].1, "succeeded");
}
