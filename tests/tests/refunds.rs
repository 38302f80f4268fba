//! Refunds, disputes and credit notes take tokens back (issue: the ledger follows the money).
//!
//! The Stripe side is the emulator: purchases, refunds, disputes and credit notes are made
//! through its API and control calls, and the events it produced (real payloads of the API
//! version under test) are delivered to the database signed, in order, reversed, shuffled and
//! duplicated. What the worker would fetch for them (a session's line items, an invoice's
//! payments) is fetched from the same emulator and stored through the worker's own functions.
mod common;
mod refunds_support;
mod worker_support;

use common::set_config;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use refunds_support::*;
use serde_json::{json, Value};
use stripe_billing_tests::events;
use stripe_billing_tests::pg::{Caller, TestDb};
use uuid::Uuid;

#[tokio::test]
async fn partial_then_full_refund_of_a_pack_takes_back_its_share() {
    for version in VERSIONS {
        let (db, owner) = setup().await;
        let shop = Shop::open(version).await;
        let pack = shop.buy_packs(2).await; // 1000 tokens for 1800
        shop.refund(&pack.charge, 600).await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(
            balance(&owner, shop.user).await,
            1000 - 333,
            "{version}: a third refunded"
        );
        shop.refund(&pack.charge, 1200).await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(
            balance(&owner, shop.user).await,
            0,
            "{version}: all refunded"
        );
        assert_eq!(debt(&owner, shop.user).await, 0);
        assert_books(&owner).await;
        let kinds: Vec<String> = owner
            .query(
                "SELECT kind FROM billing.notifications WHERE user_id = $1 ORDER BY id",
                &[&shop.user],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(kinds, ["tokens_revoked", "tokens_revoked"], "{version}");
        // The user sees the revocations in their own history; another user sees none.
        let mut api = db.api().await;
        let mine = api
            .call(
                &Caller::User(shop.user),
                "SELECT count(*)::bigint FROM billing.token_reversals",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(mine[0].get::<_, i64>(0), 2);
        let spends = api
            .call(
                &Caller::User(shop.user),
                "SELECT count(*)::bigint FROM billing.token_spends WHERE kind = 'revocation'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(spends[0].get::<_, i64>(0), 2);
        let theirs = api
            .call(
                &Caller::User(Uuid::new_v4()),
                "SELECT count(*)::bigint FROM billing.token_reversals",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(theirs[0].get::<_, i64>(0), 0);
    }
}

#[tokio::test]
async fn spent_tokens_become_a_debt_that_the_next_grant_pays_first() {
    let (_db, owner) = setup().await;
    let shop = Shop::open("2025-03-31.basil").await;
    let first = shop.buy_packs(1).await;
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    spend(&owner, shop.user, 400).await;
    shop.refund(&first.charge, 900).await;
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    assert_eq!(
        (
            balance(&owner, shop.user).await,
            debt(&owner, shop.user).await
        ),
        (0, 400)
    );
    let note: Value = owner
        .query_one(
            "SELECT payload FROM billing.notifications WHERE kind = 'debt_created'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (note["tokens"].as_i64(), note["written_off"].as_bool()),
        (Some(400), Some(false))
    );
    // The next purchase pays the debt before the user can spend it.
    shop.buy_packs(1).await;
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    assert_eq!(
        (
            balance(&owner, shop.user).await,
            debt(&owner, shop.user).await
        ),
        (100, 0)
    );
    spend(&owner, shop.user, 100).await;
    // So does a manual grant: a new debt (300 of a refunded pack's 500 tokens were spent) is
    // paid from billing.grant_tokens before the user can spend what it gives.
    let third = shop.buy_packs(1).await;
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    spend(&owner, shop.user, 300).await;
    shop.refund(&third.charge, 900).await;
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    assert_eq!(
        (
            balance(&owner, shop.user).await,
            debt(&owner, shop.user).await
        ),
        (0, 300)
    );
    owner
        .execute("SELECT billing.grant_tokens($1, 1000)", &[&shop.user])
        .await
        .unwrap();
    assert_eq!(
        (
            balance(&owner, shop.user).await,
            debt(&owner, shop.user).await
        ),
        (1000 - 300, 0),
        "the manual grant paid the debt first"
    );
    assert_books(&owner).await;
}

#[tokio::test]
async fn with_debt_policy_write_off_the_debt_is_recorded_and_forgotten() {
    let (_db, owner) = setup().await;
    set_config(&owner, "debt_policy = 'write_off'").await;
    let shop = Shop::open("2023-08-16").await;
    let first = shop.buy_packs(1).await;
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    spend(&owner, shop.user, 500).await;
    shop.refund(&first.charge, 900).await;
    shop.buy_packs(1).await;
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    assert_eq!(
        (
            balance(&owner, shop.user).await,
            debt(&owner, shop.user).await
        ),
        (500, 0)
    );
    let written: i64 = owner
        .query_one("SELECT sum(tokens)::bigint FROM billing.token_debt_settlements WHERE kind = 'written_off'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 500);
    assert_books(&owner).await;
}

#[tokio::test]
async fn a_revocation_takes_the_users_other_tokens_before_leaving_a_debt() {
    let (_db, owner) = setup().await;
    let shop = Shop::open("2025-03-31.basil").await;
    let pack = shop.buy_packs(1).await;
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    owner
        .execute(
            "SELECT billing.grant_tokens($1, 1000, 'promo')",
            &[&shop.user],
        )
        .await
        .unwrap();
    spend(&owner, shop.user, 300).await; // from the pack, which was granted first
    shop.refund(&pack.charge, 900).await;
    deliver_all(&owner, &shop, &shop.em.events().await).await;
    // 200 left in the pack, 300 more from the promo grant: nothing owed.
    assert_eq!(
        (
            balance(&owner, shop.user).await,
            debt(&owner, shop.user).await
        ),
        (700, 0)
    );
    assert_books(&owner).await;
}

#[tokio::test]
async fn a_dispute_takes_tokens_while_open_and_gives_them_back_when_won() {
    for version in VERSIONS {
        let (_db, owner) = setup().await;
        let shop = Shop::open(version).await;
        let won = shop.buy_packs(1).await;
        let lost = shop.buy_packs(1).await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        spend(&owner, shop.user, 600).await; // all of the first pack, 100 of the second
        let d1 = shop.dispute(&won.charge).await;
        let d2 = shop.dispute(&lost.charge).await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(
            (
                balance(&owner, shop.user).await,
                debt(&owner, shop.user).await
            ),
            (0, 600),
            "{version}: both packs taken back while disputed"
        );
        shop.close(&d1, true).await;
        shop.close(&d2, false).await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        // The won pack's 500: its 500 of debt forgiven. The lost one stays taken, 100 owed.
        assert_eq!(
            (
                balance(&owner, shop.user).await,
                debt(&owner, shop.user).await
            ),
            (0, 100),
            "{version}"
        );
        let kinds: Vec<String> = owner
            .query(
                "SELECT DISTINCT kind FROM billing.notifications ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            kinds,
            ["debt_created", "tokens_restored", "tokens_revoked"],
            "{version}"
        );
        assert_books(&owner).await;
    }
}

#[tokio::test]
async fn credit_notes_take_their_share_once_and_voiding_gives_it_back() {
    for version in VERSIONS {
        let (_db, owner) = setup().await;
        let shop = Shop::open(version).await;
        let (invoice, _charge) = shop.subscribe().await; // 1000 tokens for 2000
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(balance(&owner, shop.user).await, 1000, "{version}");
        // A credit note that refunds 500: charge.refunded, refund.created and
        // credit_note.created all report the same money.
        shop.credit_note(&invoice, 500, "refund").await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(
            balance(&owner, shop.user).await,
            750,
            "{version}: a quarter credited, once"
        );
        let out_of_band = shop.credit_note(&invoice, 300, "out_of_band").await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(balance(&owner, shop.user).await, 600, "{version}");
        shop.em
            .post(
                &format!("/_emulator/credit_notes/{out_of_band}/void"),
                json!({}),
            )
            .await;
        deliver_all(&owner, &shop, &shop.em.events().await).await;
        assert_eq!(
            balance(&owner, shop.user).await,
            750,
            "{version}: voided credit given back"
        );
        assert_books(&owner).await;
    }
}

/// A customer's whole money story, as events: packs refunded, disputed (won and lost), a
/// subscription invoice credited.
async fn money_story(version: &str) -> (Shop, Vec<Value>) {
    let shop = Shop::open(version).await;
    let refunded = shop.buy_packs(2).await;
    let won = shop.buy_packs(1).await;
    let lost = shop.buy_packs(1).await;
    let (invoice, _) = shop.subscribe().await;
    shop.refund(&refunded.charge, 500).await;
    shop.refund(&refunded.charge, 400).await;
    let d1 = shop.dispute(&won.charge).await;
    let d2 = shop.dispute(&lost.charge).await;
    shop.close(&d1, true).await;
    shop.close(&d2, false).await;
    shop.credit_note(&invoice, 800, "refund").await;
    let cn = shop.credit_note(&invoice, 200, "").await;
    shop.em
        .post(&format!("/_emulator/credit_notes/{cn}/void"), json!({}))
        .await;
    let events = shop.em.events().await;
    (shop, events)
}

#[tokio::test]
async fn every_order_with_duplicates_ends_in_the_same_ledger() {
    for version in VERSIONS {
        let (shop, story) = money_story(version).await;
        let mut outcomes = Vec::new();
        // In order with a prompt worker; reversed, the worker catching up at the end; shuffled
        // with every event delivered twice.
        let mut orders: Vec<(String, Vec<Value>, bool)> = vec![
            ("in order".into(), story.clone(), true),
            (
                "reversed".into(),
                story.iter().rev().cloned().collect(),
                false,
            ),
        ];
        for seed in 0..3u64 {
            let mut twice: Vec<Value> = story.iter().chain(story.iter()).cloned().collect();
            twice.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            orders.push((
                format!("shuffled twice (seed {seed})"),
                twice,
                seed % 2 == 0,
            ));
        }
        for (name, events, prompt) in orders {
            let (_db, owner) = setup().await;
            for e in &events {
                let answer = events::deliver(&owner, e).await.expect("acknowledged");
                assert_eq!(answer["received"], true);
                if prompt {
                    serve_retrievals(&owner, &shop).await;
                }
            }
            serve_retrievals(&owner, &shop).await;
            let unapplied: i64 = owner
                .query_one(
                    "SELECT count(*) FROM billing.stripe_events WHERE processed_at IS NULL",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(unapplied, 0, "{version} {name}: every event applies");
            assert_books(&owner).await;
            outcomes.push((name, holdings(&owner, shop.user).await));
        }
        let (_, first) = &outcomes[0];
        // 1000 (refunded 900 of 1800: half) + 500 (won) + 500 (lost) + 1000 (800 of 2000 credited)
        assert_eq!(first["balance"], 500 + 500 + 600, "{version}: {first}");
        for (name, got) in &outcomes {
            assert_eq!(
                got, first,
                "{version}: {name} differs from in-order delivery"
            );
        }
    }
}

#[tokio::test]
async fn token_debt_refuses_other_users_and_anonymous_callers() {
    let db = TestDb::new().await;
    let mut api = db.api().await;
    let me = Uuid::new_v4();
    let rows = api
        .call(&Caller::User(me), "SELECT billing.token_debt()", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    let other = Uuid::new_v4();
    let e = api
        .call(
            &Caller::User(me),
            "SELECT billing.token_debt($1)",
            &[&other],
        )
        .await
        .unwrap_err();
    assert_eq!(stripe_billing_tests::pg::db_error(&e).0, "42501");
    let owner = db.owner().await;
    let e = owner
        .query_one("SELECT billing.token_debt()", &[])
        .await
        .unwrap_err();
    assert_eq!(stripe_billing_tests::pg::db_error(&e).0, "22004");
}

#[tokio::test]
async fn a_refund_and_its_purchase_applied_at_the_same_moment_still_meet() {
    // Two sessions: one applies the refund, the other the purchase, each in a transaction that
    // cannot see the other's rows until it commits. The payment's lock makes the second wait
    // for the first and then see it, so the tokens are taken back either way round.
    let (db, owner) = setup().await;
    let shop = Shop::open("2025-03-31.basil").await;
    let pack = shop.buy_packs(1).await;
    shop.refund(&pack.charge, 900).await;
    let all = shop.em.events().await;
    let of = |t: &str| {
        all.iter()
            .filter(|e| e["type"] == t)
            .cloned()
            .collect::<Vec<_>>()
    };
    // The session waits for its line items (a Payment-Link-style session): its grant is made
    // when they are stored.
    for e in of("checkout.session.completed") {
        events::deliver(&owner, &e).await.unwrap();
    }
    let items = shop
        .get(&format!(
            "/v1/checkout/sessions/{}/line_items",
            pack.session
        ))
        .await;
    let refunder = db.owner().await;
    refunder.batch_execute("BEGIN").await.unwrap();
    // Only the refund object: it names no customer, so no customer lock orders the two. From
    // basil a refund of a payment nothing links yet is recorded and asks for the worker's
    // lookup of the PaymentIntent (renewal_payment.rs); the answer (it paid no invoice) comes
    // here in the same transaction.
    for e in of("refund.created") {
        let answer = events::deliver(&refunder, &e).await.unwrap();
        assert_eq!(answer["processed"], true, "{answer}");
        let intent = e["data"]["object"]["payment_intent"].as_str().unwrap();
        let none =
            json!({"object": "list", "data": [], "has_more": false, "url": "/v1/invoice_payments"});
        refunder
            .execute(
                "SELECT billing.store_invoice_payments($1, $2)",
                &[&intent, &none],
            )
            .await
            .unwrap();
    }
    let granter = db.owner().await;
    let session = pack.session.clone();
    let grant = tokio::spawn(async move {
        granter.batch_execute("BEGIN").await.unwrap();
        granter
            .execute(
                "SELECT billing.store_line_items($1, $2)",
                &[&session, &items],
            )
            .await
            .unwrap();
        granter.batch_execute("COMMIT").await.unwrap();
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !grant.is_finished(),
        "the purchase waits for the refund's transaction"
    );
    refunder.batch_execute("COMMIT").await.unwrap();
    grant.await.unwrap();
    assert_eq!(
        balance(&owner, shop.user).await,
        0,
        "the refund took the pack back"
    );
    assert_books(&owner).await;
}
