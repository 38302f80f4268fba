//! Webhooks are not the only source. Stripe retries a delivery for three days; an endpoint that
//! was down longer, misconfigured or added later has lost events for good. So the worker also
//! reads Stripe's events API ([`catch_up`]), on start and on an interval, and can adopt an
//! account that existed before the product ([`backfill`]). Events and objects fetched with the
//! secret key are authentic without a signature; they go through the same store-and-apply
//! path as webhooks (`billing.ingest_api_event`, `billing.adopt_*`), so nothing applies twice.

pub mod backfill;
pub mod catch_up;

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::stripe::{Bounds, Listing, Stripe, StripeError};

/// How long one page of a list may take, retries included.
const PAGE_TIME: Duration = Duration::from_secs(120);

/// Every object of a Stripe list (`GET path` with `query`), each page within [`PAGE_TIME`].
async fn list_all(
    stripe: &Stripe,
    path: &str,
    query: &Value,
    abort: &CancellationToken,
) -> Result<Listing, StripeError> {
    let bounds = || Bounds {
        until: Instant::now() + PAGE_TIME,
        abort,
    };
    stripe.list(path, query, usize::MAX, bounds).await
}
