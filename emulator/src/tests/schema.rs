//! The form schemas: each request is checked against its API version's schema, basil takes
//! `maxLength` from 2023-08-16 where both have the parameter, and Stripe's messages for
//! unknown, missing, mistyped, empty and too long parameters and metadata.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::form::parse_form;
use crate::render::Shape;
use crate::schema::{copy_max_length, validate, Schemas};

fn checkout_in(shape: Shape, body: &str) -> Result<Value, ApiError> {
    let schemas = Schemas::load();
    let op = schemas
        .operation(shape, "POST /v1/checkout/sessions")
        .unwrap();
    validate(op, &parse_form(body).unwrap())
}

fn checkout(body: &str) -> Result<Value, ApiError> {
    checkout_in(Shape::V2023, body)
}

const BASE: &str = "success_url=https://x/ok&mode=subscription&line_items[0][price]=price_a";

#[test]
fn each_version_validates_with_its_own_schema() {
    // `ui_mode` and `return_url` exist from basil on.
    let embedded = "mode=payment&ui_mode=embedded&return_url=https://x/r";
    let e = checkout_in(Shape::V2023, embedded).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("parameter_unknown"));
    let v = checkout_in(Shape::Basil, embedded).unwrap();
    assert_eq!(v["ui_mode"], "embedded");
    // 2023-08-16 requires success_url; basil does not (hosted sessions are checked later).
    let e = checkout_in(Shape::V2023, "mode=payment").unwrap_err();
    assert_eq!(e.param.as_deref(), Some("success_url"));
    assert!(checkout_in(Shape::Basil, "mode=payment").is_ok());
    // Customers: `coupon` was removed in basil, `validate` added.
    let schemas = Schemas::load();
    let legacy = schemas
        .operation(Shape::V2023, "POST /v1/customers")
        .unwrap();
    let basil = schemas
        .operation(Shape::Basil, "POST /v1/customers")
        .unwrap();
    assert!(validate(legacy, &parse_form("coupon=c").unwrap()).is_ok());
    assert!(validate(basil, &parse_form("coupon=c").unwrap()).is_err());
    assert!(validate(basil, &parse_form("validate=true").unwrap()).is_ok());
    assert!(validate(legacy, &parse_form("validate=true").unwrap()).is_err());
    // Every operation the emulator serves has a schema in both versions.
    let operations = crate::routes::every_operation();
    for key in [
        "DELETE /v1/customers/{customer}",
        "GET /v1/checkout/sessions/{session}/line_items",
        "GET /v1/billing_portal/configurations",
    ] {
        assert!(operations.contains(&key), "{key}");
    }
    let distinct: std::collections::BTreeSet<_> = operations.iter().collect();
    assert_eq!(distinct.len(), operations.len(), "one operation per route");
    for key in operations {
        // Invoice payments are basil's: before, the URL is unknown (api.rs answers 404).
        if key != "GET /v1/invoice_payments" {
            assert!(schemas.operation(Shape::V2023, key).is_some(), "{key}");
        }
        assert!(schemas.operation(Shape::Basil, key).is_some(), "{key}");
    }
}

#[test]
fn basil_takes_max_length_from_2023_where_both_have_the_parameter() {
    let long = "x".repeat(201);
    for shape in [Shape::V2023, Shape::Basil] {
        let e = checkout_in(shape, &format!("{BASE}&client_reference_id={long}")).unwrap_err();
        assert!(
            e.message.ends_with("must be at most 200 characters"),
            "{}",
            e.message
        );
    }
    // Nested parameters too (line_items[0][price] has 5000 in 2023-08-16).
    let price = "p".repeat(5001);
    let e = checkout_in(
        Shape::Basil,
        &format!("success_url=https://x&mode=payment&line_items[0][price]={price}"),
    )
    .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("line_items[0][price]"));
    // A basil-only parameter has no limit.
    let url = format!("https://x/{}", "r".repeat(6000));
    assert!(checkout_in(
        Shape::Basil,
        &format!("mode=payment&ui_mode=embedded&return_url={url}")
    )
    .is_ok());
}

#[test]
fn max_length_copy_follows_properties_items_and_any_of_branches() {
    let mut new = json!({"type": "object", "properties": {
        "a": {"type": "string"},
        "b": {"anyOf": [{"type": "string"}, {"type": "string", "enum": [""]}]},
        "c": {"type": "array", "items": {"type": "object", "properties": {"d": {"type": "string"}}}},
        "only_new": {"type": "string"},
        "m": {"type": "object", "additionalProperties": {"type": "string"}}}});
    let old = json!({"type": "object", "properties": {
        "a": {"type": "string", "maxLength": 10},
        "b": {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "string", "enum": [""]}]},
        "c": {"type": "array", "items": {"type": "object", "properties": {"d": {"type": "string", "maxLength": 30}}}},
        "m": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 40}}}});
    copy_max_length(&mut new, &old);
    assert_eq!(new["properties"]["a"]["maxLength"], 10);
    assert_eq!(new["properties"]["b"]["anyOf"][0]["maxLength"], 20);
    assert!(new["properties"]["b"]["anyOf"][1]
        .get("maxLength")
        .is_none());
    assert_eq!(
        new["properties"]["c"]["items"]["properties"]["d"]["maxLength"],
        30
    );
    assert!(new["properties"]["only_new"].get("maxLength").is_none());
    assert_eq!(
        new["properties"]["m"]["additionalProperties"]["maxLength"],
        40
    );
}

#[test]
fn accepts_and_types_a_realistic_body() {
    let v = checkout(&format!(
        "{BASE}&line_items[0][quantity]=1&allow_promotion_codes=true&metadata[user_id]=u\
         &subscription_data[metadata][tokens]=100&tax_id_collection[enabled]=true\
         &expand[]=subscription&customer_update[name]=auto&subscription_data[trial_period_days]=7"
    ))
    .unwrap();
    assert_eq!(
        v["line_items"],
        json!([{"price": "price_a", "quantity": 1}])
    );
    assert_eq!(v["allow_promotion_codes"], json!(true));
    assert_eq!(v["tax_id_collection"]["enabled"], json!(true));
    assert_eq!(v["subscription_data"]["metadata"]["tokens"], "100");
    assert_eq!(v["subscription_data"]["trial_period_days"], 7);
    assert_eq!(v["expand"], json!(["subscription"]));
}

#[test]
fn unknown_parameter_is_named_like_stripe() {
    let e = checkout(&format!("{BASE}&line_items[0][pricee]=x")).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("parameter_unknown"));
    assert_eq!(e.param.as_deref(), Some("line_items[0][pricee]"));
    assert_eq!(
        e.message,
        "Received unknown parameter: line_items[0][pricee]"
    );
    let e = checkout(&format!("{BASE}&subscription_data[metdata][a]=b")).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("subscription_data[metdata]"));
}

#[test]
fn bad_enum_and_types() {
    let e = checkout("success_url=https://x&mode=subscriptions").unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.param.as_deref(), e.code.as_deref()),
        (400, Some("mode"), Some("parameter_invalid_string"))
    );
    let e = checkout(&format!("{BASE}&allow_promotion_codes=yes")).unwrap_err();
    assert_eq!(e.message, "Invalid boolean: yes");
    // Stripe's answer to a non-integer carries no code.
    let e = checkout(&format!("{BASE}&line_items[0][quantity]=two")).unwrap_err();
    assert_eq!(
        (e.code.as_deref(), e.param.as_deref(), e.message.as_str()),
        (
            None,
            Some("line_items[0][quantity]"),
            "Invalid integer: two"
        )
    );
    let e = checkout(&format!("{BASE}&metadata=x")).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("metadata"));
}

#[test]
fn missing_required_and_empty_values() {
    let e = checkout("mode=payment").unwrap_err();
    assert_eq!(
        (e.code.as_deref(), e.message.as_str()),
        (
            Some("parameter_missing"),
            "Missing required param: success_url."
        )
    );
    let e = checkout(&format!("{BASE}&client_reference_id=")).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("parameter_invalid_empty"));
    assert_eq!(
        e.message,
        "You passed an empty string for 'client_reference_id'. We assume empty values are an \
         attempt to unset a parameter; however 'client_reference_id' cannot be unset. You \
         should remove 'client_reference_id' from your request or supply a non-empty value."
    );
}

#[test]
fn max_length_and_metadata_limits_in_stripes_words() {
    let long = "x".repeat(201);
    let e = checkout(&format!("{BASE}&client_reference_id={long}")).unwrap_err();
    assert_eq!(
        e.message,
        "Invalid string: xxxxxxxxxx...xxxxxxxxxx; must be at most 200 characters"
    );
    let key = "k".repeat(41);
    let e = checkout(&format!("{BASE}&metadata[{key}]=v")).unwrap_err();
    assert_eq!(
        (e.param.as_deref(), e.message),
        (
            Some("metadata"),
            format!("Invalid key: {key} must be a string under 40 characters")
        )
    );
    let value = "v".repeat(501);
    let e = checkout(&format!("{BASE}&metadata[k]={value}")).unwrap_err();
    assert!(e
        .message
        .starts_with("Invalid val: vvvvvvvvvv...vvvvvvvvvv must be a string under 500"));
    let many: String = (0..51).map(|i| format!("&metadata[k{i}]=v")).collect();
    assert_eq!(
        checkout(&format!("{BASE}{many}"))
            .unwrap_err()
            .param
            .as_deref(),
        Some("metadata")
    );
    let ok: String = (0..50).map(|i| format!("&metadata[k{i}]=v")).collect();
    assert!(checkout(&format!("{BASE}{ok}")).is_ok());
}

#[test]
fn metadata_keys_may_be_unset_with_an_empty_value() {
    let v = checkout(&format!(
        "{BASE}&metadata[gone]=&metadata[kept]=v&subscription_data[metadata][x]="
    ))
    .unwrap();
    assert_eq!(v["metadata"], json!({"gone": "", "kept": "v"}));
    assert_eq!(v["subscription_data"]["metadata"], json!({"x": ""}));
    let schemas = Schemas::load();
    let op = schemas
        .operation(Shape::V2023, "POST /v1/customers")
        .unwrap();
    let v = validate(op, &parse_form("metadata=&email=a@b.c").unwrap()).unwrap();
    assert_eq!(v["metadata"], "");
    // Only metadata values: other empty strings still cannot be unset on create.
    let e = checkout(&format!("{BASE}&metadata[k]=&client_reference_id=")).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("client_reference_id"));
    let e = checkout(&format!("{BASE}&metadata[k][x]=1")).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("metadata[k]"));
}
