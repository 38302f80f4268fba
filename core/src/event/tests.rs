//! Edge cases of normalisation: leniency towards surprising fields, expanded references, and
//! the reasons a body is refused. Whole realistic events are pinned by the golden tests.
use super::*;
use serde_json::json;

fn event(object: Value, event_type: &str) -> String {
    json!({
        "id": "evt_1", "object": "event", "api_version": "2023-08-16", "created": 1_700_000_000,
        "livemode": false, "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
        "type": event_type, "data": {"object": object}
    })
    .to_string()
}

#[test]
fn subscription_before_basil_has_periods_on_the_subscription() {
    let sub = json!({
        "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
        "current_period_start": 100, "current_period_end": 200, "cancel_at_period_end": false,
        "items": {"data": [{"id": "si_1", "price": {"id": "price_pro", "object": "price"}, "quantity": 1}]},
        "metadata": {"user_id": "u1"}, "unknown_field": {"nested": true}
    });
    let n = normalize_to_json(&event(sub, "customer.subscription.created")).unwrap();
    assert_eq!(n["customer"], "cus_1");
    assert_eq!(n["data"]["items"][0]["price_id"], "price_pro");
    assert_eq!(n["data"]["current_period_start"], 100);
    assert_eq!(n["data"]["current_period_end"], 200);
    assert_eq!(n["data"]["metadata"]["user_id"], "u1");
}

#[test]
fn subscription_from_basil_has_periods_on_items() {
    let sub = json!({
        "id": "sub_1", "object": "subscription", "customer": {"id": "cus_1", "object": "customer"},
        "status": "past_due", "cancel_at_period_end": true, "cancel_at": 300,
        "items": {"data": [{"id": "si_1", "price": "price_pro", "quantity": 2,
                            "current_period_start": 110, "current_period_end": 210}]}
    });
    let n = normalize_to_json(&event(sub, "customer.subscription.updated")).unwrap();
    assert_eq!(n["customer"], "cus_1", "expanded customer object");
    assert_eq!(
        n["data"]["items"][0]["price_id"], "price_pro",
        "price as a bare id"
    );
    assert_eq!(n["data"]["items"][0]["quantity"], 2);
    assert_eq!(n["data"]["current_period_start"], 110);
    assert_eq!(n["data"]["current_period_end"], 210);
    assert_eq!(n["data"]["cancel_at_period_end"], true);
    assert_eq!(n["data"]["cancel_at"], 300);
    assert_eq!(n["data"]["metadata"], json!({}));
}

#[test]
fn invoice_before_basil() {
    let inv = json!({
        "id": "in_1", "object": "invoice", "customer": "cus_1", "subscription": "sub_1",
        "billing_reason": "subscription_cycle", "amount_paid": 2000, "currency": "usd", "status": "paid",
        "subscription_details": {"metadata": {"user_id": "u1"}},
        "lines": {"data": [{"amount": 2000, "quantity": 1, "proration": false,
                            "price": {"id": "price_pro"}, "period": {"start": 200, "end": 300}}]}
    });
    let n = normalize_to_json(&event(inv, "invoice.paid")).unwrap();
    let d = &n["data"];
    assert_eq!(d["subscription"], "sub_1");
    assert_eq!(d["subscription_metadata"]["user_id"], "u1");
    assert_eq!(d["billing_reason"], "subscription_cycle");
    assert_eq!(d["lines"][0]["price_id"], "price_pro");
    assert_eq!(d["lines"][0]["period_end"], 300);
    assert_eq!(d["lines"][0]["proration"], false);
}

#[test]
fn invoice_from_basil() {
    let inv = json!({
        "id": "in_2", "object": "invoice", "customer": "cus_1", "billing_reason": "subscription_update",
        "amount_paid": 500, "currency": "eur",
        "parent": {"type": "subscription_details",
                   "subscription_details": {"subscription": "sub_1", "metadata": {"user_id": "u2"}}},
        "lines": {"data": [
            {"amount": -1000, "quantity": 1, "period": {"start": 250, "end": 300},
             "pricing": {"type": "price_details", "price_details": {"price": "price_basic", "product": "prod_1"}},
             "parent": {"type": "subscription_item_details", "subscription_item_details": {"proration": true}}},
            {"amount": 1500, "quantity": 1, "period": {"start": 250, "end": 300},
             "pricing": {"type": "price_details", "price_details": {"price": "price_pro", "product": "prod_1"}},
             "parent": {"type": "subscription_item_details", "subscription_item_details": {"proration": true}}}
        ]}
    });
    let n = normalize_to_json(&event(inv, "invoice.paid")).unwrap();
    let d = &n["data"];
    assert_eq!(d["subscription"], "sub_1");
    assert_eq!(d["subscription_metadata"]["user_id"], "u2");
    assert_eq!(d["lines"][0]["price_id"], "price_basic");
    assert_eq!(d["lines"][0]["proration"], true);
    assert_eq!(d["lines"][1]["price_id"], "price_pro");
    assert_eq!(d["lines"][1]["amount"], 1500);
    assert_eq!(d["lines"][1]["period_start"], 250);
}

#[test]
fn invoice_without_subscription_has_null_subscription() {
    let inv =
        json!({"id": "in_3", "object": "invoice", "customer": "cus_1", "lines": {"data": []}});
    let n = normalize_to_json(&event(inv, "invoice.paid")).unwrap();
    assert_eq!(n["data"]["subscription"], Value::Null);
}

#[test]
fn checkout_session_fields() {
    let cs = json!({
        "id": "cs_test_1", "object": "checkout.session", "mode": "payment", "payment_status": "paid",
        "status": "complete", "customer": "cus_1", "client_reference_id": "u1", "amount_total": 999,
        "currency": "usd", "metadata": {"price_id": "price_pack"}, "subscription": null, "invoice": null
    });
    let n = normalize_to_json(&event(cs, "checkout.session.completed")).unwrap();
    assert_eq!(n["type"], "checkout.session.completed");
    assert_eq!(n["object_type"], "checkout.session");
    assert_eq!(n["data"]["payment_status"], "paid");
    assert_eq!(n["data"]["metadata"]["price_id"], "price_pack");
    assert_eq!(n["data"]["subscription"], Value::Null);
}

#[test]
fn unknown_objects_normalise_to_an_empty_data_object() {
    let n = normalize_to_json(&event(
        json!({"id": "price_1", "object": "price"}),
        "price.created",
    ))
    .unwrap();
    assert_eq!(n["data"], json!({}));
    assert_eq!(n["customer"], Value::Null);
}

#[test]
fn non_events_are_rejected_with_a_reason() {
    let cases = [
        ("not json", "not valid JSON"),
        ("[1,2]", "not a JSON object"),
        (
            r#"["event","evt_1","a",1,{"object":{}}]"#,
            "not a JSON object",
        ),
        ("\"evt_1\"", "not a JSON object"),
        (
            r#"{"object":"customer","id":"cus_1"}"#,
            "\"object\" is not \"event\"",
        ),
        (
            r#"{"object":"event","id":"xyz","type":"a","created":1,"data":{"object":{}}}"#,
            "evt_ id",
        ),
        (
            r#"{"object":"event","id":"evt_1","created":1,"data":{"object":{}}}"#,
            "no type",
        ),
        (
            r#"{"object":"event","id":"evt_1","type":"a","created":"x","data":{"object":{}}}"#,
            "created",
        ),
        (
            r#"{"object":"event","id":"evt_1","type":"a","created":1,"data":{}}"#,
            "data.object",
        ),
        (
            r#"{"object":"event","id":"evt_1;drop","type":"a","created":1,"data":{"object":{}}}"#,
            "evt_ id",
        ),
    ];
    for (body, needle) in cases {
        let err = normalize(body).unwrap_err().to_string();
        assert!(err.contains(needle), "{body}: {err}");
    }
}

#[test]
fn fields_of_unexpected_types_are_ignored_not_fatal() {
    let inv = json!({
        "id": "in_4", "object": "invoice", "customer": 42, "amount_paid": "lots",
        "subscription": {"id": "sub_9", "object": "subscription", "items": {"data": [1, 2]}},
        "subscription_details": "nope", "lines": {"data": [{"amount": 5, "period": "x", "proration": "yes"}]}
    });
    let n = normalize_to_json(&event(inv, "invoice.paid")).unwrap();
    assert_eq!(n["customer"], Value::Null);
    assert_eq!(n["data"]["amount_paid"], Value::Null);
    assert_eq!(
        n["data"]["subscription"], "sub_9",
        "expanded subscription object"
    );
    assert_eq!(n["data"]["subscription_metadata"], json!({}));
    assert_eq!(n["data"]["lines"][0]["amount"], 5);
    assert_eq!(n["data"]["lines"][0]["proration"], false);
    assert_eq!(n["data"]["lines"][0]["period_end"], Value::Null);
}

#[test]
fn customers_carry_their_own_id_and_deletion() {
    let deleted = json!({"id": "cus_9", "object": "customer", "deleted": true});
    let n = normalize_to_json(&event(deleted, "customer.deleted")).unwrap();
    assert_eq!(n["customer"], "cus_9");
    assert_eq!(n["object_id"], "cus_9");
    assert_eq!(n["data"]["deleted"], true);
    assert_eq!(n["data"]["metadata"], json!({}));
}

#[test]
fn subscriptions_list_every_item_and_their_pause() {
    let sub = json!({
        "id": "sub_2", "object": "subscription", "customer": "cus_1", "status": "active",
        "pause_collection": {"behavior": "void", "resumes_at": null},
        "trial_end": 500,
        "items": {"data": [
            {"price": {"id": "price_pro"}, "quantity": 1, "current_period_start": 1, "current_period_end": 2},
            {"price": "price_addon", "quantity": 3, "current_period_start": 1, "current_period_end": 2}
        ]}
    });
    let n = normalize_to_json(&event(sub, "customer.subscription.updated")).unwrap();
    assert_eq!(n["object_id"], "sub_2");
    assert_eq!(n["data"]["items"][1]["price_id"], "price_addon");
    assert_eq!(n["data"]["items"][1]["quantity"], 3);
    assert_eq!(n["data"]["pause_collection"]["behavior"], "void");
    assert_eq!(n["data"]["trial_end"], 500);
}
