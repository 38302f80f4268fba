//! Seats end to end (issue 23, item 2): a team buys two seats at Checkout, its owner adds seats
//! through the queue with `always_invoice` (the real worker updates the subscription item's
//! quantity in the emulator, and the tokens of the added seats come from the invoice Stripe
//! charges at once), members fill them, then the seats go down with `create_prorations`: the
//! quantity follows Stripe's answer even when no webhook arrives, every event delivered again
//! changes nothing, and the renewal bills the new seats and takes back the removed seats' share.
//! Both API shapes. The SQL rules alone: seat_changes.rs.
mod worker_support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use stripe_billing_tests::pg::{assert_error, Api, Caller, TestDb};
use tokio_postgres::Client;
use uuid::Uuid;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);
/// Plan pro's monthly tokens (`seed`).
const MONTHLY: i64 = 1000;

async fn quantity(owner: &Client, account: Uuid) -> Option<i64> {
    owner
        .query_one(
            "SELECT quantity FROM billing.subscriptions WHERE user_id = $1",
            &[&account],
        )
        .await
        .unwrap()
        .get(0)
}

async fn add(api: &mut Api, by: Uuid, team: Uuid) -> Result<Value, tokio_postgres::Error> {
    api.set_member(by, team, Uuid::new_v4(), "member").await
}

async fn change(
    api: &mut Api,
    by: Uuid,
    team: Uuid,
    seats: i32,
) -> Result<Uuid, tokio_postgres::Error> {
    api.call(
        &Caller::User(by),
        "SELECT billing.request_seat_change($1, $2)",
        &[&team, &seats],
    )
    .await
    .map(|rows| rows[0].get(0))
}

/// Tokens a paid invoice's proration lines are worth, as the ledger values them: each line the
/// share of the plan's monthly tokens its money is, at the price's unit amount.
fn proration_tokens(invoice: &Value, unit: i64) -> f64 {
    invoice["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["parent"]["subscription_item_details"]["proration"]
                .as_bool()
                .or_else(|| l["proration"].as_bool())
                == Some(true)
        })
        .map(|l| l["amount"].as_i64().unwrap() as f64 * MONTHLY as f64 / unit as f64)
        .sum()
}

/// The newest `invoice.paid` invoice of the emulator with `reason`.
async fn paid_invoice(emulator: &Emulator, reason: &str) -> Value {
    emulator
        .events()
        .await
        .into_iter()
        .rev()
        .find(|e| e["type"] == "invoice.paid" && e["data"]["object"]["billing_reason"] == reason)
        .map(|e| e["data"]["object"].clone())
        .unwrap_or_else(|| panic!("no paid {reason} invoice"))
}

/// A team (Alice its owner, Bob a member) that bought two seats of pro at Checkout through the
/// real worker and the emulator speaking `version`.
struct World {
    _db: TestDb,
    owner: Client,
    emulator: Emulator,
    worker: Worker,
    api: Api,
    alice: Uuid,
    bob: Uuid,
    team: Uuid,
    sub: String,
}

async fn bought_two_seats(version: &str) -> World {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    owner
        .execute(
            "UPDATE billing.config SET checkout_success_url = 'https://app.example.test/ok',
                    seat_proration_behavior = 'always_invoice'",
            &[],
        )
        .await
        .unwrap();
    let port = free_port();
    let emulator = Emulator::delivering_to(port, &["--api-version", version]).await;
    let worker = Worker::start_on(port, &db.dsn, Some(&emulator.url), &[]).await;
    let mut api = db.api().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let team = api.create_team(alice, "Acme").await;
    api.set_member(alice, team, bob, "member").await.unwrap();
    let request = request_checkout(
        &mut api,
        alice,
        "price_pro",
        &format!(", quantity => 2, account_id => '{team}'"),
    )
    .await;
    let done = finished(&owner, request, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", worker.logs());
    emulator
        .complete_checkout(done.result.unwrap()["session_id"].as_str().unwrap())
        .await;
    // Two seats' tokens.
    wait_balance(&owner, team, 2 * MONTHLY, &worker, WAIT).await;
    let sub: String = owner
        .query_one(
            "SELECT stripe_subscription_id FROM billing.subscriptions WHERE user_id = $1",
            &[&team],
        )
        .await
        .unwrap()
        .get(0);
    World {
        _db: db,
        owner,
        emulator,
        worker,
        api,
        alice,
        bob,
        team,
        sub,
    }
}

async fn seats_lifecycle(version: &str) {
    let World {
        _db,
        owner,
        emulator,
        worker,
        mut api,
        alice,
        team,
        sub,
        ..
    } = bought_two_seats(version).await;
    let (owner, emulator, worker) = (&owner, &emulator, &worker);
    assert_eq!(quantity(owner, team).await, Some(2));
    assert_error(
        add(&mut api, alice, team).await,
        "BL022",
        "2 seats and 2 members",
    );

    // Four seats, invoiced at once: the two added seats' share of the period.
    let id = change(&mut api, alice, team, 4).await.unwrap();
    let done = finished(owner, id, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", worker.logs());
    assert_eq!(done.result.as_ref().unwrap()["quantity"], 4);
    assert_eq!(
        quantity(owner, team).await,
        Some(4),
        "Stripe's answer is applied"
    );
    let path = format!("/v1/subscriptions/{sub}");
    let update: Vec<Value> = emulator
        .requests()
        .await
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"] == path.as_str())
        .collect();
    assert_eq!(update.len(), 1, "one update: {update:?}");
    assert_eq!(update[0]["idempotency_key"], format!("seats-{id}").as_str());
    let params = &update[0]["params"];
    assert_eq!(
        params["items"][0]["quantity"].to_string().trim_matches('"'),
        "4"
    );
    assert_eq!(params["proration_behavior"], "always_invoice");
    let (_, price) = emulator
        .stripe(Method::GET, "/v1/prices/price_pro", "")
        .await;
    let unit = price["unit_amount"].as_i64().unwrap();
    let invoice = paid_invoice(emulator, "subscription_update").await;
    let added = proration_tokens(&invoice, unit);
    assert!(added > 0.0 && added <= 2.0 * MONTHLY as f64, "{added}");
    let after_increase = 2 * MONTHLY + added.floor() as i64;
    wait_balance(owner, team, after_increase, worker, WAIT).await;
    add(&mut api, alice, team).await.unwrap();
    add(&mut api, alice, team).await.unwrap();
    assert_error(
        add(&mut api, alice, team).await,
        "BL022",
        "4 seats and 4 members",
    );

    // Back to two: refused while four are members, then, members removed, made without a single
    // webhook reaching the worker (the quantity follows Stripe's answer).
    assert_error(
        change(&mut api, alice, team, 2).await,
        "BL023",
        "4 members, 2 seats asked",
    );
    let extra: Vec<Uuid> = owner
        .query(
            "SELECT user_id FROM billing.account_members WHERE account_id = $1 AND role = 'member' LIMIT 2",
            &[&team],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for who in &extra {
        api.call(
            &Caller::User(alice),
            "SELECT billing.remove_team_member($1, $2)",
            &[&team, who],
        )
        .await
        .unwrap();
    }
    owner
        .execute(
            "UPDATE billing.config SET seat_proration_behavior = NULL",
            &[],
        )
        .await
        .unwrap();
    emulator
        .control(
            Method::POST,
            "/_emulator/webhook/drop",
            Some(json!({"all": true})),
        )
        .await;
    let id = change(&mut api, alice, team, 2).await.unwrap();
    let done = finished(owner, id, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", worker.logs());
    assert_eq!(quantity(owner, team).await, Some(2));
    emulator
        .control(Method::DELETE, "/_emulator/webhook/drop", None)
        .await;
    // Every event again, in order, the dropped ones included: nothing changes twice.
    for event in emulator.events().await {
        let path = format!(
            "/_emulator/events/{}/deliver",
            event["id"].as_str().unwrap()
        );
        emulator.control(Method::POST, &path, Some(json!({}))).await;
    }
    assert_eq!(quantity(owner, team).await, Some(2));
    assert_eq!(
        balance(owner, team).await,
        after_increase,
        "create_prorations bills later"
    );

    // The renewal bills two seats and credits the removed ones' unused time: their tokens
    // go back (the floor one way, the ceiling the other: nothing is gained).
    emulator
        .post(&format!("/_emulator/subscriptions/{sub}/renew"), json!({}))
        .await;
    let renewal = paid_invoice(emulator, "subscription_cycle").await;
    let removed = proration_tokens(&renewal, unit);
    assert!(removed < 0.0, "{removed}");
    let want = after_increase + 2 * MONTHLY - (-removed).ceil() as i64;
    wait_balance(owner, team, want, worker, WAIT).await;
}

#[tokio::test]
async fn seats_follow_stripe_through_the_queue_basil() {
    seats_lifecycle("2025-03-31.basil").await;
}

#[tokio::test]
async fn seats_follow_stripe_through_the_queue_2023_08_16() {
    seats_lifecycle("2023-08-16").await;
}

/// Stripe ended the subscription while its webhooks were lost, so the database still counts it:
/// the seat change Stripe refuses fails for good, the seats stay as they were, and every member
/// reads a `seat_change_failed` notification, also when nobody is awaiting the request any more.
#[tokio::test]
async fn a_seat_change_stripe_refuses_is_told_to_the_team() {
    let World {
        _db,
        owner,
        emulator,
        worker,
        mut api,
        alice,
        bob,
        team,
        sub,
    } = bought_two_seats("2025-03-31.basil").await;
    emulator
        .control(
            Method::POST,
            "/_emulator/webhook/drop",
            Some(json!({"all": true})),
        )
        .await;
    emulator
        .post(&format!("/_emulator/subscriptions/{sub}/cancel"), json!({}))
        .await;
    let id = change(&mut api, alice, team, 3).await.unwrap();
    let done = finished(&owner, id, WAIT).await;
    assert_eq!(done.status, "failed", "{done:?}\n{}", worker.logs());
    let error = done.error.clone().unwrap_or_default();
    assert!(error.contains("canceled subscription"), "{error}");
    assert_eq!(quantity(&owner, team).await, Some(2));
    let read: Vec<Value> = api
        .call(
            &Caller::User(bob),
            "SELECT payload FROM billing.notifications WHERE user_id = $1 AND kind = 'seat_change_failed'",
            &[&team],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0]["request_id"], id.to_string().as_str());
    assert_eq!(
        (
            read[0]["quantity"].clone(),
            read[0]["from_quantity"].clone()
        ),
        (json!(3), json!(2))
    );
    assert!(
        read[0]["message"]
            .as_str()
            .unwrap()
            .contains("canceled subscription"),
        "{read:?}"
    );
}
