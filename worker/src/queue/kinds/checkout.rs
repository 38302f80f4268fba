//! The Stripe parameters of each request kind, built from a claimed row. Pure functions, so
//! the exact parameter sets are unit-tested (ARCHITECTURE.md §7; Stripe's schema for
//! `POST /v1/checkout/sessions`).

use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Checkout mode; the SQL side picks it from the plan's kind.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Subscription,
    Payment,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Subscription => "subscription",
            Mode::Payment => "payment",
        }
    }
}

/// `params` of a `checkout` row, as `billing.request_checkout` writes them.
#[derive(Clone, Debug, Deserialize)]
pub struct CheckoutParams {
    pub price_id: String,
    pub plan_id: Option<String>,
    pub mode: Mode,
    pub quantity: Option<i64>,
    /// Tokens the pack grants (token packs only).
    pub tokens: Option<i64>,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub project_id: Option<String>,
    pub coupon: Option<String>,
    pub allow_promotion_codes: Option<bool>,
    pub email: Option<String>,
}

impl CheckoutParams {
    /// Reads and checks the row's parameters; the message says what is wrong.
    pub fn from_json(params: &Value) -> Result<CheckoutParams, String> {
        let p = CheckoutParams::deserialize(params)
            .map_err(|e| format!("invalid checkout parameters: {e}"))?;
        if p.price_id.is_empty() {
            return Err("invalid checkout parameters: price_id is empty".into());
        }
        if p.quantity.is_some_and(|q| q < 1) {
            return Err("invalid checkout parameters: quantity must be positive".into());
        }
        Ok(p)
    }
}

/// `params` of a `portal` row.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PortalParams {
    pub return_url: Option<String>,
}

impl PortalParams {
    pub fn from_json(params: &Value) -> Result<PortalParams, String> {
        PortalParams::deserialize(params).map_err(|e| format!("invalid portal parameters: {e}"))
    }
}

/// `POST /v1/customers`: one customer per user, tagged with the user id so it can be traced
/// back from the Stripe dashboard.
pub fn customer_form(user_id: Uuid, email: Option<&str>) -> Value {
    json!({
        "email": email.filter(|e| !e.is_empty()),
        "metadata": {"user_id": user_id.to_string()},
    })
}

/// `POST /v1/checkout/sessions` for an existing customer.
///
/// - `client_reference_id` and `metadata` let the webhook attribute the session to the user
///   (and project) and the pack's tokens; subscription mode copies the user into the
///   subscription's metadata, which later invoices and subscription events carry.
/// - A coupon and `allow_promotion_codes` exclude each other (Stripe rejects both); promotion
///   codes win because the user then chooses.
/// - Tax ID collection for an existing customer requires `customer_update[name]=auto`.
/// - Never `customer_creation` (we always pass `customer`, and Stripe forbids both) nor
///   `payment_intent_data` (nothing to set there).
pub fn session_form(request_id: Uuid, user_id: Uuid, customer: &str, p: &CheckoutParams) -> Value {
    let user = user_id.to_string();
    let mut metadata = Map::new();
    metadata.insert("user_id".into(), json!(user));
    metadata.insert("price_id".into(), json!(p.price_id));
    metadata.insert("request_id".into(), json!(request_id.to_string()));
    if let Some(plan) = &p.plan_id {
        metadata.insert("plan_id".into(), json!(plan));
    }
    if let Some(project) = &p.project_id {
        metadata.insert("project_id".into(), json!(project));
    }
    if let Some(tokens) = p.tokens {
        // Stripe metadata values are strings.
        metadata.insert("tokens".into(), json!(tokens.to_string()));
    }
    let mut form = json!({
        "mode": p.mode.as_str(),
        "customer": customer,
        "client_reference_id": user,
        "line_items": [{"price": p.price_id, "quantity": p.quantity.unwrap_or(1)}],
        "success_url": p.success_url,
        "cancel_url": p.cancel_url,
        "metadata": metadata,
        "tax_id_collection": {"enabled": true},
        "customer_update": {"name": "auto"},
    });
    if p.mode == Mode::Subscription {
        form["subscription_data"] = json!({
            "metadata": {"user_id": user, "price_id": p.price_id},
        });
    }
    if p.allow_promotion_codes == Some(true) {
        form["allow_promotion_codes"] = json!(true);
    } else if let Some(coupon) = p.coupon.as_deref().filter(|c| !c.is_empty()) {
        form["discounts"] = json!([{"coupon": coupon}]);
    }
    form
}

/// `POST /v1/billing_portal/sessions`.
pub fn portal_form(customer: &str, p: &PortalParams) -> Value {
    json!({"customer": customer, "return_url": p.return_url})
}

/// The result written to the request row from a Checkout or Portal session: `url`,
/// `session_id` and `customer`. Err when Stripe's answer lacks them.
pub fn session_result(session: &Value, customer: &str) -> Result<Value, String> {
    let id = session.get("id").and_then(Value::as_str);
    let url = session.get("url").and_then(Value::as_str);
    match (id, url) {
        (Some(id), Some(url)) if !id.is_empty() && !url.is_empty() => {
            Ok(json!({"url": url, "session_id": id, "customer": customer}))
        }
        _ => Err("Stripe's session response has no id or url".into()),
    }
}

/// The id of a created customer.
pub fn customer_id(customer: &Value) -> Result<String, String> {
    customer
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "Stripe's customer response has no id".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::form::flatten;
    use std::collections::BTreeMap;

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
            "allow_promotion_codes": true, "email": "u@a.test",
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
                ("customer_update[name]", "auto"),
            ])
        );
    }

    #[test]
    fn payment_mode_with_project_and_coupon() {
        let p = params(json!({
            "price_id": "price_pack", "plan_id": "pack", "mode": "payment", "quantity": 3,
            "tokens": 1500, "success_url": "https://a.test/ok", "cancel_url": "https://a.test/no",
            "project_id": "33333333-3333-3333-3333-333333333333", "coupon": "SPRING",
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
                ("metadata[tokens]", "1500"),
                ("metadata[request_id]", REQUEST_S),
                ("discounts[0][coupon]", "SPRING"),
                ("tax_id_collection[enabled]", "true"),
                ("customer_update[name]", "auto"),
            ])
        );
    }

    #[test]
    fn never_coupon_and_promotion_codes_together_nor_customer_creation() {
        for mode in ["subscription", "payment"] {
            for promo in [None, Some(false), Some(true)] {
                for coupon in [None, Some("C1")] {
                    let p = params(json!({
                        "price_id": "price_x", "mode": mode, "success_url": "https://a.test/",
                        "coupon": coupon, "allow_promotion_codes": promo,
                    }));
                    let got = pairs(&session_form(REQUEST, USER, "cus_1", &p));
                    let has_promo = got.contains_key("allow_promotion_codes");
                    let has_coupon = got.contains_key("discounts[0][coupon]");
                    assert!(!(has_promo && has_coupon), "{mode} {promo:?} {coupon:?}");
                    assert_eq!(has_promo, promo == Some(true));
                    assert_eq!(has_coupon, coupon.is_some() && promo != Some(true));
                    assert!(!got.contains_key("customer_creation"));
                    assert!(!got.keys().any(|k| k.starts_with("payment_intent_data")));
                    assert!(!got.keys().any(|k| k.starts_with("customer_email")));
                    assert_eq!(
                        got.keys().any(|k| k.starts_with("subscription_data")),
                        mode == "subscription"
                    );
                    // Optional fields that are absent are not sent at all.
                    assert!(!got.contains_key("cancel_url"));
                    assert!(!got.contains_key("metadata[tokens]"));
                    assert_eq!(got["line_items[0][quantity]"], "1");
                }
            }
        }
    }

    #[test]
    fn bad_params_are_reported() {
        for bad in [
            json!({}),
            json!({"price_id": "p", "mode": "setup", "success_url": "https://a/"}),
            json!({"price_id": "", "mode": "payment", "success_url": "https://a/"}),
            json!({"price_id": "p", "mode": "payment", "success_url": "https://a/", "quantity": 0}),
            json!({"price_id": "p", "mode": "payment", "success_url": "https://a/", "tokens": "x"}),
            json!("not an object"),
        ] {
            let err = CheckoutParams::from_json(&bad).expect_err(&bad.to_string());
            assert!(err.starts_with("invalid checkout parameters"), "{err}");
        }
    }

    #[test]
    fn customer_and_portal_forms() {
        assert_eq!(
            pairs(&customer_form(USER, Some("u@a.test"))),
            expected(&[("email", "u@a.test"), ("metadata[user_id]", USER_S)])
        );
        assert_eq!(
            pairs(&customer_form(USER, Some(""))),
            expected(&[("metadata[user_id]", USER_S)])
        );
        let p = PortalParams::from_json(&json!({"return_url": "https://a.test/account"})).unwrap();
        assert_eq!(
            pairs(&portal_form("cus_1", &p)),
            expected(&[
                ("customer", "cus_1"),
                ("return_url", "https://a.test/account")
            ])
        );
        assert!(PortalParams::from_json(&json!({"return_url": 5})).is_err());
    }

    #[test]
    fn results_need_id_and_url() {
        let ok = session_result(&json!({"id": "cs_1", "url": "https://pay/cs_1"}), "cus_1");
        assert_eq!(
            ok.unwrap(),
            json!({"url": "https://pay/cs_1", "session_id": "cs_1", "customer": "cus_1"})
        );
        assert!(session_result(&json!({"id": "cs_1", "url": null}), "cus_1").is_err());
        assert_eq!(customer_id(&json!({"id": "cus_9"})).unwrap(), "cus_9");
        assert!(customer_id(&json!({})).is_err());
    }
}
