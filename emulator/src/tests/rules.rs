//! The business rules of `POST /v1/checkout/sessions`, `POST /v1/billing_portal/sessions` and
//! `POST /v1/customers`, one test per rule of the table in `emulator/README.md` ("The emulator
//! is held to Stripe"), called directly on a store (no HTTP).

use serde_json::{json, Map, Value};

use crate::checkout::create_checkout_session;
use crate::error::ApiError;
use crate::portal::{create_portal_session, default_configuration, NO_CONFIGURATION};
use crate::render::Shape;
use crate::resources::{create_customer, is_valid_url};
use crate::store::{Coupon, Price, PriceKind, Store};

const BASE: &str = "http://emu";

fn store() -> Store {
    let mut store = Store::default();
    for (id, kind, unit_amount, months) in [
        ("price_basic", PriceKind::Recurring, 1000, 1),
        ("price_pack", PriceKind::OneTime, 500, 0),
    ] {
        store.prices.insert(
            id.into(),
            Price {
                id: id.into(),
                kind,
                unit_amount,
                currency: "usd".into(),
                product: "prod_1".into(),
                created: 0,
                months,
                active: true,
                meter: None,
            },
        );
    }
    store.coupons.insert(
        "half".into(),
        Coupon {
            id: "half".into(),
            percent_off: Some(50.0),
            amount_off: None,
        },
    );
    store.portal_configuration = Some(default_configuration(0));
    store
}

/// Parameters as the schema check leaves them (integers typed, arrays as arrays).
fn params(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// A valid payment-mode body with `extra` merged in.
fn payment(extra: Value) -> Map<String, Value> {
    let mut p = params(
        json!({"mode": "payment", "success_url": "https://app.test/ok",
        "line_items": [{"price": "price_pack", "quantity": 1}]}),
    );
    p.extend(params(extra));
    p
}

fn subscription(extra: Value) -> Map<String, Value> {
    let mut p = params(
        json!({"mode": "subscription", "success_url": "https://app.test/ok",
        "line_items": [{"price": "price_basic", "quantity": 1}]}),
    );
    p.extend(params(extra));
    p
}

fn create(store: &mut Store, p: &Map<String, Value>) -> Result<String, ApiError> {
    create_checkout_session(store, BASE, Shape::Basil, p)
}

fn reject(store: &mut Store, p: &Map<String, Value>) -> ApiError {
    let e = create(store, p).expect_err("Stripe rejects this");
    assert_eq!(e.status.as_u16(), 400, "{e:?}");
    assert_eq!(e.kind, "invalid_request_error", "{e:?}");
    e
}

fn customer(store: &mut Store, fields: Value) -> String {
    create_customer(store, &params(fields)).unwrap()
}

#[test]
fn tax_ids_for_an_existing_customer_need_the_name_then_the_address() {
    let mut store = store();
    let bare = customer(&mut store, json!({"email": "a@b.test"}));
    let taxed = json!({"tax_id_collection": {"enabled": true}, "customer": bare});
    let mut p = subscription(taxed.clone());
    let e = reject(&mut store, &p);
    assert_eq!(e.param.as_deref(), Some("customer_update"));
    assert_eq!(
        e.message,
        "Tax ID collection requires updating business name on the customer. To enable tax ID \
         collection for an existing customer, please set `customer_update[name]` to `auto`."
    );
    p.insert("customer_update".into(), json!({"name": "auto"}));
    let e = reject(&mut store, &p);
    assert_eq!(e.param.as_deref(), Some("customer_update"));
    assert_eq!(
        e.message,
        "We could not find a valid address on the provided customer. To enable tax ID \
         collection, please set customer_update[address] to auto."
    );
    p.insert(
        "customer_update".into(),
        json!({"name": "auto", "address": "auto"}),
    );
    assert!(create(&mut store, &p).is_ok());
    // A customer with an address only needs the name.
    let addressed = customer(&mut store, json!({"address": {"country": "DE"}}));
    let mut p = payment(
        json!({"tax_id_collection": {"enabled": true}, "customer": addressed,
        "customer_update": {"name": "auto"}}),
    );
    assert!(create(&mut store, &p).is_ok());
    // Without tax ID collection nothing is required.
    p.insert("tax_id_collection".into(), json!({"enabled": false}));
    p.remove("customer_update");
    assert!(create(&mut store, &p).is_ok());
}

#[test]
fn unknown_or_deleted_customers_are_no_such_customer() {
    let mut store = store();
    for p in [
        payment(json!({"customer": "cus_missing"})),
        subscription(json!({"customer": "cus_missing"})),
    ] {
        let e = reject(&mut store, &p);
        assert_eq!(
            (e.code.as_deref(), e.param.as_deref(), e.message.as_str()),
            (
                Some("resource_missing"),
                Some("customer"),
                "No such customer: 'cus_missing'"
            )
        );
    }
    let gone = customer(&mut store, json!({}));
    store.customers.get_mut(&gone).unwrap().deleted = true;
    let e = reject(&mut store, &payment(json!({"customer": gone})));
    assert_eq!(e.message, format!("No such customer: '{gone}'"));
    let e =
        create_portal_session(&mut store, BASE, &params(json!({"customer": gone}))).unwrap_err();
    assert_eq!(
        (e.code.as_deref(), e.param.as_deref()),
        (Some("resource_missing"), Some("customer"))
    );
}

#[test]
fn payment_intent_data_with_a_customer_is_payment_mode_only() {
    let mut store = store();
    let cus = customer(&mut store, json!({}));
    for usage in ["on_session", "off_session"] {
        let p = payment(json!({"customer": cus,
            "payment_intent_data": {"setup_future_usage": usage}}));
        assert!(create(&mut store, &p).is_ok(), "{usage}");
    }
    let e = reject(
        &mut store,
        &subscription(json!({"payment_intent_data": {"setup_future_usage": "off_session"}})),
    );
    assert_eq!(
        e.message,
        "You can not pass `payment_intent_data` in `subscription` mode."
    );
}

#[test]
fn parameters_of_other_modes_are_refused() {
    let mut store = store();
    let e = reject(
        &mut store,
        &payment(json!({"subscription_data": {"metadata": {"a": "b"}}})),
    );
    assert_eq!(
        e.message,
        "You can not pass `subscription_data` in `payment` mode."
    );
    let setup = params(json!({"mode": "setup", "success_url": "https://a.test/",
        "line_items": [{"price": "price_pack", "quantity": 1}]}));
    let e = reject(&mut store, &setup);
    assert_eq!(e.message, "You can not pass `line_items` in `setup` mode.");
    let e = reject(
        &mut store,
        &subscription(json!({"customer_creation": "always"})),
    );
    assert_eq!(
        (e.message.as_str(), e.param.as_deref()),
        (
            "`customer_creation` can only be used in `payment` mode.",
            None
        )
    );
    let e = reject(
        &mut store,
        &subscription(json!({"invoice_creation": {"enabled": true}})),
    );
    assert!(e
        .message
        .starts_with("You can only enable invoice creation when `mode` is set to `payment`."));
    // Allowed: customer_creation in payment mode, a disabled invoice_creation elsewhere.
    assert!(create(&mut store, &payment(json!({"customer_creation": "always"}))).is_ok());
    assert!(create(
        &mut store,
        &subscription(json!({"invoice_creation": {"enabled": false}}))
    )
    .is_ok());
}

#[test]
fn submit_type_follows_the_version() {
    let mut store = store();
    let p = subscription(json!({"submit_type": "pay"}));
    assert!(create_checkout_session(&mut store, BASE, Shape::Basil, &p).is_ok());
    let e = create_checkout_session(&mut store, BASE, Shape::V2023, &p).unwrap_err();
    assert_eq!(
        e.message,
        "You can not pass `submit_type` in `subscription` mode."
    );
    assert!(create_checkout_session(
        &mut store,
        BASE,
        Shape::V2023,
        &payment(json!({"submit_type": "pay"}))
    )
    .is_ok());
}

#[test]
fn customer_creation_with_a_customer_is_not_enforced() {
    // No citable source for Stripe's answer: the emulator accepts it.
    let mut store = store();
    let cus = customer(&mut store, json!({}));
    let p = payment(json!({"customer": cus, "customer_creation": "always"}));
    assert!(create(&mut store, &p).is_ok());
}

#[test]
fn hosted_sessions_need_success_url_and_embedded_ones_refuse_it() {
    let mut store = store();
    let mut p = payment(json!({}));
    p.remove("success_url");
    let e = reject(&mut store, &p);
    assert_eq!(
        (e.code.as_deref(), e.param.as_deref()),
        (Some("parameter_missing"), Some("success_url"))
    );
    p.insert("ui_mode".into(), json!("embedded"));
    p.insert("return_url".into(), json!("https://a.test/r"));
    assert!(create(&mut store, &p).is_ok());
    p.insert("success_url".into(), json!("https://a.test/ok"));
    p.insert("cancel_url".into(), json!("https://a.test/no"));
    p.insert("ui_mode".into(), json!("custom"));
    let e = reject(&mut store, &p);
    assert_eq!(
        e.message,
        "The following parameters are not supported with 'ui_mode: custom': cancel_url, success_url."
    );
}

#[test]
fn customer_and_customer_email_exclude_each_other() {
    let mut store = store();
    let cus = customer(&mut store, json!({}));
    let e = reject(
        &mut store,
        &payment(json!({"customer": cus, "customer_email": "a@b.test"})),
    );
    assert_eq!(
        (e.code.as_deref(), e.param.as_deref(), e.message.as_str()),
        (
            Some("parameters_exclusive"),
            Some("customer"),
            "You may only specify one of these parameters: customer, customer_email."
        )
    );
}

#[test]
fn customer_update_needs_a_customer() {
    let mut store = store();
    let e = reject(
        &mut store,
        &payment(json!({"customer_update": {"name": "auto"}})),
    );
    assert_eq!(e.param.as_deref(), Some("customer_update"));
}

#[test]
fn discounts_one_coupon_never_with_promotion_codes() {
    let mut store = store();
    for promo in [true, false] {
        let e = reject(
            &mut store,
            &payment(json!({"allow_promotion_codes": promo, "discounts": [{"coupon": "half"}]})),
        );
        assert_eq!(
            e.message,
            "You may only specify one of these parameters: allow_promotion_codes, discounts."
        );
    }
    let e = reject(
        &mut store,
        &payment(json!({"discounts": [{"coupon": "half"}, {"coupon": "half"}]})),
    );
    assert_eq!(e.param.as_deref(), Some("discounts"));
    let e = reject(
        &mut store,
        &payment(json!({"discounts": [{"coupon": "nope"}]})),
    );
    assert_eq!(
        (e.code.as_deref(), e.message.as_str()),
        (Some("resource_missing"), "No such coupon: 'nope'")
    );
    let e = reject(
        &mut store,
        &payment(json!({"discounts": [{"promotion_code": "promo_x"}]})),
    );
    assert_eq!(e.code.as_deref(), Some("resource_missing"));
    let id = create(
        &mut store,
        &payment(json!({"discounts": [{"coupon": "half"}]})),
    )
    .unwrap();
    assert_eq!(store.sessions[&id].amount_discount, 250);
}

#[test]
fn line_items_need_a_price_and_a_quantity_of_at_least_one() {
    let mut store = store();
    let mut p = payment(json!({}));
    p.insert("line_items".into(), json!([{"quantity": 1}]));
    let e = reject(&mut store, &p);
    assert_eq!(
        e.message,
        "You must provide either price or price_data for each line item when using prices."
    );
    p.insert(
        "line_items".into(),
        json!([{"price": "price_pack", "quantity": 1}, {"price": "price_pack"}]),
    );
    let e = reject(&mut store, &p);
    assert_eq!(
        (e.code.as_deref(), e.param.as_deref(), e.message.as_str()),
        (
            None,
            Some("line_items[1]"),
            "Quantity is required. Add `quantity` to `line_items[1]`"
        )
    );
    for q in [0, -3] {
        p.insert(
            "line_items".into(),
            json!([{"price": "price_pack", "quantity": q}]),
        );
        let e = reject(&mut store, &p);
        assert_eq!(
            (e.code.as_deref(), e.param.as_deref(), e.message.as_str()),
            (
                Some("parameter_invalid_integer"),
                Some("line_items[0][quantity]"),
                "This value must be greater than or equal to 1."
            )
        );
    }
    p.insert(
        "line_items".into(),
        json!([{"price": "price_nope", "quantity": 1}]),
    );
    let e = reject(&mut store, &p);
    assert_eq!(
        (e.code.as_deref(), e.param.as_deref(), e.message.as_str()),
        (
            Some("resource_missing"),
            Some("line_items[0][price]"),
            "No such price: 'price_nope'"
        )
    );
    p.insert(
        "line_items".into(),
        json!([{"price": "price_pack", "quantity": 3}]),
    );
    let id = create(&mut store, &p).unwrap();
    assert_eq!(store.sessions[&id].amount_subtotal, 1500);
    assert_eq!(store.sessions.len(), 1);
}

#[test]
fn prices_must_fit_the_mode() {
    let mut store = store();
    let mut p = payment(json!({}));
    p.insert(
        "line_items".into(),
        json!([{"price": "price_basic", "quantity": 1}]),
    );
    let e = reject(&mut store, &p);
    assert_eq!(
        (e.param.as_deref(), e.message.as_str()),
        (
            Some("line_items[0]"),
            "You specified `payment` mode but passed a recurring price. Either switch to \
             `subscription` mode or use only one-time prices."
        )
    );
    let mut p = subscription(json!({}));
    p.insert(
        "line_items".into(),
        json!([{"price": "price_pack", "quantity": 1}]),
    );
    let e = reject(&mut store, &p);
    assert_eq!(
        e.message,
        "You must provide at least one recurring price in `subscription` mode when using prices."
    );
}

#[test]
fn redirect_urls_must_be_absolute_http_with_a_host() {
    for good in [
        "https://app.test/ok",
        "http://localhost:3000/c",
        "HTTPS://App.Test/Ok",
        "https://app.test/ok?session_id={CHECKOUT_SESSION_ID}",
        "https://bücher.example/ok",
    ] {
        assert!(is_valid_url(good), "{good}");
    }
    for bad in [
        "",
        "app.test/ok",
        "//app.test/ok",
        "ftp://app.test/ok",
        "https:/app.test",
        "https://",
        "https://app.test/a b",
        "https://app.test/\r\nSet-Cookie:x",
        "https://app.test\\evil.test",
    ] {
        assert!(!is_valid_url(bad), "{bad:?}");
    }
    let mut store = store();
    for key in ["success_url", "cancel_url"] {
        let e = reject(&mut store, &payment(json!({key: "app.test/no"})));
        assert_eq!(
            (e.code.as_deref(), e.param.as_deref(), e.message.as_str()),
            (Some("url_invalid"), Some(key), "Not a valid URL")
        );
    }
    let cus = customer(&mut store, json!({}));
    let p = params(json!({"customer": cus, "return_url": "https://\u{1b}x.test/"}));
    let e = create_portal_session(&mut store, BASE, &p).unwrap_err();
    assert_eq!(
        (e.code.as_deref(), e.param.as_deref()),
        (Some("url_invalid"), Some("return_url"))
    );
}

#[test]
fn emails_need_a_dotted_domain_and_no_spaces() {
    let mut store = store();
    for bad in ["otameshi@com", " a@b.test", "a＠b.test", "ab.test"] {
        let e = create_customer(&mut store, &params(json!({"email": bad}))).unwrap_err();
        assert_eq!(
            (e.code.as_deref(), e.param.as_deref(), e.message),
            (
                Some("email_invalid"),
                Some("email"),
                format!("Invalid email address: {bad}")
            )
        );
    }
    let e = reject(&mut store, &payment(json!({"customer_email": "x@gmail"})));
    assert_eq!(e.param.as_deref(), Some("customer_email"));
}

#[test]
fn expiry_and_trials_stay_in_their_documented_ranges() {
    let mut store = store();
    let now = store.clock.now();
    for bad in [now + 60, now + 25 * 3600] {
        let e = reject(&mut store, &payment(json!({"expires_at": bad})));
        assert_eq!(e.param.as_deref(), Some("expires_at"));
    }
    assert!(create(&mut store, &payment(json!({"expires_at": now + 3600}))).is_ok());
    let e = reject(
        &mut store,
        &subscription(json!({"subscription_data": {"trial_period_days": 0}})),
    );
    assert_eq!(
        e.param.as_deref(),
        Some("subscription_data[trial_period_days]")
    );
    let e = reject(
        &mut store,
        &subscription(json!({"subscription_data": {"trial_end": now + 3600}})),
    );
    assert_eq!(e.param.as_deref(), Some("subscription_data[trial_end]"));
    assert!(create(
        &mut store,
        &subscription(json!({"subscription_data": {"trial_period_days": 14}}))
    )
    .is_ok());
}

#[test]
fn portal_needs_a_saved_configuration() {
    let mut store = store();
    let cus = customer(&mut store, json!({}));
    let p = params(json!({"customer": cus}));
    assert!(create_portal_session(&mut store, BASE, &p).is_ok());
    let e = create_portal_session(
        &mut store,
        BASE,
        &params(json!({"customer": cus, "configuration": "bpc_other"})),
    )
    .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("resource_missing"));
    store.portal_configuration = None;
    let e = create_portal_session(&mut store, BASE, &p).unwrap_err();
    assert_eq!(
        (
            e.status.as_u16(),
            e.kind.as_str(),
            e.param.as_deref(),
            e.message.as_str()
        ),
        (400, "invalid_request_error", None, NO_CONFIGURATION)
    );
}

#[test]
fn metadata_values_set_empty_are_not_stored() {
    let mut store = store();
    let id = customer(&mut store, json!({"metadata": {"gone": "", "kept": "v"}}));
    assert_eq!(
        Value::Object(store.customers[&id].metadata.clone()),
        json!({"kept": "v"})
    );
    let p = subscription(json!({"metadata": {"a": ""},
        "subscription_data": {"metadata": {"b": "", "c": "1"}}}));
    let id = create(&mut store, &p).unwrap();
    assert!(store.sessions[&id].metadata.is_empty());
    assert_eq!(
        Value::Object(store.sessions[&id].subscription_metadata.clone()),
        json!({"c": "1"})
    );
}
