//! Stripe-shaped API errors: `{"error":{"type":…,"code":…,"message":…,"param":…}}`.
//!
//! Only the fields Stripe sends are emitted (`code` and `param` are omitted when unset), so a
//! client's error parsing is exercised the same way as against the real API.

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

/// An error response of the emulated API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stripe's `error.type`: `invalid_request_error`, `api_error`, `card_error`,
    /// `idempotency_error`.
    pub kind: String,
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    /// Sent as the `Stripe-Should-Retry` header when set.
    pub should_retry: Option<bool>,
    /// Further fields of `error` (a card error's `decline_code`, `payment_intent`,
    /// `payment_method`).
    /// (Boxed: most errors have none, and every `Result` carries the size.)
    pub extra: Box<Map<String, Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: kind.to_string(),
            code: None,
            message: message.into(),
            param: None,
            should_retry: None,
            extra: Box::default(),
        }
    }

    /// A 400 `invalid_request_error` about one parameter.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).param(param)
    }

    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_string());
        self
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn unknown_param(param: &str) -> Self {
        Self::invalid(param, format!("Received unknown parameter: {param}"))
            .code("parameter_unknown")
    }

    pub fn missing_param(param: &str) -> Self {
        Self::invalid(param, format!("Missing required param: {param}.")).code("parameter_missing")
    }

    /// Stripe reads an empty value as "unset", which a create call cannot do.
    pub fn empty_param(param: &str) -> Self {
        Self::invalid(
            param,
            format!(
                "You passed an empty string for '{param}'. We assume empty values are an attempt \
                 to unset a parameter; however '{param}' cannot be unset. You should remove \
                 '{param}' from your request or supply a non-empty value."
            ),
        )
        .code("parameter_invalid_empty")
    }

    /// `params` are reported in Stripe's "only one of" wording; the first names the param.
    pub fn exclusive(params: &[&str]) -> Self {
        Self::invalid(
            params[0],
            format!(
                "You may only specify one of these parameters: {}.",
                params.join(", ")
            ),
        )
        .code("parameters_exclusive")
    }

    /// `resource` in Stripe's words (`price`, `customer`, `checkout.session`, …).
    pub fn no_such(resource: &str, id: &str, param: Option<&str>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("No such {resource}: '{id}'"),
        )
        .code("resource_missing");
        e.param = param.map(str::to_string);
        e
    }

    /// Retrieval of a missing object is a 404 on the real API, creation with a missing
    /// reference a 400.
    pub fn not_found(resource: &str, id: &str, param: &str) -> Self {
        let mut e = Self::no_such(resource, id, Some(param));
        e.status = StatusCode::NOT_FOUND;
        e
    }

    pub fn unrecognized_url(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unrecognized request URL ({method}: {path})."),
        )
    }

    /// The JSON body, with the request id Stripe adds to every error.
    pub fn body(&self, request_id: &str) -> Value {
        let mut err = Map::new();
        err.insert("type".into(), json!(self.kind));
        err.insert("message".into(), json!(self.message));
        if let Some(code) = &self.code {
            err.insert("code".into(), json!(code));
        }
        if let Some(param) = &self.param {
            err.insert("param".into(), json!(param));
        }
        for (key, value) in self.extra.iter() {
            err.insert(key.clone(), value.clone());
        }
        err.insert(
            "request_log_url".into(),
            json!(format!("/_emulator/requests#{request_id}")),
        );
        json!({ "error": err })
    }
}

/// Formats an enum list the way Stripe's messages do: `a`, `a or b`, `a, b, or c`.
pub fn one_of(values: &[String]) -> String {
    match values {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_like_stripe() {
        let body = ApiError::unknown_param("line_items[0][pricee]").body("req_1");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "parameter_unknown");
        assert_eq!(body["error"]["param"], "line_items[0][pricee]");
        assert_eq!(
            body["error"]["message"],
            "Received unknown parameter: line_items[0][pricee]"
        );
        let plain = ApiError::unrecognized_url("GET", "/v1/x").body("req_2");
        assert!(plain["error"].get("code").is_none() && plain["error"].get("param").is_none());
    }

    #[test]
    fn enum_lists() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(one_of(&v(&["a"])), "a");
        assert_eq!(one_of(&v(&["a", "b"])), "a or b");
        assert_eq!(
            one_of(&v(&["payment", "setup", "subscription"])),
            "payment, setup, or subscription"
        );
    }
}
