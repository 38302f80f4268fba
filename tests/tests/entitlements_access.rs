//! Entitlements as an app uses them: billing.has_feature inside an app table's RLS policy,
//! connecting as signed-in users and anon the way PostgREST does; bad feature keys and who may
//! write features; and a 0.2.0 install's subscriptions after the upgrade. The lifecycle through
//! webhooks: entitlements.rs.
mod common;
mod entitlements_support;
mod subscription_support;

use entitlements_support::*;
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::events::{unix_now, Shape};
use stripe_billing_tests::pg::{assert_error, Caller, TestDb};
use subscription_support::*;
use uuid::Uuid;

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
    let (_db, owner, mut api) = setup_with_features().await;
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
    // my_features is the signed-in user's: anon has no such API, a role without a user id is
    // not a user, and a user without a subscription has none.
    assert_error(
        api.call(&Caller::Anon, "SELECT * FROM billing.my_features()", &[])
            .await,
        "42501",
        "permission denied for function my_features",
    );
    assert_error(
        api.call_as(
            "authenticated",
            r#"{"role":"authenticated"}"#,
            "SELECT * FROM billing.my_features()",
            &[],
        )
        .await,
        "28000",
        "not authenticated",
    );
    assert!(api
        .call(&me, "SELECT * FROM billing.my_features()", &[])
        .await
        .unwrap()
        .is_empty());
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
    if Edition::current() == Edition::Pure {
        eprintln!("skipped: the pure-SQL edition has no released 0.2.0 to upgrade from");
        return;
    }
    let db = TestDb::with_version(Some("0.2.0")).await;
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
