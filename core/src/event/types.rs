//! The event types the product applies, in one place: the webhook endpoint must enable these
//! (the README's "Webhooks" section is rendered from [`readme_sentence`], and the worker's
//! `doctor` checks Stripe's endpoints against [`REQUIRED`]). The SQL dispatch
//! (`billing._apply`) handles each of them; a test reads it to keep the two in step.

/// Events whose effects the product needs: without one of them, a purchase is not granted, a
/// subscription's state goes stale, or a user is not told about a failed payment.
pub const REQUIRED: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "customer.deleted",
];

/// Events that are applied when they arrive but are not needed: customers made outside the
/// worker (the Dashboard, Payment Links) are linked to their user when these name one.
pub const OPTIONAL: &[&str] = &["customer.created", "customer.updated"];

/// Whether an endpoint's `enabled_events` (Stripe's list, where `*` means every event)
/// delivers `event_type`.
pub fn enabled(enabled_events: &[String], event_type: &str) -> bool {
    enabled_events.iter().any(|e| e == "*" || e == event_type)
}

/// The required types an endpoint with `enabled_events` does not deliver, in [`REQUIRED`]
/// order.
pub fn missing(enabled_events: &[String]) -> Vec<&'static str> {
    REQUIRED
        .iter()
        .copied()
        .filter(|t| !enabled(enabled_events, t))
        .collect()
}

/// The README's sentence that lists the events to enable (a test keeps the README equal to
/// it).
pub fn readme_sentence() -> String {
    let code = |t: &&str| format!("`{t}`");
    let required: Vec<String> = REQUIRED.iter().map(code).collect();
    let optional: Vec<String> = OPTIONAL.iter().map(code).collect();
    let (last, rest) = required.split_last().expect("at least one required type");
    format!(
        "Enable these events on the endpoint: {} and {last} (optionally {}).",
        rest.join(", "),
        optional.join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for t in REQUIRED.iter().chain(OPTIONAL) {
            assert!(seen.insert(*t), "duplicate {t}");
            assert!(
                t.split('.').count() >= 2
                    && t.bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{t}"
            );
        }
    }

    #[test]
    fn wildcards_and_lists() {
        let all = vec!["*".to_string()];
        assert!(missing(&all).is_empty());
        let some: Vec<String> = ["invoice.paid", "checkout.session.completed"]
            .map(String::from)
            .to_vec();
        let gaps = missing(&some);
        assert_eq!(gaps.len(), REQUIRED.len() - 2);
        assert!(!gaps.contains(&"invoice.paid"));
        assert_eq!(gaps[0], "checkout.session.async_payment_succeeded");
        assert!(!enabled(&[], "invoice.paid"));
    }

    #[test]
    fn the_sentence_names_every_type_once() {
        let s = readme_sentence();
        assert!(
            s.starts_with("Enable these events on the endpoint: `checkout.session.completed`, ")
        );
        assert!(s.ends_with(
            " and `customer.deleted` (optionally `customer.created` and `customer.updated`)."
        ));
        for t in REQUIRED.iter().chain(OPTIONAL) {
            assert_eq!(s.matches(&format!("`{t}`")).count(), 1, "{t}");
        }
    }
}
