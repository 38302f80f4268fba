//! Entitlements: billing.has_feature and billing.feature_limit for the signed-in user, following
//! the subscription's state as Stripe-shaped webhooks (both API shapes) report it through
//! handle_stripe_webhook: trialing and active grant the plan's features, past_due only within
//! past_due_grace_seconds of becoming past due (in any delivery order), unpaid, paused,
//! incomplete and canceled nothing; a plan change moves them. In an app's RLS policy, bad
//! input and the upgrade: entitlements_access.rs.
mod common;
mod entitlements_support;
mod subscription_support;

use common::set_config;
use entitlements_support::*;
use stripe_billing_tests::events::{unix_now, Shape};
use stripe_billing_tests::pg::Caller;
use subscription_support::*;

/// A subscription's whole life, in each API shape: what the user may use after each report.
#[tokio::test]
async fn features_follow_the_subscription_from_its_webhooks() {
    for shape in [Shape::V2023, Shape::Basil] {
        let (_db, owner, mut api) = setup_with_features().await;
        let s = Subscriber::new(shape);
        let me = Caller::User(s.user);
        let now = unix_now();
        let t0 = now - 30 * DAY;
        let p = period(t0, 30);
        let report = |ty: &str, at: i64, status: &str, price: &str| {
            s.subscription_event(ty, at, status, price, p)
        };
        assert_eq!(
            seen(&mut api, &me).await,
            NOTHING,
            "{shape:?}: no subscription"
        );

        let steps = [
            (
                "customer.subscription.created",
                t0,
                "incomplete",
                "price_basic",
                NOTHING,
            ),
            (
                "customer.subscription.updated",
                t0 + 1,
                "trialing",
                "price_basic",
                BASIC,
            ),
            (
                "customer.subscription.updated",
                t0 + 2,
                "active",
                "price_basic",
                BASIC,
            ),
            // A plan change moves the features with it.
            (
                "customer.subscription.updated",
                t0 + 3,
                "active",
                "price_pro",
                PRO,
            ),
            // Past due for 8 days: beyond the default grace of 7.
            (
                "customer.subscription.updated",
                now - 8 * DAY,
                "past_due",
                "price_pro",
                NOTHING,
            ),
        ];
        for (ty, at, status, price, expected) in steps {
            deliver(&owner, &report(ty, at, status, price)).await;
            assert_eq!(
                seen(&mut api, &me).await,
                expected,
                "{shape:?}: {status} on {price}"
            );
        }
        // Stripe still serves a past_due subscription: subscription_status says so; only the
        // features stop after the grace.
        let active: bool = api
            .call(&me, "SELECT active FROM billing.my_subscription()", &[])
            .await
            .unwrap()[0]
            .get(0);
        assert!(active);
        // A longer grace gives them back, a shorter one takes them again.
        set_config(&owner, "past_due_grace_seconds = 9 * 86400").await;
        assert_eq!(
            seen(&mut api, &me).await,
            PRO,
            "{shape:?}: within a 9-day grace"
        );
        set_config(&owner, "past_due_grace_seconds = NULL").await;
        // Another report of the same status does not restart the grace.
        deliver(
            &owner,
            &report(
                "customer.subscription.updated",
                now - DAY,
                "past_due",
                "price_pro",
            ),
        )
        .await;
        assert_eq!(
            seen(&mut api, &me).await,
            NOTHING,
            "{shape:?}: grace counts from the first past_due"
        );

        let steps = [
            (
                "customer.subscription.updated",
                now - 12 * HOUR,
                "active",
                "price_pro",
                PRO,
            ),
            // Past due an hour ago: within the grace, until the grace is 0.
            (
                "customer.subscription.updated",
                now - HOUR,
                "past_due",
                "price_pro",
                PRO,
            ),
        ];
        for (ty, at, status, price, expected) in steps {
            deliver(&owner, &report(ty, at, status, price)).await;
            assert_eq!(
                seen(&mut api, &me).await,
                expected,
                "{shape:?}: {status} on {price}"
            );
        }
        set_config(&owner, "past_due_grace_seconds = 0").await;
        assert_eq!(seen(&mut api, &me).await, NOTHING, "{shape:?}: no grace");
        set_config(&owner, "past_due_grace_seconds = NULL").await;

        let steps = [
            (
                "customer.subscription.updated",
                now - 50 * 60,
                "unpaid",
                "price_pro",
                NOTHING,
            ),
            (
                "customer.subscription.updated",
                now - 40 * 60,
                "active",
                "price_basic",
                BASIC,
            ),
            (
                "customer.subscription.deleted",
                now - 30 * 60,
                "canceled",
                "price_basic",
                NOTHING,
            ),
        ];
        for (ty, at, status, price, expected) in steps {
            deliver(&owner, &report(ty, at, status, price)).await;
            assert_eq!(
                seen(&mut api, &me).await,
                expected,
                "{shape:?}: {status} on {price}"
            );
        }
        // A final subscription stays final, whatever arrives late.
        deliver(
            &owner,
            &report(
                "customer.subscription.updated",
                now - 20 * 60,
                "active",
                "price_pro",
            ),
        )
        .await;
        assert_eq!(
            seen(&mut api, &me).await,
            NOTHING,
            "{shape:?}: canceled is final"
        );
    }
}

/// Reports (status, Stripe's time) of one subscription, when the last status truly began, and
/// what the user then has.
type Scenario = (Vec<(&'static str, i64)>, i64, Seen);

/// Every order of `n` items, as index lists.
fn orders(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for rest in orders(n - 1) {
        for at in 0..=rest.len() {
            let mut o = rest.clone();
            o.insert(at, n - 1);
            out.push(o);
        }
    }
    out
}

/// When the status began, and so the grace, does not depend on the order Stripe's reports
/// arrive in (Stripe delivers in any order): every order gives the same status_since and answer.
#[tokio::test]
async fn the_grace_is_the_same_in_every_delivery_order() {
    let (_db, owner, mut api) = setup_with_features().await;
    let now = unix_now();
    let p = period(now - 20 * DAY, 30);
    let scenarios: [Scenario; 2] = [
        // Past due 8 days ago and reported again yesterday: beyond the 7-day grace.
        (
            vec![
                ("active", now - 20 * DAY),
                ("past_due", now - 8 * DAY),
                ("past_due", now - DAY),
            ],
            now - 8 * DAY,
            NOTHING,
        ),
        // Past due, paid, and past due again 2 days ago: the grace counts from the second time.
        (
            vec![
                ("active", now - 20 * DAY),
                ("past_due", now - 9 * DAY),
                ("active", now - 5 * DAY),
                ("past_due", now - 2 * DAY),
            ],
            now - 2 * DAY,
            PRO,
        ),
    ];
    for (reports, since, expected) in scenarios {
        for order in orders(reports.len()) {
            let shape = if order[0] % 2 == 0 {
                Shape::Basil
            } else {
                Shape::V2023
            };
            let s = Subscriber::new(shape);
            for &i in &order {
                let (status, at) = reports[i];
                let event = s.subscription_event(
                    "customer.subscription.updated",
                    at,
                    status,
                    "price_pro",
                    p,
                );
                deliver(&owner, &event).await;
            }
            let got: i64 = owner
                .query_one(
                    "SELECT extract(epoch FROM status_since)::bigint FROM billing.subscriptions
                     WHERE stripe_subscription_id = $1",
                    &[&s.sub],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(got, since, "order {order:?} of {reports:?}");
            let now_seen = seen(&mut api, &Caller::User(s.user)).await;
            assert_eq!(now_seen, expected, "order {order:?}");
        }
    }
}

/// An incomplete first payment grants nothing, nor does its expiry; a trial that ends without a
/// payment method pauses the subscription, and its features stop.
#[tokio::test]
async fn incomplete_and_paused_subscriptions_grant_nothing() {
    let (_db, owner, mut api) = setup_with_features().await;
    let now = unix_now();
    let p = period(now - DAY, 30);
    let cases = [
        (
            Shape::Basil,
            [("incomplete", NOTHING), ("incomplete_expired", NOTHING)],
        ),
        (Shape::V2023, [("trialing", PRO), ("paused", NOTHING)]),
    ];
    for (shape, steps) in cases {
        let s = Subscriber::new(shape);
        for (i, (status, expected)) in steps.into_iter().enumerate() {
            let ty = if i == 0 {
                "customer.subscription.created"
            } else {
                "customer.subscription.updated"
            };
            let at = now - 100 + 50 * i as i64;
            deliver(
                &owner,
                &s.subscription_event(ty, at, status, "price_pro", p),
            )
            .await;
            let now_seen = seen(&mut api, &Caller::User(s.user)).await;
            assert_eq!(now_seen, expected, "{shape:?}: {status}");
        }
    }
}

/// With several subscriptions the most generous plan decides, and no limit beats any limit.
#[tokio::test]
async fn several_subscriptions_give_the_largest_limit() {
    let (_db, owner, mut api) = setup_with_features().await;
    let now = unix_now();
    let first = Subscriber::new(Shape::Basil);
    let mut second = Subscriber::new(Shape::Basil);
    second.user = first.user;
    second.customer = first.customer.clone();
    let me = Caller::User(first.user);
    let p = period(now - DAY, 30);
    deliver(
        &owner,
        &first.subscription_event(
            "customer.subscription.created",
            now - 60,
            "active",
            "price_basic",
            p,
        ),
    )
    .await;
    deliver(
        &owner,
        &second.subscription_event(
            "customer.subscription.created",
            now - 50,
            "active",
            "price_pro",
            p,
        ),
    )
    .await;
    assert_eq!(seen(&mut api, &me).await, PRO);
    deliver(
        &owner,
        &second.subscription_event(
            "customer.subscription.updated",
            now - 40,
            "active",
            "price_pro_yearly",
            p,
        ),
    )
    .await;
    assert_eq!(
        seen(&mut api, &me).await,
        (true, None, false, None),
        "unlimited wins"
    );
    deliver(
        &owner,
        &second.subscription_event(
            "customer.subscription.deleted",
            now - 30,
            "canceled",
            "price_pro_yearly",
            p,
        ),
    )
    .await;
    assert_eq!(seen(&mut api, &me).await, BASIC);
}
