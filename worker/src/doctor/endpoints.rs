//! The doctor's check of the webhook endpoints Stripe delivers to: an enabled endpoint must
//! deliver every event type the product applies, and one pinned to an API version the product
//! was not tested with is a warning. Read with the first call of the Stripe checks (account.rs),
//! whose answer also says whether the key works.

use serde_json::Value;
use stripe_billing_core::event::APPLIED_TYPES;

use super::account::{refused, Mode};
use super::Check;
use crate::config::VETTED_STRIPE_VERSIONS;
use crate::stripe::StripeError;

pub(super) const ENDPOINT: &str = "webhook endpoint";

/// Whether an endpoint's `enabled_events` (Stripe's list, where `*` means every event)
/// delivers `event_type`.
fn delivers(enabled_events: &[String], event_type: &str) -> bool {
    enabled_events.iter().any(|e| e == "*" || e == event_type)
}

/// The applied types an endpoint with `enabled_events` does not deliver, in
/// [`APPLIED_TYPES`] order.
fn missing(enabled_events: &[String]) -> Vec<&'static str> {
    APPLIED_TYPES
        .iter()
        .copied()
        .filter(|t| !delivers(enabled_events, t))
        .collect()
}

/// A warning for enabled endpoints pinned to an API version the product has not vetted, that
/// is, one its golden event fixtures do not cover ([`VETTED_STRIPE_VERSIONS`]): the normaliser
/// reads the 2023-08-16 shape and basil's, and a version between them, or after basil, may
/// have changed a field it reads. An endpoint without `api_version` sends the account's
/// default version, which the API does not report; it is not judged here.
pub(super) fn version_check(endpoints: &[Value]) -> Option<Check> {
    let unvetted: Vec<String> = endpoints
        .iter()
        .filter(|e| e["status"].as_str().unwrap_or("enabled") == "enabled")
        .filter_map(|e| {
            let version = e["api_version"].as_str()?;
            (!VETTED_STRIPE_VERSIONS.contains(&version))
                .then(|| format!("{} sends {version}", e["id"].as_str().unwrap_or("?")))
        })
        .collect();
    if unvetted.is_empty() {
        return None;
    }
    Some(Check::warning(
        "webhook API version",
        format!(
            "{}, a version the event normaliser was not tested with (tested: {}); compare its changelog with the fields the product reads, or pin the endpoint to a tested version",
            unvetted.join("; "),
            VETTED_STRIPE_VERSIONS.join(", ")
        ),
    ))
}

pub(super) fn endpoint_check(endpoints: Result<Vec<Value>, StripeError>, mode: Mode) -> Check {
    let endpoints = match endpoints {
        Ok(list) => list,
        Err(StripeError::Rejected(r)) => {
            return Check::unknown(
                ENDPOINT,
                format!("cannot list webhook endpoints: {}", refused(&r)),
            )
        }
        Err(StripeError::Transient(e)) => {
            return Check::unknown(ENDPOINT, format!("cannot list webhook endpoints: {e}"))
        }
    };
    let events = APPLIED_TYPES.join(", ");
    let add = format!(
        "add an endpoint at {} for https://<worker>/api/stripe/webhook (or PostgREST's /rpc/stripe_webhook) with these events: {events}",
        mode.dashboard("webhooks")
    );
    let enabled: Vec<(&str, &str, Vec<String>)> = endpoints
        .iter()
        .filter(|e| e["status"].as_str().unwrap_or("enabled") == "enabled")
        .map(|e| {
            let types = e["enabled_events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (
                e["id"].as_str().unwrap_or("?"),
                e["url"].as_str().unwrap_or("?"),
                types,
            )
        })
        .collect();
    if enabled.is_empty() {
        return Check::problem(
            ENDPOINT,
            format!(
                "Stripe has no enabled webhook endpoint in {} mode: nothing it reports reaches the database (`stripe listen` forwards without one)",
                mode.name()
            ),
            add,
        );
    }
    if let Some((id, url, _)) = enabled
        .iter()
        .find(|(_, _, types)| missing(types).is_empty())
    {
        return Check::passed(
            ENDPOINT,
            format!(
                "{id} ({url}) delivers all {} event types the product applies",
                APPLIED_TYPES.len()
            ),
        );
    }
    // None covers everything: name what the closest one lacks.
    let (id, url, types) = enabled
        .iter()
        .min_by_key(|(_, _, types)| missing(types).len())
        .expect("not empty");
    let lacking = missing(types);
    Check::problem(
        ENDPOINT,
        format!(
            "no enabled endpoint delivers every event type the product applies; {id} ({url}) lacks {}",
            lacking.join(", ")
        ),
        format!(
            "enable the missing events on {id} at {}",
            mode.dashboard("webhooks")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;
    use serde_json::json;

    fn endpoint(id: &str, status: &str, events: &[&str]) -> Value {
        json!({"id": id, "url": format!("https://app.example/{id}"), "status": status, "enabled_events": events})
    }

    #[test]
    fn wildcards_and_lists_of_types() {
        assert!(missing(&["*".to_string()]).is_empty());
        let some = [
            "invoice.paid".to_string(),
            "checkout.session.completed".to_string(),
        ];
        let gaps = missing(&some);
        assert_eq!(gaps.len(), APPLIED_TYPES.len() - 2);
        assert!(!gaps.contains(&"invoice.paid"));
        assert_eq!(gaps[0], "checkout.session.async_payment_succeeded");
        assert!(!delivers(&[], "invoice.paid"));
    }

    #[test]
    fn an_endpoint_on_an_untested_api_version_is_a_warning() {
        let on = |version: Value| {
            let mut e = endpoint("we_1", "enabled", &["*"]);
            e["api_version"] = version;
            e
        };
        for vetted in ["2023-08-16", "2025-03-31.basil"] {
            assert_eq!(version_check(&[on(json!(vetted))]), None, "{vetted}");
        }
        assert_eq!(
            version_check(&[on(Value::Null)]),
            None,
            "the account default"
        );
        let mut off = on(json!("2024-06-20"));
        off["status"] = json!("disabled");
        assert_eq!(
            version_check(&[off]),
            None,
            "a disabled endpoint sends nothing"
        );
        let w = version_check(&[on(json!("2025-03-31.basil")), on(json!("2024-06-20"))])
            .expect("a warning");
        assert_eq!(w.status, Status::Warning);
        assert!(w.detail.starts_with("we_1 sends 2024-06-20, "), "{w}");
        assert!(w.to_string().starts_with("! webhook API version: "), "{w}");
        assert_eq!(
            crate::doctor::exit_code(std::slice::from_ref(&w)),
            0,
            "not a failure"
        );
        assert_eq!(crate::doctor::summary(&[w]), "0 passed, 1 warning");
    }

    #[test]
    fn an_endpoint_must_deliver_every_applied_type() {
        let all: Vec<&str> = APPLIED_TYPES.to_vec();
        let ok = endpoint_check(Ok(vec![endpoint("we_1", "enabled", &all)]), Mode::Test);
        assert_eq!(ok.status, Status::Passed, "{ok}");
        let star = endpoint_check(Ok(vec![endpoint("we_1", "enabled", &["*"])]), Mode::Test);
        assert_eq!(star.status, Status::Passed, "{star}");
        let disabled = endpoint_check(Ok(vec![endpoint("we_1", "disabled", &["*"])]), Mode::Test);
        assert_eq!(disabled.status, Status::Problem, "{disabled}");
        let none = endpoint_check(Ok(vec![]), Mode::Live);
        assert!(none
            .fix
            .unwrap()
            .contains("https://dashboard.stripe.com/webhooks"));
        let partial = endpoint_check(
            Ok(vec![
                endpoint("we_1", "enabled", &["invoice.paid"]),
                endpoint("we_2", "enabled", &all[..all.len() - 1]),
            ]),
            Mode::Test,
        );
        assert_eq!(partial.status, Status::Problem);
        let last = all[all.len() - 1];
        assert!(
            partial
                .detail
                .ends_with(&format!("we_2 (https://app.example/we_2) lacks {last}")),
            "{partial}"
        );
    }
}
