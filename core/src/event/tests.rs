//! Edge cases of normalisation: leniency towards surprising fields, expanded references, and
//! the reasons a body is refused. Whole realistic events of every type and API shape are pinned by the golden tests
//! (`core/tests/golden.rs` over `tests/fixtures/events/`).
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
fn invoice_without_subscription_has_null_subscription() {
    let inv =
        json!({"id": "in_3", "object": "invoice", "customer": "cus_1", "lines": {"data": []}});
    let n = normalize_to_json(&event(inv, "invoice.paid")).unwrap();
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
