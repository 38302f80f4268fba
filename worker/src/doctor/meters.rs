//! The doctor's metered-overage checks (DESIGN.md, "Metered overage"): for each active plan
//! with `overage_limit`, Stripe must have an active Billing Meter whose `event_name` is the
//! plan's `meter_event_name` (`GET /v1/billing/meters`), and the plan's product a price
//! metered on that meter (`GET /v1/prices?product=…`, its `recurring.meter`). Without the
//! meter Stripe refuses nothing at once and reports the events as errors later; without the
//! price the usage is metered but never invoiced. Either way overage would go unbilled.

use serde_json::{json, Value};

use super::account::{segment, Client, Mode};
use super::database::Plan;
use super::Check;
use crate::stripe::StripeError;

/// The checks of the plans that allow overage; none when no plan does.
pub(super) async fn checks(client: &Client, plans: &[Plan], mode: Mode) -> Vec<Check> {
    let metered: Vec<&Plan> = plans
        .iter()
        .filter(|p| p.meter_event_name.is_some())
        .collect();
    if metered.is_empty() {
        return Vec::new();
    }
    let meters = client.list("/v1/billing/meters").await;
    let mut out = Vec::new();
    for plan in metered {
        out.push(match &meters {
            Ok(meters) => plan_check(client, plan, meters, mode).await,
            Err(e) => Check::unknown(name(plan), format!("cannot list Billing Meters: {e}")),
        });
    }
    out
}

fn name(plan: &Plan) -> String {
    format!("meter of plan {}", plan.id)
}

/// The active meter recording `event_name`, if any.
pub fn meter_for<'a>(meters: &'a [Value], event_name: &str) -> Option<&'a Value> {
    meters
        .iter()
        .find(|m| m["event_name"] == event_name && m["status"] == "active")
}

/// Whether one of `prices` is active and metered on the meter `meter_id`.
pub fn metered_price<'a>(prices: &'a [Value], meter_id: &str) -> Option<&'a Value> {
    prices
        .iter()
        .find(|p| p["active"] != json!(false) && p["recurring"]["meter"] == meter_id)
}

async fn plan_check(client: &Client, plan: &Plan, meters: &[Value], mode: Mode) -> Check {
    let event_name = plan.meter_event_name.as_deref().unwrap_or_default();
    let Some(meter) = meter_for(meters, event_name) else {
        return Check::problem(
            name(plan),
            format!(
                "no active Billing Meter has event_name {event_name} in Stripe's {} mode: the plan's overage is reported to no meter and never billed",
                mode.name()
            ),
            format!(
                "create the meter in {} (event name {event_name}, aggregation sum), or UPDATE billing.plans SET meter_event_name = '<an existing meter's event name>' WHERE id = '{}';",
                mode.dashboard("meters"),
                plan.id
            ),
        );
    };
    let meter_id = meter["id"].as_str().unwrap_or_default();
    let product = match client
        .get(&format!("/v1/prices/{}", segment(&plan.price)), json!({}))
        .await
    {
        Ok(price) => price["product"].as_str().unwrap_or_default().to_string(),
        Err(StripeError::Rejected(r)) => return Check::skipped(name(plan), r.message),
        Err(e) => {
            return Check::unknown(name(plan), format!("cannot read price {}: {e}", plan.price))
        }
    };
    let prices = client
        .list_with("/v1/prices", json!({"product": product, "active": true}))
        .await;
    match prices {
        Ok(prices) => match metered_price(&prices, meter_id) {
            Some(price) => Check::passed(
                name(plan),
                format!(
                    "meter {meter_id} ({event_name}) is active, and price {} of product {product} is metered on it",
                    price["id"].as_str().unwrap_or_default()
                ),
            ),
            None => Check::problem(
                name(plan),
                format!(
                    "meter {meter_id} ({event_name}) exists, but no active price of product {product} (plan {}'s price {}) is metered on it: overage is recorded and never invoiced",
                    plan.id, plan.price
                ),
                format!(
                    "add a usage-based price on meter {meter_id} to product {product} in {}, and put it on the plan's subscriptions",
                    mode.dashboard("products")
                ),
            ),
        },
        Err(e) => Check::unknown(name(plan), format!("cannot list the prices of {product}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_is_found_by_its_event_name_and_the_price_by_its_meter() {
        let meters = vec![
            json!({"id": "mtr_old", "event_name": "tokens", "status": "inactive"}),
            json!({"id": "mtr_1", "event_name": "tokens", "status": "active"}),
            json!({"id": "mtr_2", "event_name": "other", "status": "active"}),
        ];
        assert_eq!(meter_for(&meters, "tokens").unwrap()["id"], "mtr_1");
        assert!(meter_for(&meters, "missing").is_none());
        let prices = vec![
            json!({"id": "price_flat", "active": true, "recurring": {"meter": null}}),
            json!({"id": "price_gone", "active": false, "recurring": {"meter": "mtr_1"}}),
            json!({"id": "price_over", "active": true, "recurring": {"meter": "mtr_1"}}),
        ];
        assert_eq!(metered_price(&prices, "mtr_1").unwrap()["id"], "price_over");
        assert!(metered_price(&prices, "mtr_2").is_none());
        assert!(
            metered_price(&prices[..2], "mtr_1").is_none(),
            "an archived price does not bill"
        );
    }
}
