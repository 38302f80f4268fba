//! Billing Meters: `POST /v1/billing/meters`, `GET /v1/billing/meters` and
//! `POST /v1/billing/meter_events`, and the control call that reads the recorded events
//! (`GET /_emulator/meter_events?customer=cus_…`). Every rule is in the README's rules table
//! with its source. What Stripe checks only after accepting an event (no meter with the
//! event's name, a customer the payload does not name: its v1.billing.meter.* error reports)
//! is not checked here either, so a test cannot pass on a synchronous refusal Stripe never makes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::control::{args_or_400, error};
use super::error::ApiError;
use super::lists::paginate;
use super::render::Renderer;
use super::store::{new_id, Price, PriceKind, Store};
use super::App;

/// A meter event's `timestamp` may be at most this far in the past (35 calendar days) …
pub const EVENT_MAX_AGE_SECONDS: i64 = 35 * 24 * 3600;
/// … and at most this far in the future (5 minutes).
pub const EVENT_MAX_AHEAD_SECONDS: i64 = 5 * 60;
/// Stripe enforces an identifier's uniqueness "within a rolling period of at least 24 hours";
/// the emulator keeps every identifier it has seen, which is within that promise.
pub const IDENTIFIER_MAX_LENGTH: usize = 100;

/// The meters and the events recorded, in the store.
#[derive(Default)]
pub struct Meters {
    pub meters: Vec<Value>,
    pub events: Vec<Value>,
    pub identifiers: HashMap<String, usize>,
}

fn text<'a>(p: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    p.get(key).and_then(Value::as_str)
}

/// `POST /v1/billing/meters`: an active meter with the default payload keys unless given.
/// (Whether Stripe refuses a second active meter of one event_name is not sourced: accepted.)
pub fn create_meter(store: &mut Store, p: &Map<String, Value>) -> Result<Value, ApiError> {
    let event_name = text(p, "event_name").unwrap_or_default().to_string();
    let now = store.clock.now();
    let customer_key = p
        .get("customer_mapping")
        .and_then(|m| m.get("event_payload_key"))
        .and_then(Value::as_str)
        .unwrap_or("stripe_customer_id");
    let value_key = p
        .get("value_settings")
        .and_then(|m| m.get("event_payload_key"))
        .and_then(Value::as_str)
        .unwrap_or("value");
    let meter = json!({
        "id": new_id("mtr_", 24),
        "object": "billing.meter",
        "created": now,
        "customer_mapping": {"event_payload_key": customer_key, "type": "by_id"},
        "default_aggregation": {
            "formula": p.get("default_aggregation").and_then(|a| a.get("formula")).cloned()
        },
        "display_name": text(p, "display_name"),
        "event_name": event_name,
        "event_time_window": p.get("event_time_window").cloned().unwrap_or(Value::Null),
        "livemode": false,
        "status": "active",
        "status_transitions": {"deactivated_at": null},
        "updated": now,
        "value_settings": {"event_payload_key": value_key},
    });
    store.meters.meters.push(meter.clone());
    Ok(meter)
}

/// `GET /v1/billing/meters`, newest first, optionally by `status`.
pub fn list_meters(store: &Store, p: &Map<String, Value>) -> Result<Value, ApiError> {
    let status = text(p, "status");
    let items: Vec<((i64, u64), Value)> = store
        .meters
        .meters
        .iter()
        .enumerate()
        .filter(|(_, m)| status.is_none_or(|s| m["status"] == s))
        .map(|(i, m)| ((m["created"].as_i64().unwrap_or(0), i as u64), m.clone()))
        .collect();
    let key_of = |id: &str| {
        let i = store.meters.meters.iter().position(|m| m["id"] == id)?;
        Some((
            store.meters.meters[i]["created"].as_i64().unwrap_or(0),
            i as u64,
        ))
    };
    paginate(items, p, "/v1/billing/meters", key_of, "billing.meter")
}

/// `POST /v1/billing/meter_events`: checks what Stripe checks when it answers (the
/// identifier's length and uniqueness, the timestamp's window) and records the event.
pub fn create_meter_event(store: &mut Store, p: &Map<String, Value>) -> Result<Value, ApiError> {
    let now = store.clock.now();
    let event_name = text(p, "event_name").unwrap_or_default();
    if event_name.is_empty() {
        return Err(ApiError::empty_param("event_name"));
    }
    let identifier = match text(p, "identifier") {
        Some(i) if i.chars().count() > IDENTIFIER_MAX_LENGTH => {
            return Err(ApiError::invalid(
                "identifier",
                format!(
                    "Invalid string: {}...; must be at most {IDENTIFIER_MAX_LENGTH} characters",
                    i.chars().take(20).collect::<String>()
                ),
            )
            .code("string_too_long"))
        }
        Some(i) => i.to_string(),
        None => new_id("", 32),
    };
    let timestamp = p.get("timestamp").and_then(Value::as_i64).unwrap_or(now);
    if timestamp < now - EVENT_MAX_AGE_SECONDS || timestamp > now + EVENT_MAX_AHEAD_SECONDS {
        return Err(ApiError::invalid(
            "timestamp",
            "The timestamp must be within the past 35 calendar days or up to 5 minutes in the future.",
        ));
    }
    if store.meters.identifiers.contains_key(&identifier) {
        let mut e = ApiError::invalid(
            "identifier",
            format!("An event already exists with identifier {identifier}."),
        );
        e.should_retry = Some(false);
        return Err(e);
    }
    let event = json!({
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": false,
        "payload": p.get("payload").cloned().unwrap_or_else(|| json!({})),
        "timestamp": timestamp,
    });
    store
        .meters
        .identifiers
        .insert(identifier, store.meters.events.len());
    store.meters.events.push(event.clone());
    Ok(event)
}

/// The control call: `GET /_emulator/meter_events[?customer=cus_…]`, every recorded event
/// (of one customer: its payload's `stripe_customer_id`), oldest first.
async fn recorded(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = app.lock();
    let events: Vec<Value> = store
        .meters
        .events
        .iter()
        .filter(|e| {
            q.get("customer")
                .is_none_or(|c| e["payload"]["stripe_customer_id"] == c.as_str())
        })
        .cloned()
        .collect();
    Json(json!({"data": events})).into_response()
}

/// `GET /v1/prices`: the catalog's prices, newest first, by `product`, `active`, `type`.
pub fn list_prices(r: &Renderer, p: &Map<String, Value>) -> Result<Value, ApiError> {
    let product = text(p, "product");
    let active = p.get("active").and_then(Value::as_bool);
    let kind = text(p, "type");
    let store = r.store;
    let key = |price: &Price| {
        (
            price.created,
            store.sequence.get(&price.id).copied().unwrap_or(0),
        )
    };
    let items: Vec<((i64, u64), Value)> = store
        .prices
        .values()
        .filter(|price| product.is_none_or(|x| price.product == x))
        .filter(|price| active.is_none_or(|a| price.active == a))
        .filter(|price| kind.is_none_or(|k| (k == "recurring") == price.is_recurring()))
        .map(|price| (key(price), r.price(&price.id)))
        .collect();
    paginate(
        items,
        p,
        "/v1/prices",
        |id| store.prices.get(id).map(key),
        "price",
    )
}

/// The control call `POST /_emulator/metered_prices` `{"product_of", "meter", "unit_amount"?}`:
/// a monthly metered price on the product of the price `product_of`, billing the meter `meter`
/// (in the Dashboard: a usage-based price on the plan's product).
async fn metered_price(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    let args = args_or_400!(body);
    let mut store = app.lock();
    let (Some(of), Some(meter)) = (args["product_of"].as_str(), args["meter"].as_str()) else {
        return error(
            axum::http::StatusCode::BAD_REQUEST,
            "product_of and meter are required",
        );
    };
    let Some(product) = store.prices.get(of).map(|p| p.product.clone()) else {
        return error(axum::http::StatusCode::NOT_FOUND, format!("no price {of}"));
    };
    let id = new_id("price_", 14);
    let created = store.clock.now();
    store.prices.insert(
        id.clone(),
        Price {
            id: id.clone(),
            kind: PriceKind::Recurring,
            unit_amount: args["unit_amount"].as_i64().unwrap_or(1),
            currency: "usd".into(),
            product,
            created,
            months: 1,
            active: true,
            meter: Some(meter.to_string()),
        },
    );
    store.register(&id);
    Json(json!({"id": id})).into_response()
}

/// The control call `DELETE /_emulator/idempotency_keys`: Stripe prunes keys "at least 24
/// hours old" (https://docs.stripe.com/api/idempotent_requests), after which a retry with the
/// same key runs again; only the meter event's identifier then stands between it and a
/// second event.
async fn forget_keys(State(app): State<Arc<App>>) -> Response {
    let mut store = app.lock();
    let forgotten = store.idempotency.len();
    store.idempotency.clear();
    Json(json!({"forgotten": forgotten})).into_response()
}

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/_emulator/idempotency_keys",
            axum::routing::delete(forget_keys),
        )
        .route("/_emulator/meter_events", get(recorded))
        .route(
            "/_emulator/metered_prices",
            axum::routing::post(metered_price),
        )
}
