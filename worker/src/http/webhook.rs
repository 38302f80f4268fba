//! `POST /api/stripe/webhook`: hands the raw body and the `Stripe-Signature` header to
//! `billing.handle_stripe_webhook`, which verifies, stores and applies the event in one
//! transaction (DESIGN.md, "Signatures" and "Ingestion"), and maps its outcome to the status
//! Stripe expects:
//!
//! | outcome | status |
//! |---|---|
//! | stored (applied or not: a failure to apply is stored with the event) | 200, the function's JSON |
//! | missing header, body not UTF-8, a code the error table marks as the sender's fault (bad signature, header or body, mode mismatch) | 400 `{"error": …}` |
//! | body over `--max-body-bytes` | 413 |
//! | a code the table marks as configuration (BL003: no webhook secret) | 503 |
//! | all webhook connections busy for [`ACQUIRE_TIMEOUT`] | 503 `{"error": "busy"}` |
//! | database unavailable or any other database error | 500 (Stripe retries later) |
//!
//! A deadlock or serialization failure with a concurrent delivery is retried a few times
//! before answering (`Conn::query_one_retrying_conflicts`); only when every attempt lost is it a 500.
//!
//! The endpoint is unauthenticated until the signature is checked (in SQL), so it uses its
//! own few connections and never queues for long: a flood gets 503 and Stripe retries.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use stripe_billing_core::errors;

use super::error::Outcome;
use super::{ApiError, HttpState, ACQUIRE_TIMEOUT};
use crate::db::{Db, DbError};
use crate::telemetry;

/// The webhook handler.
pub async fn receive(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Over the size limit (413) or a broken upload.
    let body = body.map_err(|r| ApiError::refused(r.status(), r.body_text()))?;
    let bad_request = |message: &str| ApiError::refused(StatusCode::BAD_REQUEST, message);
    let signature = headers
        .get("stripe-signature")
        .ok_or_else(|| bad_request("missing Stripe-Signature header"))?
        .to_str()
        .map_err(|_| bad_request("the Stripe-Signature header is not ASCII"))?;
    // Stripe signs the exact bytes; Postgres text must be UTF-8, and re-encoding would break
    // the signature, so anything else is refused rather than repaired.
    let payload =
        std::str::from_utf8(&body).map_err(|_| bad_request("the body is not valid UTF-8"))?;
    let result = handle(&state.webhooks, payload, signature)
        .await
        .map_err(ApiError::webhook)?;
    // (Fields are read first: inside the macro `Value` is tracing's trait.)
    let text = |key: &str| result.get(key).and_then(Value::as_str).unwrap_or("");
    let flag = |key: &str| result.get(key).and_then(Value::as_bool).unwrap_or(false);
    let (event_id, event_type, error) = (text("event_id"), text("type"), text("error"));
    let (duplicate, processed) = (flag("duplicate"), flag("processed"));
    let outcome = Outcome {
        event_type: event_type.to_string(),
        label: if duplicate {
            "duplicate"
        } else if processed {
            "applied"
        } else if errors::waits(text("code")) {
            "held"
        } else {
            "failed"
        },
    };
    tracing::info!(
        event_id,
        event_type,
        duplicate,
        processed,
        error,
        "webhook received"
    );
    let mut response = (StatusCode::OK, Json(result)).into_response();
    response.extensions_mut().insert(outcome);
    Ok(response)
}

/// Counts every delivery by event type and outcome, stored or not: the one place the webhook
/// counter is kept.
pub async fn count(response: Response) -> Response {
    if let Some(outcome) = response.extensions().get::<Outcome>() {
        telemetry::webhook(&outcome.event_type, outcome.label);
    }
    response
}

/// Stores and applies the delivery. A deadlock or serialization failure with a concurrent
/// delivery is tried again before anything is answered: Stripe would retry a 500 too, but
/// only minutes later.
async fn handle(db: &Db, payload: &str, signature: &str) -> Result<Value, DbError> {
    let mut conn = db.get_within(ACQUIRE_TIMEOUT).await?;
    let row = conn
        .query_one_retrying_conflicts(
            "SELECT billing.handle_stripe_webhook($1, $2)",
            &[&payload, &signature],
        )
        .await?;
    Ok(row.try_get(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::SilentServer;

    const LIFETIME: std::time::Duration = std::time::Duration::from_secs(600);
    use serde_json::json;

    #[tokio::test]
    async fn busy_connections_answer_503_busy() {
        let mut server = SilentServer::start().await;
        let state = HttpState {
            db: Db::new(server.config(), 1, LIFETIME).unwrap(),
            webhooks: Db::new(server.config(), 2, LIFETIME).unwrap(),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
        };
        let _held = server.hold_all(&state.webhooks, 2).await;
        let mut headers = HeaderMap::new();
        headers.insert("stripe-signature", "t=1,v1=00".parse().unwrap());
        let started = std::time::Instant::now();
        let response = receive(State(state), headers, Ok(Bytes::from_static(b"{}")))
            .await
            .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let waited = started.elapsed();
        assert!(
            waited >= ACQUIRE_TIMEOUT && waited < ACQUIRE_TIMEOUT * 3,
            "{waited:?}"
        );
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, json!({"error": "busy"}));
    }
}
