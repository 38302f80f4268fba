//! `stripe-billing-worker doctor` end to end, the Stripe account broken in each way it checks:
//! the key, a plan's price (missing, archived, of the wrong kind), the meter of a plan with
//! overage, the webhook endpoint and the Customer Portal configuration. Each must give exactly
//! its own ✗ (with a fix) and exit code 1. The database's checks: doctor_database.rs.
mod doctor_support;
mod worker_support;

use doctor_support::*;
use serde_json::json;

#[tokio::test]
async fn a_plan_whose_price_stripe_does_not_have() {
    let a = account().await;
    a.owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens)
             VALUES ('ghost', 'price_1QghostNotInStripe', 'Ghost', 'token_pack', 10)",
        )
        .await
        .unwrap();
    let r = a.doctor().await;
    r.has_only_problem(
        "plan ghost",
        "price price_1QghostNotInStripe does not exist in Stripe's test mode",
        "UPDATE billing.plans SET stripe_price_id = 'price_...' WHERE id = 'ghost';",
    );
    // An inactive plan is not for sale, so its price is not checked.
    a.owner
        .batch_execute("UPDATE billing.plans SET active = false WHERE id = 'ghost'")
        .await
        .unwrap();
    assert_eq!(a.doctor().await.code, Some(0));
}

#[tokio::test]
async fn an_archived_price() {
    let a = account().await;
    a.emulator
        .post("/_emulator/prices/price_pack", json!({"active": false}))
        .await;
    a.doctor().await.has_only_problem(
        "plan pack",
        "price price_pack is archived (inactive) in Stripe",
        "WHERE id = 'pack'",
    );
}

#[tokio::test]
async fn a_plan_with_overage_needs_its_meter_and_a_price_metered_on_it() {
    let a = account().await;
    a.owner
        .batch_execute("UPDATE billing.plans SET overage_limit = 500, meter_event_name = 'tokens_over' WHERE id = 'pro'")
        .await
        .unwrap();
    a.doctor().await.has_only_problem(
        "meter of plan pro",
        "no active Billing Meter has event_name tokens_over in Stripe's test mode",
        "create the meter in https://dashboard.stripe.com/test/meters",
    );
    let (status, meter) = a
        .emulator
        .stripe(
            reqwest::Method::POST,
            "/v1/billing/meters",
            "display_name=Over&event_name=tokens_over&default_aggregation[formula]=sum",
        )
        .await;
    assert_eq!(status, 200, "{meter}");
    let meter = meter["id"].as_str().unwrap();
    a.doctor().await.has_only_problem(
        "meter of plan pro",
        &format!("meter {meter} (tokens_over) exists, but no active price of product"),
        &format!("add a usage-based price on meter {meter}"),
    );
    a.emulator
        .post(
            "/_emulator/metered_prices",
            json!({"product_of": "price_pro", "meter": meter}),
        )
        .await;
    let r = a.doctor().await;
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out.contains(&format!(
            "✓ meter of plan pro: meter {meter} (tokens_over) is active"
        )),
        "{}",
        r.out
    );
}

#[tokio::test]
async fn a_one_time_price_on_a_subscription_plan_and_the_reverse() {
    let a = account().await;
    a.owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens, tokens) VALUES
                ('team', 'price_once', 'Team', 'subscription', 5000, NULL),
                ('refill', 'price_monthly', 'Refill', 'token_pack', NULL, 100);",
        )
        .await
        .unwrap();
    let r = a.doctor().await;
    assert_eq!(r.code, Some(1), "{}", r.out);
    let problems = r.marked("✗ ");
    assert_eq!(problems.len(), 2, "{}", r.out);
    assert!(
        problems[0].starts_with("✗ plan refill: the token pack sells price price_monthly, which is recurring; a token pack needs a one-time price"),
        "{}",
        r.out
    );
    assert!(
        problems[1].starts_with("✗ plan team: the subscription plan sells price price_once, which is one-time; a subscription plan needs a recurring price"),
        "{}",
        r.out
    );
}

#[tokio::test]
async fn no_webhook_endpoint() {
    let a = account().await;
    // Without a webhook URL the emulator's account has no endpoint at all.
    a.emulator
        .post("/_emulator/webhook", json!({"url": null}))
        .await;
    a.doctor().await.has_only_problem(
        "webhook endpoint",
        "Stripe has no enabled webhook endpoint in test mode",
        "https://dashboard.stripe.com/test/webhooks",
    );
}

#[tokio::test]
async fn an_endpoint_missing_event_types() {
    let a = account().await;
    a.emulator
        .post("/_emulator/webhook", json!({"url": null}))
        .await;
    a.emulator
        .post(
            "/_emulator/webhook_endpoints",
            json!({"url": "https://app.example.test/api/stripe/webhook",
                   "enabled_events": ["checkout.session.completed", "invoice.paid", "invoice.payment_failed"]}),
        )
        .await;
    let r = a.doctor().await;
    r.has_only_problem(
        "webhook endpoint",
        "(https://app.example.test/api/stripe/webhook) lacks checkout.session.async_payment_succeeded, ",
        "enable the missing events",
    );
    let line = r.marked("✗ ")[0];
    assert!(line.ends_with(", payment_intent.succeeded"), "{line}");
    for enabled in [
        "checkout.session.completed,",
        "invoice.paid,",
        "invoice.payment_failed,",
    ] {
        assert!(!line.contains(enabled), "{line}");
    }
    // An endpoint with every type, next to it, is enough.
    a.emulator
        .post(
            "/_emulator/webhook_endpoints",
            json!({"url": "https://app.example.test/other",
                   "enabled_events": stripe_billing_core::event::APPLIED_TYPES}),
        )
        .await;
    assert_eq!(a.doctor().await.code, Some(0));
}

#[tokio::test]
async fn no_customer_portal_configuration() {
    let a = account().await;
    a.emulator
        .post("/_emulator/portal_configuration", json!({"exists": false}))
        .await;
    a.doctor().await.has_only_problem(
        "customer portal",
        "no default Customer Portal configuration in test mode",
        "https://dashboard.stripe.com/test/settings/billing/portal",
    );
}

#[tokio::test]
async fn no_key_or_a_key_stripe_refuses() {
    let a = account().await;
    let r = doctor_with(&a.db.dsn, Some(&a.emulator.url), None).await;
    r.has_only_problem(
        "Stripe key",
        "STRIPE_SECRET_KEY is not set",
        "set STRIPE_SECRET_KEY",
    );
    assert_eq!(
        r.marked("- ").len(),
        3,
        "prices, endpoint, portal skipped: {}",
        r.out
    );
    let r = doctor_with(
        &a.db.dsn,
        Some(&a.emulator.url),
        Some("sk_test_revoked1234"),
    )
    .await;
    r.has_only_problem(
        "Stripe key",
        "Stripe refuses the test-mode key",
        "https://dashboard.stripe.com/test/apikeys",
    );
    assert!(!r.out.contains("sk_test_revoked1234"), "{}", r.out);
}
