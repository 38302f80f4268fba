//! Basil's proration lines carry `pricing.unit_amount_decimal: null` (recorded Stripe
//! responses, emulator/README.md's rules table), so a plan change is valued against the
//! catalog's synced price (billing.prices): from price events, or the worker's retrieval while
//! the invoice waits. Without it a basil always_invoice upgrade granted nothing for its money.
mod plan_change_support;
mod subscription_support;

use plan_change_support::*;
use serde_json::{json, Value};
use stripe_billing_tests::events::{self, unix_now, Shape};
use stripe_billing_tests::pg::assert_error;
use subscription_support::*;

#[tokio::test]
async fn a_basil_upgrade_is_valued_against_the_catalogs_synced_price() {
    let (_db, owner) = setup().await;
    plans(&owner).await;
    // Basil's proration lines say pricing.unit_amount_decimal null (as Stripe's do), and the
    // catalog has no amounts yet: the invoice waits for them instead of granting nothing.
    let p = period(unix_now() - 21 * DAY, 30);
    let s = on_small(&owner, Shape::Basil, p).await;
    let (_, u) = up(&s, p, 9 * DAY);
    let lines = &u["data"]["object"]["lines"]["data"];
    assert_eq!(lines[0]["pricing"]["unit_amount_decimal"], Value::Null);
    assert_eq!(lines[1]["pricing"]["unit_amount_decimal"], Value::Null);
    let event = u["id"].as_str().unwrap().to_string();
    deliver(&owner, &u).await;
    assert_eq!(balance(&owner, &s).await, 100);
    assert_eq!(
        outcome(&owner, &event).await,
        (
            Some("BL010".into()),
            Some("waiting for the price price_small from Stripe".into())
        )
    );
    assert_eq!(price_retrievals(&owner).await, vec!["price_small"]);
    // Small's price.created arrives: the invoice tries again and waits for Big's amount.
    let at = unix_now() - 30 * DAY;
    deliver(
        &owner,
        &events::event(
            Shape::Basil,
            "price.created",
            at,
            events::price(SMALL.0, Some(SMALL.1), at),
        ),
    )
    .await;
    assert_eq!(outcome(&owner, &event).await.0.as_deref(), Some("BL010"));
    assert_eq!(
        price_retrievals(&owner).await,
        vec!["price_small", "price_big"]
    );
    // The worker's retrieval of Big's price (GET /v1/prices/{id}) applies it: 300 - 30 tokens.
    let applied: i32 = owner
        .query_one(
            "SELECT billing.store_price($1, now())",
            &[&events::price(BIG.0, Some(BIG.1), at)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 1);
    assert_eq!(outcome(&owner, &event).await, (None, None));
    assert_eq!(balance(&owner, &s).await, 370);
    let synced: Vec<(String, Option<String>, String, String, i32)> = owner
        .query(
            "SELECT stripe_price_id, unit_amount::text, currency, recurring_interval, interval_count
             FROM billing.prices WHERE stripe_price_id IN ('price_small', 'price_big') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        synced,
        vec![
            (
                "price_big".into(),
                Some("10000".into()),
                "usd".into(),
                "month".into(),
                1
            ),
            (
                "price_small".into(),
                Some("1000".into()),
                "usd".into(),
                "month".into(),
                1
            ),
        ]
    );
    // An older report of a price never overwrites a newer one.
    let mut old = events::price(SMALL.0, Some(SMALL.1), at);
    old["active"] = json!(false);
    deliver(
        &owner,
        &events::event(Shape::Basil, "price.updated", at - 60, old),
    )
    .await;
    let active: bool = owner
        .query_one(
            "SELECT active FROM billing.prices WHERE stripe_price_id = 'price_small'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(active);
    // What is not a Price, or has no time, is refused and changes nothing.
    for (price, at) in [
        (json!({"object": "invoice", "id": "in_1"}), Some(unix_now())),
        (json!({"object": "price", "id": "prod_1"}), Some(unix_now())),
        (events::price(SMALL.0, Some(1), at), None),
    ] {
        let at = at.map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t as u64));
        assert_error(
            owner
                .query_one("SELECT billing.store_price($1, $2)", &[&price, &at])
                .await,
            "22023",
            "",
        );
    }
    let unit: String = owner
        .query_one(
            "SELECT unit_amount::text FROM billing.prices WHERE stripe_price_id = 'price_small'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unit, "1000");
}
