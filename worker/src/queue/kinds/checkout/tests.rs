//! The exact parameter sets of a checkout.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::stripe::form::flatten;

const REQUEST: Uuid = Uuid::from_u128(0x1111_1111_1111_1111_1111_1111_1111_1111);
const USER: Uuid = Uuid::from_u128(0x2222_2222_2222_2222_2222_2222_2222_2222);

fn pairs(form: &Value) -> BTreeMap<String, String> {
    flatten(form).into_iter().collect()
}

fn expected(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn params(v: Value) -> CheckoutParams {
    CheckoutParams::from_json(&v).unwrap()
}

const USER_S: &str = "22222222-2222-2222-2222-222222222222";
const REQUEST_S: &str = "11111111-1111-1111-1111-111111111111";

#[test]
fn subscription_mode() {
    let p = params(json!({
        "price_id": "price_pro", "plan_id": "pro", "mode": "subscription", "quantity": 1,
        "success_url": "https://a.test/ok", "cancel_url": "https://a.test/no",
        "allow_promotion_codes": true, "collect_tax_ids": true, "email": "u@a.test",
    }));
    assert_eq!(
        pairs(&session_form(REQUEST, USER, "cus_1", &p)),
        expected(&[
            ("mode", "subscription"),
            ("customer", "cus_1"),
            ("client_reference_id", USER_S),
            ("line_items[0][price]", "price_pro"),
            ("line_items[0][quantity]", "1"),
            ("success_url", "https://a.test/ok"),
            ("cancel_url", "https://a.test/no"),
            ("metadata[user_id]", USER_S),
            ("metadata[price_id]", "price_pro"),
            ("metadata[plan_id]", "pro"),
            ("metadata[request_id]", REQUEST_S),
            ("subscription_data[metadata][user_id]", USER_S),
            ("subscription_data[metadata][price_id]", "price_pro"),
            ("allow_promotion_codes", "true"),
            ("tax_id_collection[enabled]", "true"),
            // Stripe refuses tax ID collection for an existing customer without both.
            ("customer_update[name]", "auto"),
            ("customer_update[address]", "auto"),
        ])
    );
}

#[test]
fn payment_mode_with_project_and_coupon_saves_the_card() {
    let p = params(json!({
        "price_id": "price_pack", "plan_id": "pack", "mode": "payment", "quantity": 3,
        "tokens": 1500, "success_url": "https://a.test/ok", "cancel_url": "https://a.test/no",
        "project_id": "33333333-3333-3333-3333-333333333333", "coupon": "SPRING",
        "collect_tax_ids": false, "save_payment_method": true,
    }));
    assert_eq!(
        pairs(&session_form(REQUEST, USER, "cus_1", &p)),
        expected(&[
            ("mode", "payment"),
            ("customer", "cus_1"),
            ("client_reference_id", USER_S),
            ("line_items[0][price]", "price_pack"),
            ("line_items[0][quantity]", "3"),
            ("success_url", "https://a.test/ok"),
            ("cancel_url", "https://a.test/no"),
            ("metadata[user_id]", USER_S),
            ("metadata[price_id]", "price_pack"),
            ("metadata[plan_id]", "pack"),
            (
                "metadata[project_id]",
                "33333333-3333-3333-3333-333333333333"
            ),
            ("metadata[request_id]", REQUEST_S),
            ("discounts[0][coupon]", "SPRING"),
            ("payment_intent_data[setup_future_usage]", "on_session"),
        ])
    );
}

#[test]
fn a_card_for_auto_top_up_is_saved_for_off_session_use() {
    let form = |save_for_off_session: Value| {
        let p = params(json!({
            "price_id": "price_pack", "mode": "payment", "success_url": "https://a.test/ok",
            "save_payment_method": true, "save_for_off_session": save_for_off_session,
        }));
        pairs(&session_form(REQUEST, USER, "cus_1", &p))["payment_intent_data[setup_future_usage]"]
            .clone()
    };
    assert_eq!(form(json!(true)), "off_session");
    assert_eq!(form(json!(null)), "on_session");
    assert_eq!(form(json!(false)), "on_session");
}

#[test]
fn the_form_follows_the_row_and_decides_nothing() {
    for mode in ["subscription", "payment"] {
        for save in [None, Some(false), Some(true)] {
            let p = params(json!({
                "price_id": "price_x", "mode": mode, "success_url": "https://a.test/",
                "save_payment_method": save,
            }));
            let got = pairs(&session_form(REQUEST, USER, "cus_1", &p));
            assert!(!got.contains_key("customer_creation"));
            assert!(!got.keys().any(|k| k.starts_with("customer_email")));
            assert_eq!(
                got.contains_key("payment_intent_data[setup_future_usage]"),
                mode == "payment" && save == Some(true)
            );
            assert_eq!(
                got.keys().any(|k| k.starts_with("subscription_data")),
                mode == "subscription"
            );
            // Tax IDs unless the row says no; optional fields absent are not sent at all.
            assert_eq!(got["tax_id_collection[enabled]"], "true");
            assert!(!got.contains_key("cancel_url"));
            assert!(!got.keys().any(|k| k.starts_with("metadata[tokens]")));
            assert_eq!(got["line_items[0][quantity]"], "1");
        }
    }
}

#[test]
fn bad_params_are_reported() {
    for bad in [
        json!({}),
        json!({"price_id": "p", "mode": "setup", "success_url": "https://a/"}),
        json!({"price_id": "p", "mode": "payment", "success_url": "https://a/", "quantity": "x"}),
        json!("not an object"),
    ] {
        let err = CheckoutParams::from_json(&bad).expect_err(&bad.to_string());
        assert!(err.starts_with("invalid checkout parameters"), "{err}");
    }
}

#[test]
fn customer_forms() {
    assert_eq!(
        pairs(&customer_form(USER, Some("u@a.test"))),
        expected(&[("email", "u@a.test"), ("metadata[user_id]", USER_S)])
    );
    assert_eq!(
        pairs(&customer_form(USER, Some(""))),
        expected(&[("metadata[user_id]", USER_S)])
    );
}

#[test]
fn customer_ids_need_an_id() {
    assert_eq!(customer_id(&json!({"id": "cus_9"})).unwrap(), "cus_9");
    assert!(customer_id(&json!({})).is_err());
}

#[test]
fn the_session_key_follows_the_customer_sent() {
    // A retry with the same customer replays; after the customer was forgotten and another
    // created, the same request sends other parameters and needs another key.
    assert_eq!(
        session_key(REQUEST, "cus_1"),
        format!("checkout-{REQUEST_S}-cus_1")
    );
    assert_eq!(session_key(REQUEST, "cus_1"), session_key(REQUEST, "cus_1"));
    assert_ne!(session_key(REQUEST, "cus_1"), session_key(REQUEST, "cus_2"));
}
