//! `POST /api/stripe/webhook`: hands the raw body and the `Stripe-Signature` header to
//! `billing.handle_stripe_webhook`, which verifies, stores and applies the event in one
//! transaction (ARCHITECTURE.md §1, §2), and maps its outcome to the status Stripe expects:
//!
//! | outcome | status |
//! |---|---|
//! | stored (applied or not: a failure to apply is stored with the event) | 200, the function's JSON |
//! | missing header, body not UTF-8, bad signature (SQLSTATE class 22 / 28) | 400 `{"error": …}` |
//! | body over `--max-body-bytes` | 413 |
//! | no webhook secret configured (BL003) | 503 |
//! | database unavailable or any other database error | 500 (Stripe retries later) |

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::db::{Db, DbError};

/// SQLSTATE of `billing.handle_stripe_webhook` when no signing secret is configured.
const NOT_CONFIGURED: &str = "BL003";

/// The webhook handler.
pub async fn receive(
    State(db): State<Db>,
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
    match handle(&db, payload, signature).await {
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
            if status.is_server_error() {
                tracing::error!(error = %e, status = status.as_u16(), "webhook not stored");
            } else {
                tracing::warn!(error = %message, status = status.as_u16(), "webhook refused");
            }
            error(status, &message)
        }
    }
}

async fn handle(db: &Db, payload: &str, signature: &str) -> Result<Value, DbError> {
    let mut conn = db.get().await?;
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

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
