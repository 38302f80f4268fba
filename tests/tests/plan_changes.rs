//! Plan changes are worth what they cost (issue 20, item 1): a proration line's tokens are the
//! share of its plan its money is, an upgrade grants the net, a downgrade takes the net back
//! (a debt for what was spent), so changing plans back and forth late in a period gains nothing.
//! And a renewal the customer's credit balance paid is paid, not free (item 10). Invoices are
//! built as Stripe computes them: unit amount x quantity x the period left, rounded to cents.
mod common;
mod subscription_support;

use common::set_config;
use serde_json::{json, Value};
use stripe_billing_tests::events::{self, unix_now, Shape};
use stripe_billing_tests::pg::Caller;
use subscription_support::*;
use tokio_postgres::Client;

/// The README's example catalog: Small, 100 tokens for $10; Big, 1000 tokens for $100.
const SMALL: (&str, i64) = ("price_small", 1000);
const BIG: (&str, i64) = ("price_big", 10000);

/// A plan on a tiered price: Stripe's Price has no unit amount.
const TIERED: (&str, i64) = ("price_tiered", 0);

async fn plans(owner: &Client) {
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
async fn catalog(owner: &Client) {
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
type L = ((&'static str, i64), Option<i64>, i64, bool, events::Period);

/// What Stripe charges for `left` of `whole` seconds of a price: rounded to the cent.
fn share(unit: i64, left: i64, whole: i64) -> i64 {
    ((unit as f64) * (left as f64) / (whole as f64)).round() as i64
}

/// A paid invoice of `s` with these lines (unit amounts where each shape puts them); paid
/// with `amount_paid`, or by default the total when above 0 (a negative total goes to the
/// customer's credit balance and nothing is paid).
fn invoice(
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
fn up(s: &Subscriber, p: events::Period, left: i64) -> (String, Value) {
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
fn down(s: &Subscriber, p: events::Period, left: i64) -> (String, Value) {
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

async fn balance(owner: &Client, s: &Subscriber) -> i64 {
    owner
        .query_one("SELECT billing.token_balance($1)", &[&s.user])
        .await
        .unwrap()
        .get(0)
}

async fn debt(owner: &Client, s: &Subscriber) -> i64 {
    owner
        .query_one("SELECT billing.token_debt($1)", &[&s.user])
        .await
        .unwrap()
        .get(0)
}

/// (tokens, taken, debt, not_taken) of the user's downgrade take-backs.
async fn take_backs(owner: &Client, s: &Subscriber) -> Vec<(i64, i64, i64, i64)> {
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
async fn on_small(owner: &Client, shape: Shape, p: events::Period) -> Subscriber {
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

#[tokio::test]
async fn switching_plans_back_and_forth_late_in_a_period_gains_nothing() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    for shape in [Shape::V2023, Shape::Basil] {
        // A tenth of a 30-day period left, less a little, so the cents round: Big's share is
        // $9.73, Small's $0.97.
        let left = 3 * DAY - 7_000;
        let p = period(unix_now() + left - 30 * DAY, 30);
        let s = on_small(&owner, shape, p).await;
        let (big, small) = (share(BIG.1, left, 30 * DAY), share(SMALL.1, left, 30 * DAY));
        assert_eq!((big, small), (973, 97));
        // Tokens: 1000 x 973/10000 - 100 x 97/1000 = 97.3 - 9.7 = 87.6, granted as 87 and
        // taken back as 88.
        let mut paid = 0;
        for _ in 0..5 {
            let (_, u) = up(&s, p, left);
            paid += u["data"]["object"]["amount_paid"].as_i64().unwrap();
            deliver(&owner, &u).await;
            let (_, d) = down(&s, p, left);
            assert_eq!(d["data"]["object"]["amount_paid"], 0);
            assert_eq!(d["data"]["object"]["total"], -876);
            deliver(&owner, &d).await;
        }
        // The money: each cycle charged $8.76 and credited it back to the customer's balance,
        // so nothing was bought beyond the first period; the tokens gained are not more.
        assert_eq!(paid, 5 * 876);
        assert_eq!(
            balance(&owner, &s).await,
            100 - 5,
            "{shape:?}: five up-and-down cycles lose the rounding, gain nothing"
        );
        assert_eq!(take_backs(&owner, &s).await, vec![(88, 88, 0, 0); 5]);
        let upgrades: Vec<i64> = grants(&owner, &s)
            .await
            .iter()
            .filter(|g| g.0 == "plan_upgrade")
            .map(|g| g.1)
            .collect();
        assert_eq!(upgrades, vec![87; 5]);
    }
}

#[tokio::test]
async fn an_upgrade_grants_the_share_of_the_plan_its_money_bought() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    for shape in [Shape::V2023, Shape::Basil] {
        // The README's example: 9 of 30 days left, $30.00 charged for Big, $3.00 credited for
        // Small: 300 - 30 = 270 tokens.
        let p = period(unix_now() - 21 * DAY, 30);
        let s = on_small(&owner, shape, p).await;
        let (id, u) = up(&s, p, 9 * DAY);
        let lines = &u["data"]["object"]["lines"]["data"];
        assert_eq!(
            (lines[0]["amount"].clone(), lines[1]["amount"].clone()),
            (json!(-300), json!(3000))
        );
        deliver(&owner, &u).await;
        let key: String = owner
            .query_one(
                "SELECT grant_key FROM billing.token_grants WHERE user_id = $1 AND source = 'plan_upgrade'",
                &[&s.user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(key, format!("{id}:upgrade"));
        assert_eq!(balance(&owner, &s).await, 370, "{shape:?}");
        // A plan without a unit amount (a tiered price, as the catalog's synced price says)
        // on an always_invoice invoice: no period line on it tells how long its period is, so
        // its line is worth nothing.
        let t = Subscriber::new(shape);
        let (_, first) = invoice(
            &t,
            p.start,
            "subscription_create",
            None,
            &[(SMALL, Some(SMALL.1), 1000, false, p)],
        );
        deliver(&owner, &first).await;
        let rest = events::Period {
            start: p.end - 9 * DAY,
            end: p.end,
        };
        let (_, u) = invoice(
            &t,
            rest.start,
            "subscription_update",
            None,
            &[
                (SMALL, Some(SMALL.1), -300, true, rest),
                (TIERED, None, 3000, true, rest),
            ],
        );
        deliver(&owner, &u).await;
        assert_eq!(
            balance(&owner, &t).await,
            70,
            "{shape:?}: only the credit counts"
        );
    }
}

#[tokio::test]
async fn a_downgrade_takes_back_what_it_credits_and_owes_what_was_spent() {
    let (db, owner) = setup().await;
    let mut api = db.api().await;
    catalog(&owner).await;
    for shape in [Shape::V2023, Shape::Basil] {
        let p = period(unix_now() - 21 * DAY, 30);
        let s = on_small(&owner, shape, p).await;
        let (_, u) = up(&s, p, 9 * DAY);
        deliver(&owner, &u).await;
        owner
            .execute("SELECT billing.spend_tokens($1, 350)", &[&s.user])
            .await
            .unwrap();
        // Free as far as money goes (amount_paid 0), and free invoices granting nothing does
        // not stop a take-back.
        set_config(&owner, "free_invoice_tokens = 'none'").await;
        let (id, d) = down(&s, p, 9 * DAY);
        deliver(&owner, &d).await;
        set_config(&owner, "free_invoice_tokens = NULL").await;
        assert_eq!(
            take_backs(&owner, &s).await,
            vec![(270, 20, 250, 0)],
            "{shape:?}"
        );
        assert_eq!(balance(&owner, &s).await, 0);
        assert_eq!(debt(&owner, &s).await, 250);
        let key: String = owner
            .query_one(
                "SELECT take_key FROM billing.token_reversals WHERE user_id = $1 AND kind = 'downgrade'",
                &[&s.user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(key, format!("{id}:downgrade"));
        let notes: Vec<(String, Value)> = owner
            .query(
                "SELECT kind, payload FROM billing.notifications WHERE user_id = $1 ORDER BY id",
                &[&s.user],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            notes
                .iter()
                .map(|n| (n.0.as_str(), n.1["tokens"].as_i64()))
                .collect::<Vec<_>>(),
            [("tokens_revoked", Some(270)), ("debt_created", Some(250))]
        );
        // The user sees it under row-level security, as PostgREST would show it.
        let mine = api
            .call(
                &Caller::User(s.user),
                "SELECT kind, tokens, taken, debt, billing.token_debt() FROM billing.token_reversals",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            mine.iter()
                .map(|r| (
                    r.get::<_, String>(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4)
                ))
                .collect::<Vec<(String, i64, i64, i64, i64)>>(),
            [("downgrade".to_string(), 270, 20, 250, 250)]
        );
        // The next renewal (Small, 100 tokens) pays the debt off first.
        let p2 = period(p.end, 30);
        let (_, renewal) = invoice(
            &s,
            p.end,
            "subscription_cycle",
            None,
            &[(SMALL, Some(SMALL.1), 1000, false, p2)],
        );
        deliver(&owner, &renewal).await;
        assert_eq!(
            (balance(&owner, &s).await, debt(&owner, &s).await),
            (0, 150)
        );
    }
}

#[tokio::test]
async fn proration_invoices_apply_once_in_any_order() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    for shape in [Shape::V2023, Shape::Basil] {
        let p = period(unix_now() - 21 * DAY, 30);
        let s = on_small(&owner, shape, p).await;
        let (_, u) = up(&s, p, 9 * DAY);
        let (_, d) = down(&s, p, 9 * DAY);
        // The downgrade first, twice, then the upgrade twice, then a redelivery of the
        // downgrade under a new event id (Stripe's events API and a webhook).
        deliver(&owner, &d).await;
        deliver(&owner, &d).await;
        assert_eq!(
            take_backs(&owner, &s).await,
            vec![(270, 100, 170, 0)],
            "{shape:?}"
        );
        deliver(&owner, &u).await;
        deliver(&owner, &u).await;
        let mut again = d.clone();
        again["id"] = json!(events::event_id());
        deliver(&owner, &again).await;
        assert_eq!(take_backs(&owner, &s).await.len(), 1);
        // The upgrade's 270 paid the 170 owed: where the other order ends.
        assert_eq!(
            (balance(&owner, &s).await, debt(&owner, &s).await),
            (100, 0),
            "{shape:?}"
        );
        // On Big, the same day's downgrade and then upgrade nets nothing either.
        let t = Subscriber::new(shape);
        let (_, first) = invoice(
            &t,
            p.start,
            "subscription_create",
            None,
            &[(BIG, Some(BIG.1), BIG.1, false, p)],
        );
        deliver(&owner, &first).await;
        deliver(&owner, &down(&t, p, 9 * DAY).1).await;
        deliver(&owner, &up(&t, p, 9 * DAY).1).await;
        assert_eq!(
            (balance(&owner, &t).await, debt(&owner, &t).await),
            (1000, 0)
        );
    }
}

#[tokio::test]
async fn create_prorations_net_on_the_renewal_beside_the_new_period() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    for shape in [Shape::V2023, Shape::Basil] {
        let p = period(unix_now() - 30 * DAY + 3600, 30);
        let changed = events::Period {
            start: p.end - 9 * DAY,
            end: p.end,
        };
        let p2 = period(p.end, 30);
        // Upgraded with 9 days left; the renewal bills Big's new period and the prorations.
        let s = on_small(&owner, shape, p).await;
        let (_, renewal) = invoice(
            &s,
            p.end,
            "subscription_cycle",
            None,
            &[
                (SMALL, Some(SMALL.1), -300, true, changed),
                (BIG, Some(BIG.1), 3000, true, changed),
                (BIG, Some(BIG.1), BIG.1, false, p2),
            ],
        );
        deliver(&owner, &renewal).await;
        let got: Vec<(String, i64)> = grants(&owner, &s)
            .await
            .into_iter()
            .map(|g| (g.0, g.1))
            .collect();
        assert_eq!(
            got,
            [
                ("subscription_start".into(), 100),
                ("plan".into(), 1000),
                ("plan_upgrade".into(), 270)
            ],
            "{shape:?}"
        );
        // Downgraded with 9 days left: Small's new period, and the prorations take 270 back.
        let t = Subscriber::new(shape);
        let (_, first) = invoice(
            &t,
            p.start,
            "subscription_create",
            None,
            &[(BIG, Some(BIG.1), BIG.1, false, p)],
        );
        deliver(&owner, &first).await;
        let (_, renewal) = invoice(
            &t,
            p.end,
            "subscription_cycle",
            None,
            &[
                (BIG, Some(BIG.1), -3000, true, changed),
                (SMALL, Some(SMALL.1), 300, true, changed),
                (SMALL, Some(SMALL.1), SMALL.1, false, p2),
            ],
        );
        deliver(&owner, &renewal).await;
        assert_eq!(balance(&owner, &t).await, 1000 + 100 - 270, "{shape:?}");
        assert_eq!(take_backs(&owner, &t).await, vec![(270, 270, 0, 0)]);
        // A price without a unit amount (tiered, as its synced Price says): a proration line
        // of a price the invoice also bills a period of is worth its share of that period (9
        // of 30 days of 1000 tokens); Small's credit is valued by its amount (30 tokens).
        let u = on_small(&owner, shape, p).await;
        let (_, renewal) = invoice(
            &u,
            p.end,
            "subscription_cycle",
            None,
            &[
                (SMALL, Some(SMALL.1), -300, true, changed),
                (TIERED, None, 3000, true, changed),
                (TIERED, None, 10000, false, p2),
            ],
        );
        deliver(&owner, &renewal).await;
        assert_eq!(
            balance(&owner, &u).await,
            100 + 1000 + 300 - 30,
            "{shape:?}"
        );
    }
}

#[tokio::test]
async fn a_renewal_paid_from_the_customer_balance_is_paid_not_free() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    set_config(&owner, "free_invoice_tokens = 'none'").await;
    for shape in [Shape::V2023, Shape::Basil] {
        let p = period(unix_now() - 30 * DAY + 3600, 30);
        let s = on_small(&owner, shape, p).await;
        // The credit a downgrade left on the customer's balance pays the renewal: total $10,
        // amount_paid 0.
        let (renewal_id, renewal) = invoice(
            &s,
            p.end,
            "subscription_cycle",
            Some(0),
            &[(SMALL, Some(SMALL.1), SMALL.1, false, period(p.end, 30))],
        );
        assert_eq!(renewal["data"]["object"]["total"], 1000);
        deliver(&owner, &renewal).await;
        assert_eq!(balance(&owner, &s).await, 200, "{shape:?}");
        // Its purchase paid nothing, so nothing could ever be refunded of it.
        let paid: i64 = owner
            .query_one(
                "SELECT amount_paid FROM billing.purchases WHERE id = $1",
                &[&renewal_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(paid, 0);
        // A free invoice (total 0, a 100%-off coupon) still grants nothing under 'none'.
        let (_, free) = invoice(
            &s,
            p.end + 30 * DAY,
            "subscription_cycle",
            Some(0),
            &[(SMALL, Some(SMALL.1), 0, false, period(p.end + 30 * DAY, 30))],
        );
        deliver(&owner, &free).await;
        assert_eq!(grants(&owner, &s).await.len(), 2);
    }
}

#[tokio::test]
async fn with_revocation_scope_grant_a_downgrade_takes_only_from_the_subscription() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    set_config(&owner, "revocation_scope = 'grant'").await;
    let p = period(unix_now() - 21 * DAY, 30);
    let s = on_small(&owner, Shape::Basil, p).await;
    owner
        .execute("SELECT billing.grant_tokens($1, 1000)", &[&s.user])
        .await
        .unwrap();
    let (_, d) = down(&s, p, 9 * DAY);
    deliver(&owner, &d).await;
    // Small's 100 tokens are taken; the manual 1000 stay, and nothing is owed.
    assert_eq!(take_backs(&owner, &s).await, vec![(270, 100, 0, 170)]);
    assert_eq!(
        (balance(&owner, &s).await, debt(&owner, &s).await),
        (1000, 0)
    );
}

/// (error code, error) of the event `id`, NULLs once applied.
async fn outcome(owner: &Client, id: &str) -> (Option<String>, Option<String>) {
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
async fn price_retrievals(owner: &Client) -> Vec<String> {
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
}
