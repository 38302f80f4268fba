//! The rules for subscriptions that real Stripe accounts meet: trials and free invoices, paused
//! collection, add-on items, prices the catalog does not know, plan changes billed later or as a
//! new period, and the renewal gap (ordering and final states: subscription_order.rs). Every
//! case goes through `handle_stripe_webhook` with Stripe-shaped random ids.
mod common;
mod subscription_support;

use common::set_config;

use serde_json::json;
use stripe_billing_tests::events::{self, unix_now, Shape};
use subscription_support::*;

#[tokio::test]
async fn renewal_tokens_overlap_so_a_late_renewal_leaves_no_gap() {
    let (_db, owner) = setup().await;
    let s = Subscriber::new(Shape::Basil);
    // The current period ends in 30 minutes; Stripe charges the renewal about an hour into the
    // next one, so its tokens must still count then.
    let now = unix_now();
    let p0 = period(now + 1800 - 30 * DAY, 30);
    let (_, first) = s.invoice(
        "invoice.paid",
        p0.start,
        "subscription_create",
        1000,
        vec![line("price_basic", 1000, false, p0)],
    );
    deliver(&owner, &first).await;
    let balance: i64 = owner
        .query_one("SELECT billing.token_balance($1)", &[&s.user])
        .await
        .unwrap()
        .get(0);
    assert_eq!(balance, 1000);
    assert_eq!(grants(&owner, &s).await[0].2, Some(p0.end + DAY));
    let an_hour_into_the_next_period: i64 = owner
        .query_one(
            "SELECT sum(remaining)::bigint FROM billing.token_grants WHERE user_id = $1 AND expires_at > to_timestamp($2)",
            &[&s.user, &((p0.end + 3600) as f64)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        an_hour_into_the_next_period, 1000,
        "no gap before the renewal is paid"
    );
    set_config(&owner, "renewal_grace_seconds = 0").await;
    let (_, second) = s.invoice(
        "invoice.paid",
        p0.end,
        "subscription_cycle",
        1000,
        vec![line("price_basic", 1000, false, period(p0.end, 30))],
    );
    deliver(&owner, &second).await;
    assert_eq!(
        grants(&owner, &s).await[1].2,
        Some(p0.end + 30 * DAY),
        "no grace when set to 0"
    );
}

#[tokio::test]
async fn trials_and_free_invoices_follow_the_setting() {
    let (_db, owner) = setup().await;
    let t = unix_now();
    let trial = period(t, 14);
    // Stripe bills a trial with a $0 subscription_create invoice.
    let s = Subscriber::new(Shape::V2023);
    let (_, zero) = s.invoice(
        "invoice.paid",
        t,
        "subscription_create",
        0,
        vec![line("price_pro", 0, false, trial)],
    );
    deliver(&owner, &zero).await;
    deliver(
        &owner,
        &events::event(
            s.shape,
            "customer.subscription.created",
            t,
            s.object(
                "trialing",
                "price_pro",
                trial,
                json!({"trial_start": t, "trial_end": trial.end}),
            ),
        ),
    )
    .await;
    assert_eq!(
        grants(&owner, &s)
            .await
            .iter()
            .map(|g| g.1)
            .collect::<Vec<_>>(),
        [5000],
        "by default a trial gets the plan's tokens"
    );
    let trial_end: i64 = owner
        .query_one("SELECT extract(epoch FROM trial_end)::bigint FROM billing.subscriptions WHERE stripe_subscription_id = $1", &[&s.sub])
        .await
        .unwrap()
        .get(0);
    assert_eq!(trial_end, trial.end);

    set_config(&owner, "free_invoice_tokens = 'none'").await;
    let other = Subscriber::new(Shape::Basil);
    let (_, zero) = other.invoice(
        "invoice.paid",
        t,
        "subscription_create",
        0,
        vec![line("price_pro", 0, false, trial)],
    );
    deliver(&owner, &zero).await;
    assert!(
        grants(&owner, &other).await.is_empty(),
        "none: nothing until money is paid"
    );
    // Ending the trial early bills a full period at once (subscription_update): the full allowance.
    let (_, ended) = other.invoice(
        "invoice.paid",
        t + DAY,
        "subscription_update",
        2900,
        vec![line("price_pro", 2900, false, period(t + DAY, 30))],
    );
    deliver(&owner, &ended).await;
    assert_eq!(
        grants(&owner, &other)
            .await
            .iter()
            .map(|g| (g.0.as_str(), g.1))
            .collect::<Vec<_>>(),
        [("plan", 5000)]
    );
}

#[tokio::test]
async fn plan_changes_grant_a_new_period_in_full_and_upgrades_when_they_are_charged() {
    let (_db, owner) = setup().await;
    let t = unix_now();
    let p1 = period(t, 30);
    let s = Subscriber::new(Shape::Basil);
    let (_, first) = s.invoice(
        "invoice.paid",
        t,
        "subscription_create",
        1000,
        vec![line("price_basic", 1000, false, p1)],
    );
    deliver(&owner, &first).await;
    // Stripe's default create_prorations: nothing is invoiced at the change; the proration lines
    // come with the next renewal, next to the new period's line. The upgrade is granted then:
    // with 20 of 30 days left, Pro's 3333 of 5000 cents are 3333 tokens, Basic's 667 of 1000
    // cents credited are 667, so 2666 (plan_changes.rs has the rules in full).
    let changed = period(t + 10 * DAY, 20);
    let p2 = period(p1.end, 30);
    let (_, mut renewal) = s.invoice(
        "invoice.paid",
        p1.end,
        "subscription_cycle",
        7666,
        vec![
            line("price_basic", -667, true, changed),
            line("price_pro", 3333, true, changed),
            line("price_pro", 5000, false, p2),
        ],
    );
    for (i, unit) in [(0, 1000), (1, 5000)] {
        events::set_unit_amount(
            s.shape,
            &mut renewal["data"]["object"]["lines"]["data"][i],
            Some(unit),
        );
    }
    deliver(&owner, &renewal).await;
    let got = grants(&owner, &s).await;
    assert_eq!(
        got.iter().map(|g| (g.0.as_str(), g.1)).collect::<Vec<_>>(),
        [
            ("subscription_start", 1000),
            ("plan", 5000),
            ("plan_upgrade", 2666)
        ]
    );
    assert_eq!(
        got[2].2,
        Some(p2.end + DAY),
        "upgrade tokens live through the period the invoice pays for"
    );
    // An interval change (monthly to yearly) resets the cycle: a full year billed at once, in
    // full; the unused 20 days of Pro monthly are credited (3333 of 5000 cents), and so are
    // their tokens: 3333 taken back, as a downgrade's credit is.
    let year = period(t + 40 * DAY, 365);
    let before: i64 = owner
        .query_one("SELECT billing.token_balance($1)", &[&s.user])
        .await
        .unwrap()
        .get(0);
    let (_, mut yearly) = s.invoice(
        "invoice.paid",
        year.start,
        "subscription_update",
        51667,
        vec![
            line("price_pro", -3333, true, period(year.start, 20)),
            line("price_pro_yearly", 55000, false, year),
        ],
    );
    events::set_unit_amount(
        s.shape,
        &mut yearly["data"]["object"]["lines"]["data"][0],
        Some(5000),
    );
    deliver(&owner, &yearly).await;
    let got = grants(&owner, &s).await;
    assert_eq!(
        got.last().map(|g| (g.0.as_str(), g.1, g.2)),
        Some(("plan", 5000, Some(year.end + DAY)))
    );
    let after: i64 = owner
        .query_one("SELECT billing.token_balance($1)", &[&s.user])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        after,
        before + 5000 - 3333,
        "the credited time's tokens go back"
    );
}

#[tokio::test]
async fn add_on_items_and_unknown_prices_never_block_what_is_known() {
    let (_db, owner) = setup().await;
    let t = unix_now();
    let p = period(t, 30);
    let s = Subscriber::new(Shape::Basil);
    // A subscription with an add-on price the catalog does not sell.
    let mut object = s.object("active", "price_pro", p, json!({}));
    let mut addon = object["items"]["data"][0].clone();
    addon["price"]["id"] = json!("price_seats_addon");
    addon["quantity"] = json!(3);
    let items = object["items"]["data"].as_array_mut().unwrap();
    items.insert(0, addon);
    deliver(
        &owner,
        &events::event(s.shape, "customer.subscription.created", t, object),
    )
    .await;
    let (_, inv) = s.invoice(
        "invoice.paid",
        t,
        "subscription_create",
        8000,
        vec![
            line("price_seats_addon", 3000, false, p),
            line("price_pro", 5000, false, p),
        ],
    );
    assert_eq!(deliver(&owner, &inv).await["processed"], true);
    let row = owner
        .query_one("SELECT plan_id, stripe_price_id FROM billing.subscriptions WHERE stripe_subscription_id = $1", &[&s.sub])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("pro".into(), "price_pro".into())
    );
    assert_eq!(
        grants(&owner, &s)
            .await
            .iter()
            .map(|g| g.1)
            .collect::<Vec<_>>(),
        [5000]
    );

    // A subscription on a price the catalog does not know yet: its cancellation still applies,
    // and the plan is filled in when the price is added.
    let other = Subscriber::new(Shape::V2023);
    deliver(
        &owner,
        &other.subscription_event("customer.subscription.created", t, "active", "price_new", p),
    )
    .await;
    deliver(
        &owner,
        &other.subscription_event(
            "customer.subscription.deleted",
            t + DAY,
            "canceled",
            "price_new",
            p,
        ),
    )
    .await;
    assert_eq!(status(&owner, &other).await.as_deref(), Some("canceled"));
    owner
        .batch_execute("INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES ('new', 'price_new', 'New', 'subscription', 10)")
        .await
        .unwrap();
    let plan: Option<String> = owner
        .query_one(
            "SELECT plan_id FROM billing.subscriptions WHERE stripe_subscription_id = $1",
            &[&other.sub],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plan.as_deref(), Some("new"));
}

#[tokio::test]
async fn a_plan_keeps_its_subscribers_when_its_price_changes() {
    let (_db, owner) = setup().await;
    let t = unix_now();
    let s = Subscriber::new(Shape::Basil);
    deliver(
        &owner,
        &s.subscription_event(
            "customer.subscription.created",
            t,
            "active",
            "price_basic",
            period(t, 30),
        ),
    )
    .await;
    owner
        .batch_execute(
            "UPDATE billing.plans SET stripe_price_id = 'price_basic_2027' WHERE id = 'basic'",
        )
        .await
        .unwrap();
    let p2 = period(t + 30 * DAY, 30);
    let (_, renewal) = s.invoice(
        "invoice.paid",
        p2.start,
        "subscription_cycle",
        1000,
        vec![line("price_basic", 1000, false, p2)],
    );
    assert_eq!(
        deliver(&owner, &renewal).await["processed"],
        true,
        "the old price still sells the plan"
    );
    assert_eq!(
        grants(&owner, &s)
            .await
            .iter()
            .map(|g| g.1)
            .collect::<Vec<_>>(),
        [1000]
    );
}

#[tokio::test]
async fn paused_collection_is_recorded_and_the_status_stays_active() {
    let (_db, owner) = setup().await;
    let s = Subscriber::new(Shape::Basil);
    let t = unix_now();
    let paused = s.object(
        "active",
        "price_basic",
        period(t, 30),
        json!({"pause_collection": {"behavior": "void", "resumes_at": null}}),
    );
    deliver(
        &owner,
        &events::event(s.shape, "customer.subscription.updated", t, paused),
    )
    .await;
    let row = owner
        .query_one("SELECT status, pause_collection FROM billing.subscriptions WHERE stripe_subscription_id = $1", &[&s.sub])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("active".into(), "void".into())
    );
    let resumed = s.object(
        "active",
        "price_basic",
        period(t, 30),
        json!({"pause_collection": null}),
    );
    deliver(
        &owner,
        &events::event(s.shape, "customer.subscription.updated", t + 60, resumed),
    )
    .await;
    let paused: Option<String> = owner
        .query_one(
            "SELECT pause_collection FROM billing.subscriptions WHERE stripe_subscription_id = $1",
            &[&s.sub],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(paused, None);
}
