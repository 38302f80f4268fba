//! Subscription events in Stripe's real order and timing: same-second reports settled by the
//! lifecycle (or by asking Stripe), final states that stay final against late payments, paid
//! invoices that arrive before anything names their user, and deleted customers. Every case goes
//! through `handle_stripe_webhook` with Stripe-shaped random ids.
mod subscription_support;

use serde_json::{json, Value};
use stripe_billing_tests::events::{self, unix_now, Invoice, Session, Shape};
use stripe_billing_tests::pg::Caller;
use stripe_emulator::store::ids;
use subscription_support::*;
use uuid::Uuid;

#[tokio::test]
async fn same_second_reports_are_ordered_by_the_lifecycle_in_either_order() {
    let t = unix_now() + DAY;
    let p = period(t, 30);
    for (first, second, expected) in [
        ("incomplete", "active", "active"),
        ("active", "incomplete", "active"),
        ("active", "canceled", "canceled"),
        ("canceled", "active", "canceled"),
        ("incomplete", "incomplete_expired", "incomplete_expired"),
        ("past_due", "canceled", "canceled"),
    ] {
        let (_db, owner) = setup().await;
        let s = Subscriber::new(Shape::Basil);
        let ty = |status: &str| {
            if status == "canceled" {
                "customer.subscription.deleted"
            } else {
                "customer.subscription.updated"
            }
        };
        deliver(
            &owner,
            &s.subscription_event(ty(first), t, first, "price_basic", p),
        )
        .await;
        deliver(
            &owner,
            &s.subscription_event(ty(second), t, second, "price_basic", p),
        )
        .await;
        assert_eq!(
            status(&owner, &s).await.as_deref(),
            Some(expected),
            "{first} then {second}"
        );
    }
}

#[tokio::test]
async fn an_undecidable_same_second_pair_asks_stripe_and_its_answer_wins() {
    let (_db, owner) = setup().await;
    let s = Subscriber::new(Shape::V2023);
    let t = unix_now();
    let p = period(t - DAY, 30);
    deliver(
        &owner,
        &s.subscription_event(
            "customer.subscription.updated",
            t,
            "active",
            "price_basic",
            p,
        ),
    )
    .await;
    deliver(
        &owner,
        &s.subscription_event(
            "customer.subscription.updated",
            t,
            "past_due",
            "price_basic",
            p,
        ),
    )
    .await;
    deliver(
        &owner,
        &s.subscription_event(
            "customer.subscription.updated",
            t,
            "past_due",
            "price_basic",
            p,
        ),
    )
    .await;
    assert_eq!(
        status(&owner, &s).await.as_deref(),
        Some("active"),
        "kept until Stripe says"
    );
    let asked = owner
        .query(
            "SELECT id, user_id, params ->> 'object_id' FROM billing.stripe_requests WHERE kind = 'refresh'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(asked.len(), 1, "one retrieval, however many events ask");
    let request: Uuid = asked[0].get(0);
    assert_eq!(asked[0].get::<_, Uuid>(1), s.user);
    assert_eq!(asked[0].get::<_, String>(2), s.sub);

    // The worker retrieves the subscription: Stripe says past_due, as of its Date header.
    let object = s.object("past_due", "price_basic", p, json!({}));
    let answer: Value = owner
        .query_one(
            "SELECT billing.ingest_retrieved($1, $2, to_timestamp($3))",
            &[&request, &object, &((t + 1) as f64)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(answer["processed"], true, "{answer}");
    assert_eq!(status(&owner, &s).await.as_deref(), Some("past_due"));
    // Repeating the worker's call changes nothing, and an event older than Stripe's answer
    // cannot undo it.
    let again: Value = owner
        .query_one(
            "SELECT billing.ingest_retrieved($1, $2, to_timestamp($3))",
            &[&request, &object, &((t + 1) as f64)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(again["duplicate"], true);
    deliver(
        &owner,
        &s.subscription_event(
            "customer.subscription.updated",
            t,
            "active",
            "price_basic",
            p,
        ),
    )
    .await;
    assert_eq!(status(&owner, &s).await.as_deref(), Some("past_due"));
}

#[tokio::test]
async fn a_late_payment_never_resurrects_a_canceled_subscription() {
    // Dunning cancels the subscription; then the customer pays the open invoice from Stripe's
    // email. Stripe keeps the subscription canceled, and so do we; the user may subscribe again.
    let (db, owner) = setup().await;
    let s = Subscriber::new(Shape::Basil);
    let t = unix_now() - 5 * DAY;
    let p = period(t - 30 * DAY, 30);
    let (_, failed) = s.invoice(
        "invoice.payment_failed",
        t,
        "subscription_cycle",
        0,
        vec![line("price_basic", 1000, false, p)],
    );
    deliver(&owner, &failed).await;
    deliver(
        &owner,
        &s.subscription_event(
            "customer.subscription.updated",
            t,
            "past_due",
            "price_basic",
            p,
        ),
    )
    .await;
    deliver(
        &owner,
        &s.subscription_event(
            "customer.subscription.deleted",
            t + 3 * DAY,
            "canceled",
            "price_basic",
            p,
        ),
    )
    .await;
    let (_, paid) = s.invoice(
        "invoice.paid",
        t + 4 * DAY,
        "subscription_cycle",
        1000,
        vec![line("price_basic", 1000, false, p)],
    );
    deliver(&owner, &paid).await;
    deliver(
        &owner,
        &s.subscription_event(
            "customer.subscription.updated",
            t + 4 * DAY,
            "active",
            "price_basic",
            p,
        ),
    )
    .await;
    assert_eq!(status(&owner, &s).await.as_deref(), Some("canceled"));
    let mut api = db.api().await;
    api.call(
        &Caller::User(s.user),
        "SELECT billing.request_checkout('basic')",
        &[],
    )
    .await
    .expect("a canceled subscription does not block a new one");
    // The paid period's tokens are granted, usable for a day from now though the period is over.
    let got = grants(&owner, &s).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, 1000);
    assert!(got[0].2.unwrap() >= unix_now() + DAY - 60, "{got:?}");
}

#[tokio::test]
async fn a_paid_invoice_that_arrives_before_anything_names_its_user_is_granted_when_something_does()
{
    // A third-party Stripe delivers concurrently: the first invoice (without our metadata, on a
    // customer nobody linked) arrives before customer.subscription.created, whose metadata names
    // the user. It waits, and is applied as soon as that event is.
    let (_db, owner) = setup().await;
    let s = Subscriber::new(Shape::V2023);
    let t = unix_now();
    let p = period(t, 30);
    let mut invoice = events::invoice(
        s.shape,
        &Invoice {
            id: &ids::long("in"),
            subscription: &s.sub,
            customer: &s.customer,
            billing_reason: "subscription_create",
            paid: true,
            lines: vec![line("price_basic", 1000, false, p)],
            user_id: None,
        },
    );
    invoice["amount_paid"] = json!(1000);
    let answer = deliver(&owner, &events::event(s.shape, "invoice.paid", t, invoice)).await;
    assert_eq!(answer["code"], "BL007", "{answer}");
    deliver(
        &owner,
        &s.subscription_event(
            "customer.subscription.created",
            t,
            "active",
            "price_basic",
            p,
        ),
    )
    .await;
    assert_eq!(
        grants(&owner, &s)
            .await
            .iter()
            .map(|g| g.1)
            .collect::<Vec<_>>(),
        [1000]
    );
    let waiting: i64 = owner
        .query_one(
            "SELECT count(*) FROM billing.stripe_events WHERE processed_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0);
}

#[tokio::test]
async fn events_waiting_for_their_user_apply_when_reprocessing_makes_the_user_known() {
    // A Payment Link sale of a pack the catalog does not sell yet fails (BL006), and with it the
    // link of its customer to the user it names; the customer's first invoice, naming no user,
    // waits (BL007). The operator adds the pack and reprocesses: the sale applies, and what it
    // links wakes the waiting invoice at once, not at the customer's next event.
    let (_db, owner) = setup().await;
    let s = Subscriber::new(Shape::Basil);
    let user = s.user.to_string();
    let t = unix_now();
    let session = ids::checkout_session();
    let line_items = json!({"object": "list", "has_more": false, "data": [
        {"id": "li_1", "object": "item", "price": {"id": "price_credits", "object": "price"},
         "quantity": 1, "amount_total": 900, "currency": "usd"}]});
    owner
        .execute(
            "SELECT billing.store_line_items($1, $2)",
            &[&session, &line_items],
        )
        .await
        .unwrap();
    let sale = events::checkout_session(
        s.shape,
        &Session {
            id: &session,
            mode: "payment",
            payment_status: "paid",
            customer: &s.customer,
            user_id: Some(&user),
            price_id: "price_credits",
            subscription: None,
            invoice: None,
            amount_total: 900,
            request_id: None,
        },
    );
    let sale = events::event(s.shape, "checkout.session.completed", t, sale);
    assert_eq!(deliver(&owner, &sale).await["code"], "BL006");
    let mut invoice = events::invoice(
        s.shape,
        &Invoice {
            id: &ids::long("in"),
            subscription: &s.sub,
            customer: &s.customer,
            billing_reason: "subscription_create",
            paid: true,
            lines: vec![line("price_basic", 1000, false, period(t, 30))],
            user_id: None,
        },
    );
    invoice["amount_paid"] = json!(1000);
    let invoice = events::event(s.shape, "invoice.paid", t + 1, invoice);
    assert_eq!(deliver(&owner, &invoice).await["code"], "BL007");

    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens)
             VALUES ('credits', 'price_credits', 'Credits', 'token_pack', 300)",
        )
        .await
        .unwrap();
    let answer: Value = owner
        .query_one("SELECT billing.reprocess_events()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(answer["succeeded"], 1, "{answer}");
    assert_eq!(
        answer["waiting"], 0,
        "the invoice applied with the sale: {answer}"
    );
    let sources: Vec<(String, i64)> = grants(&owner, &s)
        .await
        .into_iter()
        .map(|g| (g.0, g.1))
        .collect();
    assert_eq!(
        sources,
        [
            ("payg_purchase".to_string(), 300),
            ("subscription_start".to_string(), 1000)
        ]
    );
}

#[tokio::test]
async fn a_deleted_customer_is_forgotten_for_good() {
    let (db, owner) = setup().await;
    let user = Uuid::new_v4();
    let customer = ids::customer();
    owner
        .execute("SELECT billing.link_customer($1, $2)", &[&user, &customer])
        .await
        .unwrap();
    let deleted = events::event(
        Shape::Basil,
        "customer.deleted",
        unix_now(),
        json!({"id": customer, "object": "customer", "deleted": true}),
    );
    deliver(&owner, &deleted).await;
    // A late customer.updated naming the user does not bring the link back.
    let late = events::event(
        Shape::Basil,
        "customer.updated",
        unix_now() - 60,
        json!({"id": customer, "object": "customer", "metadata": {"user_id": user.to_string()}}),
    );
    deliver(&owner, &late).await;
    let linked: i64 = owner
        .query_one(
            "SELECT count(*) FROM billing.customers WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(linked, 0);
    // The portal now needs a new purchase, which makes a new customer.
    let mut api = db.api().await;
    let err = api
        .call(
            &Caller::User(user),
            "SELECT billing.request_portal('https://app.example.test/me')",
            &[],
        )
        .await;
    stripe_billing_tests::pg::assert_error(err, "BL002", "no billing account yet");
    let fresh = ids::customer();
    owner
        .execute("SELECT billing.link_customer($1, $2)", &[&user, &fresh])
        .await
        .unwrap();
    stripe_billing_tests::pg::assert_error(
        owner
            .execute(
                "SELECT billing.link_customer($1, $2)",
                &[&Uuid::new_v4(), &customer],
            )
            .await,
        "BL008",
        "was deleted",
    );
}
