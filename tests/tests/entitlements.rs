//! Entitlements: billing.has_feature and billing.feature_limit for the signed-in user, following
//! the subscription's state as Stripe-shaped webhooks (both API shapes) report it through
//! handle_stripe_webhook: trialing and active grant the plan's features, past_due only within
//! past_due_grace_seconds of becoming past due, unpaid, incomplete and canceled nothing; a plan
//! change moves them. Asked the way PostgREST asks (as the user, as anon), and inside an app
//! table's RLS policy.
mod common;
mod subscription_support;

use common::set_config;
use stripe_billing_tests::events::{unix_now, Shape};
use stripe_billing_tests::pg::{assert_error, Api, Caller};
use subscription_support::*;
use tokio_postgres::Client;
use uuid::Uuid;

const HOUR: i64 = 3600;

/// Features of setup()'s plans: basic exports up to 10 a month; pro exports up to 100 and has
/// the API without a limit; pro_yearly exports without a limit.
async fn features(owner: &Client) {
    owner
        .batch_execute(
            "INSERT INTO billing.plan_features (plan_id, feature, limit_value) VALUES
                 ('basic', 'export', 10),
                 ('pro', 'export', 100), ('pro', 'api', NULL),
                 ('pro_yearly', 'export', NULL);",
        )
        .await
        .unwrap();
}

/// (has export, export limit, has api, api limit) as `caller` sees them.
type Seen = (bool, Option<i64>, bool, Option<i64>);

async fn seen(api: &mut Api, caller: &Caller) -> Seen {
    let rows = api
        .call(
            caller,
            "SELECT billing.has_feature('export'), billing.feature_limit('export'),
                    billing.has_feature('api'), billing.feature_limit('api')",
            &[],
        )
        .await
        .unwrap();
    let r = &rows[0];
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

const NOTHING: Seen = (false, None, false, None);
const BASIC: Seen = (true, Some(10), false, None);
const PRO: Seen = (true, Some(100), true, None);

/// A subscription's whole life, in each API shape: what the user may use after each report.
#[tokio::test]
async fn features_follow_the_subscription_from_its_webhooks() {
    for shape in [Shape::V2023, Shape::Basil] {
        let (db, owner) = setup().await;
        features(&owner).await;
        let mut api = db.api().await;
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
    let (db, owner) = setup().await;
    features(&owner).await;
    let mut api = db.api().await;
    let now = unix_now();
    let p = period(now - 20 * DAY, 30);
    let scenarios: [(Vec<(&str, i64)>, i64, Seen); 2] = [
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
            assert_eq!(
                seen(&mut api, &Caller::User(s.user)).await,
                expected,
                "order {order:?}"
            );
        }
    }
}

/// An incomplete first payment grants nothing, nor does its expiry; a trial that ends without a
/// payment method pauses the subscription, and its features stop.
#[tokio::test]
async fn incomplete_and_paused_subscriptions_grant_nothing() {
    let (db, owner) = setup().await;
    features(&owner).await;
    let mut api = db.api().await;
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
            assert_eq!(
                seen(&mut api, &Caller::User(s.user)).await,
                expected,
                "{shape:?}: {status}"
            );
        }
    }
}

/// With several subscriptions the most generous plan decides, and no limit beats any limit.
#[tokio::test]
async fn several_subscriptions_give_the_largest_limit() {
    let (db, owner) = setup().await;
    features(&owner).await;
    let mut api = db.api().await;
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

/// An app table whose policy asks has_feature: subscribers with the feature read their rows,
/// others (signed in or anon) read none and get no error, and a cancellation closes it.
#[tokio::test]
async fn an_rls_policy_on_an_app_table_follows_the_feature() {
    let (db, owner) = setup().await;
    features(&owner).await;
    owner
        .batch_execute(
            "-- A schema of the app's own (hosted Supabase lets postgres create in public too).
             CREATE SCHEMA app;
             GRANT USAGE ON SCHEMA app TO anon, authenticated;
             CREATE TABLE app.reports (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                          owner_id uuid NOT NULL, title text NOT NULL);
             ALTER TABLE app.reports ENABLE ROW LEVEL SECURITY;
             CREATE POLICY exports_need_the_feature ON app.reports FOR SELECT TO authenticated
                 USING (owner_id = (select billing.current_user_id())
                        AND (select billing.has_feature('export')));
             -- anon may not call current_user_id; has_feature it may, and gets false.
             CREATE POLICY showcase_for_subscribers ON app.reports FOR SELECT TO anon
                 USING ((select billing.has_feature('export')));
             GRANT SELECT ON app.reports TO anon, authenticated;",
        )
        .await
        .unwrap();
    let now = unix_now();
    let subscribed = Subscriber::new(Shape::V2023);
    let other = Uuid::new_v4();
    for (user, n) in [(subscribed.user, 3), (other, 2)] {
        owner
            .execute(
                "INSERT INTO app.reports (owner_id, title) SELECT $1, 'report ' || i FROM generate_series(1, $2) i",
                &[&user, &n],
            )
            .await
            .unwrap();
    }
    let p = period(now - DAY, 30);
    deliver(
        &owner,
        &subscribed.subscription_event(
            "customer.subscription.created",
            now - 60,
            "active",
            "price_basic",
            p,
        ),
    )
    .await;
    let mut api = db.api().await;
    let count = "SELECT count(*) FROM app.reports";
    for (caller, expected) in [
        (Caller::User(subscribed.user), 3i64),
        (Caller::User(other), 0),
        (Caller::Anon, 0),
    ] {
        let rows = api.call(&caller, count, &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), expected, "{caller:?}");
    }
    assert_eq!(seen(&mut api, &Caller::Anon).await, NOTHING);
    // The call runs once per statement (an initPlan), not once per row.
    let plan: Vec<String> = api
        .call(
            &Caller::User(subscribed.user),
            &format!("EXPLAIN (COSTS OFF) {count}"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("InitPlan")), "{plan:#?}");
    deliver(
        &owner,
        &subscribed.subscription_event(
            "customer.subscription.deleted",
            now - 30,
            "canceled",
            "price_basic",
            p,
        ),
    )
    .await;
    let rows = api
        .call(&Caller::User(subscribed.user), count, &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0, "canceled: no more exports");
}

/// Unknown features are simply not had; a NULL or malformed key is the caller's mistake, with
/// its own SQLSTATE. Only privileged roles write the features.
#[tokio::test]
async fn bad_feature_keys_are_refused_and_only_the_operator_writes_features() {
    let (db, owner) = setup().await;
    features(&owner).await;
    let mut api = db.api().await;
    let me = Caller::User(Uuid::new_v4());
    let rows = api
        .call(&me, "SELECT billing.has_feature('no_such_feature'), billing.feature_limit('no_such_feature')", &[])
        .await
        .unwrap();
    assert_eq!(
        (rows[0].get::<_, bool>(0), rows[0].get::<_, Option<i64>>(1)),
        (false, None)
    );
    for f in ["has_feature", "feature_limit"] {
        for caller in [me.clone(), Caller::Anon] {
            assert_error(
                api.call(&caller, &format!("SELECT billing.{f}(NULL)"), &[])
                    .await,
                "22004",
                "feature must not be NULL",
            );
            for bad in ["Export", "", "export feature", "1export", &"x".repeat(64)] {
                assert_error(
                    api.call(&caller, &format!("SELECT billing.{f}($1)"), &[&bad])
                        .await,
                    "22023",
                    "is not a feature key",
                );
            }
        }
    }
    assert_error(
        owner
            .execute(
                "INSERT INTO billing.plan_features (plan_id, feature) VALUES ('pro', 'Bad Key')",
                &[],
            )
            .await,
        "23514",
        "plan_features_feature_check",
    );
    assert_error(
        owner
            .execute("INSERT INTO billing.plan_features (plan_id, feature, limit_value) VALUES ('pro', 'seats', -1)", &[])
            .await,
        "23514",
        "plan_features_limit_value_check",
    );
    for caller in [me.clone(), Caller::Anon] {
        assert_error(
            api.call(&caller, "SELECT * FROM billing.plan_features", &[])
                .await,
            "42501",
            "permission denied",
        );
        assert_error(
            api.call(
                &caller,
                "INSERT INTO billing.plan_features (plan_id, feature) VALUES ('pro', 'free')",
                &[],
            )
            .await,
            "42501",
            "permission denied",
        );
    }
    let by_service = api
        .call(
            &Caller::Service,
            "INSERT INTO billing.plan_features (plan_id, feature, limit_value) VALUES ('basic', 'api', 1000) RETURNING feature",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(by_service.len(), 1);
}

/// 0.2.0 did not record when a status began: the upgrade takes the time of each row's newest
/// report (else its last change), so a subscription past due for ten days before the upgrade
/// is beyond the grace after it, and one past due since yesterday within it. The extension only:
/// the pure-SQL edition has no 0.2.0 to install here (pure_migration.rs runs its upgrade).
#[tokio::test]
async fn an_upgrade_from_0_2_0_dates_each_status_from_its_newest_report() {
    if stripe_billing_tests::edition::Edition::current()
        == stripe_billing_tests::edition::Edition::Pure
    {
        eprintln!("skipped: the pure-SQL edition has no released 0.2.0 to upgrade from");
        return;
    }
    let db = stripe_billing_tests::pg::TestDb::with_version(Some("0.2.0")).await;
    let owner = db.owner().await;
    let (long_ago, yesterday, unversioned) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    owner
        .execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens)
                 VALUES ('pro', 'price_pro', 'Pro', 'subscription', 1000)",
            &[],
        )
        .await
        .unwrap();
    for (user, sub, reported, changed) in [
        (long_ago, "sub_1LongAgo", Some(10), 10),
        (yesterday, "sub_1Yesterday", Some(1), 10),
        (unversioned, "sub_1Unversioned", None, 2),
    ] {
        owner
            .execute(
                "INSERT INTO billing.subscriptions (stripe_subscription_id, user_id, plan_id, stripe_price_id,
                                                    status, version, updated_at)
                 VALUES ($1, $2, 'pro', 'price_pro', 'past_due',
                         CASE WHEN $3::int IS NOT NULL
                              THEN ROW(now() - make_interval(days => $3::int), 1)::billing.event_version END,
                         now() - make_interval(days => $4::int))",
                &[&sub, &user, &reported, &changed],
            )
            .await
            .unwrap();
    }
    owner
        .batch_execute(
            "ALTER EXTENSION stripe_billing UPDATE;
             SELECT billing.apply_grants();
             INSERT INTO billing.plan_features (plan_id, feature) VALUES ('pro', 'export');",
        )
        .await
        .unwrap();
    let mut api = db.api().await;
    for (user, since_days, has) in [
        (long_ago, 10, false),
        (yesterday, 1, true),
        (unversioned, 2, true),
    ] {
        let days: f64 = owner
            .query_one(
                "SELECT round(extract(epoch FROM now() - status_since) / 86400)::float8 FROM billing.subscriptions
                 WHERE user_id = $1",
                &[&user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(days, since_days as f64, "{user}");
        let rows = api
            .call(
                &Caller::User(user),
                "SELECT billing.has_feature('export')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            rows[0].get::<_, bool>(0),
            has,
            "{user}: past due for {since_days} days"
        );
    }
}
