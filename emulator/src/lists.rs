//! List endpoints for a set-up checker and a backfill: `GET /v1/customers`,
//! `GET /v1/subscriptions`, `GET /v1/webhook_endpoints` (the events list is in `events.rs`),
//! and Stripe's pagination (https://docs.stripe.com/api/pagination): newest first, `limit`
//! 1–100 (default 10), `starting_after` / `ending_before` as exclusive cursors, `has_more`.

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::api::list_limit;
use super::error::ApiError;
use super::render::Renderer;
use super::store::Store;

/// Sort key of a listed object (`created`, then creation order); newest first is the largest.
pub type Key = (i64, u64);

/// Stripe's answer when both cursors are given (reported in
/// https://github.com/arlyon/async-stripe/issues/753).
pub const BOTH_CURSORS: &str =
    "Received both starting_after and ending_before parameters. Please pass in only one.";

/// One page of `items`. `cursor` gives the key of the object a cursor names (`None`: there
/// is no such object, a 400 `resource_missing` naming the cursor parameter).
pub fn paginate(
    mut items: Vec<(Key, Value)>,
    p: &Map<String, Value>,
    url: &str,
    cursor: impl Fn(&str) -> Option<Key>,
    resource: &str,
) -> Result<Value, ApiError> {
    let limit = list_limit(p)?;
    let arg = |k: &str| p.get(k).and_then(Value::as_str);
    let position = |param: &str, id: &str| {
        cursor(id).ok_or_else(|| ApiError::no_such(resource, id, Some(param)))
    };
    items.sort_by_key(|(key, _)| std::cmp::Reverse(*key));
    let (data, has_more): (Vec<Value>, bool) = match (arg("starting_after"), arg("ending_before")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                BOTH_CURSORS,
            ))
        }
        (Some(after), None) => {
            let key = position("starting_after", after)?;
            let older: Vec<Value> = items
                .into_iter()
                .filter(|(k, _)| *k < key)
                .map(|(_, v)| v)
                .collect();
            let more = older.len() > limit;
            (older.into_iter().take(limit).collect(), more)
        }
        (None, Some(before)) => {
            // The page just newer than the cursor, still newest first.
            let key = position("ending_before", before)?;
            let newer: Vec<Value> = items
                .into_iter()
                .filter(|(k, _)| *k > key)
                .map(|(_, v)| v)
                .collect();
            let skip = newer.len().saturating_sub(limit);
            (newer.into_iter().skip(skip).collect(), skip > 0)
        }
        (None, None) => {
            let more = items.len() > limit;
            (
                items.into_iter().take(limit).map(|(_, v)| v).collect(),
                more,
            )
        }
    };
    Ok(json!({"object": "list", "data": data, "has_more": has_more, "url": url}))
}

/// The `created` filter: an exact time or a range (`gt`, `gte`, `lt`, `lte`).
pub fn created_matches(filter: Option<&Value>, created: i64) -> bool {
    match filter {
        None => true,
        Some(Value::Object(range)) => range.iter().all(|(op, v)| {
            let Some(t) = v.as_i64() else { return true };
            match op.as_str() {
                "gt" => created > t,
                "gte" => created >= t,
                "lt" => created < t,
                "lte" => created <= t,
                _ => true,
            }
        }),
        Some(v) => v.as_i64().is_none_or(|t| created == t),
    }
}

/// `GET /v1/customers` (`email` is "a case-sensitive filter", `created`). Deleted customers
/// are not listed (inferred).
pub fn customers(r: &Renderer, p: &Map<String, Value>) -> Result<Value, ApiError> {
    let store = r.store;
    let email = p.get("email").and_then(Value::as_str);
    let items = store
        .customers
        .values()
        .filter(|c| !c.deleted)
        .filter(|c| email.is_none_or(|e| c.email.as_deref() == Some(e)))
        .filter(|c| created_matches(p.get("created"), c.created))
        .map(|c| (store.order_key(c.created, &c.id), r.customer(c)))
        .collect();
    let cursor = |id: &str| {
        store
            .customers
            .get(id)
            .map(|c| store.order_key(c.created, &c.id))
    };
    paginate(items, p, "/v1/customers", cursor, "customer")
}

/// `GET /v1/subscriptions`: `customer`, `price` ("subscriptions that contain this recurring
/// price ID"), `created`, and `status` ("If no value is supplied, all subscriptions that have
/// not been canceled are returned"; `ended` is canceled and incomplete_expired; `all`).
pub fn subscriptions(r: &Renderer, p: &Map<String, Value>) -> Result<Value, ApiError> {
    let store = r.store;
    let arg = |k: &str| p.get(k).and_then(Value::as_str);
    let status_ok = |s: &str| match arg("status") {
        None => s != "canceled",
        Some("all") => true,
        Some("ended") => matches!(s, "canceled" | "incomplete_expired"),
        Some(want) => s == want,
    };
    let items = store
        .subscriptions
        .values()
        .filter(|s| status_ok(&s.status))
        .filter(|s| arg("customer").is_none_or(|c| s.customer == c))
        .filter(|s| arg("price").is_none_or(|pr| s.items.iter().any(|i| i.price == pr)))
        .filter(|s| created_matches(p.get("created"), s.created))
        .map(|s| (store.order_key(s.created, &s.id), r.subscription(s)))
        .collect();
    let cursor = |id: &str| {
        store
            .subscriptions
            .get(id)
            .map(|s| store.order_key(s.created, &s.id))
    };
    paginate(items, p, "/v1/subscriptions", cursor, "subscription")
}

/// `GET /v1/webhook_endpoints`: the emulator's own delivery URL (when set, all events, the
/// account's API version) and the endpoints registered with the control API.
pub fn webhook_endpoints(
    r: &Renderer,
    p: &Map<String, Value>,
    api_version: &str,
) -> Result<Value, ApiError> {
    let store: &Store = r.store;
    let (own_id, own_created) = &store.own_endpoint;
    let mut entries: Vec<(Key, String, Value)> = Vec::new();
    if let Some(url) = &store.webhook_url {
        let v = r.webhook_endpoint(
            own_id,
            url,
            &["*".to_string()],
            *own_created,
            Some(api_version),
        );
        entries.push((store.order_key(*own_created, own_id), own_id.clone(), v));
    }
    for e in &store.webhook_endpoints {
        let v = r.webhook_endpoint(&e.id, &e.url, &e.enabled_events, e.created, None);
        entries.push((store.order_key(e.created, &e.id), e.id.clone(), v));
    }
    let cursor = |id: &str| entries.iter().find(|(_, i, _)| i == id).map(|(k, _, _)| *k);
    let items = entries.iter().map(|(k, _, v)| (*k, v.clone())).collect();
    paginate(
        items,
        p,
        "/v1/webhook_endpoints",
        cursor,
        "webhook_endpoint",
    )
}

/// `GET /v1/invoice_payments` (basil and later): the invoice payments of every invoice, newest
/// first, filtered by `invoice`, `payment[payment_intent]` (with `payment[type]`
/// `payment_intent`, which the schema requires) and `status`. Each paid invoice has its one
/// default payment here (`Renderer::invoice_payments`); unpaid ones list none.
pub fn invoice_payments(r: &Renderer, p: &Map<String, Value>) -> Result<Value, ApiError> {
    let store = r.store;
    let arg = |k: &str| p.get(k).and_then(Value::as_str);
    let intent = p
        .get("payment")
        .and_then(|v| v.get("payment_intent"))
        .and_then(Value::as_str);
    let items = store
        .invoices
        .values()
        .filter(|inv| arg("invoice").is_none_or(|i| inv.id == i))
        .flat_map(|inv| {
            let data = r.invoice_payments(inv)["data"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            data.into_iter().map(move |pay| {
                (
                    store.order_key(inv.finalized_at.unwrap_or(inv.created), &inv.id),
                    pay,
                )
            })
        })
        .filter(|(_, pay)| intent.is_none_or(|i| pay["payment"]["payment_intent"] == i))
        .filter(|(_, pay)| arg("status").is_none_or(|s| pay["status"] == s))
        .collect();
    let cursor = |id: &str| {
        let inv = store
            .invoices
            .get(&format!("in_{}", id.strip_prefix("inpay_")?))?;
        Some(store.order_key(inv.finalized_at.unwrap_or(inv.created), &inv.id))
    };
    paginate(items, p, "/v1/invoice_payments", cursor, "invoice_payment")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(p: Value) -> Result<Value, ApiError> {
        let items = (1..=5)
            .map(|i| ((100, i as u64), json!({"id": format!("o{i}")})))
            .collect();
        let cursor = |id: &str| id[1..].parse::<u64>().ok().map(|i| (100, i));
        paginate(items, p.as_object().unwrap(), "/v1/x", cursor, "thing")
    }

    fn ids(v: &Value) -> Vec<&str> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn cursors_page_newest_first() {
        let first = page(json!({"limit": 2})).unwrap();
        assert_eq!(
            (ids(&first), first["has_more"].as_bool()),
            (vec!["o5", "o4"], Some(true))
        );
        let next = page(json!({"limit": 2, "starting_after": "o4"})).unwrap();
        assert_eq!(
            (ids(&next), next["has_more"].as_bool()),
            (vec!["o3", "o2"], Some(true))
        );
        let last = page(json!({"limit": 2, "starting_after": "o2"})).unwrap();
        assert_eq!(
            (ids(&last), last["has_more"].as_bool()),
            (vec!["o1"], Some(false))
        );
        let back = page(json!({"limit": 2, "ending_before": "o2"})).unwrap();
        assert_eq!(
            (ids(&back), back["has_more"].as_bool()),
            (vec!["o4", "o3"], Some(true))
        );
        let top = page(json!({"limit": 2, "ending_before": "o4"})).unwrap();
        assert_eq!(
            (ids(&top), top["has_more"].as_bool()),
            (vec!["o5"], Some(false))
        );
        let both = page(json!({"starting_after": "o1", "ending_before": "o2"})).unwrap_err();
        assert_eq!(
            (both.status.as_u16(), both.message.as_str()),
            (400, BOTH_CURSORS)
        );
        let unknown = page(json!({"starting_after": "zz"})).unwrap_err();
        assert_eq!(unknown.param.as_deref(), Some("starting_after"));
    }

    #[test]
    fn created_ranges() {
        assert!(created_matches(Some(&json!({"gte": 10, "lt": 20})), 10));
        assert!(!created_matches(Some(&json!({"gte": 10, "lt": 20})), 20));
        assert!(created_matches(Some(&json!(5)), 5) && !created_matches(Some(&json!(5)), 6));
        assert!(created_matches(None, 1));
    }
}
