//! The client against a tiny local HTTP server that answers every call the same way.

use super::*;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::json;

/// A server answering `status` with `body` after `delay`; counts the calls it got.
async fn server(status: u16, body: &'static str, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/v1/x",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                (StatusCode::from_u16(status).unwrap(), body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, hits)
}

fn client(base: &str, timeout: Duration) -> Stripe {
    let limiter = Arc::new(RateLimiter::new(1000.0));
    Stripe::new(base, "sk_test_x", "2025-03-31.basil", limiter, timeout).unwrap()
}

async fn call(
    stripe: &Stripe,
    until: Instant,
    abort: &CancellationToken,
) -> Result<Value, StripeError> {
    let bounds = Bounds { until, abort };
    stripe
        .post("/v1/x", &json!({"a": 1}), "key-1", bounds)
        .await
}

fn in_secs(s: u64) -> Instant {
    Instant::now() + Duration::from_secs(s)
}

#[tokio::test]
async fn success_and_refusal() {
    let (base, _) = server(200, r#"{"id": "cus_1"}"#, Duration::ZERO).await;
    let got = call(
        &client(&base, Duration::from_secs(5)),
        in_secs(30),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(got.unwrap(), json!({"id": "cus_1"}));

    let (base, hits) = server(
        400,
        r#"{"error": {"message": "No such price", "code": "resource_missing", "param": "line_items[0][price]", "type": "invalid_request_error"}}"#,
        Duration::ZERO,
    )
    .await;
    let got = call(
        &client(&base, Duration::from_secs(5)),
        in_secs(30),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(
        got,
        Err(StripeError::Rejected(Rejection {
            message: "No such price".into(),
            code: Some("resource_missing".into()),
            param: Some("line_items[0][price]".into()),
            status: Some(400),
        }))
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "a refusal is not retried");
}

#[tokio::test]
async fn server_errors_are_retried_while_the_lease_allows() {
    let (base, hits) = server(500, "{}", Duration::ZERO).await;
    let stripe = client(&base, Duration::from_millis(500));
    let got = call(&stripe, in_secs(30), &CancellationToken::new()).await;
    assert!(
        matches!(&got, Err(StripeError::Transient(m)) if m.contains("after 3 tries")),
        "{got:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // With less than a backoff plus a full timeout left, the first failure is the last.
    let (base, hits) = server(500, "{}", Duration::ZERO).await;
    let stripe = client(&base, Duration::from_secs(2));
    let got = call(&stripe, in_secs(1), &CancellationToken::new()).await;
    assert!(
        matches!(&got, Err(StripeError::Transient(m)) if m.starts_with("no time left in this claim's lease for another try")),
        "{got:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_slow_call_is_cut_at_the_end_of_the_lease() {
    let (base, _) = server(200, "{}", Duration::from_secs(10)).await;
    let stripe = client(&base, Duration::from_secs(30));
    let started = Instant::now();
    let got = call(
        &stripe,
        started + Duration::from_millis(300),
        &CancellationToken::new(),
    )
    .await;
    assert!(matches!(got, Err(StripeError::Transient(_))), "{got:?}");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    // Nothing left at all: Stripe is not called.
    let (base, hits) = server(200, "{}", Duration::ZERO).await;
    let got = call(
        &client(&base, Duration::from_secs(5)),
        Instant::now(),
        &CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(&got, Err(StripeError::Transient(m)) if m.contains("no time left")),
        "{got:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn abort_ends_a_call_in_flight() {
    let (base, _) = server(200, "{}", Duration::from_secs(10)).await;
    let stripe = client(&base, Duration::from_secs(30));
    let abort = CancellationToken::new();
    let trigger = abort.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let got = call(&stripe, in_secs(60), &abort).await;
    assert!(
        matches!(&got, Err(StripeError::Transient(m)) if m.contains("stopped")),
        "{got:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn timeouts_and_retries_fit_the_lease() {
    let now = Instant::now();
    let s = Duration::from_secs;
    assert_eq!(call_timeout(now, now + s(60), s(30)), Some(s(30)));
    assert_eq!(call_timeout(now, now + s(10), s(30)), Some(s(10)));
    assert_eq!(call_timeout(now, now, s(30)), None);
    assert_eq!(call_timeout(now + s(1), now, s(30)), None);
    assert!(retry_fits(now, s(1), s(30), now + s(31)));
    assert!(!retry_fits(now, s(1), s(30), now + s(30)));
}
