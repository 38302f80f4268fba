//! The full life of a subscription delivered through `billing.handle_stripe_webhook` in order,
//! reversed, shuffled and with duplicates, in both API shapes: every order must end in the same
//! subscription state and the same grants, and no payment may ever be granted twice. Ids are
//! random, like Stripe's, and many events share a second, as they do in production (Stripe's
//! `created` has one-second resolution): nothing may depend on the order of event ids.
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use stripe_billing_tests::events::{self, unix_now, Invoice, Line, Period, Session, Shape, Sub};
use stripe_billing_tests::pg::TestDb;
use stripe_emulator::store::ids;
use tokio_postgres::Client;

const USER: &str = "6f1c2a9e-3b7d-4c55-9a0e-1d2f3a4b5c6d";
const DAY: i64 = 86_400;
/// billing.config.renewal_grace_seconds by default.
const GRACE: i64 = DAY;

async fn setup() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ('{}');
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES
                 ('basic', 'price_basic', 'Basic', 'subscription', 1000),
                 ('pro', 'price_pro', 'Pro', 'subscription', 5000);
             -- Synced from Stripe's price events: basil's proration lines carry no unit amount.
             INSERT INTO billing.prices (stripe_price_id, unit_amount, currency, recurring_interval,
                                         interval_count, active, synced_at) VALUES
                 ('price_basic', 1000, 'usd', 'month', 1, true, now()),
                 ('price_pro', 5000, 'usd', 'month', 1, true, now());",
            events::TEST_SECRET
        ))
        .await
        .unwrap();
    (db, owner)
}

/// The ids one subscription's story uses, random per story.
struct Story {
    shape: Shape,
    with_metadata: bool,
    start: i64,
    sub: String,
    customer: String,
    session: String,
    invoices: [String; 4],
}

impl Story {
    fn new(shape: Shape, with_metadata: bool, start: i64) -> Story {
        Story {
            shape,
            with_metadata,
            start,
            sub: ids::long("sub"),
            customer: ids::customer(),
            session: ids::checkout_session(),
            invoices: std::array::from_fn(|_| ids::long("in")),
        }
    }

    /// Period n: 30 days each from the start.
    fn p(&self, n: i64) -> Period {
        Period {
            start: self.start + n * 30 * DAY,
            end: self.start + (n + 1) * 30 * DAY,
        }
    }

    fn change_at(&self) -> i64 {
        self.p(1).start + 10 * DAY
    }

    fn sub(
        &self,
        status: &str,
        price: &str,
        period: Period,
        cancel: bool,
        ended: Option<i64>,
    ) -> Value {
        events::subscription(
            self.shape,
            &Sub {
                id: &self.sub,
                customer: &self.customer,
                status,
                price_id: price,
                period,
                cancel_at_period_end: cancel,
                ended_at: ended,
                user_id: self.with_metadata.then_some(USER),
            },
        )
    }

    fn inv(&self, n: usize, reason: &str, paid: bool, lines: Vec<Line>) -> Value {
        events::invoice(
            self.shape,
            &Invoice {
                id: &self.invoices[n],
                subscription: &self.sub,
                customer: &self.customer,
                billing_reason: reason,
                paid,
                lines,
                user_id: self.with_metadata.then_some(USER),
            },
        )
    }

    /// checkout → created (incomplete) and updated (active) in the same second → first invoice
    /// → renewal → plan change with an immediate proration invoice → payment failure → recovery
    /// → cancel at period end → deletion in the same second as a last update. Events of one
    /// moment share Stripe's second.
    fn events(&self) -> Vec<Value> {
        let line = |price: &'static str, amount: i64, proration: bool, period: Period| Line {
            price_id: price,
            amount,
            proration,
            period,
        };
        let (p0, p1, p2) = (self.p(0), self.p(1), self.p(2));
        let prorated = Period {
            start: self.change_at(),
            end: p1.end,
        };
        let e = |ty: &str, t: i64, obj: Value| events::event(self.shape, ty, t, obj);
        let checkout = events::checkout_session(
            self.shape,
            &Session {
                id: &self.session,
                mode: "subscription",
                payment_status: "paid",
                customer: &self.customer,
                user_id: Some(USER),
                price_id: "price_basic",
                subscription: Some(&self.sub),
                invoice: Some(&self.invoices[0]),
                amount_total: 1000,
                request_id: None,
            },
        );
        vec![
            e("checkout.session.completed", p0.start, checkout),
            e(
                "customer.subscription.created",
                p0.start,
                self.sub("incomplete", "price_basic", p0, false, None),
            ),
            e(
                "customer.subscription.updated",
                p0.start,
                self.sub("active", "price_basic", p0, false, None),
            ),
            e(
                "invoice.paid",
                p0.start,
                self.inv(
                    0,
                    "subscription_create",
                    true,
                    vec![line("price_basic", 1000, false, p0)],
                ),
            ),
            e(
                "invoice.paid",
                p1.start,
                self.inv(
                    1,
                    "subscription_cycle",
                    true,
                    vec![line("price_basic", 1000, false, p1)],
                ),
            ),
            e(
                "customer.subscription.updated",
                p1.start,
                self.sub("active", "price_basic", p1, false, None),
            ),
            e(
                "customer.subscription.updated",
                self.change_at(),
                self.sub("active", "price_pro", p1, false, None),
            ),
            // 20 of 30 days left: Basic's $6.67 of $10 credited, Pro's $33.33 of $50 charged,
            // each line saying its price's unit amount as Stripe's do: 3333 - 667 tokens.
            e("invoice.paid", self.change_at(), {
                let mut inv = self.inv(
                    2,
                    "subscription_update",
                    true,
                    vec![
                        line("price_basic", -667, true, prorated),
                        line("price_pro", 3333, true, prorated),
                    ],
                );
                for (i, unit) in [(0, 1000), (1, 5000)] {
                    events::set_unit_amount(self.shape, &mut inv["lines"]["data"][i], Some(unit));
                }
                inv
            }),
            e(
                "invoice.payment_failed",
                p2.start,
                self.inv(
                    3,
                    "subscription_cycle",
                    false,
                    vec![line("price_pro", 5000, false, p2)],
                ),
            ),
            e(
                "customer.subscription.updated",
                p2.start,
                self.sub("past_due", "price_pro", p2, false, None),
            ),
            e(
                "invoice.paid",
                p2.start + DAY,
                self.inv(
                    3,
                    "subscription_cycle",
                    true,
                    vec![line("price_pro", 5000, false, p2)],
                ),
            ),
            e(
                "customer.subscription.updated",
                p2.start + DAY,
                self.sub("active", "price_pro", p2, false, None),
            ),
            e(
                "customer.subscription.updated",
                p2.start + 2 * DAY,
                self.sub("active", "price_pro", p2, true, None),
            ),
            e(
                "customer.subscription.updated",
                p2.end,
                self.sub("active", "price_pro", p2, true, None),
            ),
            e(
                "customer.subscription.deleted",
                p2.end,
                self.sub("canceled", "price_pro", p2, true, Some(p2.end)),
            ),
        ]
    }

    /// What the events decide, whatever their order.
    fn expected(&self) -> String {
        let (p0, p1, p2) = (self.p(0), self.p(1), self.p(2));
        let [i0, i1, i2, i3] = &self.invoices;
        format!(
            "{USER}|{}|pro|canceled|{}|{}|t|{}\n\
             {i0}:{USER}:subscription_start:1000:{} {i1}:{USER}:plan:1000:{} \
             {i2}:upgrade:{USER}:plan_upgrade:2666:{} {i3}:{USER}:plan:5000:{}\n\
             payment_failed:{i3}",
            self.customer,
            p2.start,
            p2.end,
            p2.end,
            p0.end + GRACE,
            p1.end + GRACE,
            p1.end + GRACE,
            p2.end + GRACE,
        )
    }
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
                    extract(epoch FROM expires_at)::bigint), ' ' ORDER BY expires_at, source)
             FROM billing.token_grants",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    let notes = owner
        .query_one(
            "SELECT coalesce(string_agg(kind || ':' || (payload ->> 'invoice_id'), ' ' ORDER BY id), '')
             FROM billing.notifications",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    format!("{sub}\n{grants}\n{notes}")
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

async fn refreshes(owner: &Client) -> i64 {
    owner
        .query_one(
            "SELECT count(*) FROM billing.stripe_requests WHERE kind = 'refresh' AND params ->> 'object_id' LIKE 'sub\\_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
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
    assert_eq!(
        refreshes(&owner).await,
        0,
        "the lifecycle settles every same-second pair"
    );
    state(&owner).await
}

/// The story starts tomorrow, so every grant's expiry is its period's end plus the grace.
fn start() -> i64 {
    unix_now() + DAY
}

#[tokio::test]
async fn in_order_in_both_shapes() {
    for shape in Shape::ALL {
        let story = Story::new(shape, true, start());
        assert_eq!(run(&story.events()).await, story.expected(), "{shape:?}");
    }
}

#[tokio::test]
async fn reversed_in_both_shapes() {
    for shape in Shape::ALL {
        let story = Story::new(shape, true, start());
        let mut events = story.events();
        events.reverse();
        assert_eq!(run(&events).await, story.expected(), "{shape:?}");
    }
}

#[tokio::test]
async fn random_orders_with_duplicates_converge() {
    for seed in 1..=8u64 {
        let shape = Shape::ALL[seed as usize % 2];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let story = Story::new(shape, true, start());
        let mut events = Vec::new();
        for event in story.events() {
            for _ in 0..rng.random_range(1..=3) {
                events.push(event.clone());
            }
        }
        events.shuffle(&mut rng);
        assert_eq!(
            run(&events).await,
            story.expected(),
            "seed {seed} {shape:?}"
        );
    }
}

#[tokio::test]
async fn without_metadata_events_wait_for_checkout_and_then_apply() {
    for seed in [11u64, 12, 13] {
        let shape = Shape::ALL[seed as usize % 2];
        let story = Story::new(shape, false, start());
        let mut events = story.events();
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
        assert_eq!(state(&owner).await, story.expected(), "seed {seed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_from_two_sessions_apply_once() {
    let story = Story::new(Shape::Basil, true, start());
    let events = story.events();
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
    assert_eq!(state(&owner).await, story.expected());
    let stored: i64 = owner
        .query_one("SELECT count(*) FROM billing.stripe_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, events.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_a_story_delivered_at_once_from_many_sessions() {
    // Stripe delivers concurrently; a held event must not miss the link another session makes.
    let story = Story::new(Shape::V2023, false, start());
    let events = story.events();
    let (db, owner) = setup().await;
    // Every session is connected before any delivers, and all start together, so the
    // deliveries really overlap.
    let mut clients = Vec::new();
    for _ in &events {
        clients.push(db.owner().await);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(events.len()));
    let mut tasks = Vec::new();
    for (event, client) in events.clone().into_iter().zip(clients) {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            events::deliver(&client, &event).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(unprocessed(&owner).await, Vec::<String>::new());
    assert_eq!(state(&owner).await, story.expected());
}

#[tokio::test]
async fn an_older_event_never_overwrites_a_newer_state() {
    let story = Story::new(Shape::V2023, true, start());
    let events = story.events();
    let (_db, owner) = setup().await;
    // Deletion first, then the older "active" updates: the subscription stays canceled.
    for i in [14usize, 11, 5, 2] {
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
