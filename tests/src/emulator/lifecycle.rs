//! What happens after the API calls, driven by the control API: a customer completing (and
//! paying, now or asynchronously) a checkout. Subscription steps are in `subscriptions.rs`.
//! Each step mutates the store and returns the events Stripe would send, each rendered at the
//! moment it is created (in the account's API version), so a later event never shows an
//! earlier state and vice versa.

use axum::http::StatusCode;
use serde_json::Value;

use super::render::{Renderer, Shape, Templates};
use super::resources::insert_customer;
use super::store::{
    add_months, ids, Invoice, InvoiceLine, PriceKind, Store, StoredEvent, SubItem, Subscription,
};
use super::webhook::create_event;

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

/// Templates and API version used to render event payloads.
pub struct Ctx<'a> {
    pub templates: &'a Templates,
    pub api_version: &'a str,
}

/// The changed object (rendered) and the events, in order.
pub type Step = Result<(Value, Vec<StoredEvent>), ControlError>;

impl Ctx<'_> {
    fn renderer<'s>(&'s self, store: &'s Store) -> Renderer<'s> {
        Renderer {
            templates: self.templates,
            store,
            shape: Shape::of(self.api_version),
        }
    }
    fn session(&self, store: &Store, id: &str) -> Value {
        self.renderer(store).session(&store.sessions[id])
    }
    pub(super) fn sub(&self, store: &Store, id: &str) -> Value {
        self.renderer(store).subscription(&store.subscriptions[id])
    }
    fn invoice(&self, store: &Store, id: &str) -> Value {
        self.renderer(store).invoice(&store.invoices[id])
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
}

pub(super) fn line_description(store: &Store, price: &str, quantity: i64) -> String {
    let amount = store.prices.get(price).map_or(0, |p| p.unit_amount);
    let per = match store.prices.get(price).map(|p| p.kind) {
        Some(PriceKind::Recurring) => " / month",
        _ => "",
    };
    format!(
        "{quantity} × {price} (at ${}.{:02}{per})",
        amount / 100,
        amount % 100
    )
}

pub(super) fn new_invoice(
    store: &mut Store,
    customer: &str,
    sub: Option<&Subscription>,
    reason: &str,
    lines: Vec<InvoiceLine>,
) -> Invoice {
    let now = store.clock.now();
    let prefix = store
        .customers
        .get(customer)
        .map_or("EMU".to_string(), |c| c.invoice_prefix.clone());
    Invoice {
        id: ids::long("in"),
        number: store.next_invoice_number(&prefix),
        customer: customer.to_string(),
        customer_email: store.customers.get(customer).and_then(|c| c.email.clone()),
        subscription: sub.map(|s| s.id.clone()),
        subscription_metadata: sub.map(|s| s.metadata.clone()),
        billing_reason: reason.to_string(),
        status: "open".into(),
        subtotal: lines.iter().map(|l| l.amount).sum(),
        lines,
        created: now,
        period_start: now,
        period_end: now,
        discount: 0,
        attempt_count: 0,
        paid_at: None,
        payment_intent: None,
        currency: "usd".into(),
    }
}

pub(super) fn mark_paid(inv: &mut Invoice, now: i64) {
    inv.status = "paid".into();
    inv.attempt_count += i64::from(inv.amount_due() > 0);
    inv.paid_at = Some(now);
    if inv.amount_due() > 0 && inv.payment_intent.is_none() {
        inv.payment_intent = Some(ids::long("pi"));
    }
}

/// The customer Checkout creates, with the email entered on the page (the session's
/// `customer_email`, or a made-up one).
fn create_customer(store: &mut Store, email: Option<String>) -> String {
    insert_customer(store, |c| {
        c.email = email.or_else(|| Some(format!("{}@example.com", c.id.to_lowercase())));
    })
}

/// `POST /_emulator/checkout/{id}/complete`.
pub fn complete_checkout(ctx: &Ctx, store: &mut Store, id: &str, paid: bool) -> Step {
    let session = store
        .sessions
        .get(id)
        .cloned()
        .ok_or_else(|| not_found("checkout session", id))?;
    if session.status != "open" {
        return Err(conflict(format!(
            "checkout session {id} is {}, not open",
            session.status
        )));
    }
    let now = store.clock.now();
    let wants_customer =
        session.mode == "subscription" || session.customer_creation.as_deref() == Some("always");
    let customer = match (&session.customer, wants_customer) {
        (Some(c), _) => Some(c.clone()),
        (None, true) => Some(create_customer(store, session.customer_email.clone())),
        (None, false) => None,
    };
    let mut events_after_session = Vec::new();
    let mut s = session.clone();
    s.status = "complete".into();
    s.customer = customer.clone();
    match session.mode.as_str() {
        "subscription" => {
            let customer = customer.expect("subscription mode always has a customer");
            let (sub_id, invoice_id) = start_subscription(store, &session, &customer, paid, now);
            s.subscription = Some(sub_id.clone());
            s.invoice = Some(invoice_id.clone());
            s.payment_status = if paid { "paid" } else { "unpaid" }.into();
            events_after_session.push(("customer.subscription.created", sub_id));
            if paid {
                events_after_session.push(("invoice.paid", invoice_id));
            }
        }
        "payment" => {
            s.payment_intent = Some(ids::long("pi"));
            s.payment_status = if paid { "paid" } else { "unpaid" }.into();
            if paid {
                s.invoice = payment_invoice(store, &s, now);
            }
        }
        _ => {
            s.setup_intent = Some(ids::long("seti"));
            s.payment_status = "no_payment_required".into();
        }
    }
    store.sessions.insert(id.to_string(), s);
    let mut events = vec![ctx.emit_now(store, "checkout.session.completed", id)];
    for (kind, object_id) in events_after_session {
        events.push(ctx.emit_now(store, kind, &object_id));
    }
    Ok((ctx.session(store, id), events))
}

impl Ctx<'_> {
    /// An event for the current state of the object with `id`.
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
}

/// The invoice a payment-mode checkout with `invoice_creation[enabled]` gets once paid.
fn payment_invoice(store: &mut Store, s: &super::store::Session, now: i64) -> Option<String> {
    let enabled = s
        .params
        .get("invoice_creation")
        .is_some_and(|i| i["enabled"] == true);
    let customer = s.customer.clone().filter(|_| enabled)?;
    let lines = session_lines(store, s, now, now, &[]);
    let mut inv = new_invoice(store, &customer, None, "manual", lines);
    inv.discount = s.amount_discount;
    mark_paid(&mut inv, now);
    let id = inv.id.clone();
    store.invoices.insert(id.clone(), inv);
    Some(id)
}

/// Invoice lines for a checkout's line items; recurring ones cover `start..end`.
fn session_lines(
    store: &Store,
    s: &super::store::Session,
    start: i64,
    end: i64,
    items: &[SubItem],
) -> Vec<InvoiceLine> {
    s.lines
        .iter()
        .map(|l| {
            let price = &store.prices[&l.price];
            let item = items.iter().find(|i| i.price == l.price);
            let recurring = price.kind == PriceKind::Recurring;
            InvoiceLine {
                id: ids::long("il"),
                price: l.price.clone(),
                quantity: l.quantity,
                amount: price.unit_amount * l.quantity,
                period_start: start,
                period_end: if recurring { end } else { start },
                proration: false,
                description: line_description(store, &l.price, l.quantity),
                subscription_item: item.map(|i| i.id.clone()),
                invoice_item: (!recurring).then(|| ids::long("ii")),
            }
        })
        .collect()
}

fn start_subscription(
    store: &mut Store,
    session: &super::store::Session,
    customer: &str,
    paid: bool,
    now: i64,
) -> (String, String) {
    let end = add_months(now, 1);
    let sub_id = ids::long("sub");
    let items: Vec<SubItem> = session
        .lines
        .iter()
        .filter(|l| store.prices[&l.price].kind == PriceKind::Recurring)
        .map(|l| SubItem {
            id: ids::short("si"),
            price: l.price.clone(),
            quantity: l.quantity,
            created: now,
            period_start: now,
            period_end: end,
        })
        .collect();
    let mut sub = Subscription {
        id: sub_id.clone(),
        customer: customer.to_string(),
        status: if paid { "active" } else { "incomplete" }.into(),
        metadata: session.subscription_metadata.clone(),
        created: now,
        billing_cycle_anchor: now,
        cycle: 0,
        cancel_at_period_end: false,
        cancel_at: None,
        canceled_at: None,
        ended_at: None,
        latest_invoice: None,
        currency: "usd".into(),
        items,
    };
    let lines = session_lines(store, session, now, end, &sub.items);
    let mut inv = new_invoice(store, customer, Some(&sub), "subscription_create", lines);
    inv.discount = session.amount_discount;
    inv.attempt_count = 1;
    if paid {
        mark_paid(&mut inv, now);
        inv.attempt_count = 1;
    }
    sub.latest_invoice = Some(inv.id.clone());
    let invoice_id = inv.id.clone();
    store.invoices.insert(invoice_id.clone(), inv);
    store.subscriptions.insert(sub_id.clone(), sub);
    (sub_id, invoice_id)
}

/// `POST /_emulator/checkout/{id}/async_payment` for a completed but unpaid session.
pub fn async_payment(ctx: &Ctx, store: &mut Store, id: &str, succeeded: bool) -> Step {
    let s = store
        .sessions
        .get(id)
        .cloned()
        .ok_or_else(|| not_found("checkout session", id))?;
    if s.status != "complete" || s.payment_status != "unpaid" {
        return Err(conflict(format!(
            "checkout session {id} is {} / {}; an async payment needs a completed, unpaid session",
            s.status, s.payment_status
        )));
    }
    let now = store.clock.now();
    let mut events = Vec::new();
    if !succeeded {
        events.push(ctx.emit_now(store, "checkout.session.async_payment_failed", id));
        if let Some(inv) = s.invoice.clone() {
            if let Some(i) = store.invoices.get_mut(&inv) {
                i.attempt_count += 1;
            }
            events.push(ctx.emit_now(store, "invoice.payment_failed", &inv));
        }
        return Ok((ctx.session(store, id), events));
    }
    let mut updated = s.clone();
    updated.payment_status = "paid".into();
    if updated.mode == "payment" {
        updated.invoice = payment_invoice(store, &updated, now);
    }
    store.sessions.insert(id.to_string(), updated);
    events.push(ctx.emit_now(store, "checkout.session.async_payment_succeeded", id));
    if let (Some(inv), Some(sub)) = (s.invoice.clone(), s.subscription.clone()) {
        let before = ctx.sub(store, &sub);
        if let Some(i) = store.invoices.get_mut(&inv) {
            mark_paid(i, now);
        }
        events.push(ctx.emit_now(store, "invoice.paid", &inv));
        store
            .subscriptions
            .get_mut(&sub)
            .expect("session's subscription")
            .status = "active".into();
        events.push(ctx.emit_subscription_updated(store, &sub, &before).1);
    }
    Ok((ctx.session(store, id), events))
}
