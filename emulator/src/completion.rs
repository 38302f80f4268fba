//! A customer completing (and paying, now or asynchronously) a checkout, including sessions
//! created outside the worker (a Payment Link, the Dashboard), zero-total sessions and trials.

use serde_json::Value;

use super::lifecycle::{
    bad_request, conflict, line_description, mark_paid, mark_paid_id, new_invoice, not_found, Ctx,
    Step,
};
use super::resources::insert_customer;
use super::store::{
    ids, InvoiceLine, Session, SessionLine, Store, SubItem, Subscription, SESSION_LIFETIME,
};
use super::{intents, payments};

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
    // A zero-total payment needs no payment method, and Checkout then creates a customer
    // (guest customers are not supported for no-cost orders).
    let free = session.mode == "payment" && session.total() == 0;
    let wants_customer = session.mode == "subscription"
        || free
        || session.customer_creation.as_deref() == Some("always");
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
            let (sub_id, invoice_id) =
                start_subscription(ctx, store, &session, &customer, paid, now);
            let free = store.invoices[&invoice_id].amount_due() == 0;
            s.subscription = Some(sub_id.clone());
            s.invoice = Some(invoice_id.clone());
            // "no_payment_required: The payment is delayed to a future date" (a trial).
            s.payment_status = match (free, paid) {
                (true, _) => "no_payment_required",
                (false, true) => "paid",
                (false, false) => "unpaid",
            }
            .into();
            events_after_session.push(("customer.subscription.created", sub_id));
            if store.invoices[&invoice_id].status == "paid" {
                events_after_session.push(("invoice.paid", invoice_id));
            }
        }
        "payment" if free => {
            // No PaymentIntent is created for a zero-total session.
            s.payment_status = "no_payment_required".into();
            s.invoice = payment_invoice(ctx, store, &s, now);
        }
        "payment" => {
            let (amount, currency) = (
                s.total(),
                s.currency.clone().unwrap_or_else(|| "usd".into()),
            );
            s.payment_status = if paid { "paid" } else { "unpaid" }.into();
            s.payment_intent = Some(if paid {
                let pi =
                    payments::record_payment(store, amount, &currency, s.customer.as_deref(), None)
                        .0;
                // setup_future_usage saves the card to the customer (intents.rs).
                let saves = s
                    .params
                    .get("payment_intent_data")
                    .and_then(|d| d.get("setup_future_usage"))
                    .and_then(Value::as_str)
                    .is_some_and(|u| u == "on_session" || u == "off_session");
                if let (true, Some(customer)) = (saves, s.customer.clone()) {
                    let card =
                        intents::save_card(store, &customer, intents::Behaviour::Succeeds, "4242");
                    if let Some(i) = store.payment_intents.get_mut(&pi) {
                        i.payment_method = Some(card);
                    }
                }
                pi
            } else {
                // A delayed payment method: the intent is processing until async_payment.
                payments::pending_intent(store, amount, &currency, s.customer.as_deref())
            });
            if paid {
                s.invoice = payment_invoice(ctx, store, &s, now);
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

/// `POST /_emulator/checkout/external`: a payment-mode session the worker did not create (a
/// Payment Link, the Dashboard, another back end), completed and paid at once. It has no
/// metadata, a `client_reference_id` only when given, and an existing customer only when
/// given; otherwise the payer is a guest unless `customer_creation` is `always`.
pub fn external_session(ctx: &Ctx, store: &mut Store, args: &Value) -> Step {
    let price_id = args["price"]
        .as_str()
        .ok_or_else(|| bad_request("price (string) is required"))?;
    let quantity = args["quantity"].as_i64().unwrap_or(1);
    let price = store
        .prices
        .get(price_id)
        .cloned()
        .ok_or_else(|| not_found("price", price_id))?;
    if price.is_recurring() || quantity < 1 {
        return Err(bad_request(
            "an external session takes a one-time price and a quantity of at least 1",
        ));
    }
    let customer = args["customer"].as_str().map(str::to_string);
    if let Some(c) = &customer {
        store
            .live_customer(c)
            .ok_or_else(|| not_found("customer", c))?;
    }
    let created = store.clock.now();
    let id = ids::checkout_session();
    let subtotal = price.unit_amount * quantity;
    let session = Session {
        id: id.clone(),
        created,
        expires_at: created + SESSION_LIFETIME,
        mode: "payment".into(),
        status: "open".into(),
        payment_status: "unpaid".into(),
        customer,
        customer_email: args["customer_email"].as_str().map(str::to_string),
        customer_creation: Some(
            args["customer_creation"]
                .as_str()
                .unwrap_or("if_required")
                .to_string(),
        ),
        client_reference_id: args["client_reference_id"].as_str().map(str::to_string),
        lines: vec![SessionLine {
            id: ids::long("li"),
            price: price_id.to_string(),
            quantity,
        }],
        success_url: "https://example.com/paid".into(),
        url: format!("{}/pay/{id}", ctx.base_url),
        currency: Some("usd".into()),
        amount_subtotal: subtotal,
        ..Default::default()
    };
    store.sessions.insert(id.clone(), session);
    complete_checkout(ctx, store, &id, true)
}

/// The invoice a payment-mode checkout with `invoice_creation[enabled]` gets once paid.
fn payment_invoice(ctx: &Ctx, store: &mut Store, s: &Session, now: i64) -> Option<String> {
    let enabled = s
        .params
        .get("invoice_creation")
        .is_some_and(|i| i["enabled"] == true);
    let customer = s.customer.clone().filter(|_| enabled)?;
    let lines = session_lines(store, s, now, now, &[]);
    let mut inv = new_invoice(store, ctx.base_url, &customer, None, "manual", lines);
    inv.discount = s.amount_discount;
    // The session's payment pays the invoice.
    inv.payment_intent = s.payment_intent.clone();
    mark_paid(store, &mut inv, now);
    let id = inv.id.clone();
    store.invoices.insert(id.clone(), inv);
    Some(id)
}

/// Invoice lines for a checkout's line items; recurring ones cover `start..end`.
fn session_lines(
    store: &Store,
    s: &Session,
    start: i64,
    end: i64,
    items: &[SubItem],
) -> Vec<InvoiceLine> {
    s.lines
        .iter()
        .map(|l| {
            let price = &store.prices[&l.price];
            let item = items.iter().find(|i| i.price == l.price);
            let recurring = price.is_recurring();
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

/// The trial end a session asks for: `subscription_data[trial_end]`, or now plus
/// `subscription_data[trial_period_days]` days.
fn trial_end(s: &Session, now: i64) -> Option<i64> {
    let data = s.params.get("subscription_data")?;
    data["trial_end"]
        .as_i64()
        .or_else(|| data["trial_period_days"].as_i64().map(|d| now + d * 86_400))
}

pub(super) fn start_subscription(
    ctx: &Ctx,
    store: &mut Store,
    session: &Session,
    customer: &str,
    paid: bool,
    now: i64,
) -> (String, String) {
    let months = session
        .lines
        .iter()
        .map(|l| store.prices[&l.price].months)
        .find(|m| *m > 0)
        .unwrap_or(1);
    let trial = trial_end(session, now);
    let sub_id = ids::long("sub");
    let mut sub = Subscription {
        id: sub_id.clone(),
        customer: customer.to_string(),
        status: if trial.is_some() {
            "trialing"
        } else if paid {
            "active"
        } else {
            "incomplete"
        }
        .into(),
        metadata: session.subscription_metadata.clone(),
        created: now,
        billing_cycle_anchor: trial.unwrap_or(now),
        cycle: 0,
        cancel_at_period_end: false,
        cancel_at: None,
        canceled_at: None,
        ended_at: None,
        latest_invoice: None,
        currency: "usd".into(),
        items: Vec::new(),
        trial_start: trial.map(|_| now),
        trial_end: trial,
        pause_collection: None,
        cancellation_reason: None,
        pending_lines: Vec::new(),
        months,
    };
    // During a trial the first period ends with the trial.
    let end = trial.unwrap_or_else(|| sub.period_end(0));
    sub.items = session
        .lines
        .iter()
        .filter(|l| store.prices[&l.price].is_recurring())
        .map(|l| SubItem {
            id: ids::short("si"),
            price: l.price.clone(),
            quantity: l.quantity,
            created: now,
            period_start: now,
            period_end: end,
        })
        .collect();
    let mut lines = session_lines(store, session, now, end, &sub.items);
    if trial.is_some() {
        // "An immediate invoice is still created, but for $0."
        for line in lines.iter_mut().filter(|l| l.subscription_item.is_some()) {
            line.amount = 0;
            line.description = format!("Trial period for {}", line.price);
        }
    }
    let mut inv = new_invoice(
        store,
        ctx.base_url,
        customer,
        Some(&sub),
        "subscription_create",
        lines,
    );
    inv.discount = session.amount_discount.min(inv.subtotal);
    inv.attempt_count = 1;
    if paid || inv.amount_due() == 0 {
        mark_paid(store, &mut inv, now);
        inv.attempt_count = 1;
    }
    sub.latest_invoice = Some(inv.id.clone());
    let invoice_id = inv.id.clone();
    store.invoices.insert(invoice_id.clone(), inv);
    store.subscriptions.insert(sub_id.clone(), sub);
    store.register(&sub_id);
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
        if let Some(i) = s
            .payment_intent
            .as_ref()
            .and_then(|pi| store.payment_intents.get_mut(pi))
        {
            i.status = "requires_payment_method".into();
        }
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
        if let Some(pi) = updated.payment_intent.clone() {
            let currency = updated.currency.clone().unwrap_or_else(|| "usd".into());
            let customer = updated.customer.clone();
            payments::record_payment(
                store,
                updated.total(),
                &currency,
                customer.as_deref(),
                Some(&pi),
            );
        }
        updated.invoice = payment_invoice(ctx, store, &updated, now);
    }
    store.sessions.insert(id.to_string(), updated);
    events.push(ctx.emit_now(store, "checkout.session.async_payment_succeeded", id));
    if let (Some(inv), Some(sub)) = (s.invoice.clone(), s.subscription.clone()) {
        let before = ctx.sub(store, &sub);
        if store.invoices.contains_key(&inv) {
            mark_paid_id(store, &inv, now);
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
