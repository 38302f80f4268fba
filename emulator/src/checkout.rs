//! `POST /v1/checkout/sessions` after the schema check: the business rules Stripe applies
//! (each listed with its source in `emulator/README.md`), then the stored session.
//!
//! Rules that depend on the API version take the request's [`Shape`]: basil makes
//! `success_url` optional in the schema (embedded and custom sessions use `return_url`) and
//! lets `submit_type` be used in subscription mode.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::lifecycle::Ctx;
use super::render::Shape;
use super::resources::{check_email, check_url, existing_customer, metadata, str_param};
use super::store::{ids, Customer, Session, SessionLine, Store, StoredEvent, SESSION_LIFETIME};

/// `You can not pass `{key}` in `{mode}` mode.`, Stripe's wording for a parameter the mode
/// does not take (reported for `payment_intent_data` in subscription mode and `line_items` in
/// setup mode).
fn not_in_mode(key: &str, mode: &str) -> ApiError {
    ApiError::invalid(key, format!("You can not pass `{key}` in `{mode}` mode."))
}

/// The session's UI mode rules: hosted sessions need `success_url` (the 2023-08-16 schema
/// requires it outright); embedded and custom ones do not take `success_url`/`cancel_url`.
fn check_ui_mode(p: &Map<String, Value>) -> Result<(), ApiError> {
    let ui_mode = str_param(p, "ui_mode").unwrap_or_else(|| "hosted".into());
    if ui_mode == "hosted" {
        if !p.contains_key("success_url") {
            return Err(ApiError::missing_param("success_url"));
        }
        return Ok(());
    }
    let given: Vec<&str> = ["cancel_url", "success_url"]
        .into_iter()
        .filter(|k| p.contains_key(*k))
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "invalid_request_error",
        format!(
            "The following parameters are not supported with 'ui_mode: {ui_mode}': {}.",
            given.join(", ")
        ),
    ))
}

/// Parameters that only some modes take.
fn check_mode_params(p: &Map<String, Value>, mode: &str, shape: Shape) -> Result<(), ApiError> {
    if mode == "setup" && p.contains_key("line_items") {
        return Err(not_in_mode("line_items", mode));
    }
    if mode != "payment" && p.contains_key("payment_intent_data") {
        return Err(not_in_mode("payment_intent_data", mode));
    }
    if mode != "subscription" && p.contains_key("subscription_data") {
        return Err(not_in_mode("subscription_data", mode));
    }
    // The spec text allows `customer_creation` in payment and setup mode; Stripe's answer in
    // subscription mode carries no `param`.
    if mode == "subscription" && p.contains_key("customer_creation") {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "`customer_creation` can only be used in `payment` mode.",
        ));
    }
    let invoices = p
        .get("invoice_creation")
        .is_some_and(|i| i["enabled"] == true);
    if invoices && mode != "payment" {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "You can only enable invoice creation when `mode` is set to `payment`. Invoices are \
             created automatically when `mode` is set to `subscription`, and are unsupported \
             when set to `setup`. To learn more visit \
             https://stripe.com/docs/payments/checkout/post-payment-invoices.",
        ));
    }
    // 2023-08-16: "only ... in `payment` mode"; basil: "in `payment` or `subscription` mode".
    let submit_ok = match shape {
        Shape::V2023 => mode == "payment",
        Shape::Basil => mode != "setup",
    };
    if p.contains_key("submit_type") && !submit_ok {
        return Err(not_in_mode("submit_type", mode));
    }
    Ok(())
}

/// Whether the customer has an address Stripe can use for tax ID collection. Stripe does not
/// document what makes an address valid; the emulator asks for a country.
fn has_valid_address(c: &Customer) -> bool {
    c.address["country"].as_str().is_some_and(|s| !s.is_empty())
}

/// Tax ID collection for an existing customer needs `customer_update[name]=auto` and, when
/// the customer has no valid address, `customer_update[address]=auto` (checked in that
/// order). Which `param` Stripe names is not known; the emulator names `customer_update`.
fn check_tax_ids(p: &Map<String, Value>, customer: &Customer) -> Result<(), ApiError> {
    let collects = p
        .get("tax_id_collection")
        .is_some_and(|t| t["enabled"] == true);
    if !collects {
        return Ok(());
    }
    let update = |field: &str| p.get("customer_update").is_some_and(|u| u[field] == "auto");
    if !update("name") {
        return Err(ApiError::invalid(
            "customer_update",
            "Tax ID collection requires updating business name on the customer. To enable tax \
             ID collection for an existing customer, please set `customer_update[name]` to \
             `auto`.",
        ));
    }
    if !has_valid_address(customer) && !update("address") {
        return Err(ApiError::invalid(
            "customer_update",
            "We could not find a valid address on the provided customer. To enable tax ID \
             collection, please set customer_update[address] to auto.",
        ));
    }
    Ok(())
}

/// Checkout takes one discount, never together with `allow_promotion_codes` (even
/// `allow_promotion_codes=false`). Returns the coupon id.
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
    if let Some(code) = d["promotion_code"].as_str() {
        // The emulator has no promotion codes: every id is unknown.
        return Err(ApiError::no_such(
            "promotion code",
            code,
            Some("discounts[0][promotion_code]"),
        ));
    }
    match d["coupon"].as_str() {
        Some(c) if !store.coupons.contains_key(c) => {
            Err(ApiError::no_such("coupon", c, Some("discounts[0][coupon]")))
        }
        c => Ok(c.map(str::to_string)),
    }
}

/// The line items, checked one by one in order. Returns the lines and the subtotal.
fn line_items(
    store: &Store,
    p: &Map<String, Value>,
    mode: &str,
) -> Result<(Vec<SessionLine>, i64), ApiError> {
    let items = p
        .get("line_items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
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
        let Some(price_id) = item["price"].as_str() else {
            return Err(ApiError::invalid(
                format!("line_items[{i}]"),
                "You must provide either price or price_data for each line item when using prices.",
            ));
        };
        // No default of 1: a price-based line item must say how many. Stripe sends no `code`.
        let Some(quantity) = item.get("quantity").and_then(Value::as_i64) else {
            return Err(ApiError::invalid(
                format!("line_items[{i}]"),
                format!("Quantity is required. Add `quantity` to `line_items[{i}]`"),
            ));
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
        if !price.active {
            return Err(ApiError::invalid(
                param("price"),
                "The price specified is inactive. This field only accepts active prices.",
            ));
        }
        if price.is_recurring() && mode == "payment" {
            return Err(ApiError::invalid(
                format!("line_items[{i}]"),
                "You specified `payment` mode but passed a recurring price. Either switch to \
                 `subscription` mode or use only one-time prices.",
            ));
        }
        has_recurring |= price.is_recurring();
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
    Ok((lines, subtotal))
}

/// `subscription_data[trial_period_days]` "Has to be at least 1", `subscription_data[trial_end]`
/// "at least 48 hours in the future" (spec text).
fn check_trial(p: &Map<String, Value>, now: i64) -> Result<(), ApiError> {
    let data = p.get("subscription_data");
    if let Some(days) = data.and_then(|d| d["trial_period_days"].as_i64()) {
        if days < 1 {
            return Err(ApiError::invalid(
                "subscription_data[trial_period_days]",
                "This value must be greater than or equal to 1.",
            )
            .code("parameter_invalid_integer"));
        }
    }
    if let Some(end) = data.and_then(|d| d["trial_end"].as_i64()) {
        if end < now + 48 * 3600 {
            return Err(ApiError::invalid(
                "subscription_data[trial_end]",
                "`trial_end` must be at least 48 hours in the future.",
            ));
        }
    }
    Ok(())
}

/// `POST /v1/checkout/sessions`, after the schema check.
pub fn create_checkout_session(
    store: &mut Store,
    base_url: &str,
    shape: Shape,
    p: &Map<String, Value>,
) -> Result<String, ApiError> {
    check_ui_mode(p)?;
    // Both schemas make `mode` optional and no source says what Stripe answers without it:
    // the emulator treats such a session as payment mode.
    let mode = str_param(p, "mode").unwrap_or_else(|| "payment".into());
    check_mode_params(p, &mode, shape)?;
    check_url(p, "success_url")?;
    check_url(p, "cancel_url")?;
    check_email(p, "customer_email")?;

    let customer = str_param(p, "customer");
    if customer.is_some() && p.contains_key("customer_email") {
        return Err(ApiError::exclusive(&["customer", "customer_email"]));
    }
    if customer.is_none() && p.contains_key("customer_update") {
        return Err(ApiError::invalid(
            "customer_update",
            "`customer_update` can only be used with `customer`.",
        ));
    }
    if let Some(c) = &customer {
        let existing = existing_customer(store, c, "customer")?;
        check_tax_ids(p, existing)?;
    }
    let coupon = check_discounts(store, p)?;
    let (lines, subtotal) = line_items(store, p, &mode)?;
    let discount = coupon
        .as_ref()
        .and_then(|c| store.coupons.get(c))
        .map_or(0, |c| c.discount_on(subtotal));

    let created = store.clock.now();
    check_trial(p, created)?;
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
        params: p.clone(),
        ..Default::default()
    };
    store.sessions.insert(id.clone(), session);
    Ok(id)
}

/// `POST /v1/checkout/sessions/{id}/expire`: "A Checkout Session can be expired when it is in
/// one of these statuses: `open`". The session becomes `expired` (its URL is cleared) and
/// `checkout.session.expired` is sent; any other status is Stripe's 400.
pub fn expire_session(
    ctx: &Ctx,
    store: &mut Store,
    id: &str,
) -> Result<Vec<StoredEvent>, ApiError> {
    let session = store
        .sessions
        .get_mut(id)
        .ok_or_else(|| ApiError::not_found("checkout.session", id, "id"))?;
    if session.status != "open" {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!(
                "Only Checkout Sessions with a status in [\"open\"] can be expired. This \
                 Checkout Session has a status of `{}`.",
                session.status
            ),
        ));
    }
    session.status = "expired".into();
    Ok(vec![ctx.emit_now(store, "checkout.session.expired", id)])
}
