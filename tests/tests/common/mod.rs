//! Seeding helpers shared by the integration tests. Rows are inserted by the owner (a
//! superuser), the way an operator or the webhook handler would create them.
#![allow(dead_code)]

use tokio_postgres::Client;
use uuid::Uuid;

/// The catalog most tests use: subscription plan `pro` (price_pro, 1000 tokens a month) and
/// token pack `pack` (price_pack, 500 tokens), both active; the coupon SPRING_10 on offer; and
/// the app's site https://app.example.test as the allowed redirect origin.
pub async fn seed_plans(owner: &Client) {
    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens, tokens) VALUES
                ('pro', 'price_pro', 'Pro', 'subscription', 1000, NULL),
                ('pack', 'price_pack', 'Pack', 'token_pack', NULL, 500);
             INSERT INTO billing.coupons (id, description) VALUES ('SPRING_10', '10% off in spring');
             INSERT INTO billing.config (redirect_origins) VALUES ('{https://app.example.test}');",
        )
        .await
        .expect("seed plans");
}

/// A project owned by `user`.
pub async fn add_project(owner: &Client, user: Uuid) -> Uuid {
    let id = Uuid::new_v4();
    owner
        .execute(
            "INSERT INTO billing.projects (id, user_id, name) VALUES ($1, $2, 'test project')",
            &[&id, &user],
        )
        .await
        .expect("insert project");
    id
}

/// Links `user` to the Stripe customer `stripe_customer_id`.
pub async fn add_customer(owner: &Client, user: Uuid, stripe_customer_id: &str) {
    owner
        .execute(
            "INSERT INTO billing.customers (user_id, stripe_customer_id) VALUES ($1, $2)",
            &[&user, &stripe_customer_id],
        )
        .await
        .expect("insert customer");
}

/// A subscription to plan `pro` for `user` with the given Stripe status.
pub async fn add_subscription(
    owner: &Client,
    user: Uuid,
    stripe_subscription_id: &str,
    status: &str,
) {
    owner
        .execute(
            "INSERT INTO billing.subscriptions (stripe_subscription_id, user_id, plan_id, stripe_price_id, status)
             VALUES ($1, $2, 'pro', 'price_pro', $3)",
            &[&stripe_subscription_id, &user, &status],
        )
        .await
        .expect("insert subscription");
}

/// Queues a bare request row for `user` directly (what request_checkout would insert).
pub async fn add_request(owner: &Client, user: Uuid, kind: &str) -> Uuid {
    owner
        .query_one(
            "INSERT INTO billing.stripe_requests (user_id, kind) VALUES ($1, $2) RETURNING id",
            &[&user, &kind],
        )
        .await
        .expect("insert request")
        .get(0)
}

/// Sets billing.config columns (one row) with an `INSERT ... ON CONFLICT` of the given
/// `column = value` SQL fragment, e.g. `"request_max_attempts = 2"`.
pub async fn set_config(owner: &Client, assignment: &str) {
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.config (id) VALUES (true) ON CONFLICT DO NOTHING;
             UPDATE billing.config SET {assignment}"
        ))
        .await
        .expect("set billing.config");
}
