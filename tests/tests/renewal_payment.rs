//! Which payment paid a basil renewal is learned without a Stripe call per renewal (issue 20):
//! from `invoice_payment.paid` where the endpoint gets it, otherwise only when a refund or
//! dispute needs it (the worker lists the PaymentIntent's invoice payments; the refund is
//! recorded at once and takes its share when the answer links the purchase). One payment that paid several invoices is reversed once, per charge.
//!
//! Events are basil-shaped (2025-03-31; from basil invoice events name no payment), built on the
//! emulator's object templates; the worker's answer is stored through its own function
//! (`billing.store_invoice_payments`). The worker and the emulator serving it end to end are in
//! worker_e2e.rs.
mod common;
mod refunds_support;
mod worker_support;

use refunds_support::{assert_books, balance, setup};
use serde_json::{json, Value};
use stripe_billing_tests::events::unix_now;
use stripe_billing_tests::events::{self, Shape};
use stripe_emulator::render::Templates;
use stripe_emulator::store::ids;
use tokio_postgres::Client;
use uuid::Uuid;

/// A basil object of `resource` (every field the version has) with `fields` set.
fn object(resource: &str, fields: Value) -> Value {
    let mut o = Templates::load().get(Shape::Basil, resource);
    for (k, v) in fields.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

async fn deliver(owner: &Client, event_type: &str, object: Value) -> Value {
    let answer = events::deliver(
        owner,
        &events::event(Shape::Basil, event_type, unix_now(), object),
    )
    .await
    .expect("acknowledged");
    assert_eq!(answer["received"], true, "{answer}");
    answer
}

/// A paid basil renewal of `amount` cents for price_pro (1000 tokens) of `user`; its id.
async fn renewal(owner: &Client, user: Uuid, customer: &str, amount: i64) -> String {
    let id = ids::long("in");
    let now = unix_now();
    let invoice = events::invoice(
        Shape::Basil,
        &events::Invoice {
            id: &id,
            subscription: &ids::long("sub"),
            customer,
            billing_reason: "subscription_cycle",
            paid: true,
            lines: vec![events::Line {
                price_id: "price_pro",
                amount,
                proration: false,
                period: events::Period {
                    start: now,
                    end: now + 2_592_000,
                },
            }],
            user_id: Some(&user.to_string()),
        },
    );
    let answer = deliver(owner, "invoice.paid", invoice).await;
    assert_eq!(answer["processed"], true, "{answer}");
    id
}

fn invoice_payment(invoice: &str, intent: &str, amount_paid: i64) -> Value {
    object(
        "invoice_payment",
        json!({"id": ids::long("inpay"), "invoice": invoice, "amount_paid": amount_paid,
               "amount_requested": amount_paid, "currency": "usd", "status": "paid", "is_default": true,
               "created": unix_now(), "payment": {"type": "payment_intent", "payment_intent": intent}}),
    )
}

fn refund(charge: &str, intent: &str, amount: i64) -> Value {
    object(
        "refund",
        json!({"id": ids::long("re"), "charge": charge, "payment_intent": intent, "amount": amount,
               "currency": "usd", "status": "succeeded", "created": unix_now()}),
    )
}

async fn one(owner: &Client, sql: &str) -> i64 {
    owner.query_one(sql, &[]).await.unwrap().get(0)
}

/// Tokens revoked (net) from the grants of `purchase`.
async fn revoked(owner: &Client, purchase: &str) -> i64 {
    owner
        .query_one(
            "SELECT coalesce(sum(CASE kind WHEN 'revoke' THEN tokens ELSE -tokens END), 0)::bigint
             FROM billing.token_reversals WHERE purchase_id = $1",
            &[&purchase],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_basil_renewal_asks_stripe_for_nothing() {
    let (_db, owner) = setup().await;
    let user = Uuid::new_v4();
    for _ in 0..3 {
        renewal(&owner, user, &ids::long("cus"), 2000).await;
    }
    assert_eq!(balance(&owner, user).await, 3000);
    // 0.2.0 queued a retrieval of each invoice (GET /v1/invoices/{id}?expand[]=payments).
    assert_eq!(
        one(&owner, "SELECT count(*) FROM billing.stripe_requests").await,
        0,
        "no Stripe call per renewal"
    );
}

#[tokio::test]
async fn a_refund_of_a_renewal_nothing_links_asks_for_the_lookup_and_takes_its_share_with_the_answer(
) {
    let (_db, owner) = setup().await;
    let user = Uuid::new_v4();
    let invoice = renewal(&owner, user, &ids::long("cus"), 2000).await;
    let (charge, intent) = (ids::long("ch"), ids::long("pi"));
    // Two reports of the payment's money before anyone knows what it paid: both are recorded
    // (nothing waits), and the worker is asked once.
    for amount in [500, 300] {
        let answer = deliver(&owner, "refund.created", refund(&charge, &intent, amount)).await;
        assert_eq!(answer["processed"], true, "{answer}");
    }
    let asked = owner
        .query(
            "SELECT kind, params ->> 'object_id' FROM billing.stripe_requests WHERE status = 'pending'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(asked.len(), 1, "one lookup per payment");
    assert_eq!(asked[0].get::<_, String>(0), "refresh");
    assert_eq!(asked[0].get::<_, String>(1), intent);
    assert_eq!(balance(&owner, user).await, 1000, "nothing taken yet");

    // The worker's answer: GET /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]=pi_…
    let list = json!({"object": "list", "has_more": false, "url": "/v1/invoice_payments",
                      "data": [invoice_payment(&invoice, &intent, 2000)]});
    let invoices: i32 = owner
        .query_one(
            "SELECT billing.store_invoice_payments($1, $2)",
            &[&intent, &list],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(invoices, 1, "the payment paid one invoice");
    assert_eq!(
        balance(&owner, user).await,
        600,
        "800 of 2000 refunded, taken with the answer"
    );
    // Once looked up, a further report of that payment applies at once.
    let answer = deliver(&owner, "refund.created", refund(&charge, &intent, 200)).await;
    assert_eq!(answer["processed"], true, "{answer}");
    assert_eq!(balance(&owner, user).await, 500);
    assert_eq!(
        one(
            &owner,
            "SELECT count(*) FROM billing.stripe_events WHERE processed_at IS NULL"
        )
        .await,
        0
    );
    assert_books(&owner).await;
}

#[tokio::test]
async fn a_refund_of_a_payment_that_paid_none_of_ours_is_looked_up_once() {
    let (_db, owner) = setup().await;
    let intent = ids::long("pi");
    let answer = deliver(
        &owner,
        "refund.created",
        refund(&ids::long("ch"), &intent, 500),
    )
    .await;
    assert_eq!(answer["processed"], true, "{answer}");
    assert_eq!(
        one(
            &owner,
            "SELECT count(*) FROM billing.stripe_requests WHERE status = 'pending'"
        )
        .await,
        1,
        "the worker is asked which invoices it paid"
    );
    let empty =
        json!({"object": "list", "data": [], "has_more": false, "url": "/v1/invoice_payments"});
    owner
        .execute(
            "SELECT billing.store_invoice_payments($1, $2)",
            &[&intent, &empty],
        )
        .await
        .unwrap();
    let answer = deliver(
        &owner,
        "refund.created",
        refund(&ids::long("ch"), &intent, 100),
    )
    .await;
    assert_eq!(answer["processed"], true, "{answer}");
    assert_eq!(
        one(
            &owner,
            "SELECT count(*) FROM billing.stripe_events WHERE processed_at IS NULL"
        )
        .await,
        0,
        "nothing waits"
    );
    assert_eq!(
        one(&owner, "SELECT count(*) FROM billing.stripe_requests").await,
        1,
        "once looked up, never asked again"
    );
    // An answer about another payment is refused and changes nothing.
    let other = json!({"object": "list", "has_more": false, "url": "/v1/invoice_payments",
                       "data": [invoice_payment(&ids::long("in"), &ids::long("pi"), 100)]});
    let err = owner
        .execute(
            "SELECT billing.store_invoice_payments($1, $2)",
            &[&intent, &other],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22023", "{err}");
}

#[tokio::test]
async fn one_payment_that_paid_two_invoices_is_reversed_once_in_their_shares() {
    let (_db, owner) = setup().await;
    let user = Uuid::new_v4();
    let customer = ids::long("cus");
    let a = renewal(&owner, user, &customer, 1000).await;
    let b = renewal(&owner, user, &customer, 1000).await;
    let (charge, intent) = (ids::long("ch"), ids::long("pi"));
    // Basil: one PaymentIntent of 2000 paid both, 1000 each (invoice_payment.paid each).
    for inv in [&a, &b] {
        let answer = deliver(
            &owner,
            "invoice_payment.paid",
            invoice_payment(inv, &intent, 1000),
        )
        .await;
        assert_eq!(answer["processed"], true, "{answer}");
    }
    let refunded = object(
        "charge",
        json!({"id": charge, "payment_intent": intent, "amount": 2000, "amount_captured": 2000,
               "amount_refunded": 500, "refunded": false, "currency": "usd", "customer": customer,
               "status": "succeeded", "created": unix_now()}),
    );
    deliver(&owner, "charge.refunded", refunded).await;
    let answer = deliver(&owner, "refund.created", refund(&charge, &intent, 500)).await;
    assert_eq!(answer["processed"], true, "{answer}");
    // 500 of 2000 is a quarter of the charge: a quarter of each invoice's 1000 tokens, 500 in
    // all (not 500 of each, nor all of it from the first invoice).
    assert_eq!(revoked(&owner, &a).await, 250, "invoice A");
    assert_eq!(revoked(&owner, &b).await, 250, "invoice B");
    assert_eq!(balance(&owner, user).await, 1500);
    assert_books(&owner).await;
}
