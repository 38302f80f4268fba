//! The doctor's metered-overage checks (DESIGN.md, "Metered overage"): for each active plan
//! with `overage_limit`, Stripe must have an active Billing Meter whose `event_name` is the
//! plan's `meter_event_name` (`GET /v1/billing/meters`), and the plan's product a price
//! metered on that meter (`GET /v1/prices?product=…`, its `recurring.meter`). Without the
//! meter Stripe refuses nothing at once and reports the events as errors later; without the
//! price the usage is metered but never invoiced. Either way overage would go unbilled.
//!
//! And, from the database alone, overage whose meter event failed for good
//! (`billing.token_overages` status `failed`): a line only when there is some, telling what
//! Stripe still takes (`billing.retry_failed_meter_events()`) from what it no longer does.

use serde_json::{json, Value};

use super::account::{segment, Client, Mode};
use super::database::Plan;
use super::Check;
use crate::db::Db;
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

/// Overage whose meter event failed for good, split by Stripe's window
/// (`billing._meter_window_start()`); `None` when there is none, so a healthy install's
/// checklist does not change. A warning, not a problem: the usage is the operator's to bill.
pub(super) async fn failed_events(db: &Db) -> Option<Check> {
    const NAME: &str = "failed meter events";
    let read = async {
        let mut conn = db.get().await?;
        conn.query_one(
            "SELECT count(*) FILTER (WHERE o.created_at >= billing._meter_window_start()),
                    coalesce(sum(o.tokens) FILTER (WHERE o.created_at >= billing._meter_window_start()), 0)::bigint,
                    count(*) FILTER (WHERE o.created_at < billing._meter_window_start()),
                    coalesce(sum(o.tokens) FILTER (WHERE o.created_at < billing._meter_window_start()), 0)::bigint
             FROM billing.token_overages o WHERE o.status = 'failed'",
            &[],
        )
        .await
    };
    let row = match read.await {
        Ok(row) => row,
        Err(e) => {
            return Some(Check::unknown(
                NAME,
                format!("cannot read billing.token_overages: {e}"),
            ))
        }
    };
    let (open, open_tokens, old, old_tokens): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    failed_events_check(open, open_tokens, old, old_tokens)
}

/// The check for `open` failed events (of `open_tokens`) Stripe still takes and `old` ones it
/// no longer does.
pub fn failed_events_check(
    open: i64,
    open_tokens: i64,
    old: i64,
    old_tokens: i64,
) -> Option<Check> {
    const NAME: &str = "failed meter events";
    if open == 0 && old == 0 {
        return None;
    }
    let mut detail = Vec::new();
    let mut fix = Vec::new();
    if open > 0 {
        detail.push(format!(
            "{open} overage meter events ({open_tokens} tokens) failed and were never billed; Stripe still takes them (timestamps within 35 days)"
        ));
        fix.push(
            "fix what failed them (see billing.stripe_requests.error of kind meter_event), then: SELECT billing.retry_failed_meter_events();"
                .to_string(),
        );
    }
    if old > 0 {
        detail.push(format!(
            "{old} ({old_tokens} tokens) are too old for Stripe's 35-day window"
        ));
        fix.push("bill those another way (an invoice item), or accept the loss".to_string());
    }
    let mut check = Check::warning(NAME, detail.join("; "));
    check.fix = Some(fix.join("\n"));
    Some(check)
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

    #[test]
    fn failed_meter_events_warn_only_when_there_are_some() {
        assert_eq!(failed_events_check(0, 0, 0, 0), None);
        let open = failed_events_check(2, 300, 0, 0).unwrap();
        assert_eq!(open.status, super::super::Status::Warning);
        assert!(
            open.detail
                .starts_with("2 overage meter events (300 tokens)"),
            "{open}"
        );
        assert!(open
            .fix
            .as_deref()
            .unwrap()
            .contains("billing.retry_failed_meter_events()"));
        let both = failed_events_check(1, 10, 3, 40).unwrap();
        assert!(both.detail.contains("3 (40 tokens) are too old"), "{both}");
        assert_eq!(both.fix.as_deref().unwrap().lines().count(), 2);
        let old = failed_events_check(0, 0, 1, 5).unwrap();
        assert!(
            !old.fix.as_deref().unwrap().contains("retry_failed"),
            "{old}"
        );
    }
}
