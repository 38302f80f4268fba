//! The Stripe API client: form-encoded POSTs with an `Idempotency-Key` and GETs of objects,
//! with the pinned `Stripe-Version`, the rate limiter in front and in-process retries of
//! transient failures, all within the time the claim's lease leaves.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::form;
use super::ratelimit::RateLimiter;
use super::retry::{self, Verdict};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::telemetry;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a Stripe call did not produce an object.
#[derive(Debug, Error, PartialEq)]
pub enum StripeError {
    /// Transient (network, 409, 429, 5xx, out of lease time, or the worker is stopping):
    /// worth trying again in a later claim.
    #[error("{0}")]
    Transient(String),
    /// Stripe refused the request.
    #[error("{}", .0.message)]
    Rejected(Rejection),
}

/// Stripe's answer to a request it refused: its message and, when given, the error `code`
/// (e.g. `resource_missing`) and the `param` it names, and the HTTP status (None for a
/// refusal of our own making).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejection {
    pub message: String,
    pub code: Option<String>,
    pub param: Option<String>,
    pub status: Option<u16>,
}

impl Rejection {
    /// A refusal with a message only.
    pub fn message(message: impl Into<String>) -> Rejection {
        Rejection {
            message: message.into(),
            ..Rejection::default()
        }
    }
}

/// A successful answer: the object, and when Stripe answered (its `Date` header, for objects
/// whose state is applied as of that moment).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub object: Value,
    pub date: Option<SystemTime>,
}

/// What bounds one call: the claim's time and the worker's abort signal.
#[derive(Clone, Copy)]
pub struct Bounds<'a> {
    /// Nothing may still be running at this instant (the claim's `work_until`).
    pub until: Instant,
    /// Cancelled when the shutdown timeout runs out: stop now, the row is requeued.
    pub abort: &'a CancellationToken,
}

/// A Stripe API client; cheap to clone.
#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base: String,
    limiter: Arc<RateLimiter>,
    backoff: Backoff,
    tries: u32,
    /// One HTTP exchange's longest wait (`--stripe-timeout-ms`).
    timeout: Duration,
}

impl Stripe {
    /// A client for `base` (no trailing slash) with the key and version sent on every call.
    pub fn new(
        base: &str,
        secret_key: &str,
        version: &str,
        limiter: Arc<RateLimiter>,
        timeout: Duration,
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
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Stripe {
            http,
            base: base.to_string(),
            limiter,
            backoff: retry::STRIPE_BACKOFF,
            tries: retry::TRIES_PER_CLAIM,
            timeout,
        })
    }

    /// The client the configuration describes (`--stripe-*`, `--rate-limit`), with a rate
    /// limiter of its own; None without a secret key.
    pub fn from_config(config: &Config) -> Result<Option<Stripe>, String> {
        let Some(key) = &config.stripe_secret_key else {
            return Ok(None);
        };
        Stripe::new(
            &config.stripe_api_base,
            key.expose(),
            &config.stripe_version,
            Arc::new(RateLimiter::new(config.rate_limit)),
            config.stripe_timeout,
        )
        .map(Some)
    }

    /// POSTs `params` to `path` (e.g. `/v1/customers`) and returns the object Stripe created.
    /// See [`Stripe::call`].
    pub async fn post(
        &self,
        path: &str,
        params: &Value,
        idempotency_key: &str,
        bounds: Bounds<'_>,
    ) -> Result<Value, StripeError> {
        Ok(self
            .post_answer(path, params, idempotency_key, bounds)
            .await?
            .object)
    }

    /// As [`Stripe::post`], with the answer's `Date`: when the object was as Stripe returned it.
    pub async fn post_answer(
        &self,
        path: &str,
        params: &Value,
        idempotency_key: &str,
        bounds: Bounds<'_>,
    ) -> Result<Answer, StripeError> {
        self.call(Method::POST, path, params, Some(idempotency_key), bounds)
            .await
    }

    /// GETs `path` with `params` as the query string (e.g. `/v1/subscriptions/sub_…`).
    pub async fn get(
        &self,
        path: &str,
        params: &Value,
        bounds: Bounds<'_>,
    ) -> Result<Answer, StripeError> {
        self.call(Method::GET, path, params, None, bounds).await
    }

    /// One logical Stripe call.
    ///
    /// Transient failures are retried up to the configured tries with jittered backoff; the
    /// same idempotency key makes a retry of a call that did reach Stripe return the first
    /// result instead of creating a second object. No exchange runs past `bounds.until`: a
    /// call is cut there, and a retry that would not fit is left to the next claim. Cancelling
    /// `bounds.abort` ends the call or the waiting at once. Both end in a transient error, so
    /// the row is requeued.
    async fn call(
        &self,
        method: Method,
        path: &str,
        params: &Value,
        idempotency_key: Option<&str>,
        bounds: Bounds<'_>,
    ) -> Result<Answer, StripeError> {
        let encoded = form::encode(params);
        let (url, body) = if method == Method::GET {
            let query = if encoded.is_empty() {
                String::new()
            } else {
                format!("?{encoded}")
            };
            (format!("{}{}{}", self.base, path, query), String::new())
        } else {
            (format!("{}{}", self.base, path), encoded)
        };
        let mut last = String::new();
        for attempt in 1..=self.tries {
            if !self.limiter.acquire(bounds.abort).await {
                return Err(stopped(&last));
            }
            let Some(timeout) = call_timeout(Instant::now(), bounds.until, self.timeout) else {
                return Err(out_of_time(&last));
            };
            let exchange = self.send(&method, &url, &body, idempotency_key, timeout);
            let result = tokio::select! {
                // Dropping the exchange closes the connection; if Stripe already acted, the
                // idempotency key returns that result to the next claim.
                _ = bounds.abort.cancelled() => return Err(StripeError::Transient(
                    "the worker stopped during the Stripe call; the next claim repeats it".into(),
                )),
                result = exchange => result,
            };
            let (error, retry_after) = match result {
                Ok(answer) => return Ok(answer),
                Err(Failure::Rejected(rejection)) => return Err(StripeError::Rejected(rejection)),
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
            if !retry_fits(Instant::now(), wait, self.timeout, bounds.until) {
                return Err(out_of_time(&last));
            }
            tracing::warn!(
                path,
                attempt,
                error = %last,
                retry_in_ms = wait.as_millis() as u64,
                "Stripe call failed, retrying"
            );
            if !crate::shutdown::sleep(wait, bounds.abort).await {
                return Err(stopped(&last));
            }
        }
        Err(StripeError::Transient(format!(
            "Stripe call failed after {} tries: {last}",
            self.tries
        )))
    }

    /// One HTTP exchange, classified.
    async fn send(
        &self,
        method: &Method,
        url: &str,
        body: &str,
        key: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let mut request = self.http.request(method.clone(), url).timeout(timeout);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if !body.is_empty() {
            request = request.body(body.to_string());
        }
        let path = url.strip_prefix(self.base.as_str()).unwrap_or(url);
        let sent = Instant::now();
        let response = request.send().await.map_err(|e| {
            telemetry::stripe_call(method.as_str(), path, None, sent.elapsed());
            Failure::Transient {
                message: format!("cannot reach Stripe: {}", crate::error_chain(&e)),
                retry_after: None,
            }
        })?;
        let status = response.status().as_u16();
        telemetry::stripe_call(method.as_str(), path, Some(status), sent.elapsed());
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
        let date = header("Date").and_then(|v| httpdate::parse_http_date(&v).ok());
        let text = response.text().await.map_err(|e| Failure::Transient {
            message: format!("reading Stripe's answer failed: {}", crate::error_chain(&e)),
            retry_after: None,
        })?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            return json
                .map(|object| Answer { object, date })
                .ok_or_else(|| Failure::Transient {
                    message: format!("Stripe answered HTTP {status} with a body that is not JSON"),
                    retry_after: None,
                });
        }
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j.pointer(&format!("/error/{name}")))
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
        };
        let message = field("message").unwrap_or_else(|| format!("Stripe answered HTTP {status}"));
        match retry::classify(status, should_retry) {
            Verdict::Retry => Err(Failure::Transient {
                message: format!("HTTP {status}: {message}"),
                retry_after,
            }),
            Verdict::Fail => Err(Failure::Rejected(Rejection {
                message,
                code: field("code"),
                param: field("param"),
                status: Some(status),
            })),
        }
    }
}

enum Failure {
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Rejected(Rejection),
}

/// How long the next exchange may take: the configured timeout, cut to what is left before
/// `until`; None when nothing is left.
fn call_timeout(now: Instant, until: Instant, timeout: Duration) -> Option<Duration> {
    let left = until.saturating_duration_since(now);
    (!left.is_zero()).then(|| left.min(timeout))
}

/// Whether waiting `wait` and then a full exchange still ends before `until`. A retry that
/// would have to be cut short is better left to the next claim, which has a whole lease.
fn retry_fits(now: Instant, wait: Duration, timeout: Duration, until: Instant) -> bool {
    now + wait + timeout <= until
}

fn stopped(last: &str) -> StripeError {
    if last.is_empty() {
        StripeError::Transient("the worker stopped before calling Stripe".into())
    } else {
        StripeError::Transient(format!("the worker stopped while retrying: {last}"))
    }
}

fn out_of_time(last: &str) -> StripeError {
    if last.is_empty() {
        StripeError::Transient("no time left in this claim's lease to call Stripe".into())
    } else {
        StripeError::Transient(format!(
            "no time left in this claim's lease for another try: {last}"
        ))
    }
}

#[cfg(test)]
mod tests;
