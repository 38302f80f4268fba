//! The one error answer of the HTTP server: every handler returns `Result<_, ApiError>`, and
//! [`ApiError`]'s `IntoResponse` is the one place that writes `{"error": message}`, sets
//! `Retry-After` and `WWW-Authenticate`, and logs the failure. Statuses of database errors come
//! from core's table of codes (`stripe_billing_core::errors`), which has a column for each door:
//! `http_status` for the users' API, `webhook` (whose fault) for Stripe's deliveries.
//!
//! Counting is left to the routes that count their answers (the webhook's, [`Outcome`]): the
//! response carries the outcome label, so one layer counts successes and failures alike.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use stripe_billing_core::errors::{self, WebhookFault};

use super::auth::AuthError;
use crate::db::DbError;

/// How loudly a failure is logged: a caller's mistake is theirs to read in the answer, our
/// outages are warnings, and what only a bug or a broken set-up explains is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Quiet,
    Warn,
    Error,
}

/// An error answer, with what the log needs beyond what the caller is told.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    /// What the caller reads; never internal details.
    message: String,
    level: Level,
    /// The log line's message (what failed).
    context: &'static str,
    /// The full cause for the log, when it says more than `message`.
    detail: Option<String>,
    /// The SQLSTATE, when the database raised one.
    code: Option<String>,
    retry_after: Option<Duration>,
    /// RFC 6750: a 401 about the bearer token names the scheme to use.
    challenge: bool,
    /// No connection or slot freed up in time.
    busy: bool,
}

/// What a response says happened, for the routes that count their answers (the webhook
/// endpoint, by event type and outcome). Set by the handler on success and by [`ApiError`] on
/// failure; read by that route's counting layer.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The verified event's type; empty when nothing was verified.
    pub event_type: String,
    pub label: &'static str,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            level: Level::Quiet,
            context: "HTTP request failed",
            detail: None,
            code: None,
            retry_after: None,
            challenge: false,
            busy: false,
        }
    }

    fn logged(mut self, level: Level, context: &'static str) -> ApiError {
        self.level = level;
        self.context = context;
        self
    }

    fn with_detail(mut self, detail: impl ToString) -> ApiError {
        self.detail = Some(detail.to_string());
        self
    }

    fn retry_after(mut self, wait: Duration) -> ApiError {
        self.retry_after = Some(wait);
        self
    }

    /// The request is refused before anything ran (too large, a missing or bad header, a body
    /// that does not parse): the caller's to fix, told in the answer and not logged.
    pub fn refused(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError::new(status, message)
    }

    /// Every slot stayed taken for the caller's whole wait; call again in a moment.
    pub fn busy() -> ApiError {
        ApiError::no_connection().retry_after(SECOND)
    }

    /// Every connection of the pool stayed in use for the caller's whole wait.
    fn no_connection() -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy");
        e.busy = true;
        e
    }

    /// The caller's rate limit is used up for `wait`.
    pub fn rate_limited(wait: Duration) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many calls; wait before trying again",
        )
        .retry_after(wait)
    }

    /// Stripe refused the session (its message), or the request gave up after its attempts.
    pub fn stripe_refused(message: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, message)
    }

    /// The request is still being served when the call's wait is over.
    pub fn still_preparing() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session is still being prepared; call again (with the same Idempotency-Key) in a moment",
        )
        .retry_after(SECOND)
    }

    /// The worker's role could not become the caller: a set-up problem for the operator.
    pub fn cannot_become_user(e: &DbError) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "database error")
            .logged(Level::Error, "cannot run the API call as the user: the worker's database role must be able to SET ROLE authenticated (GRANT authenticated TO <worker role>)")
            .with_detail(e)
    }

    /// A webhook delivery the database did not store. The sender's fault (a bad signature,
    /// header or body) is 400 and Stripe stops retrying; a configuration gap (no secret) is 503
    /// and Stripe retries later; anything else, the database being away included, is a 500
    /// whose details stay in our log (Stripe retries that too).
    pub fn webhook(e: DbError) -> ApiError {
        const CONTEXT: &str = "webhook not stored";
        if matches!(e, DbError::Busy(_)) {
            return ApiError::no_connection()
                .logged(Level::Warn, "webhook refused: busy")
                .with_detail(e);
        }
        let Some(db) = e.as_db_error() else {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "database unavailable")
                .logged(Level::Error, CONTEXT)
                .with_detail(e);
        };
        let (status, message) = status_for_sqlstate(db.code().code(), db.message());
        let error = ApiError::new(status, message);
        let error = if status.is_server_error() {
            error.logged(Level::Error, CONTEXT).with_detail(&e)
        } else {
            error.logged(Level::Warn, "webhook refused")
        };
        error.with_code(&e)
    }

    fn with_code(mut self, e: &DbError) -> ApiError {
        self.code = e.as_db_error().map(|db| db.code().code().to_string());
        self
    }

    /// The label the webhook counter gives this answer.
    fn outcome(&self) -> &'static str {
        if self.busy {
            "busy"
        } else if self.status.is_client_error() {
            "rejected"
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            "unavailable"
        } else {
            "error"
        }
    }

    fn log(&self) {
        let (status, code) = (self.status.as_u16(), self.code.as_deref().unwrap_or(""));
        let error = self.detail.as_deref().unwrap_or(&self.message);
        match self.level {
            Level::Quiet => {}
            Level::Warn => tracing::warn!(error, code, status, "{}", self.context),
            Level::Error => tracing::error!(error, code, status, "{}", self.context),
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// A users' API call that failed in the database. SQL's refusals keep their message and take
/// the status of the table of codes; anything else is ours (logged, not shown): the database
/// is away or every connection busy (503), or a code the product never raises on purpose (500).
impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        if matches!(e, DbError::Busy(_)) {
            return ApiError::no_connection();
        }
        let Some(db) = e.as_db_error() else {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
                .logged(Level::Warn, "API call: the database is unavailable")
                .with_detail(e);
        };
        let error = api_sqlstate(db.code().code(), db.message());
        let error = if error.level == Level::Error {
            error.with_detail(&e)
        } else {
            error
        };
        error.with_code(&e)
    }
}

/// 401 for the caller's token (with the scheme to use), 503 when we cannot check it.
impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        let status = e.status();
        let mut error = ApiError::new(status, e.to_string());
        if status.is_server_error() {
            error = error.logged(
                Level::Warn,
                "API call not authenticated: the keys are unavailable",
            );
        }
        // Worth an operator's eye: either a page of the app's own is missing from
        // --session-cookie-origin, or another site is trying its users' cookies (CSRF).
        if matches!(e, AuthError::CrossSite(_)) {
            error = error.logged(
                Level::Warn,
                "API call refused: signed by the session cookie, not from an allowed origin",
            );
        }
        error.challenge = status == StatusCode::UNAUTHORIZED;
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let outcome = Outcome {
            event_type: String::new(),
            label: self.outcome(),
        };
        let mut response = (self.status, Json(json!({"error": self.message}))).into_response();
        let headers = response.headers_mut();
        if let Some(wait) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
        if self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(outcome);
        response
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The API's column of the table of codes: SQL's message with the table's status; a code the
/// product never raises on purpose is a 500 whose message stays in the log.
fn api_sqlstate(code: &str, message: &str) -> ApiError {
    const CONTEXT: &str = "API call failed in SQL";
    match errors::by_sqlstate(code).and_then(|c| StatusCode::from_u16(c.http_status).ok()) {
        Some(status) if status.is_server_error() => {
            ApiError::new(status, message).logged(Level::Warn, CONTEXT)
        }
        Some(status) => ApiError::new(status, message),
        None => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "database error")
            .logged(Level::Error, CONTEXT),
    }
}

/// The webhook's column of the table of codes: the status and the message Stripe gets.
pub fn status_for_sqlstate(code: &str, message: &str) -> (StatusCode, String) {
    match errors::by_sqlstate(code).map(|c| c.webhook) {
        Some(WebhookFault::Sender) => (StatusCode::BAD_REQUEST, message.to_string()),
        Some(WebhookFault::Configuration) => (StatusCode::SERVICE_UNAVAILABLE, message.to_string()),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "database error".into()),
    }
}

#[cfg(test)]
mod tests;
