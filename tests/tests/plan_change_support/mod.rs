//! The plan-change tests' catalog and invoices (plan_changes.rs, plan_change_prices.rs):
//! Small and Big as in the README, invoices built as Stripe computes them.
#![allow(dead_code)]

use serde_json::Value;
use stripe_billing_tests::events::{self, unix_now, Shape};
use tokio_postgres::Client;

use crate::subscription_support::*;

/// The README's example catalog: Small, 100 tokens for $10; Big, 1000 tokens for $100.
pub const SMALL: (&str, i64) = ("price_small", 1000);
pub const BIG: (&str, i64) = ("price_big", 10000);

/// A plan on a tiered price: Stripe's Price has no unit amount.
pub const TIERED: (&str, i64) = ("price_tiered", 0);

pub async fn plans(owner: &Client) {
    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES
                 ('small', 'price_small', 'Small', 'subscription', 100),
                 ('big', 'price_big', 'Big', 'subscription', 1000),
                 ('tiered', 'price_tiered', 'Tiered', 'subscription', 1000);",
        )
        .await
        .unwrap();
}

/// The plans, and their prices' amounts as Stripe's price.created events report them.
pub async fn catalog(owner: &Client) {
    plans(owner).await;
    let at = unix_now() - 90 * DAY;
    for (id, unit) in [
        (SMALL.0, Some(SMALL.1)),
        (BIG.0, Some(BIG.1)),
        (TIERED.0, None),
    ] {
        let ev = events::event(
            Shape::Basil,
            "price.created",
            at,
            events::price(id, unit, at),
        );
        deliver(owner, &ev).await;
    }
}

/// One line: (price, unit amount or None for a price without one, amount, proration, period).
pub type L = ((&'static str, i64), Option<i64>, i64, bool, events::Period);

/// What Stripe charges for `left` of `whole` seconds of a price: rounded to the cent.
pub fn share(unit: i64, left: i64, whole: i64) -> i64 {
    ((unit as f64) * (left as f64) / (whole as f64)).round() as i64
}

/// A paid invoice of `s` with these lines (unit amounts where each shape puts them); paid
/// with `amount_paid`, or by default the total when above 0 (a negative total goes to the
/// customer's credit balance and nothing is paid).
pub fn invoice(
    s: &Subscriber,
    at: i64,
    reason: &str,
    amount_paid: Option<i64>,
    lines: &[L],
) -> (String, Value) {
    let total: i64 = lines.iter().map(|l| l.2).sum();
    let (id, mut ev) = s.invoice(
        "invoice.paid",
        at,
        reason,
        amount_paid.unwrap_or(total.max(0)),
        lines.iter().map(|l| line(l.0 .0, l.2, l.3, l.4)).collect(),
    );
    for (i, l) in lines.iter().enumerate() {
        events::set_unit_amount(s.shape, &mut ev["data"]["object"]["lines"]["data"][i], l.1);
    }
    (id, ev)
}

/// The upgrade Small -> Big with `left` seconds of the period `p` left, always_invoice.
pub fn up(s: &Subscriber, p: events::Period, left: i64) -> (String, Value) {
    let at = p.end - left;
    let rest = events::Period {
        start: at,
        end: p.end,
    };
    let whole = p.end - p.start;
    invoice(
        s,
        at,
        "subscription_update",
        None,
        &[
            (
                SMALL,
                Some(SMALL.1),
                -share(SMALL.1, left, whole),
                true,
                rest,
            ),
            (BIG, Some(BIG.1), share(BIG.1, left, whole), true, rest),
        ],
    )
}

/// The downgrade Big -> Small with `left` seconds of the period `p` left, always_invoice: a
/// negative total, credited to the customer's balance (amount_paid 0).
pub fn down(s: &Subscriber, p: events::Period, left: i64) -> (String, Value) {
    let at = p.end - left;
    let rest = events::Period {
        start: at,
        end: p.end,
    };
    let whole = p.end - p.start;
    invoice(
        s,
        at,
        "subscription_update",
        None,
        &[
            (BIG, Some(BIG.1), -share(BIG.1, left, whole), true, rest),
            (
                SMALL,
                Some(SMALL.1),
                share(SMALL.1, left, whole),
                true,
                rest,
            ),
        ],
    )
}

pub async fn balance(owner: &Client, s: &Subscriber) -> i64 {
    owner
        .query_one("SELECT billing.token_balance($1)", &[&s.user])
        .await
        .unwrap()
        .get(0)
}

pub async fn debt(owner: &Client, s: &Subscriber) -> i64 {
    owner
        .query_one("SELECT billing.token_debt($1)", &[&s.user])
        .await
        .unwrap()
        .get(0)
}

/// (tokens, taken, debt, not_taken) of the user's downgrade take-backs.
pub async fn take_backs(owner: &Client, s: &Subscriber) -> Vec<(i64, i64, i64, i64)> {
    owner
        .query(
            "SELECT tokens, taken, debt, not_taken FROM billing.token_reversals
             WHERE user_id = $1 AND kind = 'downgrade' ORDER BY id",
            &[&s.user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// A new subscriber on Small, its first period paid: 100 tokens.
pub async fn on_small(owner: &Client, shape: Shape, p: events::Period) -> Subscriber {
    let s = Subscriber::new(shape);
    let (_, first) = invoice(
        &s,
        p.start,
        "subscription_create",
        None,
        &[(SMALL, Some(SMALL.1), SMALL.1, false, p)],
    );
    deliver(owner, &first).await;
    assert_eq!(balance(owner, &s).await, 100);
    s
}

/// (error code, error) of the event `id`, NULLs once applied.
pub async fn outcome(owner: &Client, id: &str) -> (Option<String>, Option<String>) {
    let r = owner
        .query_one(
            "SELECT error_code, error FROM billing.stripe_events WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// The prices the worker is asked to retrieve.
pub async fn price_retrievals(owner: &Client) -> Vec<String> {
    owner
        .query(
            "SELECT params ->> 'object_id' FROM billing.stripe_requests
             WHERE kind = 'refresh' AND params ->> 'object_id' LIKE 'price%' ORDER BY created_at, id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
