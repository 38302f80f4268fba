//! Control calls for money after the purchase (refunds, disputes, credit notes), for the
//! webhook endpoint being down, the clock, the catalog, endpoints registered on the account,
//! and customers and subscriptions made outside the worker. Same conventions as `control.rs`
//! (JSON in and out, `"deliver": false` returns events without POSTing them).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::control::{args_or_400, error, run_step, AppState};
use super::events::DropRule;
use super::store::{ids, WebhookEndpoint};
use super::{credit_notes, direct, payments, App};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/_emulator/charges/{id}/refund", post(refund))
        .route("/_emulator/refunds/{id}/fail", post(fail_refund))
        .route("/_emulator/charges/{id}/dispute", post(dispute))
        .route("/_emulator/disputes/{id}/close", post(close_dispute))
        .route("/_emulator/invoices/{id}/credit_note", post(credit_note))
        .route("/_emulator/credit_notes/{id}/void", post(void_credit_note))
        .route(
            "/_emulator/webhook/drop",
            post(drop_deliveries).delete(stop_dropping),
        )
        .route("/_emulator/clock/advance", post(advance_clock))
        .route("/_emulator/webhook_endpoints", post(add_endpoint))
        .route("/_emulator/prices/{id}", post(update_price))
        .route("/_emulator/customers", post(create_customer))
        .route("/_emulator/subscriptions", post(create_subscription))
}

async fn refund(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let a = args_or_400!(body);
    run_step(&app, &a, |c, s| payments::refund(c, s, &id, &a)).await
}

async fn fail_refund(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let a = args_or_400!(body);
    run_step(&app, &a, |c, s| payments::fail_refund(c, s, &id)).await
}

async fn dispute(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let a = args_or_400!(body);
    run_step(&app, &a, |c, s| payments::dispute(c, s, &id, &a)).await
}

async fn close_dispute(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let a = args_or_400!(body);
    let Some(won) = a["won"].as_bool() else {
        return error(StatusCode::BAD_REQUEST, "won (boolean) is required");
    };
    run_step(&app, &a, |c, s| payments::close_dispute(c, s, &id, won)).await
}

async fn credit_note(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let a = args_or_400!(body);
    run_step(&app, &a, |c, s| credit_notes::issue(c, s, &id, &a)).await
}

async fn void_credit_note(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let a = args_or_400!(body);
    run_step(&app, &a, |c, s| credit_notes::void(c, s, &id)).await
}

async fn drop_deliveries(State(app): AppState, body: Bytes) -> Response {
    let a = args_or_400!(body);
    match DropRule::parse(&a) {
        Ok(rule) => {
            let mut store = app.lock();
            store.drop_rule = Some(rule);
            Json(json!({"drop": store.drop_rule})).into_response()
        }
        Err(m) => error(StatusCode::BAD_REQUEST, m),
    }
}

async fn stop_dropping(State(app): AppState) -> Response {
    app.lock().drop_rule = None;
    Json(json!({"drop": null})).into_response()
}

/// `{"days"?: n, "seconds"?: n}`: the event clock jumps forward (it never goes back). Nothing
/// else happens: subscriptions renew only through their control calls.
async fn advance_clock(State(app): AppState, body: Bytes) -> Response {
    let a = args_or_400!(body);
    let part = |k: &str| match &a[k] {
        Value::Null => Some(0),
        v => v.as_i64().filter(|n| *n >= 0),
    };
    let (Some(days), Some(seconds)) = (part("days"), part("seconds")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "days and seconds must be non-negative integers",
        );
    };
    let mut store = app.lock();
    let now = store.clock.now();
    store.clock.advance_to(now + days * 86_400 + seconds);
    let now = store.clock.now();
    Json(json!({"clock": now})).into_response()
}

/// `{"url", "enabled_events": [...]}`: an endpoint listed by `GET /v1/webhook_endpoints`
/// (events are still delivered to the emulator's webhook URL only).
async fn add_endpoint(State(app): AppState, body: Bytes) -> Response {
    let a = args_or_400!(body);
    let Some(url) = a["url"].as_str().map(str::to_string) else {
        return error(StatusCode::BAD_REQUEST, "url (string) is required");
    };
    let events: Option<Vec<String>> = a["enabled_events"]
        .as_array()
        .and_then(|e| e.iter().map(|t| t.as_str().map(str::to_string)).collect());
    let Some(enabled_events) = events.filter(|e| !e.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "enabled_events (a non-empty array of strings) is required",
        );
    };
    let mut store = app.lock();
    let id = ids::long("we");
    let created = store.clock.now();
    store.register(&id);
    store.webhook_endpoints.push(WebhookEndpoint {
        id: id.clone(),
        url: url.clone(),
        enabled_events: enabled_events.clone(),
        created,
    });
    Json(json!({"id": id, "url": url, "enabled_events": enabled_events})).into_response()
}

/// `{"active": bool}`: archives a catalog price or brings it back.
/// Archives or restores a price as the Dashboard does, and sends `price.updated` with the
/// price as it is now and the old `active` in `previous_attributes`
/// (https://docs.stripe.com/api/events/types, `price.updated`).
async fn update_price(State(app): AppState, Path(id): Path<String>, body: Bytes) -> Response {
    let a = args_or_400!(body);
    let Some(active) = a["active"].as_bool() else {
        return error(StatusCode::BAD_REQUEST, "active (boolean) is required");
    };
    run_step(&app, &a, |c, s| {
        let Some(p) = s.prices.get_mut(&id) else {
            return Err(super::lifecycle::not_found("price", &id));
        };
        let was = p.active;
        p.active = active;
        let price = c.render(s, |r| r.price(&id));
        let event = c.emit(
            s,
            "price.updated",
            price.clone(),
            Some(&json!({"active": was})),
        );
        Ok((price, vec![event]))
    })
    .await
}

async fn create_customer(State(app): AppState, body: Bytes) -> Response {
    let a = args_or_400!(body);
    run_step(&app, &a, |c, s| direct::create_customer(c, s, &a)).await
}

async fn create_subscription(State(app): AppState, body: Bytes) -> Response {
    let a = args_or_400!(body);
    run_step(&app, &a, |c, s| direct::create_subscription(c, s, &a)).await
}
