//! The Stripe API client: form-encoded POSTs with an `Idempotency-Key`, the pinned
//! `Stripe-Version`, the rate limiter in front and in-process retries of transient failures.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::form;
use crate::ratelimit::RateLimiter;
use crate::retry::{self, Backoff, Verdict};

/// Stripe answers well within this; a hung connection must not hold a claim for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a Stripe call did not produce an object.
#[derive(Debug, Error, PartialEq)]
pub enum StripeError {
    /// Transient (network, 409, 429, 5xx, or we were shutting down): worth trying again later.
    #[error("{0}")]
    Transient(String),
    /// Stripe refused the request; the message is Stripe's own.
    #[error("{message}")]
    Rejected { status: u16, message: String },
}

/// A Stripe API client; cheap to clone.
#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base: String,
    limiter: Arc<RateLimiter>,
    backoff: Backoff,
    tries: u32,
}

impl Stripe {
    /// A client for `base` (no trailing slash) with the key and version sent on every call.
    pub fn new(
        base: &str,
        secret_key: &str,
        version: &str,
        limiter: Arc<RateLimiter>,
    ) -> Result<Stripe, String> {
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Bearer {secret_key}"))
            .map_err(|_| "the Stripe secret key is not a valid header value".to_string())?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            "Stripe-Version",
            HeaderValue::from_str(version)
                .map_err(|_| "the Stripe version is not a valid header value".to_string())?,
        );
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("stripe-billing-worker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Stripe {
            http,
            base: base.to_string(),
            limiter,
            backoff: retry::STRIPE_BACKOFF,
            tries: retry::TRIES_PER_CLAIM,
        })
    }

    /// POSTs `params` to `path` (e.g. `/v1/customers`) and returns the object Stripe created.
    ///
    /// Transient failures are retried up to the configured tries with jittered backoff; the
    /// same idempotency key makes a retry of a call that did reach Stripe return the first
    /// result instead of creating a second object. Cancelling `shutdown` ends the waiting
    /// (rate limit, backoff) early with a transient error, so the row is requeued.
    pub async fn post(
        &self,
        path: &str,
        params: &Value,
        idempotency_key: &str,
        shutdown: &CancellationToken,
    ) -> Result<Value, StripeError> {
        let body = form::encode(params);
        let url = format!("{}{}", self.base, path);
        let mut last = String::new();
        for attempt in 1..=self.tries {
            if !self.limiter.acquire(shutdown).await {
                return Err(shutting_down(&last));
            }
            let (error, retry_after) = match self.send(&url, &body, idempotency_key).await {
                Ok(object) => return Ok(object),
                Err(Failure::Rejected { status, message }) => {
                    return Err(StripeError::Rejected { status, message })
                }
                Err(Failure::Transient {
                    message,
                    retry_after,
                }) => (message, retry_after),
            };
            last = error;
            if attempt == self.tries {
                break;
            }
            let jitter = self.backoff.full_jitter(attempt, &mut rand::rng());
            // A Retry-After from Stripe is a floor, but never beyond our cap.
            let wait = retry_after.map_or(jitter, |r| r.max(jitter).min(self.backoff.cap));
            tracing::warn!(
                path,
                attempt,
                error = %last,
                retry_in_ms = wait.as_millis() as u64,
                "Stripe call failed, retrying"
            );
            if !crate::shutdown::sleep(wait, shutdown).await {
                return Err(shutting_down(&last));
            }
        }
        Err(StripeError::Transient(format!(
            "Stripe call failed after {} tries: {last}",
            self.tries
        )))
    }

    /// One HTTP exchange, classified.
    async fn send(&self, url: &str, body: &str, key: &str) -> Result<Value, Failure> {
        let response = self
            .http
            .post(url)
            .header("Idempotency-Key", key)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Failure::Transient {
                message: format!("cannot reach Stripe: {}", crate::error_chain(&e)),
                retry_after: None,
            })?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let should_retry =
            header("Stripe-Should-Retry").and_then(|v| retry::parse_should_retry(&v));
        let retry_after = header("Retry-After")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.map_err(|e| Failure::Transient {
            message: format!("reading Stripe's answer failed: {}", crate::error_chain(&e)),
            retry_after: None,
        })?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return json.ok_or_else(|| Failure::Transient {
                message: format!("Stripe answered HTTP {status} with a body that is not JSON"),
                retry_after: None,
            });
        }
        let message = json
            .as_ref()
            .and_then(|j| j.pointer("/error/message"))
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("Stripe answered HTTP {status}"));
        match retry::classify(status, should_retry) {
            Verdict::Retry => Err(Failure::Transient {
                message: format!("HTTP {status}: {message}"),
                retry_after,
            }),
            Verdict::Fail => Err(Failure::Rejected { status, message }),
        }
    }
}

enum Failure {
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Rejected {
        status: u16,
        message: String,
    },
}

fn shutting_down(last: &str) -> StripeError {
    if last.is_empty() {
        StripeError::Transient("the worker shut down before calling Stripe".into())
    } else {
        StripeError::Transient(format!("the worker shut down while retrying: {last}"))
    }
}
