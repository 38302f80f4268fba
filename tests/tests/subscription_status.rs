//! "Is this user subscribed, to what, until when": billing.my_subscription() for a signed-in
//! user and billing.subscription_status(user_id) for the server, called the way PostgREST
//! calls them (as anon, two signed-in users and service_role; access.rs's fixtures).
mod access_support;
mod common;

use access_support::*;
use stripe_billing_tests::pg::{assert_error, Caller};
use tokio_postgres::Row;
use uuid::Uuid;

const STATUS: &str = "SELECT active, status, plan_id, plan_name, stripe_subscription_id,
                             cancel_at_period_end FROM billing.my_subscription()";

/// (active, status, plan, plan name, subscription, cancel_at_period_end) of the one row.
type Status = (
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
);

fn status(rows: &[Row]) -> Status {
    assert_eq!(rows.len(), 1, "always exactly one row");
    let r = &rows[0];
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

#[tokio::test]
async fn each_user_reads_their_own_subscription_and_the_server_anyones() {
    let s = seed().await;
    let mut api = s.db.api().await;
    // A: one active subscription to Pro.
    let a = api.call(&Caller::User(s.a), STATUS, &[]).await.unwrap();
    assert_eq!(
        status(&a),
        (
            true,
            some("active"),
            some("pro"),
            some("Pro"),
            some("sub_a"),
            false
        )
    );
    // B: a canceled one and an active one: the active one decides.
    let b = api.call(&Caller::User(s.b), STATUS, &[]).await.unwrap();
    assert_eq!(status(&b).4, some("sub_b2"));
    assert!(status(&b).0);
    // Nobody's subscriber: one row, not active, nothing else.
    let c = Uuid::new_v4();
    let none = api.call(&Caller::User(c), STATUS, &[]).await.unwrap();
    assert_eq!(status(&none), (false, None, None, None, None, false));

    // The server asks about anyone; a user only about themselves.
    let by_server = api
        .call(
            &Caller::Service,
            "SELECT active, status, plan_id, plan_name, stripe_subscription_id, cancel_at_period_end
             FROM billing.subscription_status($1)",
            &[&s.b],
        )
        .await
        .unwrap();
    assert_eq!(status(&by_server), status(&b));
    let own = api
        .call(
            &Caller::User(s.a),
            "SELECT active FROM billing.subscription_status($1)",
            &[&s.a],
        )
        .await
        .unwrap();
    assert!(own[0].get::<_, bool>(0));
    assert_error(
        api.call(
            &Caller::User(s.a),
            "SELECT * FROM billing.subscription_status($1)",
            &[&s.b],
        )
        .await,
        "42501",
        "you can only read your own subscription",
    );
    // anon has no such API; a signed-in role without a user id is not a user.
    assert_error(
        api.call(&Caller::Anon, STATUS, &[]).await,
        "42501",
        "permission denied for function my_subscription",
    );
    assert_error(
        api.call_as("authenticated", r#"{"role":"authenticated"}"#, STATUS, &[])
            .await,
        "28000",
        "not authenticated",
    );
    assert_error(
        api.call(
            &Caller::Service,
            "SELECT * FROM billing.subscription_status(NULL)",
            &[],
        )
        .await,
        "22004",
        "user_id must not be NULL",
    );
}

/// Which statuses count as active: the ones Stripe still serves (past_due while it retries);
/// a scheduled cancellation stays active until the period ends.
#[tokio::test]
async fn active_means_active_trialing_or_past_due() {
    let s = seed().await;
    let mut api = s.db.api().await;
    let cases = [
        ("active", true),
        ("trialing", true),
        ("past_due", true),
        ("unpaid", false),
        ("paused", false),
        ("incomplete", false),
        ("incomplete_expired", false),
        ("canceled", false),
    ];
    for (state, active) in cases {
        let user = Uuid::new_v4();
        let sub = format!("sub_{}", Uuid::new_v4().simple());
        s.owner
            .execute(
                "INSERT INTO billing.subscriptions (stripe_subscription_id, user_id, plan_id,
                     stripe_price_id, status, current_period_end, cancel_at_period_end, trial_end)
                 VALUES ($1, $2, 'pro', 'price_pro', $3, now() + interval '20 days', true,
                         now() + interval '3 days')",
                &[&sub, &user, &state],
            )
            .await
            .unwrap();
        let rows = api
            .call(
                &Caller::User(user),
                "SELECT active, status, cancel_at_period_end,
                        current_period_end > now() + interval '19 days', trial_end IS NOT NULL
                 FROM billing.my_subscription()",
                &[],
            )
            .await
            .unwrap();
        let r = &rows[0];
        assert_eq!(r.get::<_, bool>(0), active, "{state}");
        assert_eq!(r.get::<_, Option<String>>(1).as_deref(), Some(state));
        assert!(r.get::<_, bool>(2) && r.get::<_, bool>(3) && r.get::<_, bool>(4));
    }
}
