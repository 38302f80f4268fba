//! The `meter_event` kind: a spend's metered overage reported to Stripe as one Billing Meter
//! event (`POST /v1/billing/meter_events`), queued by `billing._take_overage`
//! (sql/overage/functions.sql). The row's parameters are fixed when the spend is made, so
//! every attempt sends the very same event:
//!
//! - `identifier` is the overage's own (random, stored with it): Stripe enforces its uniqueness
//!   for at least 24 hours (the API reference of `identifier`), so a second event of the same
//!   spend is refused, whichever way it came;
//! - the `Idempotency-Key` is derived from the identifier, so a retry after a lost answer, a
//!   5xx or a worker killed mid-call replays Stripe's first answer;
//! - `timestamp` is the spend's time, which Stripe accepts within the past 35 days or up to 5
//!   minutes ahead (the same reference), so the usage lands in the period it was spent in.
//!
//! Stripe refusing an identifier it already holds (HTTP 400 "An event already exists with
//! identifier …", not to be retried) means an earlier attempt's event was recorded: the row
//! succeeds, so a spend is reported exactly once even when the idempotency key was no help
//! (it expired after 24 hours, or a 5xx was stored under it).

use serde::Deserialize;
use serde_json::{json, Value};

use super::Ctx;
use crate::queue::claim::Claimed;
use crate::queue::outcome::{malformed, Outcome};
use crate::stripe::{Bounds, Rejection, Stripe, StripeError};

/// `params` of a `meter_event` row.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct MeterParams {
    pub event_name: String,
    pub stripe_customer_id: String,
    pub value: i64,
    pub identifier: String,
    pub timestamp: i64,
}

impl MeterParams {
    pub fn from_json(params: &Value) -> Result<MeterParams, String> {
        let p = MeterParams::deserialize(params)
            .map_err(|e| format!("invalid meter event parameters: {e}"))?;
        if p.event_name.is_empty() || p.identifier.is_empty() || p.value <= 0 {
            return Err(
                "invalid meter event parameters: empty name or identifier, or a value not above 0"
                    .into(),
            );
        }
        Ok(p)
    }
}

/// `POST /v1/billing/meter_events`: the meter's default payload keys (`stripe_customer_id`,
/// `value`, a string of the number as the API's payload is a string map).
pub fn meter_event_form(p: &MeterParams) -> Value {
    json!({
        "event_name": p.event_name,
        "identifier": p.identifier,
        "timestamp": p.timestamp,
        "payload": {"stripe_customer_id": p.stripe_customer_id, "value": p.value.to_string()},
    })
}

/// Whether Stripe refused the event because it already holds one with this identifier.
pub fn is_duplicate(rejection: &Rejection, identifier: &str) -> bool {
    rejection.status == Some(400)
        && rejection.message.contains("already exists")
        && rejection.message.contains(identifier)
}

/// Reports the row's overage; the result names the identifier and Stripe's answer.
pub async fn run(ctx: &Ctx, stripe: &Stripe, req: &Claimed) -> Result<Value, Outcome> {
    let params = MeterParams::from_json(&req.params).map_err(Outcome::fail)?;
    let key = format!("meter-{}", params.identifier);
    let bounds = Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    };
    match stripe
        .post(
            "/v1/billing/meter_events",
            &meter_event_form(&params),
            &key,
            bounds,
        )
        .await
    {
        Ok(event) => {
            let identifier = event.get("identifier").and_then(Value::as_str);
            if identifier != Some(params.identifier.as_str()) {
                return Err(malformed(
                    "Stripe's meter event answer does not carry the identifier sent".into(),
                ));
            }
            Ok(json!({"identifier": params.identifier, "duplicate": false}))
        }
        Err(StripeError::Rejected(r)) if is_duplicate(&r, &params.identifier) => {
            Ok(json!({"identifier": params.identifier, "duplicate": true}))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::form::flatten;

    fn params() -> Value {
        json!({"event_name": "overage_tokens", "stripe_customer_id": "cus_1", "value": 250,
               "identifier": "ovg_abc", "timestamp": 1_760_000_000, "spend_id": 7})
    }

    #[test]
    fn meter_event_forms() {
        let p = MeterParams::from_json(&params()).unwrap();
        let mut form = flatten(&meter_event_form(&p));
        form.sort();
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("event_name", "overage_tokens"),
                ("identifier", "ovg_abc"),
                ("payload[stripe_customer_id]", "cus_1"),
                ("payload[value]", "250"),
                ("timestamp", "1760000000"),
            ]
        );
        let mut bad = params();
        bad["value"] = json!(0);
        assert!(MeterParams::from_json(&bad).is_err());
        assert!(MeterParams::from_json(&json!({"event_name": "x"})).is_err());
    }

    #[test]
    fn a_duplicate_identifier_is_recognised() {
        let dup = Rejection {
            message: "An event already exists with identifier ovg_abc.".into(),
            status: Some(400),
            ..Rejection::default()
        };
        assert!(is_duplicate(&dup, "ovg_abc"));
        assert!(!is_duplicate(&dup, "ovg_other"));
        let other = Rejection {
            message: "Timestamp must be within the past 35 days".into(),
            status: Some(400),
            ..Rejection::default()
        };
        assert!(!is_duplicate(&other, "ovg_abc"));
    }
}
