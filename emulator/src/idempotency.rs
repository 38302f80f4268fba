//! `Idempotency-Key` handling: a key (scoped per secret key) maps to the request's
//! fingerprint (method, path, validated parameters) and, once done, its stored response.
//!
//! As on the real API (https://docs.stripe.com/api/idempotent_requests): a result is saved
//! only once execution began, a 500 included, and replayed for the same key; parameters that
//! fail validation and a request that conflicts with a concurrent one are not saved. A key is
//! reserved while its request runs, so a concurrent request with the same key gets Stripe's
//! 409 `idempotency_key_in_use`; the reservation is dropped again if the request ends without
//! a storable result (a fault before execution, a panic, a dropped connection), so a retry can
//! go through. Reusing a key with other parameters is a 400 `idempotency_error`. Stripe prunes
//! keys once they are at least 24 hours old; the emulator keeps them until a reset.

use axum::http::StatusCode;
use serde_json::Value;

use super::error::ApiError;
use super::store::Idempotent;
use super::App;

/// Stripe's limit on `Idempotency-Key`.
const IDEMPOTENCY_KEY_MAX: usize = 255;

/// Why a request does not run: a stored result to replay, or a refusal.
pub enum Replay {
    Stored {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
        original: String,
    },
    Refused(ApiError),
}

/// An in-flight idempotency key; removed again unless completed (injected faults, panics
/// and dropped connections must not leave the key blocked).
pub struct Reservation<'a> {
    app: &'a App,
    scope: Option<(String, String)>,
    fingerprint: Value,
}

impl Reservation<'_> {
    pub fn complete(
        mut self,
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
        request_id: &str,
    ) {
        if let Some(scope) = self.scope.take() {
            let fingerprint = std::mem::take(&mut self.fingerprint);
            self.app.lock().idempotency.insert(
                scope,
                Idempotent::Done {
                    fingerprint,
                    status,
                    body,
                    headers,
                    request_id: request_id.to_string(),
                },
            );
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(scope) = self.scope.take() {
            self.app.lock().idempotency.remove(&scope);
        }
    }
}

pub fn reserve(app: &App, key: String, fingerprint: Value) -> Result<Reservation<'_>, Replay> {
    if key.len() > IDEMPOTENCY_KEY_MAX {
        return Err(Replay::Refused(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("Invalid Idempotency-Key: must be at most {IDEMPOTENCY_KEY_MAX} characters"),
        )));
    }
    let scope = (app.secret_key.clone(), key.clone());
    let mut store = app.lock();
    let mismatch = || {
        Replay::Refused(ApiError::new(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            format!(
                "Keys for idempotent requests can only be used with the same parameters they \
                 were first used with. Try using a key other than '{key}' if you meant to \
                 execute a different request."
            ),
        ))
    };
    match store.idempotency.get(&scope) {
        Some(Idempotent::Done {
            fingerprint: f,
            status,
            body,
            headers,
            request_id,
        }) => {
            if *f == fingerprint {
                Err(Replay::Stored {
                    status: *status,
                    body: body.clone(),
                    headers: headers.clone(),
                    original: request_id.clone(),
                })
            } else {
                Err(mismatch())
            }
        }
        Some(Idempotent::InFlight) => Err(Replay::Refused(
            ApiError::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                format!(
                    "There is currently another in-progress request using this Idempotent Key \
                     (that probably means you submitted twice, and the other request is still \
                     going through): {key}. Please try again later."
                ),
            )
            .code("idempotency_key_in_use"),
        )),
        None => {
            store
                .idempotency
                .insert(scope.clone(), Idempotent::InFlight);
            drop(store);
            Ok(Reservation {
                app,
                scope: Some(scope),
                fingerprint,
            })
        }
    }
}
