//! The `seats` kind: a team's seat change (`billing.request_seat_change`). The subscription
//! item's quantity is updated with `POST /v1/subscriptions/{id}` (`items[0][id]`,
//! `items[0][quantity]`, `proration_behavior` as the operator configured it), the way Stripe's
//! API reference updates a quantity; Stripe prorates a quantity change like a price change.
//!
//! Stripe's answer is the subscription after the change: it is applied at once as a report of
//! the subscription at the answer's `Date` (`billing.ingest_retrieved`), so the team's seats are
//! right when the request succeeds, and the `customer.subscription.updated` event that follows
//! is an older or equal report that changes nothing. The tokens of the added seats come, as for
//! any plan change, from the invoice that charges them (`invoice.paid`).
//!
//! The Idempotency-Key is the row's: a retry after a lost answer replays the first change
//! instead of making it twice.

use serde::Deserialize;
use serde_json::{json, Value};

use super::Ctx;
use crate::queue::claim::Claimed;
use crate::queue::outcome::{malformed, Outcome};
use crate::stripe::{Bounds, Stripe};

/// `params` of a `seats` row, as `billing.request_seat_change` writes them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SeatParams {
    pub subscription_id: String,
    pub item_id: String,
    pub quantity: i64,
    pub proration_behavior: String,
}

impl SeatParams {
    pub fn from_json(params: &Value) -> Result<SeatParams, String> {
        let p = SeatParams::deserialize(params)
            .map_err(|e| format!("invalid seat change parameters: {e}"))?;
        let behavior_known = matches!(
            p.proration_behavior.as_str(),
            "create_prorations" | "always_invoice" | "none"
        );
        if !super::is_stripe_id(&p.subscription_id, "sub_")
            || !super::is_stripe_id(&p.item_id, "si_")
            || p.quantity < 1
            || !behavior_known
        {
            return Err("invalid seat change parameters: a sub_ and si_ id, a quantity of 1 or more and a proration_behavior are needed".into());
        }
        Ok(p)
    }
}

/// `POST /v1/subscriptions/{id}`'s form: the one item's new quantity and how to prorate it.
pub fn update_form(p: &SeatParams) -> Value {
    json!({
        "items": [{"id": p.item_id, "quantity": p.quantity}],
        "proration_behavior": p.proration_behavior,
    })
}

/// The Idempotency-Key of the change: one per request row.
pub fn update_key(request_id: uuid::Uuid) -> String {
    format!("seats-{request_id}")
}

/// The quantity of `item` in Stripe's answer: Err when the answer is not the updated
/// subscription.
pub fn answered_quantity(subscription: &Value, item: &str) -> Result<i64, String> {
    subscription
        .pointer("/items/data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|i| i.get("id").and_then(Value::as_str) == Some(item))
        .and_then(|i| i.get("quantity").and_then(Value::as_i64))
        .ok_or_else(|| format!("Stripe's subscription answer has no item {item} with a quantity"))
}

/// Updates the quantity and applies Stripe's answer; the result names the subscription and
/// the quantity Stripe now has.
pub async fn run(ctx: &Ctx, stripe: &Stripe, req: &Claimed) -> Result<Value, Outcome> {
    let p = SeatParams::from_json(&req.params).map_err(Outcome::fail)?;
    let bounds = Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    };
    let answer = stripe
        .post_answer(
            &format!("/v1/subscriptions/{}", p.subscription_id),
            &update_form(&p),
            &update_key(req.id),
            bounds,
        )
        .await?;
    let quantity = answered_quantity(&answer.object, &p.item_id).map_err(malformed)?;
    let applied = super::retrieve::ingest(ctx, req, &answer).await?;
    Ok(json!({"subscription": p.subscription_id, "quantity": quantity, "applied": applied}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::form::flatten;

    fn params() -> Value {
        json!({"subscription_id": "sub_1", "item_id": "si_1", "quantity": 5, "from_quantity": 3,
               "proration_behavior": "always_invoice"})
    }

    #[test]
    fn the_update_names_the_item_its_quantity_and_the_proration() {
        let p = SeatParams::from_json(&params()).unwrap();
        let flat = flatten(&update_form(&p));
        let got: Vec<(&str, &str)> = flat.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("items[0][id]", "si_1"),
                ("items[0][quantity]", "5"),
                ("proration_behavior", "always_invoice"),
            ]
        );
        let id = uuid::Uuid::from_u128(3);
        assert_eq!(update_key(id), format!("seats-{id}"));
    }

    #[test]
    fn parameters_are_checked_before_they_reach_a_path() {
        for bad in [
            json!({"subscription_id": "sub_1/../x", "item_id": "si_1", "quantity": 5, "proration_behavior": "none"}),
            json!({"subscription_id": "sub_1", "item_id": "x", "quantity": 5, "proration_behavior": "none"}),
            json!({"subscription_id": "sub_1", "item_id": "si_1", "quantity": 0, "proration_behavior": "none"}),
            json!({"subscription_id": "sub_1", "item_id": "si_1", "quantity": 5, "proration_behavior": "later"}),
            json!({"subscription_id": "sub_1", "item_id": "si_1"}),
        ] {
            assert!(SeatParams::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_answer_must_carry_the_item() {
        let sub = json!({"id": "sub_1", "items": {"data": [{"id": "si_0", "quantity": 1},
                                                           {"id": "si_1", "quantity": 5}]}});
        assert_eq!(answered_quantity(&sub, "si_1"), Ok(5));
        assert!(answered_quantity(&sub, "si_2").is_err());
        assert!(answered_quantity(&json!({"id": "sub_1"}), "si_1").is_err());
    }
}
