//! Stripe event normalisation: turns an event from either API shape (before and after
//! 2025-03-31 "basil") into one flat JSON object the SQL effects read.
//!
//! Shape differences handled here, so the SQL never has to know them:
//! - periods: `subscription.current_period_*` before basil, `items.data[].current_period_*` after;
//! - invoice → subscription: `invoice.subscription` before, `invoice.parent.subscription_details.subscription` after
//!   (and its metadata: `invoice.subscription_details.metadata` vs `parent.subscription_details.metadata`);
//! - invoice line price: `lines.data[].price.id` (or `plan.id`) before, `lines.data[].pricing.price_details.price` after;
//! - line proration flag: `lines.data[].proration` before, `parent.subscription_item_details.proration` after.
//!
//! Expandable fields may arrive as an id string or as an expanded object; both are accepted.
//! Unknown fields are ignored.
use serde_json::{json, Map, Value};

/// Why a verified body is not a usable Stripe event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the webhook payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("the payload is not a Stripe event: {0}")]
    NotAnEvent(&'static str),
}

/// Parses a raw event body and returns its normalised form (see the module docs).
pub fn normalize(payload: &str) -> Result<Value, EventError> {
    let event: Value =
        serde_json::from_str(payload).map_err(|e| EventError::NotJson(e.to_string()))?;
    normalize_value(&event)
}

/// Normalises an already parsed event.
pub fn normalize_value(event: &Value) -> Result<Value, EventError> {
    let root = event
        .as_object()
        .ok_or(EventError::NotAnEvent("it is not a JSON object"))?;
    if root.get("object").and_then(Value::as_str) != Some("event") {
        return Err(EventError::NotAnEvent("its \"object\" is not \"event\""));
    }
    let id = str_field(event, "id")
        .filter(|id| {
            id.starts_with("evt_")
                && id.len() <= 255
                && id[4..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .ok_or(EventError::NotAnEvent("it has no valid evt_ id"))?;
    let event_type = str_field(event, "type")
        .filter(|t| !t.is_empty() && t.len() <= 255)
        .ok_or(EventError::NotAnEvent("it has no type"))?;
    let created = event
        .get("created")
        .and_then(Value::as_i64)
        .ok_or(EventError::NotAnEvent("it has no integer created time"))?;
    let object = event
        .pointer("/data/object")
        .filter(|o| o.is_object())
        .ok_or(EventError::NotAnEvent("it has no data.object"))?;
    let normalized = match object.get("object").and_then(Value::as_str) {
        Some("checkout.session") => checkout_session(object),
        Some("subscription") => subscription(object),
        Some("invoice") => invoice(object),
        _ => json!({}),
    };
    let mut out = Map::new();
    out.insert("id".into(), id.into());
    out.insert("type".into(), event_type.into());
    out.insert("created".into(), created.into());
    out.insert(
        "livemode".into(),
        event
            .get("livemode")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .into(),
    );
    out.insert(
        "api_version".into(),
        event.get("api_version").cloned().unwrap_or(Value::Null),
    );
    out.insert(
        "object_type".into(),
        object.get("object").cloned().unwrap_or(Value::Null),
    );
    out.insert(
        "customer".into(),
        expandable_id(object.get("customer")).into(),
    );
    out.insert("data".into(), normalized);
    Ok(Value::Object(out))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// An expandable reference: an id string, or an expanded object with an `id`.
fn expandable_id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn metadata(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => json!({}),
    }
}

fn checkout_session(s: &Value) -> Value {
    json!({
        "id": s.get("id"),
        "mode": s.get("mode"),
        "status": s.get("status"),
        "payment_status": s.get("payment_status"),
        "client_reference_id": s.get("client_reference_id"),
        "subscription": expandable_id(s.get("subscription")),
        "invoice": expandable_id(s.get("invoice")),
        "amount_total": s.get("amount_total"),
        "currency": s.get("currency"),
        "metadata": metadata(s.get("metadata")),
    })
}

fn subscription(s: &Value) -> Value {
    let first_item = s.pointer("/items/data/0");
    let item_field = |key: &str| first_item.and_then(|i| i.get(key)).cloned();
    // Before basil the period is on the subscription; from basil on each item.
    let period = |key: &str| {
        s.get(key)
            .filter(|v| v.is_i64())
            .cloned()
            .or_else(|| item_field(key))
            .unwrap_or(Value::Null)
    };
    let price = first_item
        .and_then(|i| expandable_id(i.get("price")))
        .or_else(|| expandable_id(s.get("plan")));
    json!({
        "id": s.get("id"),
        "status": s.get("status"),
        "price_id": price,
        "quantity": item_field("quantity").or_else(|| s.get("quantity").cloned()),
        "current_period_start": period("current_period_start"),
        "current_period_end": period("current_period_end"),
        "cancel_at_period_end": s.get("cancel_at_period_end").and_then(Value::as_bool).unwrap_or(false),
        "cancel_at": s.get("cancel_at"),
        "canceled_at": s.get("canceled_at"),
        "ended_at": s.get("ended_at"),
        "metadata": metadata(s.get("metadata")),
    })
}

fn invoice(inv: &Value) -> Value {
    let parent_details = inv.pointer("/parent/subscription_details");
    let subscription_id = parent_details
        .and_then(|d| expandable_id(d.get("subscription")))
        .or_else(|| expandable_id(inv.get("subscription")));
    let sub_metadata = parent_details
        .and_then(|d| d.get("metadata"))
        .or_else(|| inv.pointer("/subscription_details/metadata"));
    let lines: Vec<Value> = inv
        .pointer("/lines/data")
        .and_then(Value::as_array)
        .map(|lines| lines.iter().map(invoice_line).collect())
        .unwrap_or_default();
    json!({
        "id": inv.get("id"),
        "status": inv.get("status"),
        "billing_reason": inv.get("billing_reason"),
        "amount_paid": inv.get("amount_paid"),
        "currency": inv.get("currency"),
        "subscription": subscription_id,
        "subscription_metadata": metadata(sub_metadata),
        "lines": lines,
    })
}

fn invoice_line(line: &Value) -> Value {
    let price = line
        .pointer("/pricing/price_details/price")
        .and_then(|p| expandable_id(Some(p)))
        .or_else(|| expandable_id(line.get("price")))
        .or_else(|| expandable_id(line.get("plan")));
    let proration = line
        .pointer("/parent/subscription_item_details/proration")
        .and_then(Value::as_bool)
        .or_else(|| line.get("proration").and_then(Value::as_bool))
        .unwrap_or(false);
    json!({
        "price_id": price,
        "amount": line.get("amount"),
        "quantity": line.get("quantity"),
        "proration": proration,
        "period_start": line.pointer("/period/start"),
        "period_end": line.pointer("/period/end"),
    })
}

#[cfg(test)]
mod tests;
