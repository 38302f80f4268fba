//! The emulated Stripe API: authentication, API version, parameter decoding and validation,
//! idempotency, injected faults, dispatch, and the request log.
//!
//! Order of checks, chosen to match what a client observes on the real API: route → auth →
//! version → decoding/schema (never stored under an idempotency key) → idempotency replay or
//! conflict → injected fault (not stored either) → business rules and the result (stored).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use super::error::ApiError;
use super::form::{normalize_arrays, parse_form};
use super::idempotency::{reserve, Replay};
use super::render::{Renderer, Shape};
use super::resources;
use super::schema::validate;
use super::store::{ids, real_now, RequestRecord, Store};
use super::App;

enum Route {
    CreateCustomer,
    GetCustomer(String),
    CreateSession,
    GetSession(String),
    CreatePortal,
    GetSubscription(String),
    GetInvoice(String),
}

impl Route {
    fn parse(method: &Method, path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/v1/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| s.to_string();
        Some(match (method.as_str(), segments.as_slice()) {
            ("POST", ["customers"]) => Route::CreateCustomer,
            ("GET", ["customers", c]) => Route::GetCustomer(id(c)),
            ("POST", ["checkout", "sessions"]) => Route::CreateSession,
            ("GET", ["checkout", "sessions", s]) => Route::GetSession(id(s)),
            ("POST", ["billing_portal", "sessions"]) => Route::CreatePortal,
            ("GET", ["subscriptions", s]) => Route::GetSubscription(id(s)),
            ("GET", ["invoices", i]) => Route::GetInvoice(id(i)),
            _ => return None,
        })
    }

    /// The key of the operation's schema in the form-params fixture.
    fn operation(&self) -> &'static str {
        match self {
            Route::CreateCustomer => "POST /v1/customers",
            Route::GetCustomer(_) => "GET /v1/customers/{customer}",
            Route::CreateSession => "POST /v1/checkout/sessions",
            Route::GetSession(_) => "GET /v1/checkout/sessions/{session}",
            Route::CreatePortal => "POST /v1/billing_portal/sessions",
            Route::GetSubscription(_) => "GET /v1/subscriptions/{subscription_exposed_id}",
            Route::GetInvoice(_) => "GET /v1/invoices/{invoice}",
        }
    }
}

/// A response before it becomes HTTP: what the log and the idempotency cache keep.
struct Outcome {
    status: u16,
    body: String,
    headers: Vec<(&'static str, String)>,
}

impl Outcome {
    fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            body: serde_json::to_string_pretty(body).expect("JSON serialises"),
            headers: Vec::new(),
        }
    }

    fn error(e: &ApiError, request_id: &str) -> Self {
        let mut o = Self::json(e.status.as_u16(), &e.body(request_id));
        if let Some(retry) = e.should_retry {
            o.headers.push(("Stripe-Should-Retry", retry.to_string()));
        }
        if e.status == StatusCode::UNAUTHORIZED {
            o.headers
                .push(("WWW-Authenticate", "Basic realm=\"Stripe\"".into()));
        }
        o
    }
}

/// Entry point for everything that is not a control route.
pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = ids::request();
    let header_str = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut record = RequestRecord {
        id: request_id.clone(),
        method: method.to_string(),
        path: uri.path().to_string(),
        params: Value::Null,
        idempotency_key: header_str("idempotency-key"),
        stripe_version: header_str("stripe-version"),
        status: 0,
        replayed: false,
        fault: None,
        time: real_now(),
    };
    let mut outcome = process(
        &app,
        &method,
        &uri,
        &headers,
        &body,
        &request_id,
        &mut record,
    )
    .await;
    record.status = outcome.status;
    let version = record
        .stripe_version
        .clone()
        .unwrap_or_else(|| app.api_version.clone());
    if let Some(key) = &record.idempotency_key {
        outcome.headers.push(("Idempotency-Key", key.clone()));
    }
    app.lock().requests.push(record);

    let mut response = Response::builder()
        .status(outcome.status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Request-Id", &request_id)
        .header("Stripe-Version", version);
    for (name, value) in outcome.headers {
        response = response.header(name, value);
    }
    response
        .body(Body::from(outcome.body))
        .expect("valid response")
}

async fn process(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
    record: &mut RequestRecord,
) -> Outcome {
    let fail = |e: ApiError| Outcome::error(&e, request_id);
    let path = uri.path();
    let Some(route) = Route::parse(method, path) else {
        return fail(ApiError::unrecognized_url(method.as_str(), path));
    };
    if let Err(e) = authenticate(app, headers) {
        return fail(e);
    }
    if let Some(v) = &record.stripe_version {
        if !app.versions.contains(v) {
            return fail(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("Invalid Stripe API version: {v}"),
            ));
        }
    }
    let shape = Shape::of(record.stripe_version.as_deref().unwrap_or(&app.api_version));

    let raw = match decode_params(method, uri, headers, body) {
        Ok(raw) => raw,
        Err(e) => return fail(e),
    };
    record.params = normalize_arrays(raw.clone());
    let schema = app
        .schemas
        .operation(route.operation())
        .expect("every route has a schema");
    let params = match validate(schema, &raw) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    record.params = params.clone();

    let mut reservation = None;
    if let (true, Some(key)) = (method == Method::POST, record.idempotency_key.clone()) {
        let fingerprint = json!({"method": method.as_str(), "path": path, "params": params});
        match reserve(app, key, fingerprint) {
            Ok(r) => reservation = Some(r),
            Err(Replay::Stored {
                status,
                body,
                original,
            }) => {
                record.replayed = true;
                let mut o = Outcome {
                    status,
                    body,
                    headers: Vec::new(),
                };
                o.headers.push(("Idempotent-Replayed", "true".into()));
                o.headers.push(("Original-Request", original));
                return o;
            }
            Err(Replay::Refused(e)) => return fail(e),
        }
    }

    let fault = app.lock().take_fault(method.as_str(), path);
    if let Some(fault) = fault {
        record.fault = Some(serde_json::to_string(&fault).unwrap_or_default());
        if let Some(ms) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(status) = fault.status {
            return fail(injected_error(status, &fault));
        }
    }

    let result = {
        let mut store = app.lock();
        execute(app, &mut store, &route, &params, shape)
    };
    let outcome = match result {
        Ok(object) => Outcome::json(200, &object),
        Err(e) => fail(e),
    };
    if let Some(r) = reservation {
        r.complete(outcome.status, outcome.body.clone(), request_id);
    }
    outcome
}

fn authenticate(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized =
        |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", m);
    let missing = || {
        unauthorized(
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
             YOUR_SECRET_KEY')."
                .into(),
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?.trim();
    let key = if let Some(token) = value.strip_prefix("Bearer ") {
        token.trim().to_string()
    } else if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                unauthorized("Invalid API Key provided: (malformed basic auth)".into())
            })?;
        decoded.split(':').next().unwrap_or_default().to_string()
    } else {
        return Err(unauthorized(
            "Invalid authorization header. Use 'Authorization: Bearer YOUR_SECRET_KEY'.".into(),
        ));
    };
    if key.is_empty() {
        return Err(missing());
    }
    if key != app.secret_key {
        return Err(unauthorized(format!(
            "Invalid API Key provided: {}",
            mask_key(&key)
        )));
    }
    Ok(())
}

/// `sk_test_abcdef123456` → `sk_test_********3456`, as Stripe echoes a wrong key.
///
/// Counted in characters, not bytes: a key from basic auth is arbitrary UTF-8.
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    // Everything up to and including the second `_` is shown (`sk_test_`).
    let prefix = chars
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == '_')
        .nth(1)
        .map_or(0, |(i, _)| i + 1);
    let keep_tail = (chars.len() - prefix).min(4);
    let stars = chars.len() - prefix - keep_tail;
    let head: String = chars[..prefix].iter().collect();
    let tail: String = chars[chars.len() - keep_tail..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(stars))
}

fn decode_params(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", m);
    let mut input = uri.query().unwrap_or_default().to_string();
    if method == Method::POST && !body.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return Err(bad(format!(
                "Invalid request: the body must be application/x-www-form-urlencoded, got {content_type:?}"
            )));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| bad("Invalid request: the body is not UTF-8".into()))?;
        if !input.is_empty() {
            input.push('&');
        }
        input.push_str(text);
    }
    parse_form(&input).map_err(|e| bad(e.0))
}

/// The error an injected fault answers with, typed like Stripe's for that status.
fn injected_error(status: u16, fault: &super::store::Fault) -> ApiError {
    let (kind, code, message) = match status {
        429 => (
            "invalid_request_error",
            Some("rate_limit"),
            "Request rate limit exceeded. Learn more about rate limits (injected by the emulator).",
        ),
        402 => (
            "card_error",
            Some("card_declined"),
            "Your card was declined. (injected by the emulator)",
        ),
        409 => (
            "idempotency_error",
            None,
            "Conflict (injected by the emulator).",
        ),
        s if s >= 500 => (
            "api_error",
            None,
            "An unknown error occurred (injected by the emulator).",
        ),
        _ => (
            "invalid_request_error",
            None,
            "Request failed (injected by the emulator).",
        ),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut e = ApiError::new(
        status,
        fault.kind.as_deref().unwrap_or(kind),
        fault.message.as_deref().unwrap_or(message),
    );
    e.code = fault.code.clone().or(code.map(str::to_string));
    e.should_retry = fault.should_retry;
    e
}

fn execute(
    app: &App,
    store: &mut Store,
    route: &Route,
    params: &Value,
    shape: Shape,
) -> Result<Value, ApiError> {
    let empty = serde_json::Map::new();
    let p = params.as_object().unwrap_or(&empty);
    let missing = |resource: &str, id: &str| ApiError::not_found(resource, id, "id");
    let id = match route {
        Route::CreateCustomer => resources::create_customer(store, p)?,
        Route::CreateSession => resources::create_checkout_session(store, &app.base_url, p)?,
        Route::CreatePortal => resources::create_portal_session(store, &app.base_url, p)?,
        Route::GetCustomer(id) if store.customers.contains_key(id) => id.clone(),
        Route::GetCustomer(id) => return Err(missing("customer", id)),
        Route::GetSession(id) if store.sessions.contains_key(id) => id.clone(),
        Route::GetSession(id) => return Err(missing("checkout.session", id)),
        Route::GetSubscription(id) if store.subscriptions.contains_key(id) => id.clone(),
        Route::GetSubscription(id) => return Err(missing("subscription", id)),
        Route::GetInvoice(id) if store.invoices.contains_key(id) => id.clone(),
        Route::GetInvoice(id) => return Err(missing("invoice", id)),
    };
    let renderer = Renderer {
        templates: &app.templates,
        store,
        shape,
    };
    let mut object = match store.portal_sessions.get(&id) {
        Some(portal) => renderer.portal(portal),
        None => renderer
            .by_id(&id)
            .expect("the object was just found or created"),
    };
    let expand: Vec<String> = p
        .get("expand")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    renderer.expand(&mut object, &expand)?;
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keys_like_stripe() {
        assert_eq!(mask_key("sk_test_abcdef123456"), "sk_test_********3456");
        assert_eq!(mask_key("sk_live_x"), "sk_live_x");
        assert_eq!(mask_key("nonsense_key_value123"), "nonsense_key_****e123");
        assert_eq!(mask_key("nokey"), "*okey");
        assert_eq!(mask_key(""), "");
    }

    #[test]
    fn masks_non_ascii_keys_by_characters() {
        // A basic-auth user decodes to arbitrary UTF-8; byte offsets would split `é`.
        assert_eq!(mask_key("éé_é_é"), "éé_é_é");
        assert_eq!(mask_key("sk_tést_ééééé€ü"), "sk_tést_***éé€ü");
        assert_eq!(mask_key("ключ_тест_секретный"), "ключ_тест_*****тный");
        assert_eq!(mask_key("ü"), "ü");
    }

    #[test]
    fn routes() {
        assert!(Route::parse(&Method::POST, "/v1/checkout/sessions").is_some());
        assert!(Route::parse(&Method::GET, "/v1/checkout/sessions").is_none());
        assert!(Route::parse(&Method::DELETE, "/v1/customers/cus_1").is_none());
        assert!(Route::parse(&Method::GET, "/v2/customers/cus_1").is_none());
    }
}
