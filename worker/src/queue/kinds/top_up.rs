//! The `top_up` kind: an auto top-up's charge (`billing._queue_top_up` queues it when a spend
//! crosses the user's threshold). The card saved at checkout is charged off-session, the way
//! Stripe's "charge a saved payment method" guide does it: list the customer's cards
//! (`GET /v1/customers/{id}/payment_methods`, newest first), then `POST /v1/payment_intents`
//! with that `payment_method`, `off_session=true` and `confirm=true`.
//!
//! The tokens are not granted from this answer: `payment_intent.succeeded` grants them (grant key
//! = the PaymentIntent), so an answer lost on the way grants nothing twice. A decline or a card
//! that needs its holder's authentication is a 402 `card_error`; the row then fails for good
//! and the database turns auto top-up off and tells the user (`billing.fail_request`).
//!
//! The Idempotency-Key is the row's alone: a retry after a lost answer replays the same
//! PaymentIntent. Should a newer card be listed by then, Stripe refuses the key with other
//! parameters (400 `idempotency_error`) and the row fails, rather than charging twice.

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::Ctx;
use crate::queue::claim::Claimed;
use crate::queue::outcome::{malformed, Outcome};
use crate::stripe::{Bounds, Rejection, Stripe};

/// `params` of a `top_up` row, as `billing._queue_top_up` writes them.
#[derive(Clone, Debug, Deserialize)]
pub struct TopUpParams {
    pub plan_id: String,
    pub price_id: String,
    pub tokens: i64,
    /// In the smallest unit of `currency`.
    pub amount: i64,
    pub currency: String,
}

impl TopUpParams {
    pub fn from_json(params: &Value) -> Result<TopUpParams, String> {
        TopUpParams::deserialize(params).map_err(|e| format!("invalid top-up parameters: {e}"))
    }
}

/// The code a top-up fails with when there is no card to charge; the database tells the user
/// with the code (`billing._top_up_failed`).
pub const NO_SAVED_CARD: &str = "no_saved_card";

fn no_saved_card(message: &str) -> Outcome {
    Outcome::Fail(Rejection {
        message: message.to_string(),
        code: Some(NO_SAVED_CARD.to_string()),
        ..Rejection::default()
    })
}

/// Charges the saved card; the result names the PaymentIntent and its status.
pub async fn run(ctx: &Ctx, stripe: &Stripe, req: &Claimed) -> Result<Value, Outcome> {
    let params = TopUpParams::from_json(&req.params).map_err(Outcome::fail)?;
    let customer = req.stripe_customer_id.as_deref().ok_or_else(|| {
        no_saved_card("no saved card: the user has no Stripe customer yet (buy a pack through Checkout first)")
    })?;
    let bounds = Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    };
    let cards = stripe
        .get(
            &format!("/v1/customers/{customer}/payment_methods"),
            &json!({"type": "card", "limit": 1}),
            bounds,
        )
        .await?;
    let card = newest_card(&cards.object).ok_or_else(|| {
        no_saved_card(
            "no saved card: the customer has no card to charge (buy a pack through Checkout first)",
        )
    })?;
    let form = intent_form(req.id, req.user_id, customer, &card, &params);
    let intent = stripe
        .post("/v1/payment_intents", &form, &intent_key(req.id), bounds)
        .await?;
    intent_result(&intent).map_err(malformed)
}

/// The first card of a list answer (Stripe lists newest first).
pub fn newest_card(list: &Value) -> Option<String> {
    list.get("data")?
        .as_array()?
        .iter()
        .find_map(|pm| pm.get("id").and_then(Value::as_str))
        .filter(|id| id.starts_with("pm_") || id.starts_with("card_"))
        .map(str::to_string)
}

/// `POST /v1/payment_intents`: confirmed at once, off-session, with the saved card. The
/// metadata names the request (which holds the promised tokens), the user and the pack, and
/// carries the tokens so a top-up whose request was pruned still grants
/// (`billing._apply_payment_intent`).
pub fn intent_form(
    request_id: Uuid,
    user_id: Uuid,
    customer: &str,
    card: &str,
    p: &TopUpParams,
) -> Value {
    json!({
        "amount": p.amount,
        "currency": p.currency,
        "customer": customer,
        "payment_method": card,
        "off_session": true,
        "confirm": true,
        "description": format!("Auto top-up: {}", p.plan_id),
        "metadata": {
            "request_id": request_id.to_string(),
            "user_id": user_id.to_string(),
            "plan_id": p.plan_id,
            "price_id": p.price_id,
            "top_up_tokens": p.tokens.to_string(),
        },
    })
}

/// The Idempotency-Key of the charge: one per request row.
pub fn intent_key(request_id: Uuid) -> String {
    format!("top_up-{request_id}")
}

/// The row's result: the PaymentIntent and its status (the grant waits for its webhook).
pub fn intent_result(intent: &Value) -> Result<Value, String> {
    let id = intent
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| id.starts_with("pi_"));
    let status = intent.get("status").and_then(Value::as_str);
    match (id, status) {
        (Some(id), Some(status)) => Ok(json!({"payment_intent": id, "status": status})),
        _ => Err("Stripe's PaymentIntent response has no id or status".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::form::flatten;

    fn params() -> TopUpParams {
        TopUpParams::from_json(
            &json!({"plan_id": "pack_small", "price_id": "price_1", "tokens": 500,
                                       "amount": 900, "currency": "usd"}),
        )
        .unwrap()
    }

    #[test]
    fn the_charge_is_off_session_confirmed_and_keyed_by_the_row() {
        let form = intent_form(
            Uuid::from_u128(7),
            Uuid::from_u128(9),
            "cus_1",
            "pm_1",
            &params(),
        );
        let flat = flatten(&form);
        let get = |k: &str| flat.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("amount"), Some("900"));
        assert_eq!(get("currency"), Some("usd"));
        assert_eq!(get("customer"), Some("cus_1"));
        assert_eq!(get("payment_method"), Some("pm_1"));
        assert_eq!(get("off_session"), Some("true"));
        assert_eq!(get("confirm"), Some("true"));
        assert_eq!(get("metadata[top_up_tokens]"), Some("500"));
        assert_eq!(
            get("metadata[request_id]"),
            Some(Uuid::from_u128(7).to_string().as_str())
        );
        assert_eq!(
            intent_key(Uuid::from_u128(7)),
            format!("top_up-{}", Uuid::from_u128(7))
        );
    }

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(
            newest_card(&json!({"data": [{"id": "pm_2"}, {"id": "pm_1"}]})),
            Some("pm_2".into())
        );
        assert_eq!(newest_card(&json!({"data": []})), None);
        assert_eq!(newest_card(&json!({"data": [{"id": "x"}]})), None);
        assert_eq!(
            intent_result(&json!({"id": "pi_1", "status": "succeeded"})).unwrap(),
            json!({"payment_intent": "pi_1", "status": "succeeded"})
        );
        assert!(intent_result(&json!({"id": "pi_1"})).is_err());
        assert!(TopUpParams::from_json(&json!({"plan_id": "p"})).is_err());
    }
}
