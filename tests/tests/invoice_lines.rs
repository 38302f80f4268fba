//! Every line of a subscription invoice counts, and only real period lines grant a period
//! (issue 20): Stripe embeds one page of an invoice's lines (`lines.has_more`), prorations first,
//! so a renewal after many plan changes may carry its period line only in the full list, which
//! the worker retrieves (`billing.store_invoice_lines`); a proration made by an invoice item
//! says so under `parent.invoice_item_details` (basil); and a line that charges nothing or
//! credits is no period paid for.
mod common;
mod subscription_support;

use serde_json::{json, Value};
use stripe_billing_tests::events::{unix_now, Line, Period, Shape};
use stripe_emulator::store::ids;
use subscription_support::*;
use tokio_postgres::Client;

/// A renewal after five plan changes billed with Stripe's default `create_prorations`: ten
/// proration lines (basic ⇄ pro) for the last 10 of 30 days, a third of each price (Basic $3.33
/// of $10, Pro $16.67 of $50), then the new period's line (pro). With unit amounts
/// (with_unit_amounts) the changes are worth 3 × 1667 + 2 × 333 tokens charged against
/// 3 × 333 + 2 × 1667 credited: 1334 upgrade tokens (6334 cents in all).
fn renewal_lines(changed: Period, next: Period) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for n in 0..5 {
        let ((old, old_share), (new, new_share)) = if n % 2 == 0 {
            (("price_basic", 333), ("price_pro", 1667))
        } else {
            (("price_pro", 1667), ("price_basic", 333))
        };
        lines.push(line(old, -old_share, true, changed));
        lines.push(line(new, new_share, true, changed));
    }
    lines.push(line("price_pro", 5000, false, next));
    lines
}

/// The event as Stripe sends it: the first ten lines embedded, `has_more` true.
fn first_page(mut event: Value) -> (Value, Value) {
    let all = event["data"]["object"]["lines"]["data"].clone();
    let page: Vec<Value> = all.as_array().unwrap().iter().take(10).cloned().collect();
    event["data"]["object"]["lines"]["data"] = json!(page);
    event["data"]["object"]["lines"]["has_more"] = json!(true);
    (
        event,
        json!({"object": "list", "data": all, "has_more": false}),
    )
}

/// The invoices whose lines the worker is asked to retrieve for this subscriber.
async fn line_requests(owner: &Client, s: &Subscriber) -> Vec<String> {
    owner
        .query(
            "SELECT params ->> 'object_id' FROM billing.stripe_requests
             WHERE user_id = $1 AND kind = 'line_items' ORDER BY created_at",
            &[&s.user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn sources(got: &[(String, i64, Option<i64>)]) -> Vec<(&str, i64)> {
    got.iter().map(|g| (g.0.as_str(), g.1)).collect()
}

#[tokio::test]
async fn a_renewal_whose_period_line_is_past_the_embedded_page_waits_for_every_line() {
    let (_db, owner) = setup().await;
    for shape in Shape::ALL {
        let t = unix_now();
        let s = Subscriber::new(shape);
        let p1 = period(t - 30 * DAY, 30);
        let (_, first) = s.invoice(
            "invoice.paid",
            p1.start,
            "subscription_create",
            1000,
            vec![line("price_basic", 1000, false, p1)],
        );
        deliver(&owner, &first).await;
        let p2 = period(p1.end, 30);
        let (id, renewal) = s.invoice(
            "invoice.paid",
            p1.end,
            "subscription_cycle",
            6334,
            renewal_lines(period(t - 10 * DAY, 10), p2),
        );
        let (event, all) = first_page(with_unit_amounts(shape, renewal));
        let answer = deliver(&owner, &event).await;
        assert_eq!(answer["code"], "BL010", "{shape:?}: {answer}");
        assert_eq!(
            sources(&grants(&owner, &s).await),
            [("subscription_start", 1000)],
            "{shape:?}: nothing from a page of prorations"
        );
        assert_eq!(
            line_requests(&owner, &s).await,
            vec![id.clone()],
            "{shape:?}: the worker is asked for every line"
        );
        // The worker brings every line; the waiting event applies with them.
        let applied: i32 = owner
            .query_one("SELECT billing.store_invoice_lines($1, $2)", &[&id, &all])
            .await
            .unwrap()
            .get(0);
        assert_eq!(applied, 1, "{shape:?}");
        let got = grants(&owner, &s).await;
        assert_eq!(
            sources(&got),
            [
                ("subscription_start", 1000),
                ("plan", 5000),
                ("plan_upgrade", 1334)
            ],
            "{shape:?}"
        );
        assert_eq!(got[1].2, Some(p2.end + DAY), "{shape:?}: the period's end");
        // A redelivery, and the same lines again, grant nothing more.
        assert_eq!(deliver(&owner, &event).await["duplicate"], true);
        owner
            .query_one("SELECT billing.store_invoice_lines($1, $2)", &[&id, &all])
            .await
            .unwrap();
        assert_eq!(grants(&owner, &s).await.len(), 3, "{shape:?}: once");

        // The same invoice with every line embedded needs nothing from Stripe.
        let other = Subscriber::new(shape);
        let (_, whole) = other.invoice(
            "invoice.paid",
            p1.end,
            "subscription_cycle",
            6334,
            renewal_lines(period(t - 10 * DAY, 10), p2),
        );
        let answer = deliver(&owner, &with_unit_amounts(shape, whole)).await;
        assert_eq!(answer["processed"], true, "{shape:?}: {answer}");
        assert_eq!(
            sources(&grants(&owner, &other).await),
            [("plan", 5000), ("plan_upgrade", 1334)],
            "{shape:?}"
        );
        assert!(line_requests(&owner, &other).await.is_empty(), "{shape:?}");
    }
}

#[tokio::test]
async fn lines_that_are_not_subscription_grants_do_not_wait() {
    let (_db, owner) = setup().await;
    common::set_config(&owner, "free_invoice_tokens = 'none'").await;
    let t = unix_now();
    let s = Subscriber::new(Shape::Basil);
    // A manual invoice: never retrieved. (A free one is, since a downgrade's take-back happens
    // whatever free_invoice_tokens says and its prorations may be past the page.)
    let (_, event) = s.invoice(
        "invoice.paid",
        t,
        "manual",
        6334,
        renewal_lines(period(t, 10), period(t, 30)),
    );
    let answer = deliver(&owner, &first_page(event).0).await;
    assert_eq!(answer["processed"], true, "{answer}");
    assert!(line_requests(&owner, &s).await.is_empty());
    let empty = owner
        .query_one(
            "SELECT billing.store_invoice_lines($1, '{\"object\": \"list\", \"data\": []}')",
            &[&ids::long("in")],
        )
        .await
        .unwrap_err();
    assert_eq!(
        empty.code().map(|c| c.code()),
        Some("22023"),
        "an invoice with more than a page of lines has lines: the retrieval fails visibly"
    );
}

#[tokio::test]
async fn prorations_made_by_invoice_items_are_prorations() {
    let (_db, owner) = setup().await;
    let t = unix_now();
    let s = Subscriber::new(Shape::Basil);
    // Upgraded with 10 of 30 days left: Pro's 1667 of 5000 cents less Basic's 333 of 1000.
    let changed = period(t - 10 * DAY, 10);
    let (_, renewal) = s.invoice(
        "invoice.paid",
        t,
        "subscription_cycle",
        6334,
        vec![
            line("price_basic", -333, true, changed),
            line("price_pro", 1667, true, changed),
            line("price_pro", 5000, false, period(t, 30)),
        ],
    );
    let mut renewal = with_unit_amounts(s.shape, renewal);
    // Basil's parent of a line an invoice item made (the API reference's invoice line item).
    for l in renewal["data"]["object"]["lines"]["data"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .take(2)
    {
        l["parent"] = json!({"type": "invoice_item_details", "subscription_item_details": null,
            "invoice_item_details": {"invoice_item": ids::long("ii"), "proration": true,
                "proration_details": {"credited_items": null}, "subscription": s.sub}});
    }
    deliver(&owner, &renewal).await;
    assert_eq!(
        sources(&grants(&owner, &s).await),
        [("plan", 5000), ("plan_upgrade", 1334)]
    );
}

#[tokio::test]
async fn a_line_that_charges_nothing_or_credits_is_no_period() {
    let (_db, owner) = setup().await;
    let t = unix_now();
    for shape in Shape::ALL {
        let s = Subscriber::new(shape);
        let (_, paid) = s.invoice(
            "invoice.paid",
            t,
            "subscription_cycle",
            1000,
            vec![
                line("price_basic", 3900, false, period(t, 30)),
                line("price_pro", 0, false, period(t, 30)),
                line("price_pro", -2900, false, period(t, 30)),
            ],
        );
        deliver(&owner, &paid).await;
        assert_eq!(
            sources(&grants(&owner, &s).await),
            [("plan", 1000)],
            "{shape:?}: only the line that charges"
        );
        // On an invoice with nothing to pay (a trial; here a credit makes its total -100) a line
        // of 0 is the period; a credit never is.
        let trial = Subscriber::new(shape);
        let (_, free) = trial.invoice(
            "invoice.paid",
            t,
            "subscription_create",
            0,
            vec![
                line("price_basic", 0, false, period(t, 14)),
                line("price_pro", -100, false, period(t, 14)),
            ],
        );
        deliver(&owner, &free).await;
        assert_eq!(
            sources(&grants(&owner, &trial).await),
            [("subscription_start", 1000)],
            "{shape:?}"
        );
    }
}
