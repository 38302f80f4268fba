//! The create operations (customers, checkout sessions, portal sessions) with the business
//! rules Stripe applies after the schema check: mode rules, mutually exclusive parameters,
//! references that must exist, and prices that must fit the mode.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::store::{ids, Customer, PortalSession, PriceKind, Session, SessionLine, Store};

/// Checkout sessions expire after 24 hours unless `expires_at` says otherwise.
const SESSION_LIFETIME: i64 = 24 * 3600;

fn str_param(p: &Map<String, Value>, key: &str) -> Option<String> {
    p.get(key).and_then(Value::as_str).map(str::to_string)
}

/// A metadata map as stored: `metadata[k]=` (empty) unsets `k`, which on a new object means
/// the key is simply absent.
fn metadata(v: Option<&Value>) -> Map<String, Value> {
    let mut map = v.and_then(Value::as_object).cloned().unwrap_or_default();
    map.retain(|_, v| v != "");
    map
}

/// Whether Stripe would accept `url` as a redirect target: an absolute `http`/`https` URL
/// with a host, free of whitespace and control characters.
fn is_valid_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return false;
    };
    // The WHATWG parser below would quietly drop tabs and newlines, encode spaces, read `\`
    // as `/` and skip extra slashes before the host; a strict parser rejects all of them.
    if rest.starts_with('/')
        || url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return false;
    }
    reqwest::Url::parse(url).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    })
}

/// Stripe rejects URLs it could not redirect to with `url_invalid`.
fn check_url(p: &Map<String, Value>, key: &str) -> Result<(), ApiError> {
    match p.get(key).and_then(Value::as_str) {
        Some(url) if !is_valid_url(url) => {
            Err(ApiError::invalid(key, "Not a valid URL").code("url_invalid"))
        }
        _ => Ok(()),
    }
}

fn check_email(p: &Map<String, Value>, key: &str) -> Result<(), ApiError> {
    let Some(email) = p.get(key).and_then(Value::as_str) else {
        return Ok(());
    };
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }) && !email.contains(char::is_whitespace)
        && email.matches('@').count() == 1;
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(key, format!("Invalid email address: {email}")).code("email_invalid"))
    }
}

/// Stores a new customer: a fresh id, `created` now, a random invoice prefix, every other
/// field empty until `fill` sets it. The one constructor for customers, whether created by
/// `POST /v1/customers` or by a completed Checkout. Returns the id.
pub(super) fn insert_customer(store: &mut Store, fill: impl FnOnce(&mut Customer)) -> String {
    let id = ids::customer();
    let mut customer = Customer {
        id: id.clone(),
        created: store.clock.now(),
        email: None,
        name: None,
        description: None,
        phone: None,
        metadata: Map::new(),
        address: Value::Null,
        preferred_locales: Vec::new(),
        invoice_prefix: ids::short("x")[2..10].to_uppercase(),
    };
    fill(&mut customer);
    store.customers.insert(id.clone(), customer);
    id
}

/// `POST /v1/customers`.
pub fn create_customer(store: &mut Store, p: &Map<String, Value>) -> Result<String, ApiError> {
    check_email(p, "email")?;
    Ok(insert_customer(store, |c| {
        c.email = str_param(p, "email");
        c.name = str_param(p, "name");
        c.description = str_param(p, "description");
        c.phone = str_param(p, "phone");
        c.metadata = metadata(p.get("metadata"));
        if let Some(Value::Object(a)) = p.get("address") {
            c.address = Value::Object(a.clone());
        }
        c.preferred_locales = p
            .get("preferred_locales")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
    }))
}

/// Rejects `key` when present outside the modes that allow it.
fn only_in_mode(
    p: &Map<String, Value>,
    mode: &str,
    key: &str,
    allowed: &str,
) -> Result<(), ApiError> {
    if p.contains_key(key) && mode != allowed {
        return Err(ApiError::invalid(
            key,
            format!("You can not pass `{key}` in `{mode}` mode. It can only be used in `{allowed}` mode."),
        ));
    }
    Ok(())
}

/// `POST /v1/checkout/sessions`, after the schema check.
pub fn create_checkout_session(
    store: &mut Store,
    base_url: &str,
    p: &Map<String, Value>,
) -> Result<String, ApiError> {
    // The 2023-08-16 schema marks `mode` optional, but the API requires it.
    let mode = str_param(p, "mode").ok_or_else(|| ApiError::missing_param("mode"))?;
    let items = p
        .get("line_items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if mode == "setup" && p.contains_key("line_items") {
        return Err(ApiError::invalid(
            "line_items",
            "You can not pass `line_items` in `setup` mode.",
        ));
    }
    if mode != "setup" && items.is_empty() {
        return Err(ApiError::missing_param("line_items"));
    }
    only_in_mode(p, &mode, "subscription_data", "subscription")?;
    only_in_mode(p, &mode, "payment_intent_data", "payment")?;
    only_in_mode(p, &mode, "customer_creation", "payment")?;
    only_in_mode(p, &mode, "invoice_creation", "payment")?;
    only_in_mode(p, &mode, "submit_type", "payment")?;
    only_in_mode(p, &mode, "setup_intent_data", "setup")?;
    check_url(p, "success_url")?;
    check_url(p, "cancel_url")?;
    check_email(p, "customer_email")?;

    let customer = str_param(p, "customer");
    if customer.is_some() && p.contains_key("customer_email") {
        return Err(ApiError::exclusive(&["customer", "customer_email"]));
    }
    if customer.is_some() && p.contains_key("customer_creation") {
        return Err(ApiError::exclusive(&["customer", "customer_creation"]));
    }
    if customer.is_none() && p.contains_key("customer_update") {
        return Err(ApiError::invalid(
            "customer_update",
            "`customer_update` can only be used with `customer`.",
        ));
    }
    if let Some(c) = &customer {
        if !store.customers.contains_key(c) {
            return Err(ApiError::no_such("customer", c, Some("customer")));
        }
    }
    let collects_tax_ids = p
        .get("tax_id_collection")
        .is_some_and(|t| t["enabled"] == true);
    let updates_name = p
        .get("customer_update")
        .is_some_and(|u| u["name"] == "auto");
    if collects_tax_ids && customer.is_some() && !updates_name {
        return Err(ApiError::invalid(
            "customer_update[name]",
            "To collect tax IDs for an existing customer, `customer_update[name]` must be set to \
             `auto` so the business name entered in Checkout can be saved on the customer.",
        ));
    }
    let coupon = check_discounts(store, p)?;

    let mut lines = Vec::new();
    let mut has_recurring = false;
    let mut subtotal = 0;
    for (i, item) in items.iter().enumerate() {
        let param = |k: &str| format!("line_items[{i}][{k}]");
        if item.get("price_data").is_some() {
            // Ad-hoc prices are valid on the real API; the emulator only knows its catalog.
            return Err(ApiError::invalid(
                param("price_data"),
                "The stripe-emulator does not support `price_data`; register the price with --price.",
            ));
        }
        let price_id = item["price"]
            .as_str()
            .ok_or_else(|| ApiError::missing_param(&param("price")))?;
        // No default of 1: a price-based line item must say how many.
        let Some(quantity) = item.get("quantity").and_then(Value::as_i64) else {
            return Err(ApiError::invalid(
                format!("line_items[{i}]"),
                format!("Quantity is required. Add `quantity` to `line_items[{i}]`"),
            )
            .code("parameter_missing"));
        };
        if quantity < 1 {
            return Err(ApiError::invalid(
                param("quantity"),
                "This value must be greater than or equal to 1.",
            )
            .code("parameter_invalid_integer"));
        }
        let price = store
            .prices
            .get(price_id)
            .ok_or_else(|| ApiError::no_such("price", price_id, Some(&param("price"))))?;
        if price.kind == PriceKind::Recurring && mode == "payment" {
            return Err(ApiError::invalid(
                param("price"),
                "You specified `payment` mode but passed a recurring price. Either switch to \
                 `subscription` mode or use only one-time prices.",
            ));
        }
        has_recurring |= price.kind == PriceKind::Recurring;
        subtotal += price.unit_amount * quantity;
        lines.push(SessionLine {
            id: ids::long("li"),
            price: price_id.to_string(),
            quantity,
        });
    }
    if mode == "subscription" && !has_recurring {
        return Err(ApiError::invalid(
            "line_items",
            "You must provide at least one recurring price in `subscription` mode when using prices.",
        ));
    }
    let discount = coupon
        .as_ref()
        .and_then(|c| store.coupons.get(c))
        .map_or(0, |c| c.discount_on(subtotal));

    let created = store.clock.now();
    let expires_at = p
        .get("expires_at")
        .and_then(Value::as_i64)
        .unwrap_or(created + SESSION_LIFETIME);
    if expires_at < created + 1800 || expires_at > created + SESSION_LIFETIME {
        return Err(ApiError::invalid(
            "expires_at",
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from now.",
        ));
    }
    let id = ids::checkout_session();
    let session = Session {
        id: id.clone(),
        created,
        expires_at,
        payment_status: if mode == "setup" {
            "no_payment_required"
        } else {
            "unpaid"
        }
        .into(),
        mode: mode.clone(),
        status: "open".into(),
        customer,
        customer_email: str_param(p, "customer_email"),
        customer_creation: str_param(p, "customer_creation")
            .or_else(|| (mode == "payment").then(|| "if_required".to_string())),
        client_reference_id: str_param(p, "client_reference_id"),
        metadata: metadata(p.get("metadata")),
        subscription_metadata: metadata(p.get("subscription_data").and_then(|s| s.get("metadata"))),
        lines,
        success_url: str_param(p, "success_url").unwrap_or_default(),
        cancel_url: str_param(p, "cancel_url"),
        url: format!("{base_url}/pay/{id}"),
        currency: (mode != "setup").then(|| "usd".to_string()),
        amount_subtotal: subtotal,
        amount_discount: discount,
        coupon,
        subscription: None,
        invoice: None,
        payment_intent: None,
        setup_intent: None,
        params: p.clone(),
    };
    store.sessions.insert(id.clone(), session);
    Ok(id)
}

/// Checkout takes one discount, given as a coupon or a promotion code, never together with
/// `allow_promotion_codes`. Returns the coupon id.
fn check_discounts(store: &Store, p: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let Some(discounts) = p.get("discounts").and_then(Value::as_array) else {
        return Ok(None);
    };
    if p.contains_key("allow_promotion_codes") {
        return Err(ApiError::exclusive(&["allow_promotion_codes", "discounts"]));
    }
    if discounts.len() > 1 {
        return Err(ApiError::invalid(
            "discounts",
            "You may only specify one discount.",
        ));
    }
    let Some(d) = discounts.first() else {
        return Ok(None);
    };
    match (d["coupon"].as_str(), d["promotion_code"].as_str()) {
        (Some(_), Some(_)) => Err(ApiError::exclusive(&[
            "discounts[0][coupon]",
            "discounts[0][promotion_code]",
        ])),
        (None, None) => Err(ApiError::missing_param("discounts[0][coupon]")),
        (None, Some(code)) => Err(ApiError::no_such(
            "promotion code",
            code,
            Some("discounts[0][promotion_code]"),
        )),
        (Some(c), None) if !store.coupons.contains_key(c) => {
            Err(ApiError::no_such("coupon", c, Some("discounts[0][coupon]")))
        }
        (Some(c), None) => Ok(Some(c.to_string())),
    }
}

/// `POST /v1/billing_portal/sessions`, after the schema check (`customer` is required).
pub fn create_portal_session(
    store: &mut Store,
    base_url: &str,
    p: &Map<String, Value>,
) -> Result<String, ApiError> {
    let customer = str_param(p, "customer").unwrap_or_default();
    if !store.customers.contains_key(&customer) {
        return Err(ApiError::no_such("customer", &customer, Some("customer")));
    }
    let configuration = str_param(p, "configuration").unwrap_or(store.portal_configuration.clone());
    if configuration != store.portal_configuration {
        return Err(ApiError::no_such(
            "configuration",
            &configuration,
            Some("configuration"),
        ));
    }
    check_url(p, "return_url")?;
    if let Some(flow) = p.get("flow_data") {
        let kind = flow["type"].as_str().unwrap_or_default();
        if kind != "payment_method_update" && flow.get(kind).is_none() {
            return Err(ApiError::missing_param(&format!("flow_data[{kind}]")));
        }
        if let Some(sub) = flow.get(kind).and_then(|f| f["subscription"].as_str()) {
            let owned = store
                .subscriptions
                .get(sub)
                .is_some_and(|s| s.customer == customer);
            if !owned {
                return Err(ApiError::no_such(
                    "subscription",
                    sub,
                    Some(&format!("flow_data[{kind}][subscription]")),
                ));
            }
        }
    }
    let id = ids::long("bps");
    let secret = ids::short("test");
    let session = PortalSession {
        id: id.clone(),
        created: store.clock.now(),
        customer,
        configuration,
        return_url: str_param(p, "return_url"),
        url: format!("{base_url}/p/session/{secret}"),
        locale: str_param(p, "locale"),
        flow: p.get("flow_data").cloned(),
    };
    store.portal_sessions.insert(id.clone(), session);
    Ok(id)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::emulator::store::Price;

    const BASE: &str = "http://emu";

    fn store() -> Store {
        let mut store = Store::default();
        for (id, kind, unit_amount) in [
            ("price_basic", PriceKind::Recurring, 1000),
            ("price_pack", PriceKind::OneTime, 500),
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
                },
            );
        }
        store.portal_configuration = "bpc_1".into();
        store
    }

    /// Parameters as the schema check leaves them (integers typed, arrays as arrays).
    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn payment(line_items: Value) -> Map<String, Value> {
        params(
            json!({"mode": "payment", "success_url": "https://app.test/ok",
                      "line_items": line_items}),
        )
    }

    #[test]
    fn line_item_without_quantity_is_rejected_like_stripe() {
        let mut store = store();
        let e =
            create_checkout_session(&mut store, BASE, &payment(json!([{"price": "price_pack"}])))
                .unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.kind, "invalid_request_error");
        assert_eq!(e.code.as_deref(), Some("parameter_missing"));
        assert_eq!(e.param.as_deref(), Some("line_items[0]"));
        assert_eq!(
            e.message,
            "Quantity is required. Add `quantity` to `line_items[0]`"
        );
        let e = create_checkout_session(
            &mut store,
            BASE,
            &payment(json!([{"price": "price_pack", "quantity": 1}, {"price": "price_pack"}])),
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("line_items[1]"));
        assert_eq!(
            e.message,
            "Quantity is required. Add `quantity` to `line_items[1]`"
        );
        assert!(store.sessions.is_empty());
    }

    #[test]
    fn quantity_below_one_is_rejected_like_stripe() {
        let mut store = store();
        for q in [0, -3] {
            let e = create_checkout_session(
                &mut store,
                BASE,
                &payment(json!([{"price": "price_pack", "quantity": q}])),
            )
            .unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert_eq!(e.code.as_deref(), Some("parameter_invalid_integer"));
            assert_eq!(e.param.as_deref(), Some("line_items[0][quantity]"));
            assert_eq!(e.message, "This value must be greater than or equal to 1.");
        }
        let id = create_checkout_session(
            &mut store,
            BASE,
            &payment(json!([{"price": "price_pack", "quantity": 3}])),
        )
        .unwrap();
        let session = &store.sessions[&id];
        assert_eq!(
            (session.lines[0].quantity, session.amount_subtotal),
            (3, 1500)
        );
    }

    #[test]
    fn urls_must_be_absolute_http_with_a_host() {
        for good in [
            "https://app.test/ok",
            "http://localhost:3000/c",
            "https://a/ok",
            "HTTPS://App.Test/Ok",
            "https://app.test/ok?session_id={CHECKOUT_SESSION_ID}",
            "https://user@app.test:8443/p#frag",
            "https://bücher.example/ok",
        ] {
            assert!(is_valid_url(good), "{good}");
        }
        for bad in [
            "",
            "app.test/ok",
            "/relative/path",
            "//app.test/ok",
            "ftp://app.test/ok",
            "javascript:alert(1)",
            "mailto:a@b.test",
            "https:app.test",
            "https:/app.test",
            "https://",
            "https:///path",
            "https://?q=1",
            "https://app.test/a b",
            "https://app.test/a\tb",
            "\thttps://app.test/ok",
            "https://app.test/ok\n",
            "https://app.test/\r\nSet-Cookie:x",
            "https://app.test/\u{0}",
            "https://app.test/\u{7f}",
            "https://app.test\\evil.test",
            "https://exa mple.test/",
            "https://[::1/",
        ] {
            assert!(!is_valid_url(bad), "{bad:?}");
        }
    }

    #[test]
    fn invalid_urls_name_their_param() {
        let mut store = store();
        let items = json!([{"price": "price_pack", "quantity": 1}]);
        for (key, url) in [
            ("success_url", "https://app.test/a\tb"),
            ("cancel_url", "app.test/no"),
        ] {
            let mut p = payment(items.clone());
            p.insert(key.into(), json!(url));
            let e = create_checkout_session(&mut store, BASE, &p).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code.as_deref(), e.param.as_deref()),
                (400, Some("url_invalid"), Some(key)),
                "{key}={url:?}"
            );
            assert_eq!(e.message, "Not a valid URL");
        }
        let customer = create_customer(&mut store, &Map::new()).unwrap();
        let p = params(json!({"customer": customer, "return_url": "https://\u{1b}x.test/"}));
        let e = create_portal_session(&mut store, BASE, &p).unwrap_err();
        assert_eq!(
            (e.code.as_deref(), e.param.as_deref()),
            (Some("url_invalid"), Some("return_url"))
        );
        let p = params(json!({"customer": customer, "return_url": "https://app.test/account"}));
        assert!(create_portal_session(&mut store, BASE, &p).is_ok());
    }

    #[test]
    fn empty_metadata_values_are_not_stored() {
        let mut store = store();
        let p = params(json!({"email": "a@b.test", "metadata": {"gone": "", "kept": "v"}}));
        let id = create_customer(&mut store, &p).unwrap();
        assert_eq!(
            Value::Object(store.customers[&id].metadata.clone()),
            json!({"kept": "v"})
        );
        let mut p = params(
            json!({"mode": "subscription", "success_url": "https://app.test/ok",
            "line_items": [{"price": "price_basic", "quantity": 1}],
            "metadata": {"a": ""}, "subscription_data": {"metadata": {"b": "", "c": "1"}}}),
        );
        let id = create_checkout_session(&mut store, BASE, &p).unwrap();
        assert!(store.sessions[&id].metadata.is_empty());
        assert_eq!(
            Value::Object(store.sessions[&id].subscription_metadata.clone()),
            json!({"c": "1"})
        );
        // `metadata=` (the whole map) unsets everything.
        p.insert("metadata".into(), json!(""));
        let id = create_checkout_session(&mut store, BASE, &p).unwrap();
        assert!(store.sessions[&id].metadata.is_empty());
    }

    #[test]
    fn one_customer_constructor() {
        let mut store = store();
        let p = params(
            json!({"email": "a@b.test", "name": "A", "address": {"city": "X"},
                              "preferred_locales": ["de"]}),
        );
        let from_api = create_customer(&mut store, &p).unwrap();
        let from_checkout = insert_customer(&mut store, |c| c.email = Some("c@d.test".into()));
        let (a, b) = (
            &store.customers[&from_api],
            &store.customers[&from_checkout],
        );
        assert_eq!(a.id, from_api);
        assert_eq!(
            (a.email.as_deref(), a.name.as_deref(), &a.address["city"]),
            (Some("a@b.test"), Some("A"), &json!("X"))
        );
        assert_eq!(a.preferred_locales, vec![json!("de")]);
        assert!(b.id.starts_with("cus_") && b.id != a.id);
        assert_eq!(
            (b.email.as_deref(), b.name.as_deref()),
            (Some("c@d.test"), None)
        );
        assert_eq!(b.address, Value::Null);
        assert!(b.metadata.is_empty() && b.preferred_locales.is_empty());
        for c in [a, b] {
            assert_eq!(c.invoice_prefix.len(), 8);
            assert!(c
                .invoice_prefix
                .chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit()));
            assert!(c.created > 0);
        }
    }
}
