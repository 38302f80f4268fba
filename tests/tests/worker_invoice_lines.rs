//! End to end with the real worker and the emulator: a renewal after five plan changes has
//! eleven lines, of which Stripe's invoice embeds ten (the prorations); the worker pages the
//! invoice's lines and the renewal grants its period (issue 20), and the changes' prorations,
//! valued against the prices the worker retrieves (basil's proration lines carry no unit
//! amount), take back what they credited. The
//! rules themselves are pinned in invoice_lines.rs and plan_changes.rs.
mod worker_support;

use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_renewal_with_more_lines_than_its_events_carry_is_granted_in_full() {
    let db = stripe_billing_tests::pg::TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens)
             VALUES ('basic', 'price_basic', 'Basic', 'subscription', 100)",
        )
        .await
        .unwrap();
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/api/stripe/webhook");
    let emulator =
        Emulator::start_with(Some(&hook), &["--price", "price_basic:recurring:500"]).await;
    let worker = Worker::start_on(port, &db.dsn, Some(&emulator.url), &[]).await;

    let mut api = db.api().await;
    let user = Uuid::new_v4();
    let session = checkout_session(&mut api, &owner, user, "price_pro", &worker).await;
    emulator.complete_checkout(&session).await;
    let sub: String = owner
        .query_one(
            "SELECT stripe_subscription_id FROM billing.subscriptions WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    // Stripe's default create_prorations: the ten proration lines wait for the renewal.
    for price in [
        "price_basic",
        "price_pro",
        "price_basic",
        "price_pro",
        "price_basic",
    ] {
        emulator
            .post(
                &format!("/_emulator/subscriptions/{sub}/change_price"),
                json!({"price": price}),
            )
            .await;
    }
    let renewed = emulator
        .post(&format!("/_emulator/subscriptions/{sub}/renew"), json!({}))
        .await;
    for event in renewed["events"].as_array().unwrap() {
        assert_eq!(event["delivery"]["status"], 200, "{event}");
    }

    // The renewal's period (basic) is the eleventh line: granted once the worker has them all.
    let deadline = Instant::now() + WAIT;
    let grants = loop {
        let grants: Vec<(String, i64)> = owner
            .query(
                "SELECT source, tokens FROM billing.token_grants WHERE user_id = $1 ORDER BY id",
                &[&user],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if grants.len() > 1 || Instant::now() > deadline {
            break grants;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        grants,
        [
            ("subscription_start".to_string(), 1000),
            ("plan".to_string(), 100)
        ],
        "{}",
        worker.logs()
    );
    // Valued against the prices' amounts, which the worker retrieved: the five changes,
    // made at once just after the start, net to Pro (1000 tokens, $20) credited and Basic (100,
    // $5) charged for nearly the whole period, so nearly 900 tokens are taken back.
    let (taken, balance): (i64, i64) = {
        let row = owner
            .query_one(
                "SELECT (SELECT tokens FROM billing.token_reversals WHERE user_id = $1 AND kind = 'downgrade'),
                        billing.token_balance($1)",
                &[&user],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!((890..=900).contains(&taken), "{taken}");
    assert_eq!(balance, 1000 + 100 - taken);
    let pages: Vec<_> = emulator
        .requests()
        .await
        .into_iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/v1/invoices/") && p.ends_with("/lines"))
        })
        .collect();
    assert_eq!(pages.len(), 1, "one page of up to 100: {pages:?}");
    // Basil's proration lines carry no unit amount: the worker retrieved both prices once
    // into the catalog (billing.prices), against which the prorations were valued.
    let mut prices: Vec<String> = emulator
        .requests()
        .await
        .into_iter()
        .filter_map(|r| {
            r["path"]
                .as_str()
                .filter(|p| p.starts_with("/v1/prices/"))
                .map(str::to_string)
        })
        .collect();
    prices.sort();
    assert_eq!(prices, ["/v1/prices/price_basic", "/v1/prices/price_pro"]);
    let synced: i64 = owner
        .query_one(
            "SELECT count(*) FROM billing.prices WHERE unit_amount IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(synced, 2);
    assert_eq!(pages[0]["params"]["limit"], 100);
    let waiting: i64 = owner
        .query_one(
            "SELECT count(*) FROM billing.stripe_events WHERE processed_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0);
}
