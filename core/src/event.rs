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
//! Parsing is typed: only the fields read here are materialised and everything else is
//! skipped without allocating, which keeps webhook ingestion cheap (it runs on every event).
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// Why a verified body is not a usable Stripe event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the webhook payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("the payload is not a Stripe event: {0}")]
    NotAnEvent(&'static str),
}

/// An expandable reference: an id string, or an expanded object of which only `id` is kept.
#[derive(Debug, Default)]
struct Expandable(Option<String>);

impl<'de> Deserialize<'de> for Expandable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Expandable;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an id or an object with an id")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Expandable, E> {
                Ok(Expandable((!s.is_empty()).then(|| s.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Expandable, E> {
                Ok(Expandable(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expandable, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "id" {
                        id = map.next_value::<Option<String>>()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Expandable(id))
            }
            // Anything else (numbers, arrays) is not a reference.
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Expandable, E> {
                Ok(Expandable(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Expandable, E> {
                Ok(Expandable(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Expandable, E> {
                Ok(Expandable(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Keeps a value only when it has the expected JSON type, so that a surprising field never
/// makes a whole event unreadable.
#[derive(Debug, Default)]
struct Lenient<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        Ok(Lenient(serde_json::from_str(raw.get()).ok()))
    }
}

type Text<'a> = Lenient<Cow<'a, str>>;

fn text(t: &Text) -> Value {
    t.0.as_deref()
        .map_or(Value::Null, |s| Value::String(s.to_owned()))
}

fn int(t: &Lenient<i64>) -> Value {
    t.0.map_or(Value::Null, Value::from)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    object: Text<'a>,
    #[serde(borrow, default)]
    id: Text<'a>,
    #[serde(rename = "type", borrow, default)]
    event_type: Text<'a>,
    #[serde(default)]
    created: Lenient<i64>,
    #[serde(default)]
    livemode: Lenient<bool>,
    #[serde(borrow, default)]
    api_version: Text<'a>,
    #[serde(borrow, default)]
    data: Option<Data<'a>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    object: Option<&'a RawValue>,
}

/// Just enough of `data.object` to pick its type.
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(borrow, default)]
    object: Text<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Session<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    mode: Text<'a>,
    #[serde(borrow)]
    status: Text<'a>,
    #[serde(borrow)]
    payment_status: Text<'a>,
    #[serde(borrow)]
    client_reference_id: Text<'a>,
    customer: Expandable,
    subscription: Expandable,
    invoice: Expandable,
    amount_total: Lenient<i64>,
    #[serde(borrow)]
    currency: Text<'a>,
    metadata: Lenient<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct List<T> {
    data: Lenient<Vec<T>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Item {
    price: Expandable,
    quantity: Lenient<i64>,
    current_period_start: Lenient<i64>,
    current_period_end: Lenient<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Subscription<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    status: Text<'a>,
    customer: Expandable,
    plan: Expandable,
    quantity: Lenient<i64>,
    items: Lenient<List<Item>>,
    current_period_start: Lenient<i64>,
    current_period_end: Lenient<i64>,
    cancel_at_period_end: Lenient<bool>,
    cancel_at: Lenient<i64>,
    canceled_at: Lenient<i64>,
    ended_at: Lenient<i64>,
    metadata: Lenient<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubscriptionDetails {
    subscription: Expandable,
    metadata: Lenient<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InvoiceParent {
    subscription_details: Lenient<SubscriptionDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Invoice<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    status: Text<'a>,
    #[serde(borrow)]
    billing_reason: Text<'a>,
    amount_paid: Lenient<i64>,
    #[serde(borrow)]
    currency: Text<'a>,
    customer: Expandable,
    subscription: Expandable,
    subscription_details: Lenient<SubscriptionDetails>,
    parent: Lenient<InvoiceParent>,
    lines: Lenient<List<Line>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PriceDetails {
    price: Expandable,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Pricing {
    price_details: Lenient<PriceDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ItemDetails {
    proration: Lenient<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LineParent {
    subscription_item_details: Lenient<ItemDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LinePeriod {
    start: Lenient<i64>,
    end: Lenient<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Line {
    amount: Lenient<i64>,
    quantity: Lenient<i64>,
    proration: Lenient<bool>,
    price: Expandable,
    plan: Expandable,
    pricing: Lenient<Pricing>,
    parent: Lenient<LineParent>,
    period: Lenient<LinePeriod>,
}

/// Parses a raw event body and returns its normalised form (see the module docs).
pub fn normalize(payload: &str) -> Result<Value, EventError> {
    let envelope: Envelope = serde_json::from_str(payload).map_err(|e| {
        if e.is_data() {
            EventError::NotAnEvent("it is not a JSON object")
        } else {
            EventError::NotJson(e.to_string())
        }
    })?;
    // Serde would also read a JSON array into the envelope, field by position.
    if !payload.trim_start().starts_with('{') {
        return Err(EventError::NotAnEvent("it is not a JSON object"));
    }
    if envelope.object.0.as_deref() != Some("event") {
        return Err(EventError::NotAnEvent("its \"object\" is not \"event\""));
    }
    let id = envelope
        .id
        .0
        .filter(|id| {
            id.len() <= 255
                && id.strip_prefix("evt_").is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
        })
        .ok_or(EventError::NotAnEvent("it has no valid evt_ id"))?;
    let event_type = envelope
        .event_type
        .0
        .filter(|t| !t.is_empty() && t.len() <= 255)
        .ok_or(EventError::NotAnEvent("it has no type"))?;
    let created = envelope
        .created
        .0
        .ok_or(EventError::NotAnEvent("it has no integer created time"))?;
    let object = envelope
        .data
        .and_then(|d| d.object)
        .filter(|o| o.get().trim_start().starts_with('{'))
        .ok_or(EventError::NotAnEvent("it has no data.object"))?;
    let kind: Kind = serde_json::from_str(object.get()).unwrap_or(Kind {
        object: Lenient(None),
    });
    let unreadable = |_| EventError::NotAnEvent("its data.object cannot be read");
    let (customer, data) = match kind.object.0.as_deref() {
        Some("checkout.session") => {
            checkout_session(serde_json::from_str(object.get()).map_err(unreadable)?)
        }
        Some("subscription") => {
            subscription(serde_json::from_str(object.get()).map_err(unreadable)?)
        }
        Some("invoice") => invoice(serde_json::from_str(object.get()).map_err(unreadable)?),
        _ => (None, json!({})),
    };
    Ok(json!({
        "id": id,
        "type": event_type,
        "created": created,
        "livemode": envelope.livemode.0.unwrap_or(false),
        "api_version": text(&envelope.api_version),
        "object_type": text(&kind.object),
        "customer": customer,
        "data": data,
    }))
}

fn metadata(m: Lenient<Map<String, Value>>) -> Value {
    Value::Object(m.0.unwrap_or_default())
}

fn checkout_session(s: Session) -> (Option<String>, Value) {
    let data = json!({
        "id": text(&s.id),
        "mode": text(&s.mode),
        "status": text(&s.status),
        "payment_status": text(&s.payment_status),
        "client_reference_id": text(&s.client_reference_id),
        "subscription": s.subscription.0,
        "invoice": s.invoice.0,
        "amount_total": int(&s.amount_total),
        "currency": text(&s.currency),
        "metadata": metadata(s.metadata),
    });
    (s.customer.0, data)
}

fn subscription(s: Subscription) -> (Option<String>, Value) {
    let items = s.items.0.and_then(|l| l.data.0).unwrap_or_default();
    let first = items.into_iter().next().unwrap_or_default();
    // Before basil the period is on the subscription; from basil on each item.
    let start = s.current_period_start.0.or(first.current_period_start.0);
    let end = s.current_period_end.0.or(first.current_period_end.0);
    let data = json!({
        "id": text(&s.id),
        "status": text(&s.status),
        "price_id": first.price.0.or(s.plan.0),
        "quantity": first.quantity.0.or(s.quantity.0),
        "current_period_start": start,
        "current_period_end": end,
        "cancel_at_period_end": s.cancel_at_period_end.0.unwrap_or(false),
        "cancel_at": int(&s.cancel_at),
        "canceled_at": int(&s.canceled_at),
        "ended_at": int(&s.ended_at),
        "metadata": metadata(s.metadata),
    });
    (s.customer.0, data)
}

fn invoice(inv: Invoice) -> (Option<String>, Value) {
    let from_parent = inv
        .parent
        .0
        .and_then(|p| p.subscription_details.0)
        .unwrap_or_default();
    let legacy = inv.subscription_details.0.unwrap_or_default();
    let subscription = from_parent.subscription.0.or(inv.subscription.0);
    let sub_metadata = from_parent
        .metadata
        .0
        .or(legacy.metadata.0)
        .unwrap_or_default();
    let lines: Vec<Value> = inv
        .lines
        .0
        .and_then(|l| l.data.0)
        .unwrap_or_default()
        .into_iter()
        .map(invoice_line)
        .collect();
    let priced = |l: &&Value| l["price_id"].is_string();
    let amount = |l: &Value| l["amount"].as_i64().unwrap_or(0);
    // The line the subscription period is billed on: not a proration, latest period end.
    let main_line = lines
        .iter()
        .filter(priced)
        .filter(|l| l["proration"] == false)
        .max_by_key(|l| l["period_end"].as_i64().unwrap_or(i64::MIN))
        .cloned();
    // After a plan change: the plan charged for (largest positive line) and the one credited.
    let upgrade_line = lines
        .iter()
        .filter(priced)
        .filter(|l| amount(l) > 0)
        .max_by_key(|l| amount(l))
        .cloned();
    let replaced_price = lines
        .iter()
        .filter(priced)
        .find(|l| amount(l) < 0)
        .map(|l| l["price_id"].clone());
    let data = json!({
        "main_line": main_line,
        "upgrade_line": upgrade_line,
        "replaced_price_id": replaced_price,
        "id": text(&inv.id),
        "status": text(&inv.status),
        "billing_reason": text(&inv.billing_reason),
        "amount_paid": int(&inv.amount_paid),
        "currency": text(&inv.currency),
        "subscription": subscription,
        "subscription_metadata": Value::Object(sub_metadata),
        "lines": lines,
    });
    (inv.customer.0, data)
}

fn invoice_line(line: Line) -> Value {
    let price = line
        .pricing
        .0
        .and_then(|p| p.price_details.0)
        .and_then(|d| d.price.0)
        .or(line.price.0)
        .or(line.plan.0);
    let proration = line
        .parent
        .0
        .and_then(|p| p.subscription_item_details.0)
        .and_then(|d| d.proration.0)
        .or(line.proration.0)
        .unwrap_or(false);
    let period = line.period.0.unwrap_or_default();
    json!({
        "price_id": price,
        "amount": int(&line.amount),
        "quantity": int(&line.quantity),
        "proration": proration,
        "period_start": int(&period.start),
        "period_end": int(&period.end),
    })
}

#[cfg(test)]
mod tests;
