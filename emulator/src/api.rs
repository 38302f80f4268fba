//! The emulated Stripe API: authentication, API version, parameter decoding and validation
//! (against the schema of the request's API version), idempotency, injected faults,
//! dispatch, and the request log.
//!
//! Order of checks, chosen to match what a client observes on the real API: route → auth →
//! version → decoding/schema (never stored under an idempotency key) → idempotency replay or
//! conflict → injected fault (stored only when it models a failure during execution) →
//! business rules and the result (stored).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::auth::authenticate;
use super::checkout::{create_checkout_session, expire_session};
use super::error::ApiError;
use super::form::{normalize_arrays, parse_form};
use super::idempotency::{reserve, Replay};
use super::lifecycle::Ctx;
use super::portal::{create_portal_session, list_configurations};
use super::render::{Renderer, Shape};
use super::resources::{create_customer, delete_customer, deleted_stub};
use super::routes::Route;
use super::schema::validate;
use super::store::{ids, real_now, RequestRecord, Store, StoredEvent};
use super::webhook::{dispatch, record as record_deliveries, target};
use super::App;
use super::{events, intents, lists, meters, updates};

/// A response before it becomes HTTP: what the log and the idempotency cache keep.
struct Outcome {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
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
            o.headers
                .push(("Stripe-Should-Retry".into(), retry.to_string()));
        }
        if e.status == StatusCode::UNAUTHORIZED {
            o.headers
                .push(("WWW-Authenticate".into(), "Basic realm=\"Stripe\"".into()));
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
    let (mut outcome, events) = process(
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
        outcome
            .headers
            .push(("Idempotency-Key".into(), key.clone()));
    }
    let target = {
        let mut store = app.lock();
        store.requests.push(record);
        target(&mut store, &events)
    };
    if !events.is_empty() {
        // Stripe sends the events of an API call asynchronously, after answering it.
        let app = app.clone();
        tokio::spawn(async move {
            let reports = dispatch(&app.http, &target, events, true).await;
            record_deliveries(&mut app.lock(), &reports);
        });
    }

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
) -> (Outcome, Vec<StoredEvent>) {
    let fail = |e: ApiError| (Outcome::error(&e, request_id), Vec::new());
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
    // An operation a version does not have (invoice payments before basil) is an unknown URL.
    let Some(schema) = app.schemas.operation(shape, route.operation()) else {
        return fail(ApiError::unrecognized_url(method.as_str(), path));
    };
    let params = match validate(schema, &raw) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    record.params = params.clone();

    // "Sending idempotency keys in GET and DELETE requests has no effect."
    let mut reservation = None;
    if let (true, Some(key)) = (method == Method::POST, record.idempotency_key.clone()) {
        let fingerprint = json!({"method": method.as_str(), "path": path, "params": params});
        match reserve(app, key, fingerprint) {
            Ok(r) => reservation = Some(r),
            Err(Replay::Stored {
                status,
                body,
                mut headers,
                original,
            }) => {
                record.replayed = true;
                headers.push(("Idempotent-Replayed".into(), "true".into()));
                headers.push(("Original-Request".into(), original));
                return (
                    Outcome {
                        status,
                        body,
                        headers,
                    },
                    Vec::new(),
                );
            }
            Err(Replay::Refused(e)) => return fail(e),
        }
    }

    let fault = app.lock().take_fault(method.as_str(), path);
    let mut during_execution = None;
    let answer_delay = fault.as_ref().and_then(|f| f.answer_delay_ms);
    if let Some(fault) = fault {
        record.fault = Some(serde_json::to_string(&fault).unwrap_or_default());
        if let Some(ms) = fault.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(status) = fault.status {
            let error = injected_error(status, &fault);
            if !fault.during_execution {
                // Before execution: nothing is stored, the reservation is dropped.
                return fail(error);
            }
            during_execution = Some(error);
        }
    }

    let (outcome, events) = match during_execution {
        Some(e) => fail(e),
        None => {
            let (result, sent_anyway) = {
                let mut store = app.lock();
                let result = execute(app, &mut store, &route, &params, shape);
                (result, std::mem::take(&mut store.failed_call_events))
            };
            match result {
                Ok((object, events)) => (Outcome::json(200, &object), events),
                // A declined charge answers 402 and still sends payment_intent.payment_failed.
                Err(e) => (Outcome::error(&e, request_id), sent_anyway),
            }
        }
    };
    if let Some(r) = reservation {
        r.complete(
            outcome.status,
            outcome.body.clone(),
            outcome.headers.clone(),
            request_id,
        );
    }
    if let Some(ms) = answer_delay {
        // Done and stored: a client that gives up now never hears that it worked.
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    (outcome, events)
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

/// `limit` of a list call: 1 to 100, 10 when absent (https://docs.stripe.com/api/pagination).
pub(super) fn list_limit(p: &Map<String, Value>) -> Result<usize, ApiError> {
    let limit = p.get("limit").and_then(Value::as_i64).unwrap_or(10);
    if !(1..=100).contains(&limit) {
        let bound = if limit < 1 {
            "greater than or equal to 1"
        } else {
            "less than or equal to 100"
        };
        return Err(
            ApiError::invalid("limit", format!("This value must be {bound}."))
                .code("parameter_invalid_integer"),
        );
    }
    Ok(limit as usize)
}

type Executed = Result<(Value, Vec<StoredEvent>), ApiError>;

/// The `expand[]` paths of a request.
fn expand_paths(p: &Map<String, Value>) -> Vec<String> {
    p.get("expand")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// Lists, events, prices, charges and PaymentIntents: answered from the store as it is.
fn read(
    app: &App,
    store: &mut Store,
    route: &Route,
    p: &Map<String, Value>,
    shape: Shape,
) -> Option<Executed> {
    let missing = |resource: &str, id: &str| ApiError::not_found(resource, id, "id");
    let object = match route {
        Route::ListEvents => events::list(store, p),
        Route::ListMeters => meters::list_meters(store, p),
        Route::CreateMeter => meters::create_meter(store, p),
        Route::CreateMeterEvent => meters::create_meter_event(store, p),
        Route::GetEvent(id) => events::retrieve(store, id),
        _ => {
            let r = Renderer {
                templates: &app.templates,
                store,
                shape,
            };
            match route {
                Route::ListCustomers => lists::customers(&r, p),
                Route::ListSubscriptions => lists::subscriptions(&r, p),
                Route::ListWebhookEndpoints => lists::webhook_endpoints(&r, p, &app.api_version),
                Route::ListPortalConfigurations => list_configurations(store, p),
                Route::ListLineItems(id) => match store.sessions.get(id) {
                    Some(s) => r.line_items_page(s, p),
                    None => Err(missing("checkout.session", id)),
                },
                Route::ListInvoiceLines(id) => match store.invoices.get(id) {
                    Some(inv) => r.invoice_lines_page(inv, p),
                    None => Err(missing("invoice", id)),
                },
                Route::GetPrice(id) if store.prices.contains_key(id) => Ok(r.price(id)),
                Route::GetPrice(id) => Err(missing("price", id)),
                Route::GetCharge(id) => store
                    .charges
                    .get(id)
                    .map(|c| r.charge(c))
                    .ok_or_else(|| missing("charge", id)),
                Route::ListInvoicePayments => lists::invoice_payments(&r, p),
                Route::ListPrices => meters::list_prices(&r, p),
                Route::GetPaymentIntent(id) => store
                    .payment_intents
                    .get(id)
                    .map(|i| r.payment_intent(i))
                    .ok_or_else(|| missing("payment_intent", id)),
                Route::GetRefund(id) => store
                    .refunds
                    .get(id)
                    .map(|x| r.refund(x))
                    .ok_or_else(|| missing("refund", id)),
                Route::ListPaymentMethods(id) => {
                    list_limit(p).and_then(|limit| intents::list(store, id, p, limit))
                }
                _ => return None,
            }
        }
    };
    let expanded = object.and_then(|mut object| {
        let r = Renderer {
            templates: &app.templates,
            store,
            shape,
        };
        r.expand(&mut object, &expand_paths(p))?;
        Ok(object)
    });
    Some(expanded.map(|o| (o, Vec::new())))
}

fn execute(app: &App, store: &mut Store, route: &Route, params: &Value, shape: Shape) -> Executed {
    let empty = Map::new();
    let p = params.as_object().unwrap_or(&empty);
    if let Some(done) = read(app, store, route, p, shape) {
        return done;
    }
    let missing = |resource: &str, id: &str| ApiError::not_found(resource, id, "id");
    let id = match route {
        Route::CreateCustomer => create_customer(store, p)?,
        Route::CreateSession => create_checkout_session(store, &app.base_url, shape, p)?,
        Route::CreatePortal => create_portal_session(store, &app.base_url, p)?,
        Route::AttachPaymentMethod(id) => return Ok((intents::attach(store, id, p)?, Vec::new())),
        Route::CreatePaymentIntent => return intents::create(&Ctx::new(app), store, shape, p),
        Route::UpdateSubscription(id) => {
            let (mut object, events) =
                updates::update_subscription(&Ctx::new(app), store, shape, id, p)?;
            let r = Renderer {
                templates: &app.templates,
                store,
                shape,
            };
            r.expand(&mut object, &expand_paths(p))?;
            return Ok((object, events));
        }
        Route::DeleteCustomer(id) => {
            let ctx = Ctx::new(app);
            return delete_customer(&ctx, store, id);
        }
        Route::ExpireSession(id) => {
            let ctx = Ctx::new(app);
            let events = expire_session(&ctx, store, id)?;
            let r = Renderer {
                templates: &app.templates,
                store,
                shape,
            };
            let mut object = r.session(&store.sessions[id]);
            r.expand(&mut object, &expand_paths(p))?;
            return Ok((object, events));
        }
        Route::GetCustomer(id) => match store.customers.get(id) {
            Some(c) if c.deleted => return Ok((deleted_stub(id), Vec::new())),
            Some(_) => id.clone(),
            None => return Err(missing("customer", id)),
        },
        Route::GetSession(id) if store.sessions.contains_key(id) => id.clone(),
        Route::GetSession(id) => return Err(missing("checkout.session", id)),
        Route::GetSubscription(id) if store.subscriptions.contains_key(id) => id.clone(),
        Route::GetSubscription(id) => return Err(missing("subscription", id)),
        Route::GetInvoice(id) if store.invoices.contains_key(id) => id.clone(),
        Route::GetInvoice(id) => return Err(missing("invoice", id)),
        _ => unreachable!("read() answers the other routes"),
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
    renderer.expand(&mut object, &expand_paths(p))?;
    Ok((object, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_limits_follow_the_pagination_docs() {
        let p = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(list_limit(&p(json!({}))).unwrap(), 10);
        assert_eq!(list_limit(&p(json!({"limit": 100}))).unwrap(), 100);
        for bad in [0, 101, -1] {
            let e = list_limit(&p(json!({"limit": bad}))).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.param.as_deref()),
                (400, Some("limit"))
            );
        }
    }
}
