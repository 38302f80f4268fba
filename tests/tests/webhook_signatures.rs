//! The webhook entry points through real clients: without a secret nothing is stored, bad
//! signatures and verified non-events are refused and store nothing, secrets rotate and
//! carry their mode, and the PostgREST entry point keeps the exact signed bytes.
mod webhook_support;

use serde_json::{json, Value};
use stripe_billing_tests::events::{self, unix_now, Shape, TEST_SECRET};
use stripe_billing_tests::pg::{assert_error, Caller, TestDb};
use stripe_emulator::store::ids;
use webhook_support::*;

#[tokio::test]
async fn without_a_secret_billing_is_not_configured_and_nothing_is_stored() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    let event = pack_event(
        Shape::Basil,
        "checkout.session.completed",
        &ids::checkout_session(),
        "paid",
        None,
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
async fn bad_signatures_raise_and_store_nothing() {
    let (_db, owner) = setup().await;
    let event = pack_event(
        Shape::Basil,
        "checkout.session.completed",
        &ids::checkout_session(),
        "paid",
        None,
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
        ("not json at all", "22032", "not valid JSON"),
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
        "checkout.session.completed",
        &ids::checkout_session(),
        "paid",
        None,
    );
    // During rotation Stripe sends one v1 per secret; the new secret alone also works.
    let (body, old_header) = events::signed(&event, TEST_SECRET);
    let (_, new_header) = events::signed(&event, "whsec_next");
    let both = format!("{old_header},{}", new_header.split_once(',').unwrap().1);
    raw_deliver(&owner, &body, &both).await.unwrap();
    let event2 = pack_event(
        Shape::Basil,
        "checkout.session.completed",
        &ids::checkout_session(),
        "paid",
        None,
    );
    let (body2, header2) = events::signed(&event2, "whsec_next");
    raw_deliver(&owner, &body2, &header2).await.unwrap();
    assert_eq!(
        count(&owner, "SELECT count(*) FROM billing.stripe_events").await,
        2
    );
    // An expired secret no longer verifies.
    let event3 = pack_event(
        Shape::Basil,
        "checkout.session.completed",
        &ids::checkout_session(),
        "paid",
        None,
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
        "BL009",
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
    let request = request_pack(&db, 1).await;
    let event = pack_event(
        Shape::Basil,
        "checkout.session.completed",
        &ids::checkout_session(),
        "paid",
        Some(&request),
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
