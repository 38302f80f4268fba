//! SQL access to event normalisation (`stripe_billing_core::event`).
use crate::errors::raise;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use stripe_billing_core::event::{self, EventError};

/// Parses a Stripe event body and returns the normalised, API-version-independent view the
/// webhook effects read. Raises 22032 for a body that is not JSON and 22023 for JSON that is not
/// a Stripe event.
#[pg_extern(immutable, strict, parallel_safe, name = "_normalize_event")]
fn normalize_event_json(payload: &str) -> JsonB {
    match event::normalize_to_json(payload) {
        Ok(v) => JsonB(v),
        Err(e @ EventError::NotJson(_)) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_JSON_TEXT,
            "the webhook payload is not valid JSON".into(),
            Some(e.to_string()),
            Some("The body verified, so the sender holds the secret: check what it sends."),
        ),
        Err(e @ EventError::NotAnEvent(_)) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.to_string(),
            None,
            Some(
                "Stripe events have object \"event\", an evt_ id, a type, created and data.object.",
            ),
        ),
    }
}
