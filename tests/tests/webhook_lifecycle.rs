//! The full life of a subscription delivered through `billing.handle_stripe_webhook` in order,
//! reversed, shuffled and with duplicates, in both API shapes: every order must end in the same
//! subscription state and the same grants, and no payment may ever be granted twice.
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use stripe_billing_tests::events::{self, unix_now, Invoice, Line, Period, Session, Shape, Sub};
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

const USER: &str = "6f1c2a9e-3b7d-4c55-9a0e-1d2f3a4b5c6d";
const DAY: i64 = 86_400;

async fn setup() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ('{}');
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES
                 ('basic', 'price_basic', 'Basic', 'subscription', 1000),
                 ('pro', 'price_pro', 'Pro', 'subscription', 5000);",
            events::TEST_SECRET
        ))
        .await
        .unwrap();
    (db, owner)
}

/// checkout → created → first invoice → renewal → plan change (with proration) → payment
/// failure → recovery → cancel at period end → deletion. `with_metadata` says whether the
/// subscription and invoices carry our user id (they do when the worker created the checkout);
/// without it, events wait until checkout links the customer.
fn lifecycle(shape: Shape, with_metadata: bool, start: i64) -> Vec<Value> {
    let p = |n: i64| Period {
        start: start + n * 30 * DAY,
        end: start + (n + 1) * 30 * DAY,
    };
    let user = with_metadata.then_some(USER);
    let t0 = start;
    let sub = |status: &str, price: &str, period: Period, cancel: bool, ended: Option<i64>| {
        events::subscription(
            shape,
            &Sub {
                id: "sub_life1",
                customer: "cus_life1",
                status,
                price_id: price,
                period,
                cancel_at_period_end: cancel,
                ended_at: ended,
                user_id: user,
            },
        )
    };
    let inv = |id: &str, reason: &str, paid: bool, lines: Vec<Line>| {
        events::invoice(
            shape,
            &Invoice {
                id,
                subscription: "sub_life1",
                customer: "cus_life1",
                billing_reason: reason,
                paid,
                lines,
                user_id: user,
            },
        )
    };
    let line = |price: &'static str, amount: i64, proration: bool, period: Period| Line {
        price_id: price,
        amount,
        proration,
        period,
    };
    let change_at = p(1).start + 10 * DAY;
    let prorated = Period {
        start: change_at,
        end: p(1).end,
    };
    let e = |id: &str, ty: &str, t: i64, obj: Value| events::envelope(shape, id, ty, t, obj);
    vec![
        e(
            "evt_l01",
            "checkout.session.completed",
            t0,
            events::checkout_session(
                shape,
                &Session {
                    id: "cs_life1",
                    mode: "subscription",
                    payment_status: "paid",
                    customer: "cus_life1",
                    user_id: Some(USER),
                    price_id: "price_basic",
                    subscription: Some("sub_life1"),
                    invoice: Some("in_l1"),
                    amount_total: 1000,
                },
            ),
        ),
        e(
            "evt_l02",
            "customer.subscription.created",
            t0,
            sub("active", "price_basic", p(0), false, None),
        ),
        e(
            "evt_l03",
            "invoice.paid",
            t0,
            inv(
                "in_l1",
                "subscription_create",
                true,
                vec![line("price_basic", 1000, false, p(0))],
            ),
        ),
        e(
            "evt_l04",
            "invoice.paid",
            p(1).start,
            inv(
                "in_l2",
                "subscription_cycle",
                true,
                vec![line("price_basic", 1000, false, p(1))],
            ),
        ),
        e(
            "evt_l05",
            "customer.subscription.updated",
            p(1).start,
            sub("active", "price_basic", p(1), false, None),
        ),
        e(
            "evt_l06",
            "customer.subscription.updated",
            change_at,
            sub("active", "price_pro", p(1), false, None),
        ),
        e(
            "evt_l07",
            "invoice.paid",
            change_at,
            inv(
                "in_l3",
                "subscription_update",
                true,
                vec![
                    line("price_basic", -600, true, prorated),
                    line("price_pro", 3000, true, prorated),
                ],
            ),
        ),
        e(
            "evt_l08",
            "invoice.payment_failed",
            p(2).start,
            inv(
                "in_l4",
                "subscription_cycle",
                false,
                vec![line("price_pro", 5000, false, p(2))],
            ),
        ),
        e(
            "evt_l09",
            "customer.subscription.updated",
            p(2).start,
            sub("past_due", "price_pro", p(2), false, None),
        ),
        e(
            "evt_l10",
            "invoice.paid",
            p(2).start + DAY,
            inv(
                "in_l4",
                "subscription_cycle",
                true,
                vec![line("price_pro", 5000, false, p(2))],
            ),
        ),
        e(
            "evt_l11",
            "customer.subscription.updated",
            p(2).start + DAY,
            sub("active", "price_pro", p(2), false, None),
        ),
        e(
            "evt_l12",
            "customer.subscription.updated",
            p(2).start + 2 * DAY,
            sub("active", "price_pro", p(2), true, None),
        ),
        e(
            "evt_l13",
            "customer.subscription.deleted",
            p(2).end,
            sub("canceled", "price_pro", p(2), true, Some(p(2).end)),
        ),
    ]
}

/// Everything the events decide, in a comparable form.
async fn state(owner: &Client) -> String {
    let sub = owner
        .query_one(
            "SELECT concat_ws('|', user_id, stripe_customer_id, plan_id, status,
                    extract(epoch FROM current_period_start)::bigint, extract(epoch FROM current_period_end)::bigint,
                    cancel_at_period_end, extract(epoch FROM ended_at)::bigint)
             FROM billing.subscriptions",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    let grants = owner
        .query_one(
            "SELECT string_agg(concat_ws(':', grant_key, user_id, source, tokens,
                    extract(epoch FROM expires_at)::bigint), ' ' ORDER BY grant_key)
             FROM billing.token_grants",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    format!("{sub}\n{grants}")
}

async fn unprocessed(owner: &Client) -> Vec<String> {
    owner
        .query("SELECT id || ': ' || coalesce(error, '(pending)') FROM billing.stripe_events WHERE processed_at IS NULL", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn run(events: &[Value]) -> String {
    let (_db, owner) = setup().await;
    for event in events {
        let answer = events::deliver(&owner, event)
            .await
            .expect("delivery is acknowledged");
        assert_eq!(answer["received"], true);
    }
    assert_eq!(
        unprocessed(&owner).await,
        Vec::<String>::new(),
        "every event ends up applied"
    );
    state(&owner).await
}

/// Periods start 40 days ago, so the last period is current and its grant still counts.
fn start() -> i64 {
    unix_now() - 40 * DAY
}

fn expected_state(start: i64) -> String {
    let p = |n: i64| (start + n * 30 * DAY, start + (n + 1) * 30 * DAY);
    format!(
        "{USER}|cus_life1|pro|canceled|{}|{}|t|{}\n\
         in_l1:{USER}:subscription_start:1000:{} in_l2:{USER}:plan:1000:{} \
         in_l3:{USER}:plan_upgrade:4000:{} in_l4:{USER}:plan:5000:{}",
        p(2).0,
        p(2).1,
        p(2).1,
        p(0).1,
        p(1).1,
        p(1).1,
        p(2).1
    )
}

#[tokio::test]
async fn in_order_in_both_shapes() {
    for shape in Shape::ALL {
        let start = start();
        let got = run(&lifecycle(shape, true, start)).await;
        assert_eq!(got, expected_state(start), "{shape:?}");
    }
}

#[tokio::test]
async fn reversed_in_both_shapes() {
    for shape in Shape::ALL {
        let start = start();
        let mut events = lifecycle(shape, true, start);
        events.reverse();
        assert_eq!(run(&events).await, expected_state(start), "{shape:?}");
    }
}

#[tokio::test]
async fn random_orders_with_duplicates_converge() {
    for seed in 1..=6u64 {
        let shape = Shape::ALL[seed as usize % 2];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let start = start();
        let mut events = Vec::new();
        for event in lifecycle(shape, true, start) {
            for _ in 0..rng.random_range(1..=3) {
                events.push(event.clone());
            }
        }
        events.shuffle(&mut rng);
        assert_eq!(
            run(&events).await,
            expected_state(start),
            "seed {seed} {shape:?}"
        );
    }
}

#[tokio::test]
async fn without_metadata_events_wait_for_checkout_and_then_apply() {
    for seed in [11u64, 12, 13] {
        let shape = Shape::ALL[seed as usize % 2];
        let start = start();
        let mut events = lifecycle(shape, false, start);
        // Checkout last: until it links the customer nothing says whose events these are.
        let checkout = events.remove(0);
        events.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let (_db, owner) = setup().await;
        for event in &events {
            events::deliver(&owner, event).await.unwrap();
        }
        let held = unprocessed(&owner).await;
        assert_eq!(
            held.len(),
            events.len(),
            "all wait for the customer link: {held:?}"
        );
        assert!(
            held.iter().all(|e| e.contains("cannot tell which user")),
            "{held:?}"
        );
        let grants: i64 = owner
            .query_one("SELECT count(*) FROM billing.token_grants", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(grants, 0);

        events::deliver(&owner, &checkout).await.unwrap();
        assert_eq!(unprocessed(&owner).await, Vec::<String>::new());
        assert_eq!(state(&owner).await, expected_state(start), "seed {seed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_from_two_sessions_apply_once() {
    let start = start();
    let events = lifecycle(Shape::Basil, true, start);
    let (db, owner) = setup().await;
    let (a, b) = (db.owner().await, db.owner().await);
    for event in &events {
        let (ra, rb) = tokio::join!(events::deliver(&a, event), events::deliver(&b, event));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let duplicates = [&ra, &rb].iter().filter(|r| r["duplicate"] == true).count();
        assert_eq!(
            duplicates, 1,
            "exactly one of two concurrent deliveries stores {}",
            event["id"]
        );
    }
    assert_eq!(state(&owner).await, expected_state(start));
    let stored: i64 = owner
        .query_one("SELECT count(*) FROM billing.stripe_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, events.len() as i64);
}

#[tokio::test]
async fn an_older_event_never_overwrites_a_newer_state() {
    let events = lifecycle(Shape::V2023, true, start());
    let (_db, owner) = setup().await;
    // Deletion first, then the older "active" updates: the subscription stays canceled.
    for i in [12usize, 10, 4, 1] {
        events::deliver(&owner, &events[i]).await.unwrap();
    }
    let row = owner
        .query_one(
            "SELECT status, plan_id, cancel_at_period_end FROM billing.subscriptions",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "canceled");
    assert_eq!(row.get::<_, String>(1), "pro");
    assert!(row.get::<_, bool>(2));
}
