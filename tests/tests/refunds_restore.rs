//! Money that comes back gives its tokens back (issue 20, items 2, 3 and 7): a refund that fails
//! or is canceled after its charge reported it refunded, a dispute won after its grant expired or
//! after a later grant repaid its debt, and disputes that move tokens only when money moves (an
//! inquiry moves none).
//!
//! The events are the emulator's real payloads; a refund's later failure from acacia on, a
//! cancellation, or an inquiry is the emulator's own refund or dispute object with Stripe's
//! later status, in a new event of the same second (the emulator fails a refund itself only
//! as pre-acacia versions report it, and opens no inquiry).
mod common;
mod refunds_support;
mod worker_support;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use refunds_support::*;
use serde_json::{json, Value};
use stripe_billing_tests::events;
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

/// The emulator's event of `event_type` (the last one).
fn last_of(all: &[Value], event_type: &str) -> Value {
    all.iter()
        .rev()
        .find(|e| e["type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} event"))
        .clone()
}

/// A later report of the same object: a new event id, `event_type`, the object with `changes`.
fn later(of: &Value, event_type: &str, changes: Value) -> Value {
    let mut e = of.clone();
    e["id"] = json!(events::event_id());
    e["type"] = json!(event_type);
    for (k, v) in changes.as_object().unwrap() {
        e["data"]["object"][k] = v.clone();
    }
    e
}

/// The orders a delivery can take: in order, reversed, shuffled with every event twice.
fn orders(story: &[Value]) -> Vec<(String, Vec<Value>)> {
    let mut out = vec![
        ("in order".to_string(), story.to_vec()),
        (
            "reversed".to_string(),
            story.iter().rev().cloned().collect(),
        ),
    ];
    for seed in 0..3u64 {
        let mut twice: Vec<Value> = story.iter().chain(story.iter()).cloned().collect();
        twice.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        out.push((format!("shuffled twice (seed {seed})"), twice));
    }
    out
}

/// For each order a delivery can take (see [`orders`]): a fresh database where `bought` and then
/// the story in that order were delivered.
async fn in_every_order(
    shop: &Shop,
    bought: &[Value],
    story: &[Value],
) -> Vec<(String, TestDb, Client)> {
    let mut out = Vec::new();
    for (name, events) in orders(story) {
        let (db, owner) = setup().await;
        deliver(&owner, shop, bought).await;
        deliver(&owner, shop, &events).await;
        out.push((name, db, owner));
    }
    out
}

async fn deliver(owner: &Client, shop: &Shop, events: &[Value]) {
    for e in events {
        let answer = events::deliver(owner, e).await.expect("acknowledged");
        assert_eq!(answer["received"], true, "{answer}");
        serve_retrievals(owner, shop).await;
    }
}

/// A pack bought and wholly refunded, then the refund's later report `failure` (a type and a
/// status), on `version`; `with_refund_created`: whether refund.created is among the events.
async fn refund_that_fails(
    version: &str,
    failure: (&str, &str),
    with_refund_created: bool,
) -> (Shop, Vec<Value>, Vec<Value>) {
    let shop = Shop::open(version).await;
    let pack = shop.buy_packs(1).await; // 500 tokens for 900
    let bought = shop.em.events().await;
    shop.refund(&pack.charge, 900).await;
    let all = shop.em.events().await;
    let mut story = vec![last_of(&all, "charge.refunded")];
    if with_refund_created {
        let created = last_of(&all, "refund.created");
        story.push(created.clone());
        story.push(later(&created, failure.0, json!({"status": failure.1})));
    } else {
        // Before acacia there is no refund.created; the emulator fails the refund itself and
        // reports it as Stripe did then.
        let charge = shop
            .get(&format!("/v1/charges/{}?expand[]=refunds", pack.charge))
            .await;
        let refund = charge["refunds"]["data"][0]["id"].as_str().unwrap();
        shop.em
            .post(&format!("/_emulator/refunds/{refund}/fail"), json!({}))
            .await;
        let reported = last_of(&shop.em.events().await, failure.0);
        assert_eq!(reported["data"]["object"]["status"], failure.1);
        story.push(reported);
    }
    (shop, bought, story)
}

#[tokio::test]
async fn a_refund_that_fails_or_is_canceled_after_the_charge_reported_it_gives_tokens_back() {
    for failure in [
        ("refund.failed", "failed"),
        ("refund.updated", "failed"),
        ("refund.updated", "canceled"),
    ] {
        let (shop, bought, story) = refund_that_fails("2025-03-31.basil", failure, true).await;
        for (name, _db, owner) in in_every_order(&shop, &bought, &story).await {
            assert_eq!(
                (
                    balance(&owner, shop.user).await,
                    debt(&owner, shop.user).await
                ),
                (500, 0),
                "{failure:?} {name}: the refund moved no money"
            );
            assert_books(&owner).await;
        }
        // Before the failure is known, the refund takes the pack.
        let (_db, owner) = setup().await;
        deliver(&owner, &shop, &bought).await;
        deliver(&owner, &shop, &story[..2]).await;
        assert_eq!(balance(&owner, shop.user).await, 0, "{failure:?}");
    }
}

#[tokio::test]
async fn charge_refund_updated_reports_a_failed_refund_before_acacia() {
    // Before 2024-10-28.acacia Stripe sent no refund.* events for refunds of charges: the
    // charge.refunded snapshot, then charge.refund.updated when the refund failed.
    let (shop, bought, story) =
        refund_that_fails("2023-08-16", ("charge.refund.updated", "failed"), false).await;
    for (name, _db, owner) in in_every_order(&shop, &bought, &story).await {
        assert_eq!(balance(&owner, shop.user).await, 500, "{name}");
        assert_books(&owner).await;
    }
}

#[tokio::test]
async fn a_refund_that_failed_stops_counting_but_a_later_refund_counts() {
    // 300 refunded and failed, then 600 refunded: the charge's newest report (600) and the
    // refunds agree on 600, in any order.
    let shop = Shop::open("2025-03-31.basil").await;
    let pack = shop.buy_packs(1).await;
    let bought = shop.em.events().await;
    shop.refund(&pack.charge, 300).await;
    let first = last_of(&shop.em.events().await, "refund.created");
    let failed = later(&first, "refund.failed", json!({"status": "failed"}));
    shop.refund(&pack.charge, 600).await;
    let all = shop.em.events().await;
    let mut story: Vec<Value> = all[bought.len()..].to_vec();
    story.push(failed);
    for (name, _db, owner) in in_every_order(&shop, &bought, &story).await {
        // 900 of 900 reported at the second refund, less the failed 300: two thirds of 500.
        assert_eq!(balance(&owner, shop.user).await, 500 - 333, "{name}");
        assert_books(&owner).await;
    }
}

/// The renewal grace from now, in seconds.
async fn grace_seconds(owner: &Client) -> i64 {
    owner
        .query_one(
            "SELECT (billing._settings()).renewal_grace_seconds::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_dispute_won_after_its_grant_expired_gives_usable_tokens() {
    for version in VERSIONS {
        let (_db, owner) = setup().await;
        let shop = Shop::open(version).await;
        let (_invoice, charge) = shop.subscribe().await; // 1000 tokens for 2000
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        let d = shop.dispute(&charge).await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(balance(&owner, shop.user).await, 0, "{version}");
        // The period (and its grace) ends while the dispute is open.
        owner
            .execute(
                "UPDATE billing.token_grants SET expires_at = now() - interval '1 minute'
                 WHERE user_id = $1 AND purchase_id IS NOT NULL",
                &[&shop.user],
            )
            .await
            .unwrap();
        shop.close(&d, true).await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(
            balance(&owner, shop.user).await,
            1000,
            "{version}: won, the tokens are back and spendable"
        );
        let grace = grace_seconds(&owner).await;
        let usable: bool = owner
            .query_one(
                "SELECT bool_and(expires_at >= now() + make_interval(secs => $2::bigint) - interval '5 seconds')
                 FROM billing.token_grants WHERE user_id = $1 AND source = 'restored'",
                &[&shop.user, &grace],
            )
            .await
            .unwrap()
            .get(0);
        assert!(usable, "{version}: restored tokens last the grace from now");
        assert_books(&owner).await;
    }
}

#[tokio::test]
async fn a_won_dispute_gives_back_what_a_later_grant_repaid() {
    for version in VERSIONS {
        let (_db, owner) = setup().await;
        let shop = Shop::open(version).await;
        let (_invoice, charge) = shop.subscribe().await; // 1000 tokens for 2000
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        spend(&owner, shop.user, 1000).await;
        let d = shop.dispute(&charge).await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(debt(&owner, shop.user).await, 1000, "{version}");
        // Two packs (1000 tokens) repay the debt at once.
        shop.buy_packs(2).await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(
            (
                balance(&owner, shop.user).await,
                debt(&owner, shop.user).await
            ),
            (0, 0),
            "{version}"
        );
        // The disputed period has ended by the time the dispute is won.
        owner
            .execute(
                "UPDATE billing.token_grants SET expires_at = now() - interval '1 minute'
                 WHERE user_id = $1 AND source <> 'payg_purchase'",
                &[&shop.user],
            )
            .await
            .unwrap();
        shop.close(&d, true).await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(
            (
                balance(&owner, shop.user).await,
                debt(&owner, shop.user).await
            ),
            (1000, 0),
            "{version}: the repaid 1000 come back, spendable"
        );
        assert_books(&owner).await;
    }
}

#[tokio::test]
async fn an_inquiry_takes_nothing() {
    let shop = Shop::open("2025-03-31.basil").await;
    let pack = shop.buy_packs(1).await;
    let bought = shop.em.events().await;
    shop.dispute(&pack.charge).await;
    let opened = last_of(&shop.em.events().await, "charge.dispute.created");
    let story = vec![
        later(
            &opened,
            "charge.dispute.created",
            json!({"status": "warning_needs_response"}),
        ),
        later(
            &opened,
            "charge.dispute.updated",
            json!({"status": "warning_under_review"}),
        ),
        later(
            &opened,
            "charge.dispute.closed",
            json!({"status": "warning_closed"}),
        ),
    ];
    for (name, _db, owner) in in_every_order(&shop, &bought, &story).await {
        assert_eq!(balance(&owner, shop.user).await, 500, "{name}");
        assert_books(&owner).await;
    }
}

#[tokio::test]
async fn funds_withdrawn_take_and_funds_reinstated_give_back_in_any_order() {
    for version in VERSIONS {
        let shop = Shop::open(version).await;
        let pack = shop.buy_packs(1).await;
        let bought = shop.em.events().await;
        let d = shop.dispute(&pack.charge).await;
        let opened = shop.em.events().await;
        shop.close(&d, true).await;
        let all = shop.em.events().await;
        // created, funds_withdrawn, closed (won), funds_reinstated, in any order.
        let story: Vec<Value> = all[bought.len()..].to_vec();
        for (name, _db, owner) in in_every_order(&shop, &bought, &story).await {
            assert_eq!(balance(&owner, shop.user).await, 500, "{version} {name}");
            assert_books(&owner).await;
        }
        // Withdrawn and not (yet) reinstated: taken.
        let (_db, owner) = setup().await;
        deliver(&owner, &shop, &bought).await;
        deliver(&owner, &shop, &opened[bought.len()..]).await;
        assert_eq!(balance(&owner, shop.user).await, 0, "{version}");
    }
}
