//! Maps each domain error to a deliberate SQLSTATE, message and hint.
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use stripe_billing_core::signature::SignatureError;

/// Raises `err` as a Postgres ERROR. Never returns.
pub fn raise_signature_error(err: &SignatureError) -> ! {
    use PgSqlErrorCode::*;
    let (code, hint) = match err {
        SignatureError::NoHeader => (
            ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            "Pass the raw value of the request's Stripe-Signature header.",
        ),
        SignatureError::MalformedHeader(_) => (
            ERRCODE_INVALID_TEXT_REPRESENTATION,
            "Expected t=<unix time>,v1=<hex signature>[,v1=...]; pass the header value unchanged.",
        ),
        SignatureError::NoV1Signatures => (
            ERRCODE_INVALID_PARAMETER_VALUE,
            "Stripe signs with the v1 scheme; make sure the request really comes from Stripe.",
        ),
        SignatureError::NoMatchingSignature => (
            ERRCODE_INVALID_PASSWORD,
            "Check that the payload is the exact raw request body and that the signing secret belongs to this webhook endpoint.",
        ),
        SignatureError::TimestampOutsideTolerance { .. } => (
            ERRCODE_DATETIME_FIELD_OVERFLOW,
            "The event was signed too long ago or in the future: check the server clock, or raise the tolerance.",
        ),
        SignatureError::NoSecret => (
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "Pass the endpoint's signing secret (whsec_...).",
        ),
        SignatureError::NegativeTolerance(_) => (
            ERRCODE_INVALID_PARAMETER_VALUE,
            "Pass a tolerance in seconds (300 is Stripe's default), or 0 to skip the time check.",
        ),
    };
    raise(code, err.to_string(), None, Some(hint))
}

/// Raises an ERROR with the given SQLSTATE, message, optional detail and hint.
pub fn raise(
    code: PgSqlErrorCode,
    message: String,
    detail: Option<String>,
    hint: Option<&str>,
) -> ! {
    let mut report = ErrorReport::new(code, message, "stripe_billing");
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}
