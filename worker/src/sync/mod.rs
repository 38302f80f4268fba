//! Webhooks are not the only source. Stripe retries a delivery for three days; an endpoint that
//! was down longer, misconfigured or added later has lost events for good. So the worker also
//! reads Stripe's events API ([`catch_up`]), on start and on an interval, and can adopt an
//! account that existed before the product ([`backfill`]). Events and objects fetched with the
//! secret key are authentic without a signature; they go through the same store-and-apply
//! path as webhooks (`billing.ingest_api_event`, `billing.adopt_*`), so nothing applies twice.

pub mod backfill;
pub mod catch_up;

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::stripe::{Bounds, Stripe, StripeError};

/// Stripe's longest page.
const PAGE: usize = 100;

/// How long one page of a list may take, retries included.
const PAGE_TIME: Duration = Duration::from_secs(120);

/// Reads every page of a Stripe list (`GET path` with `query`), oldest answer first as Stripe
/// pages them (newest object first), following `starting_after`.
pub(crate) async fn list_all(
    stripe: &Stripe,
    path: &str,
    query: &Value,
    abort: &CancellationToken,
) -> Result<(Vec<Value>, Option<std::time::SystemTime>), StripeError> {
    let mut all: Vec<Value> = Vec::new();
    let mut first_date = None;
    loop {
        let mut q = query.clone();
        q["limit"] = json!(PAGE);
        if let Some(last) = all.last().and_then(|o| o.get("id")).and_then(Value::as_str) {
            q["starting_after"] = json!(last);
        }
        let bounds = Bounds {
            until: Instant::now() + PAGE_TIME,
            abort,
        };
        let answer = stripe.get(path, &q, bounds).await?;
        first_date = first_date.or(answer.date);
        let data = answer
            .object
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let more = answer.object.get("has_more") == Some(&Value::Bool(true));
        let empty = data.is_empty();
        all.extend(data);
        if !more || empty {
            return Ok((all, first_date));
        }
    }
}
