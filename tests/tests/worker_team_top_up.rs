//! A team's auto top-up end to end (docs/teams.md, "The team's wallet"): its owner sets it and
//! buys a pack for the team through Checkout, which saves the card on the team's Stripe
//! customer; a member's spend that crosses the threshold makes the real worker charge that card
//! off-session through the emulator, and `payment_intent.succeeded` grants the pack to the team's
//! wallet, once. A declined card turns the team's auto top-up off and tells every member, with a
//! Checkout link that buys for the team. Both API versions. The SQL side: team_wallets.rs.
mod worker_support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stripe_billing_tests::pg::{Api, Caller, TestDb};
use tokio_postgres::Client;
use uuid::Uuid;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);

struct World {
    _db: TestDb,
    owner: Client,
    api: Api,
    emulator: Emulator,
    worker: Worker,
    team: Uuid,
    bob: Uuid,
    customer: String,
}

/// Alice's team (Bob a member) with auto top-up (pack of 500 for 900 cents at 100 or below),
/// and 500 tokens bought by Alice for the team through Checkout.
async fn world(version: &str) -> World {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    owner
        .batch_execute(
            "INSERT INTO billing.prices (stripe_price_id, unit_amount, currency, synced_at)
             VALUES ('price_pack', 900, 'usd', now());
             UPDATE billing.config SET checkout_success_url = 'https://app.example.test/ok';",
        )
        .await
        .unwrap();
    let port = free_port();
    let emulator = Emulator::delivering_to(port, &["--api-version", version]).await;
    let worker = Worker::start_on(port, &db.dsn, Some(&emulator.url), &[]).await;
    let mut api = db.api().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let who = Caller::User(alice);
    let team: Uuid = api
        .call(&who, "SELECT billing.create_team('Acme')", &[])
        .await
        .unwrap()[0]
        .get(0);
    for sql in [
        "SELECT billing.set_team_member($1, $2)::text",
        "SELECT billing.set_my_auto_top_up('pack', 100, 3, 10000, account_id => $1)::text WHERE $2::uuid IS NOT NULL",
    ] {
        api.call(&who, sql, &[&team, &bob])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    let request = request_checkout(
        &mut api,
        alice,
        "price_pack",
        &format!(", account_id => '{team}'"),
    )
    .await;
    let done = finished(&owner, request, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", worker.logs());
    let session = done.result.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The team has auto top-up, so its checkout saves the card for off-session use.
    let created = emulator.created("/v1/checkout/sessions").await;
    assert_eq!(
        created.last().unwrap()["params"]["payment_intent_data"]["setup_future_usage"],
        "off_session"
    );
    emulator.complete_checkout(&session).await;
    wait_balance(&owner, team, 500, &worker, WAIT).await;
    let customer: String = owner
        .query_one(
            "SELECT stripe_customer_id FROM billing.customers WHERE user_id = $1",
            &[&team],
        )
        .await
        .unwrap()
        .get(0);
    World {
        _db: db,
        owner,
        api,
        emulator,
        worker,
        team,
        bob,
        customer,
    }
}

/// Bob spends from the team's wallet: 500 down to 50 crosses the threshold of 100.
async fn member_spends(w: &mut World, amount: i64) {
    w.api
        .call(
            &Caller::User(w.bob),
            "SELECT billing.spend_account_tokens($1, $2)",
            &[&w.team, &amount],
        )
        .await
        .unwrap();
}

/// The one top_up request, the team's.
async fn top_up_request(w: &World) -> Uuid {
    let rows = w
        .owner
        .query(
            "SELECT id, user_id FROM billing.stripe_requests WHERE kind = 'top_up'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "exactly one top-up request");
    assert_eq!(rows[0].get::<_, Uuid>(1), w.team, "the team's");
    rows[0].get(0)
}

/// The worker's charges (not idempotent replays).
async fn intents_created(w: &World) -> Vec<Value> {
    w.emulator
        .requests()
        .await
        .into_iter()
        .filter(|r| r["path"] == "/v1/payment_intents" && r["replayed"] != true)
        .collect()
}

async fn team_top_up_charges_the_teams_card(version: &str) {
    let mut w = world(version).await;
    member_spends(&mut w, 450).await;
    let request = top_up_request(&w).await;
    wait_balance(&w.owner, w.team, 550, &w.worker, WAIT).await;
    let done = finished(&w.owner, request, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", w.worker.logs());
    let calls = intents_created(&w).await;
    assert_eq!(calls.len(), 1, "one charge");
    let p = &calls[0]["params"];
    assert_eq!(p["customer"], w.customer.as_str(), "the team's customer");
    assert_eq!(p["metadata"]["user_id"], w.team.to_string().as_str());
    assert_eq!(
        (p["amount"].clone(), p["off_session"].clone()),
        (json!(900), json!(true))
    );
    assert!(p["payment_method"].as_str().unwrap().starts_with("pm_"));
    // The pack went to the team's wallet, nobody's personal one, as a purchase of the team's.
    let grants = w
        .owner
        .query(
            "SELECT user_id, tokens FROM billing.token_grants WHERE source = 'auto_top_up'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(
        (grants[0].get::<_, Uuid>(0), grants[0].get::<_, i64>(1)),
        (w.team, 500)
    );
    let purchases: i64 = w
        .owner
        .query_one(
            "SELECT count(*) FROM billing.purchases WHERE user_id = $1 AND id LIKE 'pi\\_%'",
            &[&w.team],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(purchases, 1);
    assert_eq!(
        balance(&w.owner, w.bob).await,
        0,
        "Bob's own wallet is untouched"
    );
}

#[tokio::test]
async fn a_members_spend_tops_the_team_up_with_the_teams_card_basil() {
    team_top_up_charges_the_teams_card("2025-03-31.basil").await;
}

#[tokio::test]
async fn a_members_spend_tops_the_team_up_with_the_teams_card_2023() {
    team_top_up_charges_the_teams_card("2023-08-16").await;
}

#[tokio::test]
async fn a_declined_team_top_up_tells_every_member_with_a_team_checkout_link() {
    let mut w = world("2025-03-31.basil").await;
    let (status, pm) = w
        .emulator
        .stripe(
            reqwest::Method::POST,
            "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
            &format!("customer={}", w.customer),
        )
        .await;
    assert_eq!(status, 200, "{pm}");
    member_spends(&mut w, 450).await;
    let request = top_up_request(&w).await;
    let done = finished(&w.owner, request, WAIT).await;
    assert_eq!(done.status, "failed", "{done:?}\n{}", w.worker.logs());
    // Bob, a member, reads why the team's auto top-up went off and the link to pay by hand.
    let deadline = Instant::now() + WAIT;
    let (account, payload): (Uuid, Value) = loop {
        let rows = w
            .api
            .call(
                &Caller::User(w.bob),
                "SELECT user_id, payload FROM billing.notifications
                 WHERE kind = 'top_up_failed' AND payload ->> 'checkout_url' IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        if let Some(r) = rows.first() {
            break (r.get(0), r.get(1));
        }
        assert!(
            Instant::now() < deadline,
            "no notification\n{}",
            w.worker.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(account, w.team);
    assert_eq!(payload["code"], "card_declined");
    let disabled: Option<String> = w
        .api
        .call(
            &Caller::User(w.bob),
            "SELECT disabled_reason FROM billing.auto_top_ups",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert!(disabled.unwrap().contains("card_declined"));
    // The link's checkout is the team's: paying it buys for the team.
    let checkout_for: Uuid = w
        .owner
        .query_one(
            "SELECT user_id FROM billing.stripe_requests WHERE id = ($1::jsonb ->> 'checkout_request_id')::uuid",
            &[&payload],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(checkout_for, w.team);
}
