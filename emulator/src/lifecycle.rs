//! What happens after the API calls, driven by the control API. This module holds what the
//! steps share: the rendering context, control errors, and invoices (creation, finalization,
//! payment). The steps are in `completion.rs` (checkouts), `subscriptions.rs` (renewals,
//! collection, cancellation) and `changes.rs` (plan changes, items, trials, pauses).
//!
//! Each step mutates the store and returns the events Stripe would send, each rendered at the
//! moment it is created (in the account's API version), so a later event never shows an
//! earlier state and vice versa. Event `created` has one-second resolution, as Stripe's:
//! events of one step share a second unless the step waits (an invoice is finalized an hour
//! after it was created).

use axum::http::StatusCode;
use serde_json::Value;

use super::payments;
use super::render::{Renderer, Shape, Templates};
use super::store::{ids, Invoice, InvoiceLine, Store, StoredEvent, Subscription};
use super::webhook::create_event;
use super::App;

/// A control call that cannot be applied (unknown id, wrong state).
#[derive(Debug)]
pub struct ControlError {
    pub status: StatusCode,
    pub message: String,
}

pub(super) fn conflict(message: String) -> ControlError {
    ControlError {
        status: StatusCode::CONFLICT,
        message,
    }
}

pub(super) fn not_found(what: &str, id: &str) -> ControlError {
    ControlError {
        status: StatusCode::NOT_FOUND,
        message: format!("No such {what}: '{id}'"),
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> ControlError {
    ControlError {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

/// Templates, the account's API version and the public base URL, to render event payloads.
pub struct Ctx<'a> {
    pub templates: &'a Templates,
    pub api_version: &'a str,
    pub base_url: &'a str,
}

/// The changed object (rendered) and the events, in order.
pub type Step = Result<(Value, Vec<StoredEvent>), ControlError>;

impl<'a> Ctx<'a> {
    pub fn new(app: &'a App) -> Self {
        Self {
            templates: &app.templates,
            api_version: &app.api_version,
            base_url: &app.base_url,
        }
    }
    fn renderer<'s>(&'s self, store: &'s Store) -> Renderer<'s> {
        Renderer {
            templates: self.templates,
            store,
            shape: Shape::of(self.api_version),
        }
    }
    pub(super) fn session(&self, store: &Store, id: &str) -> Value {
        self.renderer(store).session(&store.sessions[id])
    }
    pub(super) fn sub(&self, store: &Store, id: &str) -> Value {
        self.renderer(store).subscription(&store.subscriptions[id])
    }
    pub(super) fn invoice(&self, store: &Store, id: &str) -> Value {
        self.renderer(store).invoice(&store.invoices[id])
    }
    /// Renders with the account's shape.
    pub(super) fn render<T>(&self, store: &Store, f: impl FnOnce(&Renderer) -> T) -> T {
        f(&self.renderer(store))
    }
    pub(super) fn customer(&self, store: &Store, id: &str) -> Value {
        self.renderer(store).customer(&store.customers[id])
    }
    pub(super) fn emit(
        &self,
        store: &mut Store,
        kind: &str,
        object: Value,
        previous: Option<&Value>,
    ) -> StoredEvent {
        create_event(store, self.api_version, kind, object, previous)
    }

    /// An event for the current state of the session, subscription or invoice `id`.
    pub(super) fn emit_now(&self, store: &mut Store, kind: &str, id: &str) -> StoredEvent {
        let object = if store.sessions.contains_key(id) {
            self.session(store, id)
        } else if store.subscriptions.contains_key(id) {
            self.sub(store, id)
        } else {
            self.invoice(store, id)
        };
        self.emit(store, kind, object, None)
    }

    /// `customer.subscription.updated` with the subscription as it is now and `before` as
    /// `previous_attributes`; returns the current object too.
    pub(super) fn emit_subscription_updated(
        &self,
        store: &mut Store,
        id: &str,
        before: &Value,
    ) -> (Value, StoredEvent) {
        let after = self.sub(store, id);
        let event = self.emit(
            store,
            "customer.subscription.updated",
            after.clone(),
            Some(before),
        );
        (after, event)
    }
}

/// `2 × price_pro (at $20.00 / month)`, the shape of Stripe's line descriptions.
pub(super) fn line_description(store: &Store, price: &str, quantity: i64) -> String {
    let p = store.prices.get(price);
    let amount = p.map_or(0, |p| p.unit_amount);
    let per = match p.map(|p| p.months) {
        Some(12) => " / year",
        Some(m) if m > 0 => " / month",
        _ => "",
    };
    format!(
        "{quantity} × {price} (at ${}.{:02}{per})",
        amount / 100,
        amount % 100
    )
}

/// One line per subscription item for the period `start..end`.
pub(super) fn item_lines(
    store: &Store,
    sub: &Subscription,
    start: i64,
    end: i64,
) -> Vec<InvoiceLine> {
    sub.items
        .iter()
        .map(|i| InvoiceLine {
            id: ids::long("il"),
            price: i.price.clone(),
            quantity: i.quantity,
            amount: store.prices.get(&i.price).map_or(0, |p| p.unit_amount) * i.quantity,
            period_start: start,
            period_end: end,
            proration: false,
            description: line_description(store, &i.price, i.quantity),
            subscription_item: Some(i.id.clone()),
            invoice_item: None,
        })
        .collect()
}

/// A new invoice, finalized at once (`open`, numbered) as subscription invoices are when they
/// are created with the subscription or by an update that invoices immediately.
pub(super) fn new_invoice(
    store: &mut Store,
    base_url: &str,
    customer: &str,
    sub: Option<&Subscription>,
    reason: &str,
    lines: Vec<InvoiceLine>,
) -> Invoice {
    let mut inv = draft_invoice(store, customer, sub, reason, lines);
    let now = inv.created;
    finalize(store, base_url, &mut inv, now);
    inv
}

/// A `draft` invoice, the state a renewal invoice is in for about an hour.
pub(super) fn draft_invoice(
    store: &mut Store,
    customer: &str,
    sub: Option<&Subscription>,
    reason: &str,
    lines: Vec<InvoiceLine>,
) -> Invoice {
    let now = store.clock.now();
    Invoice {
        id: ids::long("in"),
        number: None,
        customer: customer.to_string(),
        customer_email: store.customers.get(customer).and_then(|c| c.email.clone()),
        subscription: sub.map(|s| s.id.clone()),
        subscription_metadata: sub.map(|s| s.metadata.clone()),
        billing_reason: reason.to_string(),
        status: "draft".into(),
        subtotal: lines.iter().map(|l| l.amount).sum(),
        lines,
        created: now,
        period_start: now,
        period_end: now,
        discount: 0,
        attempt_count: 0,
        paid_at: None,
        payment_intent: None,
        charge: None,
        post_payment_credit: 0,
        currency: "usd".into(),
        finalized_at: None,
        hosted_invoice_url: None,
        requires_action: false,
    }
}

/// Draft → `open`: a number, `finalized_at`, and a hosted invoice page.
pub(super) fn finalize(store: &mut Store, base_url: &str, inv: &mut Invoice, now: i64) {
    let prefix = store
        .customers
        .get(&inv.customer)
        .map_or("EMU".to_string(), |c| c.invoice_prefix.clone());
    inv.number = Some(store.next_invoice_number(&prefix));
    inv.status = "open".into();
    inv.finalized_at = Some(now);
    inv.hosted_invoice_url = Some(format!("{base_url}/invoice/{}", inv.id));
}

/// The invoice is paid now. A positive amount is charged: by the invoice's PaymentIntent when
/// it was already charged (a payment-mode session's), else by a new PaymentIntent and Charge.
pub(super) fn mark_paid(store: &mut Store, inv: &mut Invoice, now: i64) {
    inv.status = "paid".into();
    inv.requires_action = false;
    inv.attempt_count += i64::from(inv.amount_due() > 0);
    inv.paid_at = Some(now);
    if inv.amount_due() > 0 && inv.charge.is_none() {
        let charged = inv
            .payment_intent
            .as_ref()
            .and_then(|pi| store.payment_intents.get(pi))
            .and_then(|i| i.latest_charge.clone());
        let (pi, ch) = match (inv.payment_intent.clone(), charged) {
            (Some(pi), Some(ch)) => (pi, ch),
            (pi, _) => payments::record_payment(
                store,
                inv.amount_due(),
                &inv.currency,
                Some(&inv.customer),
                pi.as_deref(),
            ),
        };
        payments::link_invoice(store, &pi, &ch, &inv.id);
        inv.payment_intent = Some(pi);
        inv.charge = Some(ch);
    }
}

/// [`mark_paid`] for a stored invoice.
pub(super) fn mark_paid_id(store: &mut Store, id: &str, now: i64) {
    let mut inv = store.invoices.remove(id).expect("the invoice exists");
    mark_paid(store, &mut inv, now);
    store.invoices.insert(id.to_string(), inv);
}
