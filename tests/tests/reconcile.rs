//! Reconciliation: webhooks are not the only source. With deliveries dropped, the worker's
//! catch-up from Stripe's events API converges to exactly the state full delivery gives; a
//! backfill adopts customers and subscriptions that existed before the product.
//!
//! Real parts: two databases, a worker for each, the emulator delivering webhooks to one of them
//! (dropping some) while the other gets every event, and the worker's own `catch-up` and
//! `backfill` subcommands.
mod common;
mod refunds_support;
mod worker_support;

use std::time::{Duration, Instant};

use refunds_support::balance;
use reqwest::Method;
use serde_json::{json, Value};
use stripe_billing_tests::docs;
use stripe_billing_tests::events;
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);

/// Runs the worker binary's subcommand against `dsn` and the emulator; returns stdout.
fn subcommand(dsn: &str, emulator: &Emulator, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(worker_binary())
        .env_clear()
        .args(["--database-url", dsn, "--stripe-api-base", &emulator.url])
        .args(["--stripe-secret-key", SECRET_KEY])
        .args(args)
        .output()
        .expect("run the worker");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until the database has applied every event it holds and the queue is idle.
async fn settled(owner: &Client) {
    let deadline = Instant::now() + WAIT;
    loop {
        let busy: i64 = owner
            .query_one(
                "SELECT (SELECT count(*) FROM billing.stripe_requests WHERE status IN ('pending', 'running'))
                      + (SELECT count(*) FROM billing.stripe_events WHERE processed_at IS NULL)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if busy == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {busy} requests or events open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a user has: balance, debt, subscription, and every paid grant with its net revocation.
async fn holdings(owner: &Client, user: Uuid) -> Value {
    owner
        .query_one(
            "SELECT json_build_object(
                 'balance', billing.token_balance($1), 'debt', billing.token_debt($1),
                 'subscription', (SELECT json_agg(json_build_object('id', s.stripe_subscription_id, 'status', s.status))
                                  FROM billing.subscriptions s WHERE s.user_id = $1),
                 'grants', (SELECT json_object_agg(g.grant_key, json_build_object('tokens', g.tokens,
                                'revoked', billing._net_revoked(g.id)) ORDER BY g.grant_key)
                            FROM billing.token_grants g WHERE g.user_id = $1 AND g.source <> 'restored'))::jsonb",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

/// The charge behind a paid Checkout Session (through its PaymentIntent).
async fn charge_of_session(emulator: &Emulator, session: &str) -> String {
    let (_, s) = emulator
        .stripe(Method::GET, &format!("/v1/checkout/sessions/{session}"), "")
        .await;
    let pi = s["payment_intent"]
        .as_str()
        .expect("a paid session has a PaymentIntent");
    emulator.charge_of(pi).await
}

#[tokio::test]
async fn dropped_deliveries_are_caught_up_to_the_state_full_delivery_gives() {
    // A: webhooks from the emulator, most of them dropped. B: every event, delivered signed.
    let a = TestDb::new().await;
    let a_owner = a.owner().await;
    seed(&a_owner, true).await;
    let port = free_port();
    let emulator = Emulator::delivering_to(port, &[]).await;
    // No periodic catch-up during the story: the test runs it when the damage is done.
    let worker_a = Worker::start_on(
        port,
        &a.dsn,
        Some(&emulator.url),
        &["--catch-up-interval-seconds", "0"],
    )
    .await;
    emulator
        .control(
            Method::POST,
            "/_emulator/webhook/drop",
            Some(json!({"fraction": 0.6, "seed": 7})),
        )
        .await;

    let user = Uuid::new_v4();
    let mut api = a.api().await;
    // A subscription and two token packs, bought through the product.
    let sub_request = request_checkout(&mut api, user, "price_pro", "").await;
    let done = finished(&a_owner, sub_request, WAIT).await;
    let session = done.result.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    emulator.complete_checkout(&session).await;
    let pack_request = request_checkout(&mut api, user, "price_pack", ", quantity => 2").await;
    let done = finished(&a_owner, pack_request, WAIT).await;
    let pack_session = done.result.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    emulator.complete_checkout(&pack_session).await;
    // A quarter of the packs' payment refunded.
    let charge = charge_of_session(&emulator, &pack_session).await;
    emulator
        .control(
            Method::POST,
            &format!("/_emulator/charges/{charge}/refund"),
            Some(json!({"amount": 450})),
        )
        .await;
    settled(&a_owner).await;

    let all = emulator.events().await;
    let delivered: i64 = a_owner
        .query_one(
            "SELECT count(*) FROM billing.stripe_events WHERE source = 'webhook'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (delivered as usize) < all.len(),
        "some deliveries must have been dropped ({delivered} of {})",
        all.len()
    );

    // B gets every event, with its own worker for the retrievals they ask for.
    let b = TestDb::new().await;
    let b_owner = b.owner().await;
    seed(&b_owner, false).await;
    b_owner
        .execute(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ($1)",
            &[&events::TEST_SECRET],
        )
        .await
        .unwrap();
    let _worker_b = Worker::start(
        &b.dsn,
        Some(&emulator.url),
        &["--catch-up-interval-seconds", "0"],
    )
    .await;
    for e in &all {
        events::deliver(&b_owner, e).await.expect("acknowledged");
    }
    settled(&b_owner).await;
    let full = holdings(&b_owner, user).await;
    assert_eq!(full["balance"], 1000 + 1000 - 250, "full delivery: {full}");

    // A catches up with the worker's own subcommand.
    let before = holdings(&a_owner, user).await;
    assert_ne!(
        before, full,
        "the dropped deliveries must have cost something"
    );
    let (code, out, err) = subcommand(&a.dsn, &emulator, &["catch-up"]);
    assert_eq!(code, 0, "{out}{err}");
    // docs/worker.md shows this run.
    docs::assert_transcript(
        "catch-up",
        &format!("$ stripe-billing-worker catch-up\n{out}"),
    );
    let missed = all.len() as i64 - delivered;
    assert!(
        out.contains(&format!("never delivered before: {missed}\n")),
        "{out}"
    );
    settled(&a_owner).await;
    assert_eq!(holdings(&a_owner, user).await, full, "caught up");

    // Running it again finds nothing new; a late delivery of an event already caught up is a
    // duplicate that changes nothing.
    let (_, again, _) = subcommand(&a.dsn, &emulator, &["catch-up"]);
    assert!(again.contains("never delivered before: 0\n"), "{again}");
    emulator
        .control(Method::DELETE, "/_emulator/webhook/drop", None)
        .await;
    let last = all.last().unwrap()["id"].as_str().unwrap().to_string();
    let late = emulator
        .control(
            Method::POST,
            &format!("/_emulator/events/{last}/deliver"),
            Some(json!({})),
        )
        .await;
    // The worker got it and said so: acknowledged (200), and recognised as a duplicate.
    let delivery = &late["events"][0]["delivery"];
    assert_eq!(delivery["status"], 200, "{late}");
    let answer: Value = serde_json::from_str(
        delivery["response_body"]
            .as_str()
            .unwrap_or_else(|| panic!("no answer body: {late}")),
    )
    .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {late}"));
    assert_eq!(answer["duplicate"], true, "{late}");
    assert_eq!(holdings(&a_owner, user).await, full);
    drop(worker_a);
}

#[tokio::test]
async fn the_worker_catches_up_when_it_starts() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let port = free_port();
    let emulator = Emulator::delivering_to(port, &[]).await;
    let worker = Worker::start_on(port, &db.dsn, Some(&emulator.url), &[]).await;
    let user = Uuid::new_v4();
    let mut api = db.api().await;
    let id = request_checkout(&mut api, user, "price_pack", "").await;
    let session = finished(&owner, id, WAIT).await.result.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The endpoint is down: every delivery of the purchase is lost.
    emulator
        .control(
            Method::POST,
            "/_emulator/webhook/drop",
            Some(json!({"all": true})),
        )
        .await;
    emulator.complete_checkout(&session).await;
    assert_eq!(balance(&owner, user).await, 0);
    drop(worker);
    // Back up: the new worker reads the events API before anything else.
    let _worker = Worker::start_on(port, &db.dsn, Some(&emulator.url), &[]).await;
    // The balance shows once the event is ingested; the run is recorded after its last event.
    let deadline = Instant::now() + WAIT;
    loop {
        let tokens = balance(&owner, user).await;
        let sync: (i32, i32) = owner
            .query_opt(
                "SELECT last_run_listed, last_run_new FROM billing.event_sync",
                &[],
            )
            .await
            .unwrap()
            .map_or((0, 0), |r| (r.get(0), r.get(1)));
        if tokens == 500 && sync.1 >= 1 {
            assert!(sync.0 >= sync.1, "{sync:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the purchase was never caught up: balance {tokens}, last run {sync:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn backfill_adopts_an_existing_account_and_reports_what_it_skipped() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let emulator = Emulator::start(None).await;
    // The account before the product: customers made in the Dashboard, some with our user id in
    // their metadata, one known only by e-mail, one nobody can place; two subscriptions.
    let (tagged, by_email) = (Uuid::new_v4(), Uuid::new_v4());
    let make = |email: &str, user: Option<Uuid>| {
        let mut body = json!({"email": email});
        if let Some(u) = user {
            body["metadata"] = json!({"user_id": u.to_string()});
        }
        body
    };
    let mut customers = Vec::new();
    for body in [
        make("tagged@example.com", Some(tagged)),
        make("Mapped@Example.com", None),
        make("stranger@example.com", None),
    ] {
        let c = emulator
            .control(Method::POST, "/_emulator/customers", Some(body))
            .await;
        let payload: Value =
            serde_json::from_str(c["events"][0]["payload"].as_str().unwrap()).unwrap();
        customers.push(
            payload["data"]["object"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for cus in &customers[..2] {
        emulator
            .control(
                Method::POST,
                "/_emulator/subscriptions",
                Some(json!({"customer": cus, "price": "price_pro"})),
            )
            .await;
    }
    let map = std::env::temp_dir().join(format!("backfill-{}.csv", Uuid::new_v4()));
    std::fs::write(
        &map,
        format!("# old system export\nmapped@example.com,{by_email}\n"),
    )
    .unwrap();
    let map_arg = map.to_string_lossy().to_string();

    let (code, out, err) = subcommand(&db.dsn, &emulator, &["backfill", "--map", &map_arg]);
    assert_eq!(code, 0, "{out}{err}");
    // docs/worker.md shows this run.
    docs::assert_transcript(
        "backfill",
        &format!("$ stripe-billing-worker backfill --map users.csv\n{out}"),
    );
    assert!(
        out.starts_with("customers: 2 linked, 1 skipped\nsubscriptions: 2 adopted\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("skipped customer {}: no user", customers[2])),
        "{out}"
    );
    let subs: Vec<(Uuid, String)> = owner
        .query(
            "SELECT user_id, status FROM billing.subscriptions ORDER BY user_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut want = vec![
        (tagged, "active".to_string()),
        (by_email, "active".to_string()),
    ];
    want.sort();
    assert_eq!(subs, want);

    // Safe to re-run: everything is already there.
    let (code, again, _) = subcommand(&db.dsn, &emulator, &["backfill", "--map", &map_arg]);
    assert_eq!(code, 0);
    assert!(
        again.starts_with("customers: 2 already_linked, 1 skipped\nsubscriptions: 2 adopted\n"),
        "{again}"
    );

    // The next renewal of an adopted subscription grants its tokens.
    let sub: String = owner
        .query_one(
            "SELECT stripe_subscription_id FROM billing.subscriptions WHERE user_id = $1",
            &[&tagged],
        )
        .await
        .unwrap()
        .get(0);
    let before = emulator.events().await.len();
    emulator
        .control(
            Method::POST,
            &format!("/_emulator/subscriptions/{sub}/renew"),
            Some(json!({})),
        )
        .await;
    for e in emulator.events().await.into_iter().skip(before) {
        if e["type"] == "invoice.paid" {
            let body = serde_json::to_string(&e).unwrap();
            let header = stripe_billing_core::signature::signature_header(
                body.as_bytes(),
                WEBHOOK_SECRET,
                events::unix_now(),
            );
            owner
                .query_one(
                    "SELECT billing.handle_stripe_webhook($1, $2)",
                    &[&body, &header],
                )
                .await
                .unwrap();
        }
    }
    assert_eq!(
        balance(&owner, tagged).await,
        1000,
        "the renewal granted the plan's tokens"
    );

    // A bad mapping file is refused with the line it is on, before anything happens.
    std::fs::write(&map, "cus_1,not-a-user\n").unwrap();
    let (code, _, err) = subcommand(&db.dsn, &emulator, &["backfill", "--map", &map_arg]);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 1: \"not-a-user\" is not a user id (uuid)"),
        "{err}"
    );
    let _ = std::fs::remove_file(&map);
}

#[tokio::test]
async fn an_event_caught_up_in_an_older_api_version_applies_beside_basil_webhooks() {
    // Stripe's events API returns each event in the API version the account had when the event
    // was created (docs/worker.md, "Catching up and adopting an existing account"). The account was on
    // 2023-08-16 when the subscription was bought, and every delivery of that was lost; it was
    // upgraded to basil since, and the renewal's webhooks come in basil's shape. Catch-up then
    // brings the purchase and a credit note in the 2023-08-16 shape, and all apply: the first
    // period's tokens less the credit, the renewal's, and the subscription keeps the newer
    // report (basil's period).
    let Stack {
        db,
        owner,
        emulator,
        worker,
    } = Stack::start(
        &["--api-version", "2023-08-16"],
        &["--catch-up-interval-seconds", "0"],
    )
    .await;
    let user = Uuid::new_v4();
    let mut api = db.api().await;
    let request = request_checkout(&mut api, user, "price_pro", "").await;
    let session = finished(&owner, request, WAIT).await.result.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    emulator
        .control(
            Method::POST,
            "/_emulator/webhook/drop",
            Some(json!({"all": true})),
        )
        .await;
    emulator.complete_checkout(&session).await;
    let paid = emulator
        .events()
        .await
        .into_iter()
        .find(|e| e["type"] == "invoice.paid")
        .unwrap();
    // A credit note of 800, 300 of it refunded and 500 credited to the customer's balance: a
    // 2023-08-16 credit note names its refund without an amount, and no refund.* event comes
    // before acacia, so the worker retrieves the refund.
    emulator
        .post(
            &format!(
                "/_emulator/invoices/{}/credit_note",
                paid["data"]["object"]["id"].as_str().unwrap()
            ),
            json!({"amount": 800, "refund": true, "refund_amount": 300}),
        )
        .await;
    let old = emulator.events().await;
    assert!(old.iter().all(|e| e["api_version"] == "2023-08-16"));
    assert!(old.iter().any(|e| e["type"] == "credit_note.created"));
    let first = &paid["data"]["object"];
    let (sub_id, customer) = (
        first["subscription"].as_str().unwrap(),
        first["customer"].as_str().unwrap(),
    );
    let period_end = first["lines"]["data"][0]["period"]["end"].as_i64().unwrap();
    let bought_at = paid["created"].as_i64().unwrap();
    assert_eq!(balance(&owner, user).await, 0, "nothing was delivered");

    // After the upgrade, basil-shaped webhooks signed for the worker's endpoint: the
    // subscription moved on to its next period and that period's invoice paid. (Minutes after
    // the purchase rather than a month: the catch-up margin below covers them.)
    let next = events::Period {
        start: period_end,
        end: period_end + 30 * 86_400,
    };
    let user_id = user.to_string();
    let renewed = events::subscription(
        events::Shape::Basil,
        &events::Sub {
            id: sub_id,
            customer,
            status: "active",
            price_id: "price_pro",
            period: next,
            cancel_at_period_end: false,
            ended_at: None,
            user_id: Some(&user_id),
        },
    );
    let renewal_invoice = format!("in_{}", &events::event_id()[4..]);
    let invoice = events::invoice(
        events::Shape::Basil,
        &events::Invoice {
            id: &renewal_invoice,
            subscription: sub_id,
            customer,
            billing_reason: "subscription_cycle",
            paid: true,
            lines: vec![events::Line {
                price_id: "price_pro",
                amount: 2000,
                proration: false,
                period: next,
            }],
            user_id: Some(&user_id),
        },
    );
    for (ty, at, object) in [
        ("customer.subscription.updated", bought_at + 60, renewed),
        ("invoice.paid", bought_at + 120, invoice),
    ] {
        let event = events::event(events::Shape::Basil, ty, at, object);
        assert_eq!(event["api_version"], "2025-03-31.basil");
        let (body, signature) = events::signed(&event, WEBHOOK_SECRET);
        let (status, answer) = post_webhook(&worker, body.into_bytes(), Some(&signature)).await;
        assert_eq!(status, 200, "{ty}: {answer}");
    }

    // Catch-up (from the newest event less its margin) brings the older-shape purchase.
    let (code, out, err) = subcommand(&db.dsn, &emulator, &["catch-up"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let caught: Vec<(String, Option<String>)> = owner
        .query(
            "SELECT type, api_version FROM billing.stripe_events WHERE source = 'api' ORDER BY created, type",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        caught
            .iter()
            .any(|(t, v)| t == "invoice.paid" && v.as_deref() == Some("2023-08-16")),
        "{caught:?}"
    );
    let failed: i64 = owner
        .query_one(
            "SELECT count(*) FROM billing.stripe_events WHERE error IS NOT NULL AND error_code NOT IN ('BL007', 'BL010')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 0, "every event applied or waits for data");
    settled(&owner).await;
    // Both periods, each once, less 800 of the first's 2000 credited (400 tokens).
    assert_eq!(balance(&owner, user).await, 1600);
    let (status, end): (String, i64) = {
        let r = owner
            .query_one(
                "SELECT status, extract(epoch FROM current_period_end)::bigint FROM billing.subscriptions
                 WHERE stripe_subscription_id = $1",
                &[&sub_id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (status.as_str(), end),
        ("active", next.end),
        "the newer report"
    );
    // A second catch-up changes nothing.
    subcommand(&db.dsn, &emulator, &["catch-up"]);
    settled(&owner).await;
    assert_eq!(balance(&owner, user).await, 1600);
}
