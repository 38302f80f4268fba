//! Revoking for an old period (issue 20, item 8): where a refund, dispute or credit note takes
//! tokens back from is billing.config.revocation_scope. With `grant`, a refund of last month's
//! invoice takes only what is left of last month's grant and leaves this month's allowance
//! alone (the rest is recorded as not taken, no debt); with `balance` (the default) it takes the
//! rest from this month's grant. When the money comes back (the refund fails, the dispute is
//! won), exactly what was taken is given back, in either mode.
//!
//! The events are the emulator's real payloads; a refund's later failure is the emulator's own
//! refund object with Stripe's later status, in a new event (the emulator cannot fail a refund).
mod common;
mod refunds_support;
mod worker_support;

use common::set_config;
use refunds_support::*;
use serde_json::{json, Value};
use stripe_billing_tests::events;
use tokio_postgres::Client;

/// How the money of last month's invoice goes back, and comes back.
#[derive(Clone, Copy, Debug)]
enum Story {
    /// Refunded in full; the refund then fails.
    RefundThatFails,
    /// Disputed (the funds withdrawn); the dispute is then won.
    DisputeWon,
}

/// The emulator's event of `event_type` (the last one).
fn last_of(all: &[Value], event_type: &str) -> Value {
    all.iter()
        .rev()
        .find(|e| e["type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} event"))
        .clone()
}

async fn balance_and_debt(owner: &Client, shop: &Shop) -> (i64, i64) {
    (
        balance(owner, shop.user).await,
        debt(owner, shop.user).await,
    )
}

/// The revocation of last month's grant: (tokens, taken, debt, not_taken).
async fn revocation(owner: &Client, invoice: &str) -> (i64, i64, i64, i64) {
    let r = owner
        .query_one(
            "SELECT tokens, taken, debt, not_taken FROM billing.token_reversals
             WHERE purchase_id = $1 AND kind = 'revoke'",
            &[&invoice],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

/// Tokens given back by new grants (source restored) for last month's grant.
async fn given_back(owner: &Client, invoice: &str) -> i64 {
    owner
        .query_one(
            "SELECT coalesce(sum(g.tokens), 0)::bigint FROM billing.token_grants g
             WHERE g.purchase_id = $1 AND g.source = 'restored'",
            &[&invoice],
        )
        .await
        .unwrap()
        .get(0)
}

/// Last month: 1000 tokens, 900 spent. This month: 1000 more. Then last month's money goes back
/// (`story`); returns the shop, the database, last month's invoice and what brings the money back.
async fn old_period_reversed(
    scope: Option<&str>,
    story: Story,
    version: &str,
) -> (
    Shop,
    stripe_billing_tests::pg::TestDb,
    Client,
    String,
    String,
) {
    let (db, owner) = setup().await;
    if let Some(scope) = scope {
        set_config(&owner, &format!("revocation_scope = '{scope}'")).await;
    }
    let shop = Shop::open(version).await;
    let (last_month, charge) = shop.subscribe().await; // 1000 tokens for 2000
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    spend(&owner, shop.user, 900).await;
    shop.renew(&last_month).await;
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    assert_eq!(
        balance_and_debt(&owner, &shop).await,
        (1100, 0),
        "100 left of last month, 1000 of this month"
    );
    let back = match story {
        Story::RefundThatFails => {
            shop.refund(&charge, 2000).await;
            String::new()
        }
        Story::DisputeWon => shop.dispute(&charge).await,
    };
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    (shop, db, owner, last_month, back)
}

/// The money comes back: the refund fails, or the dispute is won.
async fn money_comes_back(owner: &Client, shop: &Shop, story: Story, dispute: &str) {
    match story {
        Story::RefundThatFails => {
            let created = last_of(&shop.em.events().await, "refund.created");
            let mut failed = created.clone();
            failed["id"] = json!(events::event_id());
            failed["type"] = json!("refund.failed");
            failed["data"]["object"]["status"] = json!("failed");
            deliver_all(owner, shop, &[failed]).await;
        }
        Story::DisputeWon => {
            shop.close(dispute, true).await;
            deliver_all(owner, shop, &shop.em.events().await).await;
        }
    }
}

/// The stories and the API versions they run on (refund.* events come from acacia on).
const STORIES: [(Story, &str); 3] = [
    (Story::RefundThatFails, "2025-03-31.basil"),
    (Story::DisputeWon, "2023-08-16"),
    (Story::DisputeWon, "2025-03-31.basil"),
];

#[tokio::test]
async fn with_scope_grant_an_old_periods_refund_leaves_this_months_allowance_alone() {
    for (story, version) in STORIES {
        let (shop, _db, owner, last_month, dispute) =
            old_period_reversed(Some("grant"), story, version).await;
        // Only the 100 left of last month's grant are taken; the 900 it no longer holds are
        // recorded as not taken: no debt, this month's 1000 untouched.
        assert_eq!(
            balance_and_debt(&owner, &shop).await,
            (1000, 0),
            "{story:?} {version}"
        );
        assert_eq!(
            revocation(&owner, &last_month).await,
            (1000, 100, 0, 900),
            "{story:?} {version}"
        );
        assert_books(&owner).await;
        // The money comes back: the 900 not taken are cancelled, the 100 taken given back.
        money_comes_back(&owner, &shop, story, &dispute).await;
        assert_eq!(
            balance_and_debt(&owner, &shop).await,
            (1100, 0),
            "{story:?} {version}: back where it was"
        );
        assert_eq!(
            given_back(&owner, &last_month).await,
            100,
            "{story:?} {version}: only what was taken comes back"
        );
        let (cancelled, forgiven): (i64, i64) = {
            let r = owner
                .query_one(
                    "SELECT sum(not_taken)::bigint, sum(debt_forgiven)::bigint FROM billing.token_reversals
                     WHERE purchase_id = $1 AND kind = 'restore'",
                    &[&last_month],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!((cancelled, forgiven), (900, 0), "{story:?} {version}");
        assert_books(&owner).await;
    }
}

#[tokio::test]
async fn with_scope_balance_the_default_an_old_periods_refund_takes_from_this_months_allowance() {
    for scope in [None, Some("balance")] {
        for (story, version) in STORIES {
            let (shop, _db, owner, last_month, dispute) =
                old_period_reversed(scope, story, version).await;
            // 100 left of last month's grant, 900 from this month's.
            assert_eq!(
                balance_and_debt(&owner, &shop).await,
                (100, 0),
                "{scope:?} {story:?} {version}"
            );
            assert_eq!(
                revocation(&owner, &last_month).await,
                (1000, 1000, 0, 0),
                "{scope:?} {story:?} {version}"
            );
            assert_books(&owner).await;
            // The money comes back: all 1000 taken are given back.
            money_comes_back(&owner, &shop, story, &dispute).await;
            assert_eq!(
                balance_and_debt(&owner, &shop).await,
                (1100, 0),
                "{scope:?} {story:?} {version}: back where it was"
            );
            assert_eq!(
                given_back(&owner, &last_month).await,
                1000,
                "{scope:?} {story:?} {version}"
            );
            assert_books(&owner).await;
        }
    }
}

#[tokio::test]
async fn with_scope_grant_any_order_of_a_refund_that_fails_gives_back_only_what_was_taken() {
    // The refund and its failure in every order, each event twice: whatever was revoked on the
    // way, the end is last month's 100 and this month's 1000, nothing owed, and never more
    // given back than was taken.
    let shop = Shop::open("2025-03-31.basil").await;
    let (last_month, charge) = shop.subscribe().await;
    let subscribed = shop.em.events().await;
    shop.renew(&last_month).await;
    let renewed: Vec<Value> = shop.em.events().await[subscribed.len()..].to_vec();
    shop.refund(&charge, 2000).await;
    let all = shop.em.events().await;
    let created = last_of(&all, "refund.created");
    let mut failed = created.clone();
    failed["id"] = json!(events::event_id());
    failed["type"] = json!("refund.failed");
    failed["data"]["object"]["status"] = json!("failed");
    let story = [last_of(&all, "charge.refunded"), created, failed];
    let mut orders: Vec<Vec<Value>> = vec![story.to_vec(), story.iter().rev().cloned().collect()];
    for first in 0..story.len() {
        // Each event first, then the rest, then everything again.
        let mut o = vec![story[first].clone()];
        o.extend(
            story
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != first)
                .map(|(_, e)| e.clone()),
        );
        o.extend(story.iter().cloned());
        orders.push(o);
    }
    for (n, order) in orders.iter().enumerate() {
        let (_db, owner) = setup().await;
        set_config(&owner, "revocation_scope = 'grant'").await;
        deliver_all(&owner, &shop, &subscribed).await;
        spend(&owner, shop.user, 900).await;
        deliver_all(&owner, &shop, &renewed).await;
        for (i, e) in order.iter().enumerate() {
            deliver_all(&owner, &shop, std::slice::from_ref(e)).await;
            let (b, d) = balance_and_debt(&owner, &shop).await;
            // This month's allowance untouched, and never more given back than was taken.
            assert!(
                d == 0 && (1000..=1100).contains(&b),
                "order {n}, after event {i}: ({b}, {d})"
            );
        }
        assert_eq!(
            balance_and_debt(&owner, &shop).await,
            (1100, 0),
            "order {n}"
        );
        assert_books(&owner).await;
    }
}
