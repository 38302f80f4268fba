//! The `checkout` kind: a Checkout Session for a plan or a token pack. The user's Stripe
//! customer comes from `billing.customers` (via the claim) or is created and linked first,
//! never from the row's parameters: one user, one customer.
//!
//! What may be asked for is decided in SQL (`billing.request_checkout`: coupons, quantities,
//! URLs, tax ID collection, saving the card); this module turns the row's parameters into
//! Stripe's form, by pure functions that are unit-tested exactly (DESIGN.md, "Requests and the
//! worker"; Stripe's schema for `POST /v1/checkout/sessions`).

use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{session_result, Ctx};
use crate::db::DbError;
use crate::queue::claim::{self, Claimed};
use crate::queue::outcome::{malformed, Outcome};
use crate::stripe::{Bounds, Stripe, StripeError};

/// Creates the Checkout Session of `req` (and the user's customer first if there is none);
/// the result is the session's `url`, `session_id` and the `customer`.
pub async fn run(ctx: &Ctx, stripe: &Stripe, req: &Claimed) -> Result<Value, Outcome> {
    let params = CheckoutParams::from_json(&req.params).map_err(Outcome::fail)?;
    let bounds = Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    };
    if let Some(old) = &params.expire_session {
        expire_open_session(stripe, req, old, bounds).await?;
    }
    let customer = match &req.stripe_customer_id {
        Some(customer) => customer.clone(),
        None => create_customer(ctx, stripe, req, params.email.as_deref()).await?,
    };
    let form = session_form(req.id, req.user_id, &customer, &params);
    let key = session_key(req.id, &customer);
    let session = stripe
        .post("/v1/checkout/sessions", &form, &key, bounds)
        .await?;
    session_result(&session, &customer).map_err(malformed)
}

/// The user asked for another subscription checkout while one was open: that one must not be
/// payable as well. Stripe refuses to expire a session that is not open; then what matters is
/// whether it was paid.
async fn expire_open_session(
    stripe: &Stripe,
    req: &Claimed,
    session: &str,
    bounds: Bounds<'_>,
) -> Result<(), Outcome> {
    let path = format!("/v1/checkout/sessions/{session}");
    let key = format!("expire-{}", req.id);
    match stripe
        .post(&format!("{path}/expire"), &json!({}), &key, bounds)
        .await
    {
        Ok(_) => Ok(()),
        Err(StripeError::Rejected(_)) => {
            let current = stripe.get(&path, &json!({}), bounds).await?;
            match current.object.get("status").and_then(Value::as_str) {
                Some("expired") => Ok(()),
                Some("complete") => Err(Outcome::fail(
                    "your previous subscription checkout was completed; the subscription is on its way",
                )),
                other => Err(Outcome::fail(format!(
                    "the previous checkout session could not be expired (status {})",
                    other.unwrap_or("unknown")
                ))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates the user's Stripe customer and links it. The idempotency key is this request's, so
/// a retry of the request returns the customer it created; a user has one request running at
/// a time (`billing.claim_requests`). Should another link have appeared meanwhile, the user
/// keeps that one.
async fn create_customer(
    ctx: &Ctx,
    stripe: &Stripe,
    req: &Claimed,
    email: Option<&str>,
) -> Result<String, Outcome> {
    let form = customer_form(req.user_id, email);
    let key = format!("customer-{}", req.id);
    let bounds = Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    };
    let created = stripe.post("/v1/customers", &form, &key, bounds).await?;
    let customer = customer_id(&created).map_err(malformed)?;
    let mut conn = ctx.db.get().await?;
    match claim::link_customer(&mut conn, req.user_id, &customer, email).await {
        Ok(()) => {
            tracing::info!(request_id = %req.id, user_id = %req.user_id, customer = %customer, "linked new Stripe customer");
            Ok(customer)
        }
        Err(e) if already_linked(&e) => claim::customer_of(&mut conn, req.user_id)
            .await?
            .ok_or_else(|| e.into()),
        Err(e) => Err(e.into()),
    }
}

/// `BL008`: the user (or the customer) is linked to another already.
fn already_linked(e: &DbError) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "BL008")
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

/// `params` of a `checkout` row, as `billing.request_checkout` writes them (and checks them:
/// nothing here decides what is allowed).
#[derive(Clone, Debug, Deserialize)]
pub struct CheckoutParams {
    pub price_id: String,
    pub plan_id: Option<String>,
    pub mode: Mode,
    pub quantity: Option<i64>,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub project_id: Option<String>,
    pub coupon: Option<String>,
    pub allow_promotion_codes: Option<bool>,
    /// Collect business tax IDs (billing.config.collect_tax_ids).
    pub collect_tax_ids: Option<bool>,
    /// Save a token pack's card for the next purchase (billing.config.save_payment_method).
    pub save_payment_method: Option<bool>,
    /// Save it for off-session use too: the user has auto top-up (`billing.auto_top_ups`).
    pub save_for_off_session: Option<bool>,
    /// A subscription checkout of the same user that is still open and must be expired first.
    pub expire_session: Option<String>,
    pub email: Option<String>,
}

impl CheckoutParams {
    /// Reads the row's parameters; the message says what is wrong.
    pub fn from_json(params: &Value) -> Result<CheckoutParams, String> {
        CheckoutParams::deserialize(params).map_err(|e| format!("invalid checkout parameters: {e}"))
    }
}

/// `POST /v1/customers`: one customer per user, tagged with the user id so it can be traced
/// back from the Stripe dashboard (and linked again from `customer.*` events).
pub fn customer_form(user_id: Uuid, email: Option<&str>) -> Value {
    json!({
        "email": email.filter(|e| !e.is_empty()),
        "metadata": {"user_id": user_id.to_string()},
    })
}

/// `POST /v1/checkout/sessions` for an existing customer.
///
/// - `client_reference_id` and `metadata` let the webhook attribute the session to the user
///   and the request (which holds the promised tokens and the project); subscription mode
///   copies the user into the subscription's metadata, which later invoices and events carry.
///   The price, plan and project in the metadata are for people reading the Dashboard.
/// - Tax ID collection for an existing customer needs `customer_update[name]=auto`, and
///   `customer_update[address]=auto` when the customer has no address (ours never do: they
///   are created with an email only). Stripe refuses the session otherwise.
/// - In payment mode with a customer, `payment_intent_data[setup_future_usage]=on_session`
///   saves the card to the customer for the next purchase; `off_session` when the user has
///   auto top-up, whose charges are made without them (Stripe: "Use off_session if your
///   customer may or may not be present in your checkout flow").
/// - Never `customer_creation`: we always pass `customer`.
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
    let mut form = json!({
        "mode": p.mode.as_str(),
        "customer": customer,
        "client_reference_id": user,
        "line_items": [{"price": p.price_id, "quantity": p.quantity.unwrap_or(1)}],
        "success_url": p.success_url,
        "cancel_url": p.cancel_url,
        "metadata": metadata,
    });
    if p.collect_tax_ids != Some(false) {
        form["tax_id_collection"] = json!({"enabled": true});
        form["customer_update"] = json!({"name": "auto", "address": "auto"});
    }
    match p.mode {
        Mode::Subscription => {
            form["subscription_data"] = json!({
                "metadata": {"user_id": user, "price_id": p.price_id},
            });
        }
        Mode::Payment if p.save_payment_method == Some(true) => {
            let usage = if p.save_for_off_session == Some(true) {
                "off_session"
            } else {
                "on_session"
            };
            form["payment_intent_data"] = json!({"setup_future_usage": usage});
        }
        Mode::Payment => {}
    }
    if p.allow_promotion_codes == Some(true) {
        form["allow_promotion_codes"] = json!(true);
    }
    if let Some(coupon) = &p.coupon {
        form["discounts"] = json!([{"coupon": coupon}]);
    }
    form
}

/// The Idempotency-Key of the Checkout Session call: keyed by what the call sends. The form
/// is made from the request's row, fixed once queued, and the customer, which is not: when
/// Stripe no longer has the linked customer (deleted in the Dashboard), `billing.fail_request`
/// forgets the link and the retry creates another customer. Stripe refuses a key used before
/// with other parameters (400 `idempotency_error`), so the customer is part of the key: a
/// retry with the same customer replays the first answer, one with a new customer is a new
/// call (https://docs.stripe.com/api/idempotent_requests; the emulator's rules table).
pub fn session_key(request_id: Uuid, customer: &str) -> String {
    format!("checkout-{request_id}-{customer}")
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
