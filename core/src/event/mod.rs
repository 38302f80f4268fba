//! Stripe event normalisation: turns an event from any supported API shape (2023-08-16, and
//! 2025-03-31 "basil" and later) into one flat, typed [`Normalized`] value that the SQL effects
//! read as JSON. This is the boundary between Rust and SQL: the output types below are the
//! whole contract, and golden tests (`core/tests/golden.rs`) pin it for every fixture event.
//!
//! Shape differences handled here, so the SQL never has to know them:
//! - periods: `subscription.current_period_*` before basil, `items.data[].current_period_*` after;
//! - invoice → subscription: `invoice.subscription` before, `invoice.parent.subscription_details.subscription`
//!   after (and its metadata: `invoice.subscription_details.metadata` vs `parent.subscription_details.metadata`);
//! - invoice line price: `lines.data[].price.id` (or `plan.id`) before, `lines.data[].pricing.price_details.price` after;
//! - line proration flag: `lines.data[].proration` before, `parent.subscription_item_details.proration` after.
//!
//! - a charge's invoice: `charge.invoice` before basil; from basil only an `invoice_payment`
//!   (its own event, or retrieved) says which invoice a PaymentIntent paid;
//! - a credit note's refunds: `refund` (an id) before basil, `refunds[]` with amounts after.
//!
//! Expandable fields may arrive as an id string or as an expanded object; both are accepted.
//! What the values mean (which line grants tokens, which status wins) is decided in SQL, not here.
mod input;
mod money;

use input::{metadata, Envelope, Kind, Lenient, List};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Why a verified body is not a usable Stripe event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the webhook payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("the payload is not a Stripe event: {0}")]
    NotAnEvent(&'static str),
}

/// A Stripe event in the one shape the SQL effects read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalized {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Stripe's creation time, Unix seconds.
    pub created: i64,
    pub livemode: bool,
    pub api_version: Option<String>,
    /// `data.object.object`, e.g. `invoice`.
    pub object_type: Option<String>,
    /// `data.object.id`.
    pub object_id: Option<String>,
    /// The Stripe customer the object belongs to (for a customer object, its own id).
    pub customer: Option<String>,
    pub data: Data,
}

/// `data.object`, by object type; `Other` (an empty object) for types without effects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Data {
    CheckoutSession(CheckoutSession),
    Subscription(Subscription),
    Invoice(Invoice),
    Customer(Customer),
    Charge(Charge),
    Refund(Refund),
    Dispute(Dispute),
    CreditNote(CreditNote),
    InvoicePayment(InvoicePayment),
    Other {},
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub id: Option<String>,
    pub mode: Option<String>,
    pub status: Option<String>,
    pub payment_status: Option<String>,
    pub client_reference_id: Option<String>,
    pub subscription: Option<String>,
    pub invoice: Option<String>,
    pub payment_intent: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionItem {
    pub price_id: Option<String>,
    pub quantity: Option<i64>,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseCollection {
    pub behavior: Option<String>,
    pub resumes_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: Option<String>,
    pub status: Option<String>,
    /// Every item, in Stripe's order.
    pub items: Vec<SubscriptionItem>,
    /// The subscription's period (before basil) or its first item's (basil and later).
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub canceled_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub trial_start: Option<i64>,
    pub trial_end: Option<i64>,
    pub pause_collection: Option<PauseCollection>,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub price_id: Option<String>,
    pub amount: Option<i64>,
    pub quantity: Option<i64>,
    pub proration: bool,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: Option<String>,
    pub status: Option<String>,
    pub billing_reason: Option<String>,
    pub amount_paid: Option<i64>,
    pub amount_due: Option<i64>,
    pub total: Option<i64>,
    pub currency: Option<String>,
    pub hosted_invoice_url: Option<String>,
    pub subscription: Option<String>,
    pub subscription_metadata: Map<String, Value>,
    /// Before basil only; from basil on an invoice's payments are separate objects.
    pub payment_intent: Option<String>,
    pub charge: Option<String>,
    /// From basil on, when the invoice was retrieved with `expand[]=payments`: what paid it.
    pub payments: Vec<PaymentRef>,
    pub lines: Vec<InvoiceLine>,
}

/// A payment of an invoice (`payments.data[].payment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRef {
    pub payment_intent: Option<String>,
    pub charge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: Option<String>,
    pub deleted: bool,
    pub email: Option<String>,
    pub metadata: Map<String, Value>,
}

/// A charge (`charge.*` events). `invoice` exists before basil only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub id: Option<String>,
    pub payment_intent: Option<String>,
    pub invoice: Option<String>,
    pub amount: Option<i64>,
    /// Everything refunded so far (it only grows while refunds succeed).
    pub amount_refunded: Option<i64>,
    pub currency: Option<String>,
}

/// A refund (`refund.*` and `charge.refund.updated` events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub id: Option<String>,
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub status: Option<String>,
}

/// A dispute (`charge.dispute.*` events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispute {
    pub id: Option<String>,
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub status: Option<String>,
}

/// A refund a credit note made, with how much of it the credit note accounts for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditNoteRefund {
    pub refund: Option<String>,
    /// From basil on; before it only the refund's id is known.
    pub amount_refunded: Option<i64>,
}

/// A credit note (`credit_note.*` events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditNote {
    pub id: Option<String>,
    pub invoice: Option<String>,
    pub status: Option<String>,
    /// `pre_payment` (lowers what is due) or `post_payment` (gives back what was paid).
    #[serde(rename = "type")]
    pub note_type: Option<String>,
    pub total: Option<i64>,
    pub out_of_band_amount: Option<i64>,
    pub currency: Option<String>,
    /// `refund` before basil, `refunds[]` from basil.
    pub refunds: Vec<CreditNoteRefund>,
}

/// An invoice payment (basil and later): which PaymentIntent or charge paid which invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoicePayment {
    pub id: Option<String>,
    pub invoice: Option<String>,
    pub status: Option<String>,
    pub amount_paid: Option<i64>,
    pub payment_intent: Option<String>,
    pub charge: Option<String>,
}

/// Whether `id` looks like a Stripe event id: `evt_` and letters, digits or `_`.
fn is_event_id(id: &str) -> bool {
    id.len() <= 255
        && id.strip_prefix("evt_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// Parses a raw event body and returns its normalised form (see the module docs).
pub fn normalize(payload: &str) -> Result<Normalized, EventError> {
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
        .owned()
        .filter(|id| is_event_id(id))
        .ok_or(EventError::NotAnEvent("it has no valid evt_ id"))?;
    let event_type = envelope
        .event_type
        .owned()
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
        id: Lenient(None),
    });
    let unreadable = |_| EventError::NotAnEvent("its data.object cannot be read");
    let raw = object.get();
    let (customer, data) = match kind.object.0.as_deref() {
        Some("checkout.session") => {
            checkout_session(serde_json::from_str(raw).map_err(unreadable)?)
        }
        Some("subscription") => subscription(serde_json::from_str(raw).map_err(unreadable)?),
        Some("invoice") => invoice(serde_json::from_str(raw).map_err(unreadable)?),
        Some("customer") => customer(serde_json::from_str(raw).map_err(unreadable)?),
        Some("charge") => money::charge(serde_json::from_str(raw).map_err(unreadable)?),
        Some("refund") => money::refund(serde_json::from_str(raw).map_err(unreadable)?),
        Some("dispute") => money::dispute(serde_json::from_str(raw).map_err(unreadable)?),
        Some("credit_note") => money::credit_note(serde_json::from_str(raw).map_err(unreadable)?),
        Some("invoice_payment") => {
            money::invoice_payment(serde_json::from_str(raw).map_err(unreadable)?)
        }
        _ => (None, Data::Other {}),
    };
    Ok(Normalized {
        id,
        event_type,
        created,
        livemode: envelope.livemode.0.unwrap_or(false),
        api_version: envelope.api_version.owned(),
        object_type: kind.object.owned(),
        object_id: kind.id.owned(),
        customer,
        data,
    })
}

/// [`normalize`] as the JSON the SQL reads.
pub fn normalize_to_json(payload: &str) -> Result<Value, EventError> {
    let normalized = normalize(payload)?;
    // The output types hold only strings, numbers, booleans and JSON maps: this cannot fail.
    Ok(serde_json::to_value(normalized).unwrap_or(Value::Null))
}

fn checkout_session(s: input::Session) -> (Option<String>, Data) {
    let data = CheckoutSession {
        id: s.id.owned(),
        mode: s.mode.owned(),
        status: s.status.owned(),
        payment_status: s.payment_status.owned(),
        client_reference_id: s.client_reference_id.owned(),
        subscription: s.subscription.0,
        invoice: s.invoice.0,
        payment_intent: s.payment_intent.0,
        amount_total: s.amount_total.0,
        currency: s.currency.owned(),
        metadata: metadata(s.metadata),
    };
    (s.customer.0, Data::CheckoutSession(data))
}

fn subscription(s: input::Subscription) -> (Option<String>, Data) {
    let items: Vec<SubscriptionItem> = List::items(s.items)
        .into_iter()
        .map(|i: input::Item| SubscriptionItem {
            price_id: i.price.0.or(i.plan.0),
            quantity: i.quantity.0,
            current_period_start: i.current_period_start.0,
            current_period_end: i.current_period_end.0,
        })
        .collect();
    // Very old payloads name the price only on the subscription (`plan`, `quantity`).
    let items = if items.is_empty() && s.plan.0.is_some() {
        vec![SubscriptionItem {
            price_id: s.plan.0,
            quantity: s.quantity.0,
            current_period_start: None,
            current_period_end: None,
        }]
    } else {
        items
    };
    let first = items.first();
    let data = Subscription {
        id: s.id.owned(),
        status: s.status.owned(),
        current_period_start: s
            .current_period_start
            .0
            .or(first.and_then(|i| i.current_period_start)),
        current_period_end: s
            .current_period_end
            .0
            .or(first.and_then(|i| i.current_period_end)),
        items,
        cancel_at_period_end: s.cancel_at_period_end.0.unwrap_or(false),
        cancel_at: s.cancel_at.0,
        canceled_at: s.canceled_at.0,
        ended_at: s.ended_at.0,
        trial_start: s.trial_start.0,
        trial_end: s.trial_end.0,
        pause_collection: s.pause_collection.0.map(|p| PauseCollection {
            behavior: p.behavior.owned(),
            resumes_at: p.resumes_at.0,
        }),
        metadata: metadata(s.metadata),
    };
    (s.customer.0, Data::Subscription(data))
}

fn invoice(inv: input::Invoice) -> (Option<String>, Data) {
    let from_parent = inv
        .parent
        .0
        .and_then(|p| p.subscription_details.0)
        .unwrap_or_default();
    let legacy = inv.subscription_details.0.unwrap_or_default();
    let lines = List::items(inv.lines)
        .into_iter()
        .map(invoice_line)
        .collect();
    let data = Invoice {
        id: inv.id.owned(),
        status: inv.status.owned(),
        billing_reason: inv.billing_reason.owned(),
        amount_paid: inv.amount_paid.0,
        amount_due: inv.amount_due.0,
        total: inv.total.0,
        currency: inv.currency.owned(),
        hosted_invoice_url: inv.hosted_invoice_url.owned(),
        subscription: from_parent.subscription.0.or(inv.subscription.0),
        subscription_metadata: from_parent
            .metadata
            .0
            .or(legacy.metadata.0)
            .unwrap_or_default(),
        payment_intent: inv.payment_intent.0,
        charge: inv.charge.0,
        payments: List::items(inv.payments)
            .into_iter()
            .filter_map(|p: input::InvoicePaymentIn| p.payment.0)
            .map(|p| PaymentRef {
                payment_intent: p.payment_intent.0,
                charge: p.charge.0,
            })
            .collect(),
        lines,
    };
    (inv.customer.0, Data::Invoice(data))
}

fn invoice_line(line: input::Line) -> InvoiceLine {
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
    InvoiceLine {
        price_id: price,
        amount: line.amount.0,
        quantity: line.quantity.0,
        proration,
        period_start: period.start.0,
        period_end: period.end.0,
    }
}

fn customer(c: input::Customer) -> (Option<String>, Data) {
    let id = c.id.owned();
    let data = Customer {
        id: id.clone(),
        deleted: c.deleted.0.unwrap_or(false),
        email: c.email.owned(),
        metadata: metadata(c.metadata),
    };
    (id, Data::Customer(data))
}

#[cfg(test)]
mod tests;

/// Every Stripe event type the product applies (others are stored and acknowledged with no
/// effect): the list a webhook endpoint should enable, and the types the worker's catch-up
/// reads from the events API. The SQL dispatcher (`billing._apply`) decides what each does.
pub const APPLIED_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "credit_note.created",
    "credit_note.updated",
    "credit_note.voided",
    "invoice_payment.paid",
];
