//! Webhook ingestion through real clients: configuration, signature failures (nothing stored),
//! the PostgREST entry point, token packs, async payments, payment failures and reprocessing.
use futures_util::StreamExt;
use serde_json::{json, Value};
use stripe_billing_tests::events::{
    self, unix_now, Invoice, Line, Period, Session, Shape, TEST_SECRET,
};
use stripe_billing_tests::pg::{assert_error, Caller, TestDb};
use tokio_postgres::{AsyncMessage, Client};

const USER: &str = "0b7e8a62-5c1d-4e3f-8a9b-2c3d4e5f6a7b";

async fn setup() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ('{TEST_SECRET}');
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES
                 ('pack', 'price_pack', 'Pack', 'token_pack', 500);
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES
                 ('basic', 'price_basic', 'Basic', 'subscription', 1000);"
        ))
        .await
        .unwrap();
    (db, owner)
}

fn pack_event(
    shape: Shape,
    event_id: &str,
    event_type: &str,
    session: &str,
    paid: bool,
    price: &str,
) -> Value {
    let object = events::checkout_session(
        shape,
        &Session {
            id: session,
            mode: "payment",
            payment_status: if paid { "paid" } else { "unpaid" },
            customer: "cus_pack1",
            user_id: Some(USER),
            price_id: price,
            subscription: None,
            invoice: None,
            amount_total: 900,
        },
    );
    events::envelope(shape, event_id, event_type, 1_700_000_000, object)
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn balance(client: &Client) -> i64 {
    count(client, &format!("SELECT billing.token_balance('{USER}')")).await
}

async fn raw_deliver(
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

#[tokio::test]
async fn without_a_secret_billing_is_not_configured_and_nothing_is_stored() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    let event = pack_event(
        Shape::Basil,
        "evt_nc1",
        "checkout.session.completed",
        "cs_nc1",
        true,
        "price_pack",
    );
    assert_error(
        events::deliver(&owner, &event).await,
        "BL003",
        "billing is not configured",
    );
    assert_eq!(
        count(&owner, "SELECT count(*) FROM billing.stripe_events").await,
        0
    );
    // Everything else keeps working.
    owner
        .batch_execute(&format!("SELECT billing.grant_tokens('{USER}', 5)"))
        .await
        .unwrap();
    assert_eq!(balance(&owner).await, 5);
}

#[tokio::test]
async fn token_pack_purchase_grants_once_with_session_metadata() {
    for shape in Shape::ALL {
        let (_db, owner) = setup().await;
        let event = pack_event(
            shape,
            "evt_p1",
            "checkout.session.completed",
            "cs_p1",
            true,
            "price_pack",
        );
        let first = events::deliver(&owner, &event).await.unwrap();
        assert_eq!(
            first,
            json!({"received": true, "event_id": "evt_p1", "type": "checkout.session.completed",
                                 "duplicate": false, "processed": true, "error": null})
        );
        let again = events::deliver(&owner, &event).await.unwrap();
        assert_eq!(again["duplicate"], true);
        assert_eq!(balance(&owner).await, 500);
        let row = owner
            .query_one(
                "SELECT source, grant_key, metadata, expires_at IS NULL FROM billing.token_grants",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "payg_purchase");
        assert_eq!(row.get::<_, String>(1), "cs_p1");
        let metadata: Value = row.get(2);
        assert_eq!(metadata["session_id"], "cs_p1");
        assert_eq!(metadata["amount_paid"], 900);
        assert!(row.get::<_, bool>(3), "packs never expire");
        let linked = count(&owner, &format!("SELECT count(*) FROM billing.customers WHERE user_id = '{USER}' AND stripe_customer_id = 'cus_pack1'")).await;
        assert_eq!(linked, 1);
    }
}

#[tokio::test]
async fn async_payment_grants_only_when_it_succeeds() {
    let (db, owner) = setup().await;
    let listener = db.owner().await;
    let unpaid = pack_event(
        Shape::Basil,
        "evt_a1",
        "checkout.session.completed",
        "cs_a1",
        false,
        "price_pack",
    );
    events::deliver(&owner, &unpaid).await.unwrap();
    assert_eq!(balance(&owner).await, 0, "unpaid sessions wait");
    let ok = pack_event(
        Shape::Basil,
        "evt_a2",
        "checkout.session.async_payment_succeeded",
        "cs_a1",
        true,
        "price_pack",
    );
    events::deliver(&owner, &ok).await.unwrap();
    events::deliver(&owner, &ok).await.unwrap();
    assert_eq!(balance(&owner).await, 500);

    // A failed async payment grants nothing and tells the app.
    let (client, mut notes) = listen(&db, "billing_payment_failed").await;
    let unpaid2 = pack_event(
        Shape::V2023,
        "evt_a3",
        "checkout.session.completed",
        "cs_a2",
        false,
        "price_pack",
    );
    let failed = pack_event(
        Shape::V2023,
        "evt_a4",
        "checkout.session.async_payment_failed",
        "cs_a2",
        false,
        "price_pack",
    );
    events::deliver(&listener, &unpaid2).await.unwrap();
    events::deliver(&listener, &failed).await.unwrap();
    assert_eq!(balance(&owner).await, 500);
    assert_eq!(notes.recv().await.as_deref(), Some(USER));
    drop(client);
}

/// LISTENs on `channel` on a new connection and forwards notification payloads.
async fn listen(
    db: &TestDb,
    channel: &str,
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(&db.dsn, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = stream.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();
    (client, rx)
}

#[tokio::test]
async fn payment_failure_marks_past_due_and_notifies_the_app() {
    let (db, owner) = setup().await;
    let (_listener, mut notes) = listen(&db, "billing_payment_failed").await;
    let p = Period {
        start: 1_700_000_000,
        end: 1_702_592_000,
    };
    let failed = events::envelope(
        Shape::Basil,
        "evt_f1",
        "invoice.payment_failed",
        1_700_000_100,
        events::invoice(
            Shape::Basil,
            &Invoice {
                id: "in_f1",
                subscription: "sub_f1",
                customer: "cus_f1",
                billing_reason: "subscription_cycle",
                paid: false,
                lines: vec![Line {
                    price_id: "price_basic",
                    amount: 1000,
                    proration: false,
                    period: p,
                }],
                user_id: Some(USER),
            },
        ),
    );
    let answer = events::deliver(&owner, &failed).await.unwrap();
    assert_eq!(answer["processed"], true);
    let status: String = owner
        .query_one(
            "SELECT status FROM billing.subscriptions WHERE stripe_subscription_id = 'sub_f1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "past_due");
    assert_eq!(notes.recv().await.as_deref(), Some(USER));
    assert_eq!(
        count(&owner, "SELECT count(*) FROM billing.token_grants").await,
        0
    );
}

#[tokio::test]
async fn unknown_price_is_stored_with_its_error_and_reprocessed_exactly_once() {
    let (_db, owner) = setup().await;
    let event = pack_event(
        Shape::V2023,
        "evt_u1",
        "checkout.session.completed",
        "cs_u1",
        true,
        "price_new",
    );
    let answer = events::deliver(&owner, &event).await.unwrap();
    assert_eq!(
        answer["received"], true,
        "still acknowledged so Stripe stops retrying"
    );
    assert_eq!(answer["processed"], false);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("unknown price price_new"),
        "{answer}"
    );
    assert_eq!(balance(&owner).await, 0);

    let nothing = owner
        .query_one("SELECT billing.reprocess_events()", &[])
        .await
        .unwrap()
        .get::<_, Value>(0);
    assert_eq!(
        nothing,
        json!({"reprocessed": 1, "succeeded": 0, "still_failing": 1})
    );

    owner
        .batch_execute("INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES ('pack2', 'price_new', 'New pack', 'token_pack', 300)")
        .await
        .unwrap();
    let fixed: Value = owner
        .query_one("SELECT billing.reprocess_events()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        fixed,
        json!({"reprocessed": 1, "succeeded": 1, "still_failing": 0})
    );
    let again: Value = owner
        .query_one("SELECT billing.reprocess_events()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again["reprocessed"], 0);
    events::deliver(&owner, &event).await.unwrap();
    assert_eq!(balance(&owner).await, 300, "granted exactly once");
    let row = owner.query_one("SELECT error IS NULL, processed_at IS NOT NULL, attempts FROM billing.stripe_events WHERE id = 'evt_u1'", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i32>(2), 3);
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
async fn bad_signatures_raise_and_store_nothing() {
    let (_db, owner) = setup().await;
    let event = pack_event(
        Shape::Basil,
        "evt_s1",
        "checkout.session.completed",
        "cs_s1",
        true,
        "price_pack",
    );
    let (body, header) = events::signed(&event, TEST_SECRET);
    let tampered = body.replacen("900", "901", 1);
    assert_error(
        raw_deliver(&owner, &tampered, &header).await,
        "28P01",
        "no signature",
    );
    let (_, wrong) = events::signed(&event, "whsec_wrong");
    assert_error(
        raw_deliver(&owner, &body, &wrong).await,
        "28P01",
        "no signature",
    );
    let stale = stripe_billing_core::signature::signature_header(
        body.as_bytes(),
        TEST_SECRET,
        1_600_000_000,
    );
    assert_error(
        raw_deliver(&owner, &body, &stale).await,
        "22008",
        "outside the tolerance zone",
    );
    assert_error(
        raw_deliver(&owner, &body, "").await,
        "28000",
        "no Stripe-Signature header",
    );
    assert_error(
        raw_deliver(&owner, &body, "t=abc,v1=00").await,
        "22P02",
        "malformed",
    );
    let v0_only = header.replace("v1=", "v0=");
    assert_error(
        raw_deliver(&owner, &body, &v0_only).await,
        "22023",
        "no v1 signatures",
    );
    assert_eq!(
        count(&owner, "SELECT count(*) FROM billing.stripe_events").await,
        0
    );
    assert_eq!(balance(&owner).await, 0);
}

#[tokio::test]
async fn verified_bodies_that_are_not_events_are_rejected() {
    let (_db, owner) = setup().await;
    for (body, code, needle) in [
        ("not json at all", "22P02", "not valid JSON"),
        (
            r#"{"object":"customer","id":"cus_1"}"#,
            "22023",
            "not a Stripe event",
        ),
    ] {
        let header = stripe_billing_core::signature::signature_header(
            body.as_bytes(),
            TEST_SECRET,
            unix_now(),
        );
        assert_error(raw_deliver(&owner, body, &header).await, code, needle);
    }
    assert_eq!(
        count(&owner, "SELECT count(*) FROM billing.stripe_events").await,
        0
    );
}

#[tokio::test]
async fn rotated_secrets_and_modes() {
    let (_db, owner) = setup().await;
    owner
        .batch_execute(
            "INSERT INTO billing.webhook_secrets (secret, expires_at) VALUES ('whsec_retired', now() - interval '1 minute');
             INSERT INTO billing.webhook_secrets (secret) VALUES ('whsec_next');
             INSERT INTO billing.webhook_secrets (secret, livemode) VALUES ('whsec_live', true);",
        )
        .await
        .unwrap();
    let event = pack_event(
        Shape::Basil,
        "evt_r1",
        "checkout.session.completed",
        "cs_r1",
        true,
        "price_pack",
    );
    // During rotation Stripe sends one v1 per secret; the new secret alone also works.
    let (body, old_header) = events::signed(&event, TEST_SECRET);
    let (_, new_header) = events::signed(&event, "whsec_next");
    let both = format!("{old_header},{}", new_header.split_once(',').unwrap().1);
    raw_deliver(&owner, &body, &both).await.unwrap();
    let event2 = pack_event(
        Shape::Basil,
        "evt_r2",
        "checkout.session.completed",
        "cs_r2",
        true,
        "price_pack",
    );
    let (body2, header2) = events::signed(&event2, "whsec_next");
    raw_deliver(&owner, &body2, &header2).await.unwrap();
    assert_eq!(balance(&owner).await, 1000);
    // An expired secret no longer verifies.
    let event3 = pack_event(
        Shape::Basil,
        "evt_r3",
        "checkout.session.completed",
        "cs_r3",
        true,
        "price_pack",
    );
    let (body3, header3) = events::signed(&event3, "whsec_retired");
    assert_error(
        raw_deliver(&owner, &body3, &header3).await,
        "28P01",
        "no signature",
    );
    // A test-mode event signed with the live secret is refused.
    let (body4, header4) = events::signed(&event3, "whsec_live");
    assert_error(
        raw_deliver(&owner, &body4, &header4).await,
        "28000",
        "signed with a live-mode secret",
    );
    assert_eq!(
        count(&owner, "SELECT count(*) FROM billing.stripe_events").await,
        2
    );
}

#[tokio::test]
async fn postgrest_entry_point_reads_the_header_and_keeps_the_raw_bytes() {
    let (db, owner) = setup().await;
    let mut api = db.api().await;
    let event = pack_event(
        Shape::Basil,
        "evt_pg1",
        "checkout.session.completed",
        "cs_pg1",
        true,
        "price_pack",
    );
    // Pretty-printed, with unicode: json keeps these bytes exactly, jsonb would not.
    let mut event_with_unicode = event.clone();
    event_with_unicode["data"]["object"]["customer_details"]["name"] =
        json!("Zoë “quoted” \u{1F680}");
    let (body, header) = events::signed(&event_with_unicode, TEST_SECRET);
    let headers =
        json!({"stripe-signature": header, "content-type": "application/json"}).to_string();
    // What PostgREST runs for POST /rpc/stripe_webhook with a JSON body.
    let call = "SELECT billing.stripe_webhook($1::text::json)";
    let rows = api
        .call_with_headers(&Caller::Anon, &headers, call, &[&body])
        .await
        .unwrap();
    let answer: Value = rows[0].get(0);
    assert_eq!(answer["processed"], true, "{answer}");
    assert_eq!(balance(&owner).await, 500);

    let no_header = json!({"content-type": "application/json"}).to_string();
    assert_error(
        api.call_with_headers(&Caller::Anon, &no_header, call, &[&body])
            .await,
        "28000",
        "no Stripe-Signature header",
    );
    // anon can reach nothing else.
    assert_error(
        api.call(
            &Caller::Anon,
            "SELECT billing.handle_stripe_webhook($1, $2)",
            &[&body, &header],
        )
        .await,
        "42501",
        "permission denied",
    );
}

#[tokio::test]
async fn the_stored_payload_is_the_exact_body_stripe_signed() {
    let (_db, owner) = setup().await;
    let mut event = events::envelope(
        Shape::Basil,
        "evt_raw1",
        "customer.updated",
        1_700_000_000,
        json!({"id": "cus_raw", "object": "customer", "name": "Zoë \u{1F680}", "note": "a\"b\\c"}),
    );
    event["extra"] = json!({"z": 1, "a": [1.50, 2]});
    let (body, header) = events::signed(&event, TEST_SECRET);
    raw_deliver(&owner, &body, &header).await.unwrap();
    let stored: String = owner
        .query_one(
            "SELECT payload::text FROM billing.stripe_events WHERE id = 'evt_raw1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored, body,
        "kept byte for byte (jsonb would reorder keys and respace)"
    );
}
