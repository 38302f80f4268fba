//! Fixtures and helpers shared by subscription*.rs tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use stripe_billing_tests::events::{self, Invoice, Line, Period, Shape, Sub};
use stripe_billing_tests::pg::TestDb;
use stripe_emulator::store::ids;
use tokio_postgres::Client;
use uuid::Uuid;

pub const DAY: i64 = 86_400;

pub async fn setup() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ('{}');
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES
                 ('basic', 'price_basic', 'Basic', 'subscription', 1000),
                 ('pro', 'price_pro', 'Pro', 'subscription', 5000),
                 ('pro_yearly', 'price_pro_yearly', 'Pro yearly', 'subscription', 5000);
             -- Their prices' amounts (UNIT_AMOUNTS), as Stripe's price events sync them: basil's
             -- proration lines do not carry them.
             INSERT INTO billing.prices (stripe_price_id, unit_amount, currency, recurring_interval,
                                         interval_count, active, synced_at) VALUES
                 ('price_basic', 1000, 'usd', 'month', 1, true, now()),
                 ('price_pro', 5000, 'usd', 'month', 1, true, now()),
                 ('price_pro_yearly', 55000, 'usd', 'year', 1, true, now());
             INSERT INTO billing.config (checkout_success_url, checkout_cancel_url)
                 VALUES ('https://app.example.test/ok', 'https://app.example.test/no');",
            events::TEST_SECRET
        ))
        .await
        .unwrap();
    (db, owner)
}

/// One subscription of one user, with random ids.
pub struct Subscriber {
    pub user: Uuid,
    pub customer: String,
    pub sub: String,
    pub shape: Shape,
}

impl Subscriber {
    pub fn new(shape: Shape) -> Subscriber {
        Subscriber {
            user: Uuid::new_v4(),
            customer: ids::customer(),
            sub: ids::long("sub"),
            shape,
        }
    }

    pub fn object(&self, status: &str, price: &str, period: Period, extra: Value) -> Value {
        let user = self.user.to_string();
        let mut object = events::subscription(
            self.shape,
            &Sub {
                id: &self.sub,
                customer: &self.customer,
                status,
                price_id: price,
                period,
                cancel_at_period_end: false,
                ended_at: (status == "canceled").then_some(period.end),
                user_id: Some(&user),
            },
        );
        if let (Some(o), Value::Object(extra)) = (object.as_object_mut(), extra) {
            o.extend(extra);
        }
        object
    }

    pub fn subscription_event(
        &self,
        ty: &str,
        at: i64,
        status: &str,
        price: &str,
        period: Period,
    ) -> Value {
        events::event(
            self.shape,
            ty,
            at,
            self.object(status, price, period, json!({})),
        )
    }

    pub fn invoice(
        &self,
        ty: &str,
        at: i64,
        reason: &str,
        amount_paid: i64,
        lines: Vec<Line>,
    ) -> (String, Value) {
        let id = ids::long("in");
        let user = self.user.to_string();
        let mut invoice = events::invoice(
            self.shape,
            &Invoice {
                id: &id,
                subscription: &self.sub,
                customer: &self.customer,
                billing_reason: reason,
                paid: ty != "invoice.payment_failed",
                lines,
                user_id: Some(&user),
            },
        );
        invoice["amount_paid"] = json!(amount_paid);
        (id.clone(), events::event(self.shape, ty, at, invoice))
    }
}

pub fn line(price: &'static str, amount: i64, proration: bool, period: Period) -> Line<'static> {
    Line {
        price_id: price,
        amount,
        proration,
        period,
    }
}

/// What the catalog of setup() charges per unit, in cents: what Stripe would say for each line.
pub const UNIT_AMOUNTS: [(&str, i64); 3] = [
    ("price_basic", 1000),
    ("price_pro", 5000),
    ("price_pro_yearly", 55000),
];

/// Sets every line's unit amount to its price's (UNIT_AMOUNTS) where the event's shape says it,
/// as Stripe does, proration lines included (events::invoice leaves theirs unknown).
pub fn with_unit_amounts(shape: Shape, mut event: Value) -> Value {
    for l in event["data"]["object"]["lines"]["data"]
        .as_array_mut()
        .expect("an invoice event")
    {
        let price = match shape {
            Shape::V2023 => l["price"]["id"].as_str(),
            Shape::Basil => l["pricing"]["price_details"]["price"].as_str(),
        }
        .unwrap_or_default()
        .to_string();
        if let Some((_, unit)) = UNIT_AMOUNTS.iter().find(|(p, _)| *p == price) {
            events::set_unit_amount(shape, l, Some(*unit));
        }
    }
    event
}

pub fn period(start: i64, days: i64) -> Period {
    Period {
        start,
        end: start + days * DAY,
    }
}

pub async fn deliver(owner: &Client, event: &Value) -> Value {
    let answer = events::deliver(owner, event).await.unwrap();
    assert_eq!(answer["received"], true, "{answer}");
    answer
}

pub async fn status(owner: &Client, s: &Subscriber) -> Option<String> {
    owner
        .query_one(
            "SELECT status FROM billing.subscriptions WHERE stripe_subscription_id = $1",
            &[&s.sub],
        )
        .await
        .unwrap()
        .get(0)
}

pub async fn grants(owner: &Client, s: &Subscriber) -> Vec<(String, i64, Option<i64>)> {
    owner
        .query(
            "SELECT source, tokens, extract(epoch FROM expires_at)::bigint FROM billing.token_grants
             WHERE user_id = $1 ORDER BY created_at, id",
            &[&s.user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}
