//! `POST /api/stripe/webhook`: hands the raw body and the `Stripe-Signature` header to
//! `billing.handle_stripe_webhook`, which verifies, stores and applies the event in one
//! transaction (DESIGN.md, "Signatures" and "Ingestion"), and maps its outcome to the status
//! Stripe expects:
//!
//! | outcome | status |
//! |---|---|
//! | stored (applied or not: a failure to apply is stored with the event) | 200, the function's JSON |
//! | missing header, body not UTF-8, bad signature (SQLSTATE class 22 / 28) | 400 `{"error": …}` |
//! | body over `--max-body-bytes` | 413 |
//! | no webhook secret configured (BL003) | 503 |
//! | all webhook connections busy for [`ACQUIRE_TIMEOUT`] | 503 `{"error": "busy"}` |
//! | database unavailable or any other database error | 500 (Stripe retries later) |
//!
//! The endpoint is unauthenticated until the signature is checked (in SQL), so it uses its
//! own few connections and never queues for long: a flood gets 503 and Stripe retries.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::HttpState;
use crate::db::{Db, DbError};

/// SQLSTATE of `billing.handle_stripe_webhook` when no signing secret is configured.
const NOT_CONFIGURED: &str = "BL003";

/// How long a webhook waits for one of the endpoint's connections before answering 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the messages of signature failures begin (`stripe_billing_core::signature` and the
/// mode check of `handle_stripe_webhook`). Other class 22/28 errors still answer 400 but are
/// logged as errors: they point at a bug or a schema problem rather than at the sender.
const SIGNATURE_MESSAGES: [&str; 6] = [
    "no Stripe-Signature header",
    "the Stripe-Signature header",
    "no signature in the Stripe-Signature header",
    "the Stripe-Signature timestamp",
    "a live-mode event",
    "a test-mode event",
];

/// The webhook handler.
pub async fn receive(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        // Over the size limit (413) or a broken upload.
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    let Some(signature) = headers.get("stripe-signature") else {
        return error(StatusCode::BAD_REQUEST, "missing Stripe-Signature header");
    };
    let Ok(signature) = signature.to_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "the Stripe-Signature header is not ASCII",
        );
    };
    // Stripe signs the exact bytes; Postgres text must be UTF-8, and re-encoding would break
    // the signature, so anything else is refused rather than repaired.
    let Ok(payload) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not valid UTF-8");
    };
    match handle(&state.webhooks, payload, signature).await {
        Ok(result) => {
            // (Fields are read first: inside the macro `Value` is tracing's trait.)
            let text = |key: &str| result.get(key).and_then(Value::as_str).unwrap_or("");
            let flag = |key: &str| result.get(key).and_then(Value::as_bool).unwrap_or(false);
            let (event_id, event_type, error) = (text("event_id"), text("type"), text("error"));
            let (duplicate, processed) = (flag("duplicate"), flag("processed"));
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
            if matches!(e, DbError::Busy(_)) {
                tracing::warn!(error = %e, status = status.as_u16(), "webhook refused: busy");
            } else if status.is_server_error() {
                tracing::error!(error = %e, status = status.as_u16(), "webhook not stored");
            } else if !is_signature_failure(&message) {
                tracing::error!(error = %message, code, status = status.as_u16(),
                    "webhook refused with an error that is not a signature failure");
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

/// Signature problems are the sender's fault (400); a missing secret is ours and temporary
/// (503); anything else is an internal error whose details stay in our log.
pub fn status_for_sqlstate(code: &str, message: &str) -> (StatusCode, String) {
    if code == NOT_CONFIGURED {
        (StatusCode::SERVICE_UNAVAILABLE, message.to_string())
    } else if code.starts_with("22") || code.starts_with("28") {
        (StatusCode::BAD_REQUEST, message.to_string())
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
    }
}

/// Whether a class 22/28 message is one of the known signature failures.
fn is_signature_failure(message: &str) -> bool {
    SIGNATURE_MESSAGES.iter().any(|m| message.starts_with(m))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::SilentServer;

    #[test]
    fn sqlstates_map_to_statuses() {
        for code in ["28000", "28P01", "22P02", "22023", "22008"] {
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
    fn signature_failures_are_told_apart_from_other_bad_requests() {
        for message in [
            "no Stripe-Signature header was provided",
            "the Stripe-Signature header is malformed: it has no t= timestamp",
            "the Stripe-Signature header has no v1 signatures",
            "no signature in the Stripe-Signature header matches the payload",
            "the Stripe-Signature timestamp is outside the tolerance zone (400 seconds from now, tolerance 300 seconds)",
            "a live-mode event was signed with a test-mode secret",
            "a test-mode event was signed with a live-mode secret",
        ] {
            assert!(is_signature_failure(message), "{message}");
        }
        for message in [
            "the webhook payload is not valid JSON",
            "invalid input syntax for type uuid: \"x\"",
            "value too long for type character varying(20)",
            "permission denied for table stripe_events",
        ] {
            assert!(!is_signature_failure(message), "{message}");
        }
    }

    #[tokio::test]
    async fn busy_connections_answer_503_busy() {
        let mut server = SilentServer::start().await;
        let state = HttpState {
            db: Db::new(server.config(), 1).unwrap(),
            webhooks: Db::new(server.config(), 2).unwrap(),
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
