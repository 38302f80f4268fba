//! What webhook events do, through real clients: token packs (ours, free, sold elsewhere),
//! async payments, payment failures told to the app, unknown prices and event types, and
//! reprocessing (signatures and entry points: webhook_signatures.rs).
mod webhook_support;

use serde_json::{json, Value};
use stripe_billing_tests::events::{self, unix_now, Invoice, Line, Period, Shape};
use stripe_billing_tests::pg::{listen, Caller};
use stripe_emulator::store::ids;
use webhook_support::*;

#[tokio::test]
async fn our_token_pack_grants_what_its_request_promised_once() {
    for shape in Shape::ALL {
        let (db, owner) = setup().await;
        let request = request_pack(&db, 2).await;
        let session = ids::checkout_session();
        let event = pack_event(
            shape,
            "checkout.session.completed",
            &session,
            "paid",
            Some(&request),
        );
        let first = events::deliver(&owner, &event).await.unwrap();
        assert_eq!(
            first,
            json!({"received": true, "event_id": event["id"], "type": "checkout.session.completed",
                   "duplicate": false, "processed": true, "error": null, "code": null})
        );
        let again = events::deliver(&owner, &event).await.unwrap();
        assert_eq!(again["duplicate"], true);
        assert_eq!(balance(&owner).await, 1000, "2 x 500, as requested");
        let row = owner
            .query_one(
                "SELECT source, grant_key, metadata, expires_at IS NULL FROM billing.token_grants",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "payg_purchase");
        assert_eq!(row.get::<_, String>(1), session);
        let metadata: Value = row.get(2);
        assert_eq!(metadata["session_id"], json!(session));
        assert_eq!(metadata["request_id"], json!(request));
        assert_eq!(metadata["amount_paid"], 900);
        assert!(
            metadata["payment_intent"]
                .as_str()
                .unwrap()
                .starts_with("pi_"),
            "{metadata}"
        );
        assert!(row.get::<_, bool>(3), "packs never expire");
        let linked = count(&owner, &format!("SELECT count(*) FROM billing.customers WHERE user_id = '{USER}' AND stripe_customer_id = '{CUSTOMER}'")).await;
        assert_eq!(linked, 1);
        // No Stripe call was needed: the request said what was bought.
        assert_eq!(
            count(
                &owner,
                "SELECT count(*) FROM billing.stripe_requests WHERE kind = 'line_items'"
            )
            .await,
            0
        );
    }
}

#[tokio::test]
async fn a_free_pack_is_granted_without_payment() {
    // Stripe completes a 100%-off payment-mode session with payment_status no_payment_required
    // and sends nothing else: fulfil unless the session is unpaid.
    let (db, owner) = setup().await;
    let request = request_pack(&db, 1).await;
    let event = pack_event(
        Shape::Basil,
        "checkout.session.completed",
        &ids::checkout_session(),
        "no_payment_required",
        Some(&request),
    );
    let answer = events::deliver(&owner, &event).await.unwrap();
    assert_eq!(answer["processed"], true, "{answer}");
    assert_eq!(balance(&owner).await, 500);
}

#[tokio::test]
async fn a_pack_sold_elsewhere_is_granted_from_the_line_items_stripe_reports() {
    // A Payment Link or a session created in the Dashboard: no metadata of ours, and webhooks do
    // not carry line items, so the worker retrieves them and the event waits until then.
    let (_db, owner) = setup().await;
    let session = ids::checkout_session();
    let event = pack_event(
        Shape::V2023,
        "checkout.session.completed",
        &session,
        "paid",
        None,
    );
    let answer = events::deliver(&owner, &event).await.unwrap();
    assert_eq!(answer["processed"], false);
    assert_eq!(answer["code"], "BL010", "{answer}");
    assert_eq!(balance(&owner).await, 0);
    let wanted = owner
        .query(
            "SELECT user_id::text, params ->> 'object_id' FROM billing.stripe_requests WHERE kind = 'line_items'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(wanted.len(), 1);
    assert_eq!(wanted[0].get::<_, String>(0), USER);
    assert_eq!(wanted[0].get::<_, String>(1), session);
    // A redelivery asks for nothing more while the retrieval is pending.
    events::deliver(&owner, &event).await.unwrap();
    assert_eq!(
        count(&owner, "SELECT count(*) FROM billing.stripe_requests").await,
        1
    );

    // Stripe's answer to GET /v1/checkout/sessions/{id}/line_items: 3 packs and an unrelated item.
    let line_items = json!({"object": "list", "has_more": false, "url": format!("/v1/checkout/sessions/{session}/line_items"),
        "data": [
            {"id": "li_1", "object": "item", "price": {"id": "price_pack", "object": "price"}, "quantity": 3,
             "amount_total": 2700, "currency": "usd"},
            {"id": "li_2", "object": "item", "price": {"id": "price_sticker", "object": "price"}, "quantity": 1,
             "amount_total": 300, "currency": "usd"}]});
    let applied: i32 = owner
        .query_one(
            "SELECT billing.store_line_items($1, $2)",
            &[&session, &line_items],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 1);
    assert_eq!(
        balance(&owner).await,
        1500,
        "3 x 500; the sticker sells no tokens"
    );
    events::deliver(&owner, &event).await.unwrap();
    assert_eq!(balance(&owner).await, 1500, "granted once");
}

#[tokio::test]
async fn async_payment_grants_only_when_it_succeeds() {
    let (db, owner) = setup().await;
    let request = request_pack(&db, 1).await;
    let session = ids::checkout_session();
    let unpaid = pack_event(
        Shape::Basil,
        "checkout.session.completed",
        &session,
        "unpaid",
        Some(&request),
    );
    events::deliver(&owner, &unpaid).await.unwrap();
    assert_eq!(balance(&owner).await, 0, "unpaid sessions wait");
    let ok = pack_event(
        Shape::Basil,
        "checkout.session.async_payment_succeeded",
        &session,
        "paid",
        Some(&request),
    );
    events::deliver(&owner, &ok).await.unwrap();
    events::deliver(&owner, &ok).await.unwrap();
    assert_eq!(balance(&owner).await, 500);

    // A failed async payment grants nothing and tells the app.
    let (_listener, mut notes) = listen(&db.dsn, "billing_notifications").await;
    let request2 = request_pack(&db, 1).await;
    let session2 = ids::checkout_session();
    let unpaid2 = pack_event(
        Shape::V2023,
        "checkout.session.completed",
        &session2,
        "unpaid",
        Some(&request2),
    );
    let failed = pack_event(
        Shape::V2023,
        "checkout.session.async_payment_failed",
        &session2,
        "unpaid",
        Some(&request2),
    );
    events::deliver(&owner, &unpaid2).await.unwrap();
    events::deliver(&owner, &failed).await.unwrap();
    events::deliver(&owner, &failed).await.unwrap();
    assert_eq!(balance(&owner).await, 500);
    let note = notes.recv().await.unwrap().payload().to_string();
    let row = owner
        .query_one(
            "SELECT user_id::text, kind, payload ->> 'session_id', event_id FROM billing.notifications WHERE id = $1::text::bigint",
            &[&note],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), USER);
    assert_eq!(row.get::<_, String>(1), "payment_failed");
    assert_eq!(row.get::<_, String>(2), session2);
    assert_eq!(row.get::<_, String>(3), failed["id"].as_str().unwrap());
    assert_eq!(
        count(&owner, "SELECT count(*) FROM billing.notifications").await,
        1,
        "once per event"
    );
}

fn subscription_invoice(event_type: &str, sub: &str, paid: bool, extra: Value) -> Value {
    let p = Period {
        start: unix_now(),
        end: unix_now() + 30 * 86_400,
    };
    let mut invoice = events::invoice(
        Shape::Basil,
        &Invoice {
            id: &ids::long("in"),
            subscription: sub,
            customer: CUSTOMER,
            billing_reason: "subscription_cycle",
            paid,
            lines: vec![Line {
                price_id: "price_basic",
                amount: 1000,
                proration: false,
                period: p,
            }],
            user_id: Some(USER),
        },
    );
    if let (Some(o), Value::Object(extra)) = (invoice.as_object_mut(), extra) {
        o.extend(extra);
    }
    events::event(Shape::Basil, event_type, unix_now(), invoice)
}

#[tokio::test]
async fn failed_and_blocked_payments_notify_the_app_with_ids_only() {
    let (db, owner) = setup().await;
    let (_listener, mut notes) = listen(&db.dsn, "billing_notifications").await;
    let sub = ids::long("sub");
    let url = "https://invoice.stripe.com/i/acct_1/test_YWNjdF8x";
    let failed = subscription_invoice(
        "invoice.payment_failed",
        &sub,
        false,
        json!({"hosted_invoice_url": url}),
    );
    let action = subscription_invoice(
        "invoice.payment_action_required",
        &sub,
        false,
        json!({"hosted_invoice_url": url}),
    );
    for event in [&failed, &action, &failed] {
        let answer = events::deliver(&owner, event).await.unwrap();
        assert_eq!(answer["processed"], true, "{answer}");
    }
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let id = notes.recv().await.unwrap().payload().to_string();
        assert!(
            id.parse::<i64>().is_ok(),
            "the NOTIFY payload is the row id, never a user id: {id}"
        );
        let row = owner
            .query_one(
                "SELECT kind, user_id::text, payload ->> 'hosted_invoice_url', payload ->> 'subscription_id'
                 FROM billing.notifications WHERE id = $1::text::bigint",
                &[&id],
            )
            .await
            .unwrap();
        kinds.push(row.get::<_, String>(0));
        assert_eq!(row.get::<_, String>(1), USER);
        assert_eq!(row.get::<_, String>(2), url);
        assert_eq!(row.get::<_, String>(3), sub);
    }
    kinds.sort();
    assert_eq!(kinds, ["payment_action_required", "payment_failed"]);
    assert_eq!(
        count(&owner, "SELECT count(*) FROM billing.notifications").await,
        2
    );
    // The subscription's status is Stripe's to report (customer.subscription.updated), not the
    // invoice's; nothing was granted.
    let status: Option<String> = owner
        .query_one(
            "SELECT status FROM billing.subscriptions WHERE stripe_subscription_id = $1",
            &[&sub],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, None);
    assert_eq!(
        count(&owner, "SELECT count(*) FROM billing.token_grants").await,
        0
    );
    // The user reads their own notifications; another user sees none.
    let mut api = db.api().await;
    for (who, expected) in [(USER.parse().unwrap(), 2i64), (uuid::Uuid::new_v4(), 0)] {
        let rows = api
            .call(
                &Caller::User(who),
                "SELECT count(*) FROM billing.notifications",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), expected);
    }
}

#[tokio::test]
async fn unknown_price_is_stored_with_its_error_and_reprocessed_exactly_once() {
    let (_db, owner) = setup().await;
    let session = ids::checkout_session();
    let event = pack_event(
        Shape::V2023,
        "checkout.session.completed",
        &session,
        "paid",
        None,
    );
    events::deliver(&owner, &event).await.unwrap();
    let line_items = json!({"object": "list", "data": [
        {"object": "item", "price": {"id": "price_new"}, "quantity": 1, "amount_total": 900, "currency": "usd"}]});
    owner
        .execute(
            "SELECT billing.store_line_items($1, $2)",
            &[&session, &line_items],
        )
        .await
        .unwrap();
    let row = owner
        .query_one(
            "SELECT error, error_code FROM billing.stripe_events WHERE id = $1",
            &[&event["id"].as_str().unwrap()],
        )
        .await
        .unwrap();
    assert!(row.get::<_, String>(0).contains("unknown price price_new"));
    assert_eq!(row.get::<_, String>(1), "BL006", "stored with its SQLSTATE");
    assert_eq!(balance(&owner).await, 0);
    assert_eq!(
        reprocess(&owner).await,
        json!({"reprocessed": 1, "succeeded": 0, "still_failing": 1, "waiting": 0})
    );

    owner
        .batch_execute("INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES ('pack2', 'price_new', 'New pack', 'token_pack', 300)")
        .await
        .unwrap();
    assert_eq!(
        reprocess(&owner).await,
        json!({"reprocessed": 1, "succeeded": 1, "still_failing": 0, "waiting": 0})
    );
    assert_eq!(reprocess(&owner).await["reprocessed"], 0);
    events::deliver(&owner, &event).await.unwrap();
    assert_eq!(balance(&owner).await, 300, "granted exactly once");
    let row = owner.query_one("SELECT error IS NULL AND error_code IS NULL, processed_at IS NOT NULL, attempts FROM billing.stripe_events WHERE id = $1", &[&event["id"].as_str().unwrap()]).await.unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    assert_eq!(
        row.get::<_, i32>(2),
        4,
        "delivery, line items, two reprocess runs"
    );
}

#[tokio::test]
async fn unknown_event_types_are_stored_and_acknowledged() {
    let (_db, owner) = setup().await;
    let event = events::envelope(
        Shape::Basil,
        "evt_x1",
        "price.created",
        1_700_000_000,
        json!({"id": "price_x", "object": "price"}),
    );
    let answer = events::deliver(&owner, &event).await.unwrap();
    assert_eq!(answer["processed"], true);
    assert_eq!(answer["error"], Value::Null);
    let row = owner.query_one("SELECT type, api_version, livemode, created = to_timestamp(1700000000), payload -> 'data' -> 'object' ->> 'id' FROM billing.stripe_events", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "price.created");
    assert_eq!(row.get::<_, String>(1), "2025-03-31.basil");
    assert!(!row.get::<_, bool>(2));
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, String>(4), "price_x");
}

#[tokio::test]
async fn events_of_strangers_do_not_stand_in_front_of_a_fixable_failure() {
    // A shared Stripe account: invoices of 30 customers this app never knew wait for a user
    // that will never come (BL007); then one of ours fails for an unknown price (BL006).
    let (_db, owner) = setup().await;
    for _ in 0..30 {
        let mut inv = subscription_invoice("invoice.paid", &ids::long("sub"), true, json!({}));
        inv["data"]["object"]["customer"] = json!(ids::long("cus"));
        inv["data"]["object"]["parent"]["subscription_details"]["metadata"] = json!({});
        events::deliver(&owner, &inv).await.unwrap();
    }
    let session = ids::checkout_session();
    let ours = pack_event(
        Shape::Basil,
        "checkout.session.completed",
        &session,
        "paid",
        None,
    );
    events::deliver(&owner, &ours).await.unwrap();
    let line_items = json!({"object": "list", "data": [
        {"object": "item", "price": {"id": "price_later"}, "quantity": 1, "amount_total": 900, "currency": "usd"}]});
    owner
        .execute(
            "SELECT billing.store_line_items($1, $2)",
            &[&session, &line_items],
        )
        .await
        .unwrap();
    owner
        .batch_execute("INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES ('later', 'price_later', 'Later', 'token_pack', 70)")
        .await
        .unwrap();
    // Even with a limit of 5, the fixable one is re-applied; the strangers are counted, not tried.
    let report: Value = owner
        .query_one("SELECT billing.reprocess_events(5)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        report,
        json!({"reprocessed": 1, "succeeded": 1, "still_failing": 0, "waiting": 30})
    );
    assert_eq!(balance(&owner).await, 70);
    let all: Value = owner
        .query_one(
            "SELECT billing.reprocess_events(5, include_waiting => true)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        all["reprocessed"], 5,
        "asked for: the waiting ones too, up to the limit"
    );
}
