//! The HTTP API of the product brief: `POST /api/stripe/checkout` (`{priceId, mode,
//! successUrl?, cancelUrl?}` → `{url, sessionId}`) and `POST /api/stripe/portal` (`{returnUrl?}`
//! → `{url}`), for a front end that calls `fetch` and then sends the browser to `url`.
//!
//! Nothing about what may be bought is decided here. A call is:
//! 1. the caller's JWT verified (`auth`) and their rate limit taken (`user_limit`);
//! 2. one transaction on the database, PostgREST-style: `role` = `authenticated` and
//!    `request.jwt.claims` = the verified claims, then `billing.request_checkout` or
//!    `billing.request_portal` (every rule, cap and policy of the RPC path applies, and an
//!    `Idempotency-Key` header reaches SQL as `request.headers`), then, back in the worker's
//!    own role, `billing.claim_request` of the row just queued (`sql`);
//! 3. when the claim was ours, the request served at once by the queue's own code
//!    (`queue::process`: same Stripe calls, idempotency keys and outcome write), in a task of
//!    its own so a client that hangs up does not stop it half-way;
//! 4. the answer read with `billing.await_request` as the user: at once when this worker served
//!    the request, or after waiting for the worker that holds it (an earlier call with the same
//!    Idempotency-Key). A request still pending meanwhile (held back by another request of the
//!    same user, or by a retry delay after a transient failure) is claimed and served here as
//!    soon as it can be.
//!
//! Errors are [`ApiError`]s, answered `{"error": message}`. SQL's refusals keep their message
//! and take the status the one table of codes gives (`stripe_billing_core::errors`): BL002 no billing account → 400,
//! 28000 → 401, BL011 → 429, P0002 → 404, and so on. Stripe refusing the session is 502 with
//! Stripe's message; a session still being prepared after `--api-wait-ms` is 503 with
//! Retry-After.

mod sql;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::auth::Verifier;
use super::user_limit::UserLimit;
use super::{ApiError, ACQUIRE_TIMEOUT};
use crate::queue::{self, Ctx};

/// While a call waits for a pending request, how often it tries to claim it itself.
const RECLAIM_INTERVAL: Duration = Duration::from_millis(250);

/// What the API's handlers share.
pub struct ApiState {
    pub verifier: Verifier,
    pub limit: UserLimit,
    /// The queue's context for serving requests at once. Its pool is the API's own (each call:
    /// one connection for its transaction, then up to two while it serves the request), so
    /// API traffic cannot take the queue's.
    pub ctx: Arc<Ctx>,
    /// Calls in progress at most (`--api-concurrency`). A call's slot is also held by the
    /// task serving its request, which outlives a caller that hangs up: without that, callers
    /// that hang up could start serving tasks without bound, each holding up to two of the
    /// API's connections.
    pub slots: Arc<Semaphore>,
    /// Requests being served at once; waited for at shutdown.
    pub tasks: TaskTracker,
    pub lease_seconds: u32,
    /// How long to wait for a request another worker serves (`--api-wait-ms`).
    pub wait: Duration,
}

/// `POST /api/stripe/checkout` body: the brief's fields, plus the options
/// `billing.request_checkout` takes. Unknown fields are refused, so a misspelt one is not
/// silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckoutBody {
    pub price_id: Option<String>,
    pub mode: Option<String>,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    pub project_id: Option<String>,
    pub coupon: Option<String>,
    pub allow_promotion_codes: Option<bool>,
    pub quantity: Option<i32>,
    /// A team to buy for (its owners and admins only; the SQL checks the caller's role).
    pub account_id: Option<String>,
}

/// `POST /api/stripe/portal` body (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortalBody {
    pub return_url: Option<String>,
    /// A team whose portal to open (its owners and admins only).
    pub account_id: Option<String>,
}

/// What the caller asked for.
#[derive(Debug)]
pub enum Call {
    Checkout(CheckoutBody),
    Portal(PortalBody),
}

/// `POST /api/stripe/checkout`.
pub async fn checkout(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    handle(&api, &headers, body, |b| parse(b).map(Call::Checkout)).await
}

/// `POST /api/stripe/portal`.
pub async fn portal(
    State(api): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    handle(&api, &headers, body, |b| parse(b).map(Call::Portal)).await
}

async fn handle(
    api: &ApiState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    read: impl FnOnce(&[u8]) -> Result<Call, String>,
) -> Result<Response, ApiError> {
    // Over --api-max-body-bytes (413) or a broken upload.
    let body = body.map_err(|r| ApiError::refused(r.status(), r.body_text()))?;
    let caller = api.verifier.caller(headers).await?;
    api.limit
        .check(&caller.sub, Instant::now())
        .map_err(ApiError::rate_limited)?;
    let bad_request = |message: String| ApiError::refused(StatusCode::BAD_REQUEST, message);
    let call = read(&body).map_err(bad_request)?;
    let key = idempotency_key(headers).map_err(|m| bad_request(m.to_string()))?;
    let acquire = api.slots.clone().acquire_owned();
    let Ok(Ok(slot)) = tokio::time::timeout(ACQUIRE_TIMEOUT, acquire).await else {
        return Err(ApiError::busy());
    };
    let slot = Arc::new(slot);
    let started = Instant::now();
    let queued = sql::queue(api, &caller, key.as_deref(), &call).await?;
    let outcome = serve_and_await(api, &caller, queued, &slot).await?;
    tracing::info!(request_id = %outcome.id, served_here = outcome.served_here,
        status = %text(&outcome.request, "status"),
        elapsed_ms = started.elapsed().as_millis() as u64, "API call answered");
    answer(&call, &outcome.request)
}

/// How a call's request ended, as far as the call waited.
struct Outcome {
    id: uuid::Uuid,
    /// `await_request`'s report.
    request: Value,
    /// Whether this worker made the Stripe calls.
    served_here: bool,
}

/// Serves the request when the claim is ours, and waits (up to `--api-wait-ms`) for it
/// otherwise. A row that is still pending while we wait is claimed again now and then: it may
/// have been held back by another request of the same user, or by a retry delay, and this
/// worker can serve it the moment that is over instead of leaving it to a queue's next poll.
async fn serve_and_await(
    api: &ApiState,
    caller: &super::auth::Caller,
    queued: sql::Queued,
    slot: &Arc<OwnedSemaphorePermit>,
) -> Result<Outcome, ApiError> {
    let deadline = Instant::now() + api.wait;
    let mut claimed = queued.claimed;
    let mut served_here = false;
    loop {
        if let Some(claim) = claimed.take() {
            served_here = true;
            let serving = spawn_holding(&api.tasks, slot, queue::process(api.ctx.clone(), claim));
            if let Err(e) = serving.await {
                tracing::error!(request_id = %queued.id, error = %e, "serving the request failed");
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let request =
            sql::await_outcome(api, caller, queued.id, left.min(RECLAIM_INTERVAL)).await?;
        let status = text(&request, "status");
        let finished = matches!(status, "succeeded" | "failed");
        if finished || Instant::now() >= deadline {
            return Ok(Outcome {
                id: queued.id,
                request,
                served_here,
            });
        }
        if status == "pending" {
            claimed = sql::claim(api, queued.id).await?;
        }
    }
}

/// Runs `work` in a task of its own, so a client that hangs up cannot stop a request
/// half-way; the task keeps the call's slot until it ends, so what the slots bound is the
/// work, not the callers still connected.
fn spawn_holding<F>(
    tasks: &TaskTracker,
    slot: &Arc<OwnedSemaphorePermit>,
    work: F,
) -> JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let slot = slot.clone();
    tasks.spawn(async move {
        let output = work.await;
        drop(slot);
        output
    })
}

/// The JSON body, `{}` when empty.
fn parse<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))
}

/// The `Idempotency-Key` header, if any (SQL checks its length).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.to_string()))
            .map_err(|_| "the Idempotency-Key header must be printable ASCII"),
    }
}

/// The response for a finished (or still unfinished) request, as `await_request` reports it.
fn answer(call: &Call, outcome: &Value) -> Result<Response, ApiError> {
    match text(outcome, "status") {
        "succeeded" => {
            let url = text(outcome, "url");
            let body = match call {
                Call::Checkout(_) => json!({"url": url, "sessionId": text(outcome, "session_id")}),
                Call::Portal(_) => json!({"url": url}),
            };
            Ok((StatusCode::OK, Json(body)).into_response())
        }
        // Stripe refused (its message), or the request gave up after its attempts.
        "failed" => Err(ApiError::stripe_refused(text(outcome, "error"))),
        _ => Err(ApiError::still_preparing()),
    }
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    async fn body_of(response: Result<Response, ApiError>) -> (StatusCode, Option<String>, Value) {
        let response = response.into_response();
        let status = response.status();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn answers_have_the_brief_shapes() {
        let done = json!({"id": "x", "kind": "checkout", "status": "succeeded",
                          "url": "https://checkout.stripe.com/c/pay/cs_test_1", "session_id": "cs_test_1", "error": null});
        let (status, _, body) =
            body_of(answer(&Call::Checkout(CheckoutBody::default()), &done)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"url": "https://checkout.stripe.com/c/pay/cs_test_1", "sessionId": "cs_test_1"})
        );
        let (_, _, body) = body_of(answer(&Call::Portal(PortalBody::default()), &done)).await;
        assert_eq!(
            body,
            json!({"url": "https://checkout.stripe.com/c/pay/cs_test_1"})
        );

        let failed = json!({"status": "failed", "error": "No such price: 'price_1'"});
        let (status, _, body) =
            body_of(answer(&Call::Portal(PortalBody::default()), &failed)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body, json!({"error": "No such price: 'price_1'"}));

        let pending = json!({"status": "pending"});
        let (status, retry, _) =
            body_of(answer(&Call::Portal(PortalBody::default()), &pending)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
    }

    #[test]
    fn bodies_are_parsed_strictly() {
        let b: CheckoutBody = parse(
            br#"{"priceId": "price_1", "mode": "payment", "successUrl": "https://a.test/ok"}"#,
        )
        .unwrap();
        assert_eq!(b.price_id.as_deref(), Some("price_1"));
        assert_eq!(b.success_url.as_deref(), Some("https://a.test/ok"));
        let empty: PortalBody = parse(b" ").unwrap();
        assert!(empty.return_url.is_none());
        let err = parse::<CheckoutBody>(br#"{"priceID": "price_1"}"#).unwrap_err();
        assert!(err.contains("unknown field `priceID`"), "{err}");
        let err = parse::<CheckoutBody>(b"price_1").unwrap_err();
        assert!(err.starts_with("invalid request body"), "{err}");
        assert!(parse::<CheckoutBody>(br#"{"quantity": "2"}"#).is_err());
    }

    #[tokio::test]
    async fn a_caller_that_hangs_up_leaves_its_slot_with_the_serving_task() {
        let slots = Arc::new(Semaphore::new(1));
        let tasks = TaskTracker::new();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let handler = {
            let slots = slots.clone();
            let tasks = tasks.clone();
            tokio::spawn(async move {
                let slot = Arc::new(slots.acquire_owned().await.unwrap());
                let serving = spawn_holding(&tasks, &slot, async move {
                    let _ = finished.await;
                });
                let _ = serving.await;
            })
        };
        while slots.available_permits() == 1 || tasks.is_empty() {
            tokio::task::yield_now().await;
        }
        // The client hangs up: axum drops the handler's future.
        handler.abort();
        let _ = handler.await;
        assert_eq!(
            slots.available_permits(),
            0,
            "the serving task still holds the slot"
        );
        finish.send(()).unwrap();
        tasks.close();
        tasks.wait().await;
        assert_eq!(slots.available_permits(), 1);
    }
}
