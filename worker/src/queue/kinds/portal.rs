//! The `portal` kind: a Billing Portal session where the user manages their subscription and
//! payment methods. It needs the user's Stripe customer; a user without one has nothing to
//! manage yet (`billing.request_portal` refuses such users already, so this is a backstop).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{session_result, Ctx};
use crate::queue::claim::Claimed;
use crate::queue::outcome::{malformed, Outcome};
use crate::stripe::{Bounds, Stripe};

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

/// Creates the portal session of `req`; the result is the session's `url`, `session_id` and
/// the `customer`.
pub async fn run(ctx: &Ctx, stripe: &Stripe, req: &Claimed) -> Result<Value, Outcome> {
    let params = PortalParams::from_json(&req.params).map_err(Outcome::fail)?;
    let customer = req
        .stripe_customer_id
        .clone()
        .ok_or_else(|| Outcome::fail("no billing account yet: the user has no Stripe customer"))?;
    let form = portal_form(&customer, &params);
    let key = format!("portal-{}", req.id);
    let bounds = Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    };
    let session = stripe
        .post("/v1/billing_portal/sessions", &form, &key, bounds)
        .await?;
    session_result(&session, &customer).map_err(malformed)
}

/// `POST /v1/billing_portal/sessions`.
pub fn portal_form(customer: &str, p: &PortalParams) -> Value {
    json!({"customer": customer, "return_url": p.return_url})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::form::flatten;

    #[test]
    fn portal_forms() {
        let p = PortalParams::from_json(&json!({"return_url": "https://a.test/account"})).unwrap();
        assert_eq!(
            flatten(&portal_form("cus_1", &p)),
            vec![
                ("customer".to_string(), "cus_1".to_string()),
                (
                    "return_url".to_string(),
                    "https://a.test/account".to_string()
                )
            ]
        );
        assert!(PortalParams::from_json(&json!({"return_url": 5})).is_err());
    }
}
