//! SQL functions for Stripe webhook signatures (DESIGN.md, "Signatures").
use crate::errors::{raise, raise_signature_error};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use stripe_billing_core::signature;

fn unix_seconds(at: Option<TimestampWithTimeZone>) -> i64 {
    let Some(at) = at else {
        // An explicit NULL `at` means "now", like the default.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
    };
    let micros: i64 = at.into_inner();
    // Postgres timestamps count microseconds from 2000-01-01.
    micros.div_euclid(1_000_000) + 946_684_800
}

fn tolerance(t: Option<i32>) -> Option<i64> {
    t.map(i64::from)
}

fn check(
    payload: Option<&str>,
    header: Option<&str>,
    secret: Option<&str>,
    tolerance_seconds: Option<i32>,
    at: Option<TimestampWithTimeZone>,
) -> Result<i64, signature::SignatureError> {
    signature::verify(
        payload.unwrap_or_default().as_bytes(),
        header,
        secret,
        tolerance(tolerance_seconds),
        unix_seconds(at),
    )
}

/// True when `header` is a valid Stripe signature of `payload` with `secret` (and within the
/// tolerance). Never raises for bad input; NULL anything gives false.
#[pg_extern(stable, parallel_safe)]
fn stripe_signature_is_valid(
    payload: Option<&str>,
    header: Option<&str>,
    secret: Option<&str>,
    tolerance_seconds: default!(Option<i32>, 300),
    at: default!(Option<TimestampWithTimeZone>, "now()"),
) -> bool {
    payload.is_some() && check(payload, header, secret, tolerance_seconds, at).is_ok()
}

/// Verifies the signature and returns the payload parsed as jsonb; raises a specific error
/// (see `errors.rs` for the SQLSTATEs) otherwise.
#[pg_extern(stable, parallel_safe)]
fn construct_event(
    payload: Option<&str>,
    header: Option<&str>,
    secret: Option<&str>,
    tolerance_seconds: default!(Option<i32>, 300),
    at: default!(Option<TimestampWithTimeZone>, "now()"),
) -> JsonB {
    let Some(body) = payload else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "the webhook payload is NULL".into(),
            None,
            Some("Pass the exact raw request body as text."),
        )
    };
    if let Err(e) = check(payload, header, secret, tolerance_seconds, at) {
        raise_signature_error(&e)
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(value) => JsonB(value),
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_JSON_TEXT,
            "the webhook payload is not valid JSON".into(),
            Some(e.to_string()),
            Some("Pass the raw request body unchanged."),
        ),
    }
}

/// Builds a `Stripe-Signature` header for `payload` signed with `secret` at Unix time `t`,
/// exactly as Stripe would. For tests and local tooling.
#[pg_extern(immutable, strict, parallel_safe)]
fn stripe_signature_header(payload: &str, secret: &str, t: i64) -> String {
    if secret.is_empty() {
        raise_signature_error(&signature::SignatureError::NoSecret)
    }
    signature::signature_header(payload.as_bytes(), secret, t)
}

/// Verifies a webhook against several secrets (rotation) and returns the 1-based position of the
/// first secret that matches; raises the specific signature error otherwise. Used by
/// `billing.handle_stripe_webhook`, which reads the secrets from `billing.webhook_secrets`.
#[pg_extern(stable, parallel_safe, name = "_verify_webhook_signature")]
pub fn verify_webhook_signature(
    payload: Option<&str>,
    header: Option<&str>,
    secrets: Option<Vec<Option<String>>>,
    tolerance_seconds: default!(Option<i32>, 300),
) -> i32 {
    let secrets = secrets.unwrap_or_default();
    let body = payload.unwrap_or_default().as_bytes();
    let now = unix_seconds(None);
    let mut any_secret = false;
    // Positions refer to the caller's array (NULL and empty entries included), so the caller
    // can look up what it knows about the secret that matched.
    for (i, secret) in secrets.iter().enumerate() {
        let Some(secret) = secret.as_deref().filter(|s| !s.is_empty()) else {
            continue;
        };
        any_secret = true;
        match signature::verify(body, header, [secret], tolerance(tolerance_seconds), now) {
            Ok(_) => return i32::try_from(i + 1).unwrap_or(i32::MAX),
            Err(signature::SignatureError::NoMatchingSignature) => continue,
            Err(e) => raise_signature_error(&e),
        }
    }
    let err = if any_secret {
        signature::SignatureError::NoMatchingSignature
    } else {
        signature::SignatureError::NoSecret
    };
    raise_signature_error(&err)
}
