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
//! The endpoint is unauthenticated until the signature is checked (in SQL), so it uses its
//! own few connections and never queues for long: a flood gets 503 and Stripe retries.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use stripe_billing_core::errors::{self, WebhookFault};

use super::{error, HttpState, ACQUIRE_TIMEOUT};
use crate::db::{Db, DbError};
use crate::telemetry;

/// The webhook handler.
pub async fn receive(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        // Over the size limit (413) or a broken upload.
        Err(rejection) => return refused(rejection.status(), &rejection.body_text()),
    };
    let Some(signature) = headers.get("stripe-signature") else {
        return refused(StatusCode::BAD_REQUEST, "missing Stripe-Signature header");
    };
    let Ok(signature) = signature.to_str() else {
        return refused(
            StatusCode::BAD_REQUEST,
            "the Stripe-Signature header is not ASCII",
        );
    };
    // Stripe signs the exact bytes; Postgres text must be UTF-8, and re-encoding would break
    // the signature, so anything else is refused rather than repaired.
    let Ok(payload) = std::str::from_utf8(&body) else {
        return refused(StatusCode::BAD_REQUEST, "the body is not valid UTF-8");
    };
    match handle(&state.webhooks, payload, signature).await {
        Ok(result) => {
            // (Fields are read first: inside the macro `Value` is tracing's trait.)
            let text = |key: &str| result.get(key).and_then(Value::as_str).unwrap_or("");
            let flag = |key: &str| result.get(key).and_then(Value::as_bool).unwrap_or(false);
            let (event_id, event_type, error) = (text("event_id"), text("type"), text("error"));
            let (duplicate, processed) = (flag("duplicate"), flag("processed"));
            let code = text("code");
            let outcome = if duplicate {
                "duplicate"
            } else if processed {
                "applied"
            } else if errors::waits(code) {
                "held"
            } else {
                "failed"
            };
            telemetry::webhook(event_type, outcome);
            tracing::info!(
                event_id,
                event_type,
                duplicate,
                processed,
                error,
                "webhook received"
            );
            (StatusCode::OK, Json(result)).into_response()
        }
        Err(e) => {
            let (status, message) = classify(&e);
            let code = e.as_db_error().map_or("", |db| db.code().code());
            telemetry::webhook(
                "",
                match status {
                    StatusCode::BAD_REQUEST => "rejected",
                    StatusCode::SERVICE_UNAVAILABLE if matches!(e, DbError::Busy(_)) => "busy",
                    StatusCode::SERVICE_UNAVAILABLE => "unavailable",
                    _ => "error",
                },
            );
            if matches!(e, DbError::Busy(_)) {
                tracing::warn!(error = %e, status = status.as_u16(), "webhook refused: busy");
            } else if status.is_server_error() {
                tracing::error!(error = %e, code, status = status.as_u16(), "webhook not stored");
            } else {
                tracing::warn!(error = %message, code, status = status.as_u16(), "webhook refused");
            }
            error(status, &message)
        }
    }
}

async fn handle(db: &Db, payload: &str, signature: &str) -> Result<Value, DbError> {
    let mut conn = db.get_within(ACQUIRE_TIMEOUT).await?;
    let row = conn
        .query_one(
            "SELECT billing.handle_stripe_webhook($1, $2)",
            &[&payload, &signature],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// The response status and message for a failed call of the SQL function.
fn classify(e: &DbError) -> (StatusCode, String) {
    if let DbError::Busy(_) = e {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy".into());
    }
    let Some(db) = e.as_db_error() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "database unavailable".into(),
        );
    };
    status_for_sqlstate(db.code().code(), db.message())
}

/// The project's one table of codes decides: the sender's fault (a bad signature, header or
/// body) is 400 and Stripe stops retrying; a configuration gap (no secret) is 503 and Stripe
/// retries later; anything else is an internal error whose details stay in our log.
pub fn status_for_sqlstate(code: &str, message: &str) -> (StatusCode, String) {
    match errors::by_sqlstate(code).map(|c| c.webhook) {
        Some(WebhookFault::Sender) => (StatusCode::BAD_REQUEST, message.to_string()),
        Some(WebhookFault::Configuration) => (StatusCode::SERVICE_UNAVAILABLE, message.to_string()),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "database error".into()),
    }
}

/// A delivery refused before it reached the database (too large, no header, not UTF-8).
fn refused(status: StatusCode, message: &str) -> Response {
    telemetry::webhook("", "rejected");
    error(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::SilentServer;
    use serde_json::json;

    #[test]
    fn sqlstates_map_to_statuses() {
        for code in [
            "28000", "28P01", "22P02", "22023", "22008", "22032", "BL009",
        ] {
            let (status, message) = status_for_sqlstate(code, "no signature matches");
            assert_eq!(status, StatusCode::BAD_REQUEST, "{code}");
            assert_eq!(message, "no signature matches");
        }
        assert_eq!(
            status_for_sqlstate("BL003", "billing is not configured").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let (status, message) =
            status_for_sqlstate("42P01", "relation secret_table does not exist");
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            message, "database error",
            "internal details stay in the log"
        );
    }

    #[test]
    fn codes_outside_the_table_are_internal_errors() {
        // A cast error in a bug is 22P02 too: still 400, since the table cannot tell them
        // apart; codes the product never raises are ours to fix.
        for code in ["42P01", "23505", "XX000", "P0001", "BL001"] {
            assert_eq!(
                status_for_sqlstate(code, "x").0,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{code}"
            );
        }
    }

    #[tokio::test]
    async fn busy_connections_answer_503_busy() {
        let mut server = SilentServer::start().await;
        let state = HttpState {
            db: Db::new(server.config(), 1).unwrap(),
            webhooks: Db::new(server.config(), 2).unwrap(),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
        };
        let _held = server.hold_all(&state.webhooks, 2).await;
        let mut headers = HeaderMap::new();
        headers.insert("stripe-signature", "t=1,v1=00".parse().unwrap());
        let started = std::time::Instant::now();
        let response = receive(State(state), headers, Ok(Bytes::from_static(b"{}"))).await;
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
