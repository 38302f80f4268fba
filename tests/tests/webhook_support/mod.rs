//! Fixtures and helpers shared by webhook*.rs tests.
#![allow(dead_code)]

use serde_json::Value;
use stripe_billing_tests::events::{self, unix_now, Session, Shape, TEST_SECRET};
use stripe_billing_tests::pg::{Caller, TestDb};
use tokio_postgres::Client;

pub const USER: &str = "0b7e8a62-5c1d-4e3f-8a9b-2c3d4e5f6a7b";
pub const CUSTOMER: &str = "cus_Qv3nXh8Tr2LmWp";

pub async fn setup() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ('{TEST_SECRET}');
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES
                 ('pack', 'price_pack', 'Pack', 'token_pack', 500);
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES
                 ('basic', 'price_basic', 'Basic', 'subscription', 1000);
             INSERT INTO billing.config (checkout_success_url, checkout_cancel_url)
                 VALUES ('https://app.example.test/ok', 'https://app.example.test/no');"
        ))
        .await
        .unwrap();
    (db, owner)
}

/// A payment-mode session event for `USER` buying price_pack; `request` names the request our
/// checkout made it for (None: a session created elsewhere).
pub fn pack_event(
    shape: Shape,
    event_type: &str,
    session: &str,
    payment_status: &str,
    request: Option<&str>,
) -> Value {
    let object = events::checkout_session(
        shape,
        &Session {
            id: session,
            mode: "payment",
            payment_status,
            customer: CUSTOMER,
            user_id: Some(USER),
            price_id: "price_pack",
            subscription: None,
            invoice: None,
            amount_total: if payment_status == "no_payment_required" {
                0
            } else {
                900
            },
            request_id: request,
        },
    );
    events::event(shape, event_type, unix_now(), object)
}

/// What our checkout does first: the user asks for a pack; returns the request id.
pub async fn request_pack(db: &TestDb, quantity: i32) -> String {
    let mut api = db.api().await;
    let rows = api
        .call(
            &Caller::User(USER.parse().unwrap()),
            "SELECT billing.request_checkout('pack', quantity => $1)::text",
            &[&quantity],
        )
        .await
        .unwrap();
    rows[0].get(0)
}

pub async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

pub async fn balance(client: &Client) -> i64 {
    count(client, &format!("SELECT billing.token_balance('{USER}')")).await
}

pub async fn raw_deliver(
    client: &Client,
    body: &str,
    header: &str,
) -> Result<Value, tokio_postgres::Error> {
    client
        .query_one(
            "SELECT billing.handle_stripe_webhook($1, $2)",
            &[&body, &header],
        )
        .await
        .map(|r| r.get(0))
}

pub async fn reprocess(owner: &Client) -> Value {
    owner
        .query_one("SELECT billing.reprocess_events()", &[])
        .await
        .unwrap()
        .get(0)
}
