//! The control API under `/_emulator/` (no auth; JSON in and out) and the two HTML pages
//! (`/pay/{session}`, `/p/session/{secret}`) that stand in for Stripe's hosted pages in the
//! demo. See the module docs in `mod.rs` for the request and response shapes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::changes::{self, Proration};
use super::completion;
use super::lifecycle::{Ctx, Step};
use super::portal::default_configuration;
use super::render::Renderer;
use super::store::{Fault, Store};
use super::subscriptions::{self, Outcome};
use super::webhook::{dispatch, record, target};
use super::App;

pub(super) type AppState = State<Arc<App>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/_emulator/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route(
            "/_emulator/requests",
            get(list_requests).delete(clear_requests),
        )
        .route("/_emulator/state", get(state))
        .route("/_emulator/events", get(list_events))
        .route("/_emulator/events/{id}/deliver", post(redeliver))
        .route("/_emulator/webhook", post(set_webhook))
        .route("/_emulator/reset", post(reset))
        .route(
            "/_emulator/portal_configuration",
            post(portal_configuration),
        )
        .route("/_emulator/checkout/external", post(external))
        .route("/_emulator/checkout/{id}/complete", post(complete))
        .route(
            "/_emulator/checkout/{id}/async_payment",
            post(async_payment),
        )
        .route(
            "/_emulator/subscriptions/{id}/{action}",
            post(subscription_action),
        )
        .route("/_emulator/invoices/{id}/pay", post(pay_invoice))
        .route("/pay/{id}", get(pay_page).post(pay_submit))
        .route("/p/session/{secret}", get(portal_page))
        .route("/invoice/{id}", get(invoice_page).post(invoice_submit))
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"error": {"type": "emulator_error", "message": message.into()}});
    (status, Json(body)).into_response()
}

/// An empty body means "no options"; anything else must be a JSON object.
pub(super) fn parse_args(body: &Bytes) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

/// The control call's JSON arguments, or the 400 response for a bad body.
macro_rules! args_or_400 {
    ($body:expr) => {
        match $crate::control::parse_args(&$body) {
            Ok(a) => a,
            Err(m) => return $crate::control::error(::axum::http::StatusCode::BAD_REQUEST, m),
        }
    };
}
pub(super) use args_or_400;

/// Applies one lifecycle step under the lock, then signs (and delivers) its events and
/// records how the deliveries went.
pub(super) async fn run_step(
    app: &App,
    args: &Value,
    step: impl FnOnce(&Ctx, &mut Store) -> Step,
) -> Response {
    let deliver = args["deliver"].as_bool().unwrap_or(true);
    let (object, events, target) = {
        let mut store = app.lock();
        let ctx = Ctx::new(app);
        match step(&ctx, &mut store) {
            Ok((object, events)) => {
                let target = target(&mut store, &events);
                (object, events, target)
            }
            Err(e) => return error(e.status, e.message),
        }
    };
    let reports = dispatch(&app.http, &target, events, deliver).await;
    record(&mut app.lock(), &reports);
    Json(json!({"object": object, "events": reports})).into_response()
}

async fn add_fault(State(app): AppState, body: Bytes) -> Response {
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
    };
    if fault.status.is_none() && fault.delay_ms.is_none() && fault.answer_delay_ms.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "a fault needs a status, a delay_ms or an answer_delay_ms",
        );
    }
    if fault.status.is_some_and(|s| !(400..=599).contains(&s)) || fault.count == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "status must be 400-599 and count at least 1",
        );
    }
    let mut store = app.lock();
    store.faults.push(fault);
    Json(json!({"faults": store.faults})).into_response()
}

async fn list_faults(State(app): AppState) -> Response {
    Json(json!({"faults": app.lock().faults})).into_response()
}

async fn clear_faults(State(app): AppState) -> Response {
    app.lock().faults.clear();
    Json(json!({"faults": []})).into_response()
}

async fn list_requests(State(app): AppState) -> Response {
    Json(json!(app.lock().requests)).into_response()
}

async fn clear_requests(State(app): AppState) -> Response {
    app.lock().requests.clear();
    Json(json!([])).into_response()
}

async fn state(State(app): AppState) -> Response {
    let mut store = app.lock();
    let now = store.clock.now();
    let r = Renderer {
        templates: &app.templates,
        store: &store,
        shape: app.account_shape(),
    };
    let body = json!({
        "api_version": app.api_version,
        "clock": now,
        "webhook_url": store.webhook_url,
        "counts": {
            "customers": store.customers.len(),
            "checkout_sessions": store.sessions.len(),
            "billing_portal_sessions": store.portal_sessions.len(),
            "subscriptions": store.subscriptions.len(),
            "invoices": store.invoices.len(),
            "payment_intents": store.payment_intents.len(),
            "charges": store.charges.len(),
            "refunds": store.refunds.len(),
            "disputes": store.disputes.len(),
            "credit_notes": store.credit_notes.len(),
            "events": store.events.len(),
            "requests": store.requests.len(),
        },
        "prices": store.prices.keys().map(|p| r.price(p)).collect::<Vec<_>>(),
        "coupons": store.coupons.values().collect::<Vec<_>>(),
        "customers": store.customers.values().map(|c| r.customer(c)).collect::<Vec<_>>(),
        "checkout_sessions": store.sessions.values().map(|s| r.session(s)).collect::<Vec<_>>(),
        "billing_portal_sessions": store.portal_sessions.values().map(|p| r.portal(p)).collect::<Vec<_>>(),
        "subscriptions": store.subscriptions.values().map(|s| r.subscription(s)).collect::<Vec<_>>(),
        "invoices": store.invoices.values().map(|i| r.invoice(i)).collect::<Vec<_>>(),
        "charges": store.charges.values().map(|c| r.charge(c)).collect::<Vec<_>>(),
        "disputes": store.disputes.values().map(|d| r.dispute(d)).collect::<Vec<_>>(),
        "credit_notes": store.credit_notes.values().map(|c| r.credit_note(c)).collect::<Vec<_>>(),
        "drop": store.drop_rule,
    });
    Json(body).into_response()
}

async fn list_events(State(app): AppState) -> Response {
    Json(json!(app.lock().events)).into_response()
}

async fn redeliver(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let args = args_or_400!(body);
    let (event, target) = {
        let mut store = app.lock();
        match store.events.iter().find(|e| e.id == id).cloned() {
            Some(e) => {
                let target = target(&mut store, std::slice::from_ref(&e));
                (e, target)
            }
            None => return error(StatusCode::NOT_FOUND, format!("No such event: '{id}'")),
        }
    };
    let deliver = args["deliver"].as_bool().unwrap_or(true);
    let reports = dispatch(&app.http, &target, vec![event], deliver).await;
    record(&mut app.lock(), &reports);
    Json(json!({"events": reports})).into_response()
}

async fn set_webhook(State(app): AppState, body: Bytes) -> Response {
    let args = args_or_400!(body);
    let mut store = app.lock();
    match &args["url"] {
        Value::String(url) => store.webhook_url = Some(url.clone()),
        Value::Null => store.webhook_url = None,
        _ => return error(StatusCode::BAD_REQUEST, "url must be a string or null"),
    }
    if let Some(secret) = args["secret"].as_str() {
        store.webhook_secret = secret.to_string();
    }
    Json(json!({"url": store.webhook_url, "secret": store.webhook_secret})).into_response()
}

async fn reset(State(app): AppState) -> Response {
    app.reset();
    Json(json!({"reset": true})).into_response()
}

async fn complete(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let args = args_or_400!(body);
    let paid = match args["payment_status"].as_str() {
        None | Some("paid") => true,
        Some("unpaid") => false,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("payment_status must be paid or unpaid, not {other:?}"),
            )
        }
    };
    run_step(&app, &args, |ctx, store| {
        completion::complete_checkout(ctx, store, &id, paid)
    })
    .await
}

async fn external(State(app): AppState, body: Bytes) -> Response {
    let args = args_or_400!(body);
    run_step(&app, &args, |ctx, store| {
        completion::external_session(ctx, store, &args)
    })
    .await
}

async fn pay_invoice(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let args = args_or_400!(body);
    run_step(&app, &args, |c, s| subscriptions::pay_invoice(c, s, &id)).await
}

/// `{"exists": false}` removes the saved portal configuration (a fresh test-mode account),
/// `{"exists": true}` saves a default one again.
async fn portal_configuration(State(app): AppState, body: Bytes) -> Response {
    let args = args_or_400!(body);
    let Some(exists) = args["exists"].as_bool() else {
        return error(StatusCode::BAD_REQUEST, "exists (boolean) is required");
    };
    let mut store = app.lock();
    match (exists, &store.portal_configuration) {
        (false, _) => store.portal_configuration = None,
        (true, None) => {
            let now = store.clock.now();
            store.portal_configuration = Some(default_configuration(now));
        }
        (true, Some(_)) => {}
    }
    let id = store.portal_configuration.as_ref().map(|c| c.id.clone());
    Json(json!({"configuration": id})).into_response()
}

async fn async_payment(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let args = args_or_400!(body);
    let Some(succeeded) = args["succeeded"].as_bool() else {
        return error(StatusCode::BAD_REQUEST, "succeeded (boolean) is required");
    };
    run_step(&app, &args, |ctx, store| {
        completion::async_payment(ctx, store, &id, succeeded)
    })
    .await
}

async fn subscription_action(
    State(app): AppState,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let args = args_or_400!(body);
    let step = |f: fn(&Ctx, &mut Store, &str) -> Step| {
        let id = id.clone();
        move |c: &Ctx, s: &mut Store| f(c, s, &id)
    };
    match action.as_str() {
        "renew" => {
            run_step(
                &app,
                &args,
                step(|c, s, id| subscriptions::renew(c, s, id, Outcome::Paid)),
            )
            .await
        }
        "fail_payment" => {
            run_step(
                &app,
                &args,
                step(|c, s, id| subscriptions::renew(c, s, id, Outcome::Failed)),
            )
            .await
        }
        "require_action" => {
            run_step(
                &app,
                &args,
                step(|c, s, id| subscriptions::renew(c, s, id, Outcome::ActionRequired)),
            )
            .await
        }
        "recover" => {
            run_step(
                &app,
                &args,
                step(|c, s, id| subscriptions::recover(c, s, id, false)),
            )
            .await
        }
        "complete_action" => {
            run_step(
                &app,
                &args,
                step(|c, s, id| subscriptions::recover(c, s, id, true)),
            )
            .await
        }
        "uncancel" => {
            run_step(
                &app,
                &args,
                step(|c, s, id| subscriptions::cancel(c, s, id, None, None)),
            )
            .await
        }
        "expire" => run_step(&app, &args, step(subscriptions::expire)).await,
        "resume" => run_step(&app, &args, step(|c, s, id| changes::pause(c, s, id, None))).await,
        "cancel" => {
            let at_period_end = match &args["at_period_end"] {
                Value::Null => false,
                Value::Bool(b) => *b,
                _ => return error(StatusCode::BAD_REQUEST, "at_period_end must be a boolean"),
            };
            let reason = match args["reason"].as_str() {
                None => None,
                Some(r @ ("cancellation_requested" | "payment_failed" | "payment_disputed")) => Some(r),
                Some(other) => return error(
                    StatusCode::BAD_REQUEST,
                    format!("reason must be cancellation_requested, payment_failed or payment_disputed, not {other:?}"),
                ),
            };
            run_step(&app, &args, |c, s| {
                subscriptions::cancel(c, s, &id, Some(at_period_end), reason)
            })
            .await
        }
        "change_price" => {
            let Some(price) = args["price"].as_str().map(str::to_string) else {
                return error(StatusCode::BAD_REQUEST, "price (string) is required");
            };
            let proration = match Proration::parse(&args["proration_behavior"]) {
                Ok(p) => p,
                Err(e) => return error(e.status, e.message),
            };
            let item = args["item"].as_str().map(str::to_string);
            run_step(&app, &args, |c, s| {
                changes::change_price(c, s, &id, &price, item.as_deref(), proration)
            })
            .await
        }
        "add_item" => run_step(&app, &args, |c, s| changes::add_item(c, s, &id, &args)).await,
        "end_trial" => {
            let early = args["early"].as_bool().unwrap_or(false);
            let outcome = match args["outcome"].as_str() {
                None | Some("paid") => Outcome::Paid,
                Some("failed") => Outcome::Failed,
                Some("action_required") => Outcome::ActionRequired,
                Some(other) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("outcome must be paid, failed or action_required, not {other:?}"),
                    )
                }
            };
            run_step(&app, &args, |c, s| {
                changes::end_trial(c, s, &id, early, outcome)
            })
            .await
        }
        "pause" => {
            let Some(behavior) = args["behavior"].as_str().map(str::to_string) else {
                return error(StatusCode::BAD_REQUEST, "behavior (string) is required");
            };
            let resumes_at = args["resumes_at"].as_i64();
            run_step(&app, &args, |c, s| {
                changes::pause(c, s, &id, Some((&behavior, resumes_at)))
            })
            .await
        }
        other => error(
            StatusCode::NOT_FOUND,
            format!("unknown subscription action {other:?}"),
        ),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn pay_page(State(app): AppState, Path(id): Path<String>) -> Response {
    let store = app.lock();
    let Some(s) = store.sessions.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such checkout session</h1>".to_string()),
        )
            .into_response();
    };
    let lines: String = s
        .lines
        .iter()
        .map(|l| format!("<li>{} × {}</li>", l.quantity, escape(&l.price)))
        .collect();
    let total = s.total();
    let cancel = s
        .cancel_url
        .as_deref()
        .map(|u| format!("<a href=\"{}\">Cancel</a>", escape(u)))
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><title>Checkout (emulator)</title><h1>Checkout — {mode}</h1><ul>{lines}</ul>\
         <p>Total: {total} cents (status {status})</p><form method=post><button>Pay</button></form>{cancel}",
        mode = escape(&s.mode),
        status = escape(&s.status),
    ))
    .into_response()
}

async fn pay_submit(State(app): AppState, Path(id): Path<String>) -> Response {
    let response = run_step(&app, &json!({}), |ctx, store| {
        completion::complete_checkout(ctx, store, &id, true)
    })
    .await;
    if !response.status().is_success() {
        return response;
    }
    let success = app
        .lock()
        .sessions
        .get(&id)
        .map(|s| s.success_url.replace("{CHECKOUT_SESSION_ID}", &id));
    match success {
        Some(url) => Redirect::to(&url).into_response(),
        None => error(StatusCode::NOT_FOUND, "session vanished"),
    }
}

async fn portal_page(State(app): AppState, Path(secret): Path<String>) -> Response {
    let store = app.lock();
    let suffix = format!("/p/session/{secret}");
    let Some(p) = store
        .portal_sessions
        .values()
        .find(|p| p.url.ends_with(&suffix))
    else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such portal session</h1>".to_string()),
        )
            .into_response();
    };
    let subs: String = store
        .subscriptions
        .values()
        .filter(|s| s.customer == p.customer)
        .map(|s| {
            format!(
                "<li>{} — {} (cancel at period end: {})</li>",
                escape(&s.id),
                escape(&s.status),
                s.cancel_at_period_end
            )
        })
        .collect();
    let back = p
        .return_url
        .as_deref()
        .map(|u| format!("<a href=\"{}\">Return</a>", escape(u)))
        .unwrap_or_default();
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(format!(
            "<!doctype html><title>Billing portal (emulator)</title><h1>Customer {}</h1><ul>{subs}</ul>{back}",
            escape(&p.customer)
        )),
    )
        .into_response()
}

/// The hosted invoice page (`hosted_invoice_url`): the invoice and, while it is open, a
/// button that pays it (confirming 3-D Secure when the last attempt needs action).
async fn invoice_page(State(app): AppState, Path(id): Path<String>) -> Response {
    let store = app.lock();
    let Some(inv) = store.invoices.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such invoice</h1>".to_string()),
        )
            .into_response();
    };
    let button = if inv.status == "open" {
        "<form method=post><button>Pay</button></form>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><title>Invoice (emulator)</title><h1>Invoice {number}</h1>\
         <p>Amount due: {due} cents (status {status})</p>{button}",
        number = escape(inv.number.as_deref().unwrap_or(&inv.id)),
        due = inv.amount_due(),
        status = escape(&inv.status),
    ))
    .into_response()
}

async fn invoice_submit(State(app): AppState, Path(id): Path<String>) -> Response {
    let (sub, needs_action) = {
        let store = app.lock();
        match store.invoices.get(&id) {
            Some(inv) => (inv.subscription.clone(), inv.requires_action),
            None => return error(StatusCode::NOT_FOUND, format!("No such invoice: '{id}'")),
        }
    };
    let response = match (sub, needs_action) {
        (Some(sub), true) => {
            run_step(&app, &json!({}), |c, s| {
                subscriptions::recover(c, s, &sub, true)
            })
            .await
        }
        _ => {
            run_step(&app, &json!({}), |c, s| {
                subscriptions::pay_invoice(c, s, &id)
            })
            .await
        }
    };
    if !response.status().is_success() {
        return response;
    }
    Redirect::to(&format!("/invoice/{id}")).into_response()
}
