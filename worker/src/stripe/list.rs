//! Stripe's list endpoints (`GET /v1/events`, `/v1/customers`, a session's line items…), read
//! page by page. One reading for every caller, so they agree on what ends a list and on what
//! is an error; each brings its own time bound per page and its own cap on pages.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::client::{Bounds, Rejection, Stripe, StripeError};

/// Stripe's longest page.
const PAGE: usize = 100;

/// What [`Stripe::list`] read.
#[derive(Debug, Default, PartialEq)]
pub struct Listing {
    /// The objects, in Stripe's order (newest first for most lists).
    pub data: Vec<Value>,
    /// When Stripe answered the first page (its `Date`): everything created before then is in
    /// the listing, which is how far a catch-up may record it got.
    pub date: Option<SystemTime>,
}

impl Stripe {
    /// Reads the list at `path` (`query` as its filters), following `starting_after`, until
    /// Stripe has no more or `max_pages` pages are read. Each page's call is bounded by a fresh
    /// `bounds()`.
    ///
    /// A page without a `data` list, or one that says there is more but gives no id to go on
    /// from, is an error rather than the end: a caller would otherwise act on a partial list
    /// as if it were whole (the catch-up would record progress it did not make).
    pub async fn list<'a>(
        &self,
        path: &str,
        query: &Value,
        max_pages: usize,
        bounds: impl Fn() -> Bounds<'a>,
    ) -> Result<Listing, StripeError> {
        let mut listing = Listing::default();
        let mut after: Option<String> = None;
        for _ in 0..max_pages {
            let mut q = query.clone();
            q["limit"] = json!(PAGE);
            if let Some(id) = &after {
                q["starting_after"] = json!(id);
            }
            let answer = self.get(path, &q, bounds()).await?;
            listing.date = listing.date.or(answer.date);
            let malformed = |what: &str| {
                StripeError::Rejected(Rejection::message(format!(
                    "Stripe's answer to GET {path} {what}"
                )))
            };
            let Some(data) = answer.object.get("data").and_then(Value::as_array) else {
                return Err(malformed("has no data list"));
            };
            let more = answer.object.get("has_more") == Some(&Value::Bool(true));
            if !more || data.is_empty() {
                listing.data.extend(data.iter().cloned());
                break;
            }
            after = data
                .last()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if after.is_none() {
                return Err(malformed("has more, but its last object has no id"));
            }
            listing.data.extend(data.iter().cloned());
        }
        Ok(listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use axum::extract::Query;
    use axum::routing::get;
    use axum::{Json, Router};
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use crate::stripe::ratelimit::RateLimiter;

    /// `/v1/things` lists `ob_1`…`ob_{total}` two to a page (`limit` ignored);
    /// `/v1/broken` answers a page without `data`. Counts the calls.
    async fn server(total: usize) -> (Stripe, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let things = move |Query(q): Query<HashMap<String, String>>| {
            counter.fetch_add(1, Ordering::SeqCst);
            let from = q
                .get("starting_after")
                .and_then(|id| id.strip_prefix("ob_"))
                .map_or(1, |n| n.parse::<usize>().unwrap() + 1);
            let to = (from + 1).min(total);
            let data: Vec<Value> = (from..=to)
                .map(|n| json!({"id": format!("ob_{n}")}))
                .collect();
            async move { Json(json!({"object": "list", "data": data, "has_more": to < total})) }
        };
        let app = Router::new().route("/v1/things", get(things)).route(
            "/v1/broken",
            get(|| async { Json(json!({"object": "list", "has_more": false})) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let limiter = Arc::new(RateLimiter::new(1000.0));
        let stripe = Stripe::new(
            &base,
            "sk_test_x",
            "2025-03-31.basil",
            limiter,
            Duration::from_secs(5),
        )
        .unwrap();
        (stripe, hits)
    }

    fn ids(listing: &Listing) -> Vec<&str> {
        listing
            .data
            .iter()
            .map(|o| o["id"].as_str().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn every_page_is_read_and_a_cap_stops_early() {
        let (stripe, hits) = server(5).await;
        let abort = CancellationToken::new();
        let bounds = || Bounds {
            until: Instant::now() + Duration::from_secs(10),
            abort: &abort,
        };
        let all = stripe
            .list("/v1/things", &json!({}), usize::MAX, bounds)
            .await
            .unwrap();
        assert_eq!(ids(&all), ["ob_1", "ob_2", "ob_3", "ob_4", "ob_5"]);
        assert!(all.date.is_some(), "the first page's Date");
        assert_eq!(hits.load(Ordering::SeqCst), 3);

        let capped = stripe
            .list("/v1/things", &json!({}), 2, bounds)
            .await
            .unwrap();
        assert_eq!(ids(&capped), ["ob_1", "ob_2", "ob_3", "ob_4"]);
    }

    #[tokio::test]
    async fn a_page_without_data_is_an_error_not_the_end() {
        let (stripe, _) = server(0).await;
        let abort = CancellationToken::new();
        let bounds = || Bounds {
            until: Instant::now() + Duration::from_secs(10),
            abort: &abort,
        };
        let err = stripe
            .list("/v1/broken", &json!({}), usize::MAX, bounds)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Stripe's answer to GET /v1/broken has no data list"
        );
        // An empty list is not malformed.
        let empty = stripe
            .list("/v1/things", &json!({}), usize::MAX, bounds)
            .await
            .unwrap();
        assert!(empty.data.is_empty());
    }
}
