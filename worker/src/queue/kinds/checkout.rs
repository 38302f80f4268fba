//! The `checkout` kind: a Checkout Session for a plan or a token pack. The user's Stripe
//! customer comes from `billing.customers` (via the claim) or is created and linked first,
//! never from the row's parameters: one user, one customer.
//!
//! The parameter sets are built by pure functions, so they are unit-tested exactly
//! (DESIGN.md, "Requests and the worker"; Stripe's schema for `POST /v1/checkout/sessions`).

use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{session_result, Ctx};
use crate::queue::claim::{self, Claimed};
use crate::queue::outcome::{malformed, Outcome};
use crate::stripe::{Bounds, Stripe};

/// Creates the Checkout Session of `req` (and the user's customer first if there is none);
/// the result is the session's `url`, `session_id` and the `customer`.
pub async fn run(ctx: &Ctx, stripe: &Stripe, req: &Claimed) -> Result<Value, Outcome> {
    let params = CheckoutParams::from_json(&req.params).map_err(Outcome::Fail)?;
    let customer = match &req.stripe_customer_id {
        Some(customer) => customer.clone(),
        None => create_customer(ctx, stripe, req, params.email.as_deref()).await?,
    };
    let form = session_form(req.id, req.user_id, &customer, &params);
    let key = format!("checkout-{}", req.id);
    let bounds = Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    };
    let session = stripe
        .post("/v1/checkout/sessions", &form, &key, bounds)
        .await?;
    session_result(&session, &customer).map_err(malformed)
}

/// Creates the user's Stripe customer and links it. The key is per user, so concurrent or
/// repeated requests of one user end up with one customer.
async fn create_customer(
    ctx: &Ctx,
    stripe: &Stripe,
    req: &Claimed,
    email: Option<&str>,
) -> Result<String, Outcome> {
    let form = customer_form(req.user_id, email);
    let key = format!("customer-{}", req.user_id);
    let bounds = Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    };
    let created = stripe.post("/v1/customers", &form, &key, bounds).await?;
    let customer = customer_id(&created).map_err(malformed)?;
    let mut conn = ctx.db.get().await?;
    claim::link_customer(&mut conn, req.user_id, &customer, email).await?;
    tracing::info!(request_id = %req.id, user_id = %req.user_id, customer = %customer, "linked new Stripe customer");
    Ok(customer)
}

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
mod tests;
