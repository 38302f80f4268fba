//! The request kinds the worker serves, one module each: what a row of that kind asks of
//! Stripe and what its result is. A row's `kind` text becomes a [`RequestKind`] before
//! anything is called; a kind this worker does not know fails the row for good, since no
//! later claim by the same worker would know it either.
//!
//! Checkout and portal answer with a session whose `url` the app sends the user to; the row's
//! result is that url, the session id and the Stripe customer ([`session_result`]). The
//! retrievals (`retrieve`) hand what Stripe has to the database. A top-up (`top_up`) charges
//! a saved card; its tokens come with Stripe's webhook, not with this answer. A seat change
//! (`seats`) updates a team subscription's quantity and applies Stripe's answer.

pub mod checkout;
pub mod meter;
pub mod portal;
pub mod retrieve;
pub mod seats;
pub mod top_up;

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value};

use super::claim::Claimed;
use super::outcome::Outcome;
use super::process::Ctx;
use crate::stripe::Stripe;

/// A kind of request, as `billing.stripe_requests.kind` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// A Checkout Session (`billing.request_checkout`).
    Checkout,
    /// A Billing Portal session (`billing.request_portal`).
    Portal,
    /// Retrieve a subscription whose same-second reports disagree.
    Refresh,
    /// Retrieve what a Checkout Session sold.
    LineItems,
    /// Report a spend's metered overage as a Billing Meter event (`billing._take_overage`).
    MeterEvent,
    /// Charge the saved card for an auto top-up (`billing._queue_top_up`).
    TopUp,
    /// Change a team subscription's seats (`billing.request_seat_change`).
    Seats,
}

/// A `kind` the worker does not serve; its message is what the row's `error` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownKind(String);

/// At most this much of an unknown kind is echoed into the row's error and the log.
const SHOWN_KIND_CHARS: usize = 40;

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(SHOWN_KIND_CHARS).collect();
        write!(f, "unknown request kind {shown:?}")
    }
}

impl std::error::Error for UnknownKind {}

impl FromStr for RequestKind {
    type Err = UnknownKind;

    fn from_str(kind: &str) -> Result<RequestKind, UnknownKind> {
        RequestKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| UnknownKind(kind.to_string()))
    }
}

impl RequestKind {
    pub(crate) const ALL: [RequestKind; 7] = [
        RequestKind::Checkout,
        RequestKind::Portal,
        RequestKind::Refresh,
        RequestKind::LineItems,
        RequestKind::MeterEvent,
        RequestKind::TopUp,
        RequestKind::Seats,
    ];

    /// The kind's name in `billing.stripe_requests.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Checkout => "checkout",
            RequestKind::Portal => "portal",
            RequestKind::Refresh => "refresh",
            RequestKind::LineItems => "line_items",
            RequestKind::MeterEvent => "meter_event",
            RequestKind::TopUp => "top_up",
            RequestKind::Seats => "seats",
        }
    }

    /// Whether a user waits for the outcome (`billing.await_request`, the HTTP API): the
    /// sessions they are sent to. Nobody waits for a retrieval or a meter event.
    pub fn awaited(self) -> bool {
        matches!(self, RequestKind::Checkout | RequestKind::Portal)
    }

    /// Whether the row retrieves an object from Stripe for the event effects (one in flight
    /// per object, `billing._request_retrieval`); a meter event is neither a session nor this.
    /// (The contracts test holds the SQL's lists of retrieval kinds to it.)
    #[cfg(test)]
    pub fn retrieval(self) -> bool {
        matches!(self, RequestKind::Refresh | RequestKind::LineItems)
    }
}

/// Makes the Stripe calls of `req`, a row of `kind`, and returns the row's result.
pub async fn execute(
    kind: RequestKind,
    ctx: &Ctx,
    stripe: &Stripe,
    req: &Claimed,
) -> Result<Value, Outcome> {
    match kind {
        RequestKind::Checkout => checkout::run(ctx, stripe, req).await,
        RequestKind::Portal => portal::run(ctx, stripe, req).await,
        RequestKind::Refresh => retrieve::refresh(ctx, stripe, req).await,
        RequestKind::LineItems => retrieve::line_items(ctx, stripe, req).await,
        RequestKind::MeterEvent => meter::run(ctx, stripe, req).await,
        RequestKind::TopUp => top_up::run(ctx, stripe, req).await,
        RequestKind::Seats => seats::run(ctx, stripe, req).await,
    }
}

/// Whether `id` has the form of a Stripe id with `prefix` (`sub_`, `si_`, …): one or more ASCII
/// letters, digits or `_` after it. Ids from a row are checked so before they go into a path.
pub fn is_stripe_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// The result written to the request row from a Checkout or Portal session: `url`,
/// `session_id` and `customer`. Err when Stripe's answer lacks them.
pub fn session_result(session: &Value, customer: &str) -> Result<Value, String> {
    let id = session.get("id").and_then(Value::as_str);
    let url = session.get("url").and_then(Value::as_str);
    match (id, url) {
        (Some(id), Some(url)) if !id.is_empty() && !url.is_empty() => {
            Ok(json!({"url": url, "session_id": id, "customer": customer}))
        }
        _ => Err("Stripe's session response has no id or url".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::outcome::malformed;

    #[test]
    fn kinds_are_parsed_from_the_row() {
        assert_eq!("checkout".parse(), Ok(RequestKind::Checkout));
        assert_eq!("portal".parse(), Ok(RequestKind::Portal));
        assert_eq!("refresh".parse(), Ok(RequestKind::Refresh));
        assert_eq!("line_items".parse(), Ok(RequestKind::LineItems));
        assert_eq!("meter_event".parse(), Ok(RequestKind::MeterEvent));
        assert_eq!("top_up".parse(), Ok(RequestKind::TopUp));
        assert_eq!("seats".parse(), Ok(RequestKind::Seats));
        // No SQL function queues customer rows: the worker does not serve them.
        let err = "customer".parse::<RequestKind>().unwrap_err();
        assert_eq!(err.to_string(), r#"unknown request kind "customer""#);
        assert!("Checkout".parse::<RequestKind>().is_err());
        let long = "x".repeat(100);
        let err = long.parse::<RequestKind>().unwrap_err().to_string();
        assert_eq!(err, format!("unknown request kind {:?}", "x".repeat(40)));
        for kind in RequestKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
    }

    #[test]
    fn only_sessions_are_awaited() {
        let awaited: Vec<_> = RequestKind::ALL
            .into_iter()
            .filter(|k| k.awaited())
            .collect();
        assert_eq!(awaited, [RequestKind::Checkout, RequestKind::Portal]);
    }

    #[test]
    fn results_need_id_and_url() {
        let ok = session_result(&json!({"id": "cs_1", "url": "https://pay/cs_1"}), "cus_1");
        assert_eq!(
            ok.unwrap(),
            json!({"url": "https://pay/cs_1", "session_id": "cs_1", "customer": "cus_1"})
        );
        assert!(session_result(&json!({"id": "cs_1", "url": null}), "cus_1").is_err());
    }

    #[test]
    fn a_2xx_without_the_expected_fields_fails_for_good() {
        let session = json!({"id": "cs_1", "url": null});
        let outcome = session_result(&session, "cus_1").map_err(malformed);
        match outcome {
            Err(Outcome::Fail(rejection)) => {
                let message = rejection.message;
                assert!(message.starts_with("Stripe's session response has no id or url"));
                assert!(message.contains("not retried"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let outcome = checkout::customer_id(&json!({"object": "customer"})).map_err(malformed);
        assert!(matches!(outcome, Err(Outcome::Fail(_))), "{outcome:?}");
    }
}
