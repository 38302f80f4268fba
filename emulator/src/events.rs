//! The Events API (`GET /v1/events`, `GET /v1/events/{id}`) and dropped deliveries.
//!
//! Stripe lists "events, going back up to 30 days", each "rendered according to Stripe API
//! version at its creation time" (`stripe@18.0.0` types): the emulator lists the stored
//! payloads of the last 30 days by its own clock, newest first, with `pending_webhooks` as it
//! is now. `delivery_success=false` returns "events which are still pending or have failed
//! all delivery attempts" (spec text); deliveries fail when the receiver answers an error or
//! does not answer, or when `POST /_emulator/webhook/drop` makes them fail as if the endpoint
//! were down. Events created while no webhook URL was set had nothing to deliver: the
//! emulator counts them as delivered (inferred).

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::lists::{created_matches, paginate};
use super::store::{DeliveryStatus, Store, StoredEvent};

/// How far back events can be listed and retrieved.
pub const RETENTION: i64 = 30 * 86_400;

/// Most values `types` takes ("An array of up to 20 strings").
const MAX_TYPES: usize = 20;

/// Whether `kind` matches `pattern`, where `*` stands for any run of characters
/// (`invoice.*`, `*.updated`, `*`).
pub fn type_matches(pattern: &str, kind: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == kind;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !kind.starts_with(first) || kind.len() < first.len() + last.len() || !kind.ends_with(last) {
        return false;
    }
    let mut rest = &kind[first.len()..kind.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// `POST /_emulator/webhook/drop` `{"all"?, "types"?, "fraction"?, "seed"?}`: which
/// deliveries fail. The candidates are every event (`all`, or no `types`) or the events of
/// `types` (with `*` wildcards); each candidate is dropped with probability `fraction`
/// (default 1), drawn from a generator seeded with `seed`, so a run is reproducible.
#[derive(Debug, Clone, Serialize)]
pub struct DropRule {
    pub all: bool,
    pub types: Vec<String>,
    pub fraction: f64,
    pub seed: u64,
    #[serde(skip)]
    state: u64,
}

impl DropRule {
    pub fn parse(args: &Value) -> Result<Self, String> {
        let all = match &args["all"] {
            Value::Null => false,
            Value::Bool(b) => *b,
            _ => return Err("all must be a boolean".into()),
        };
        let types: Vec<String> = match &args["types"] {
            Value::Null => Vec::new(),
            Value::Array(a) => a
                .iter()
                .map(|t| t.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or("types must be an array of strings")?,
            _ => return Err("types must be an array of strings".into()),
        };
        let fraction = match &args["fraction"] {
            Value::Null => None,
            v => Some(
                v.as_f64()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or("fraction must be a number from 0 to 1")?,
            ),
        };
        if all && !types.is_empty() {
            return Err("all and types exclude each other".into());
        }
        if !all && types.is_empty() && fraction.is_none() {
            return Err("say which deliveries to drop: all, types or fraction".into());
        }
        let seed = match &args["seed"] {
            Value::Null => rand::random(),
            v => v.as_u64().ok_or("seed must be a non-negative integer")?,
        };
        Ok(Self {
            all,
            types,
            fraction: fraction.unwrap_or(1.0),
            seed,
            state: seed,
        })
    }

    /// splitmix64: a small, well-mixed generator that is the same on every platform.
    fn draw(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether the delivery of an event of type `kind` is dropped.
    pub fn drops(&mut self, kind: &str) -> bool {
        let candidate =
            self.all || self.types.is_empty() || self.types.iter().any(|t| type_matches(t, kind));
        candidate && (self.fraction >= 1.0 || self.draw() < self.fraction)
    }
}

/// The event as the API shows it now: its payload with the current `pending_webhooks`.
fn render(event: &StoredEvent) -> Value {
    let mut v: Value = serde_json::from_str(&event.payload).expect("stored events are JSON");
    let pending = matches!(
        event.delivery,
        DeliveryStatus::Pending | DeliveryStatus::Failed
    );
    v["pending_webhooks"] = Value::from(u8::from(pending));
    v
}

/// The events that can still be listed and retrieved, with their position in creation order.
fn retained(store: &mut Store) -> impl Iterator<Item = (usize, &StoredEvent)> {
    let since = store.clock.now() - RETENTION;
    store
        .events
        .iter()
        .enumerate()
        .filter(move |(_, e)| e.created >= since)
}

/// `GET /v1/events/{id}`: "Retrieves the details of an event if it was created in the last 30
/// days"; older or unknown ids are `resource_missing`.
pub fn retrieve(store: &mut Store, id: &str) -> Result<Value, ApiError> {
    retained(store)
        .find(|(_, e)| e.id == id)
        .map(|(_, e)| render(e))
        .ok_or_else(|| ApiError::not_found("event", id, "id"))
}

/// `GET /v1/events` with `type` or `types`, `created`, `delivery_success` and pagination.
pub fn list(store: &mut Store, p: &Map<String, Value>) -> Result<Value, ApiError> {
    if p.contains_key("type") && p.contains_key("types") {
        return Err(ApiError::exclusive(&["type", "types"]));
    }
    let patterns: Vec<String> = match (p.get("type"), p.get("types")) {
        (Some(t), _) => vec![t.as_str().unwrap_or_default().to_string()],
        (None, Some(Value::Array(types))) => {
            if types.len() > MAX_TYPES {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    format!("Invalid array: types can have at most {MAX_TYPES} items."),
                )
                .param("types"));
            }
            types
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        }
        _ => Vec::new(),
    };
    let delivered = p.get("delivery_success").and_then(Value::as_bool);
    let created = p.get("created");
    let keep = |e: &StoredEvent| {
        (patterns.is_empty() || patterns.iter().any(|t| type_matches(t, &e.kind)))
            && created_matches(created, e.created)
            && delivered.is_none_or(|want| {
                let ok = matches!(
                    e.delivery,
                    DeliveryStatus::Succeeded | DeliveryStatus::NoEndpoint
                );
                ok == want
            })
    };
    let all: Vec<(usize, &StoredEvent)> = retained(store).collect();
    let items = all
        .iter()
        .filter(|(_, e)| keep(e))
        .map(|(i, e)| ((e.created, *i as u64), render(e)))
        .collect();
    let cursor = |id: &str| {
        all.iter()
            .find(|(_, e)| e.id == id)
            .map(|(i, e)| (e.created, *i as u64))
    };
    paginate(items, p, "/v1/events", cursor, "event")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcards() {
        assert!(type_matches("invoice.*", "invoice.paid"));
        assert!(type_matches("*", "customer.created"));
        assert!(type_matches("*.updated", "customer.subscription.updated"));
        assert!(type_matches("charge.*.created", "charge.dispute.created"));
        assert!(!type_matches("invoice.*", "invoiceitem.created"));
        assert!(!type_matches("invoice.paid", "invoice.paid2"));
        assert!(!type_matches("a*a", "a"));
    }

    #[test]
    fn drop_rules_are_seeded_and_filtered() {
        let mut a = DropRule::parse(&json!({"fraction": 0.5, "seed": 7})).unwrap();
        let mut b = DropRule::parse(&json!({"fraction": 0.5, "seed": 7})).unwrap();
        let xs: Vec<bool> = (0..64).map(|_| a.drops("invoice.paid")).collect();
        let ys: Vec<bool> = (0..64).map(|_| b.drops("invoice.paid")).collect();
        assert_eq!(xs, ys);
        let dropped = xs.iter().filter(|d| **d).count();
        assert!((16..=48).contains(&dropped), "{dropped}");
        let mut only = DropRule::parse(&json!({"types": ["invoice.*"]})).unwrap();
        assert!(only.drops("invoice.paid") && !only.drops("customer.created"));
        assert!(DropRule::parse(&json!({})).is_err());
        assert!(DropRule::parse(&json!({"all": true, "types": ["x"]})).is_err());
        assert!(DropRule::parse(&json!({"fraction": 2})).is_err());
    }
}
