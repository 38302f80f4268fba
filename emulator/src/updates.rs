//! `POST /v1/subscriptions/{id}`: the public subscription update, as far as a seat change needs
//! it: one item's `quantity` (`items[i][id]`, `items[i][quantity]`) with `proration_behavior`.
//! The parameters' names, types and enums are checked against the version's schema before this
//! runs (`api.rs`); the rest of the update API is refused as unsupported rather than ignored.
//! The change itself is `changes::change_quantity`, shared with nothing else but built on the
//! same proration lines as a price change.

use serde_json::{Map, Value};

use super::changes::{change_quantity, Proration};
use super::error::ApiError;
use super::lifecycle::Ctx;
use super::render::{Renderer, Shape};
use super::store::{Store, StoredEvent};

fn unsupported(param: &str) -> ApiError {
    ApiError::invalid(
        param,
        format!("The stripe-emulator does not support `{param}` on a subscription update; it changes item quantities only."),
    )
}

/// The one `items[i]` of the update: its item id and new quantity.
fn the_item(p: &Map<String, Value>) -> Result<(String, i64), ApiError> {
    let items = p.get("items").and_then(Value::as_array);
    let [item] = items.map(Vec::as_slice).unwrap_or_default() else {
        return Err(unsupported("items"));
    };
    let item = item.as_object().ok_or_else(|| unsupported("items"))?;
    if let Some(other) = item
        .keys()
        .find(|k| !matches!(k.as_str(), "id" | "quantity"))
    {
        return Err(unsupported(&format!("items[0][{other}]")));
    }
    let id = item
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported("items[0]"))?;
    let quantity = item
        .get("quantity")
        .and_then(Value::as_i64)
        .ok_or_else(|| unsupported("items[0]"))?;
    if quantity < 0 {
        return Err(ApiError::invalid(
            "items[0][quantity]",
            "This value must be greater than or equal to 0.",
        )
        .code("parameter_invalid_integer"));
    }
    Ok((id.to_string(), quantity))
}

/// Refusals of a subscription that is over, in the words Stripe answers with.
fn updatable(store: &Store, id: &str) -> Result<(), ApiError> {
    let sub = store
        .subscriptions
        .get(id)
        .ok_or_else(|| ApiError::not_found("subscription", id, "id"))?;
    match sub.status.as_str() {
        "canceled" => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "A canceled subscription can only update its cancellation_details and metadata.",
        )),
        "incomplete_expired" => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "You cannot update a subscription that is `canceled` or `incomplete_expired`.",
        )),
        _ => Ok(()),
    }
}

/// Updates subscription `id` and answers it in the request's shape, with the events to send.
pub fn update_subscription(
    ctx: &Ctx,
    store: &mut Store,
    shape: Shape,
    id: &str,
    p: &Map<String, Value>,
) -> Result<(Value, Vec<StoredEvent>), ApiError> {
    if let Some(other) = p
        .keys()
        .find(|k| !matches!(k.as_str(), "items" | "proration_behavior" | "expand"))
    {
        return Err(unsupported(other));
    }
    updatable(store, id)?;
    let (item, quantity) = the_item(p)?;
    if !store.subscriptions[id].items.iter().any(|i| i.id == item) {
        return Err(ApiError::no_such(
            "subscription item",
            &item,
            Some("items[0][id]"),
        ));
    }
    let proration = Proration::parse(p.get("proration_behavior").unwrap_or(&Value::Null))
        .map_err(|e| ApiError::invalid("proration_behavior", e.message))?;
    let (_, events) = change_quantity(ctx, store, id, &item, quantity, proration)
        .map_err(|e| ApiError::new(e.status, "invalid_request_error", e.message))?;
    let r = Renderer {
        templates: ctx.templates,
        store,
        shape,
    };
    Ok((r.subscription(&store.subscriptions[id]), events))
}
