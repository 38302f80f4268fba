//! Changes to a running subscription, driven by the control API: a price change (with
//! `proration_behavior`, or an interval change that resets the billing cycle), an added item,
//! the end of a trial, and pausing or resuming payment collection.

use serde_json::{json, Value};

use super::lifecycle::{
    bad_request, conflict, item_lines, mark_paid, new_invoice, not_found, ControlError, Ctx, Step,
};
use super::store::{format_date, ids, InvoiceLine, Price, PriceKind, Store, StoredEvent, SubItem};
use super::subscriptions::{attempt, cycle_invoice, finish_cycle, live_subscription, Outcome};

/// `proration_behavior` of a change; Stripe's default is `create_prorations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proration {
    CreateProrations,
    AlwaysInvoice,
    None,
}

impl Proration {
    pub fn parse(v: &Value) -> Result<Self, ControlError> {
        match v.as_str() {
            None | Some("create_prorations") => Ok(Self::CreateProrations),
            Some("always_invoice") => Ok(Self::AlwaysInvoice),
            Some("none") => Ok(Self::None),
            Some(other) => Err(bad_request(format!(
                "proration_behavior must be create_prorations, always_invoice or none, not {other:?}"
            ))),
        }
    }
}

/// A proration line for `item` over the rest of its period from now.
fn proration_line(
    store: &Store,
    item: &SubItem,
    price: &str,
    credit: bool,
    now: i64,
) -> InvoiceLine {
    let (start, end) = (item.period_start, item.period_end);
    let fraction = ((end - now) as f64 / (end - start).max(1) as f64).clamp(0.0, 1.0);
    let full = store.prices.get(price).map_or(0, |p| p.unit_amount) * item.quantity;
    let amount = ((full as f64) * fraction).round() as i64;
    let date = format_date(now);
    InvoiceLine {
        id: ids::long("il"),
        price: price.to_string(),
        quantity: item.quantity,
        amount: if credit { -amount } else { amount },
        period_start: now,
        period_end: end,
        proration: true,
        description: if credit {
            format!("Unused time on {price} after {date}")
        } else {
            format!("Remaining time on {price} after {date}")
        },
        subscription_item: Some(item.id.clone()),
        invoice_item: Some(ids::long("ii")),
    }
}

/// An invoice for `lines` now (`subscription_update`), finalized and paid at once.
fn invoice_now(ctx: &Ctx, store: &mut Store, id: &str, lines: Vec<InvoiceLine>) -> String {
    let now = store.clock.now();
    let sub = store.subscriptions[id].clone();
    let mut inv = new_invoice(
        store,
        ctx.base_url,
        &sub.customer,
        Some(&sub),
        "subscription_update",
        lines,
    );
    mark_paid(store, &mut inv, now);
    let inv_id = inv.id.clone();
    store.invoices.insert(inv_id.clone(), inv);
    store
        .subscriptions
        .get_mut(id)
        .expect("exists")
        .latest_invoice = Some(inv_id.clone());
    inv_id
}

/// Applies `lines` per `proration` after a change and returns the events:
/// `customer.subscription.updated`, plus `invoice.paid` when invoiced at once.
fn settle(
    ctx: &Ctx,
    store: &mut Store,
    id: &str,
    before: &Value,
    lines: Vec<InvoiceLine>,
    proration: Proration,
) -> (Value, Vec<StoredEvent>) {
    let invoice = match proration {
        Proration::AlwaysInvoice if !lines.is_empty() => Some(invoice_now(ctx, store, id, lines)),
        Proration::CreateProrations => {
            let sub = store.subscriptions.get_mut(id).expect("exists");
            sub.pending_lines.extend(lines);
            None
        }
        _ => None,
    };
    let (after, updated) = ctx.emit_subscription_updated(store, id, before);
    let mut events = vec![updated];
    if let Some(inv) = invoice {
        events.push(ctx.emit_now(store, "invoice.paid", &inv));
    }
    (after, events)
}

fn running(store: &mut Store, id: &str) -> Result<(), ControlError> {
    let sub = live_subscription(store, id)?;
    if sub.status == "trialing" {
        return Err(conflict(format!("subscription {id} is trialing")));
    }
    Ok(())
}

/// `POST /_emulator/subscriptions/{id}/change_price` `{"price", "item"?,
/// "proration_behavior"?}`. Same interval: a credit for the unused time on the old price and
/// a charge for the rest of the period on the new one, invoiced now (`always_invoice`), on
/// the next cycle invoice (`create_prorations`, the default) or not at all (`none`). Another
/// interval (monthly → yearly): the billing cycle restarts now and the new period is invoiced
/// at once (`subscription_update`) with the credit for the old one, whatever the behavior
/// (except that `none` drops the credit).
pub fn change_price(
    ctx: &Ctx,
    store: &mut Store,
    id: &str,
    price: &str,
    item: Option<&str>,
    proration: Proration,
) -> Step {
    let new_price = store
        .prices
        .get(price)
        .cloned()
        .ok_or_else(|| not_found("price", price))?;
    if !new_price.is_recurring() {
        return Err(conflict(format!("price {price} is not recurring")));
    }
    running(store, id)?;
    let sub = store.subscriptions[id].clone();
    let index = match item {
        Some(item) => sub
            .items
            .iter()
            .position(|i| i.id == item)
            .ok_or_else(|| not_found("subscription item", item))?,
        None => 0,
    };
    let current = sub
        .items
        .get(index)
        .cloned()
        .ok_or_else(|| conflict(format!("subscription {id} has no items")))?;
    if current.price == price {
        return Err(conflict(format!(
            "subscription item {} already has price {price}",
            current.id
        )));
    }
    let now = store.clock.now();
    let before = ctx.sub(store, id);
    let credit = proration_line(store, &current, &current.price, true, now);
    if new_price.months != sub.months {
        if sub.items.len() > 1 {
            return Err(conflict(format!(
                "subscription {id} has several items; they must share one interval"
            )));
        }
        let s = store.subscriptions.get_mut(id).expect("exists");
        s.months = new_price.months;
        s.billing_cycle_anchor = now;
        s.cycle = 0;
        s.items[index].price = price.to_string();
        let end = s.period_end(0);
        s.items[index].period_start = now;
        s.items[index].period_end = end;
        let snapshot = s.clone();
        let mut lines = std::mem::take(&mut s.pending_lines);
        if proration != Proration::None {
            lines.push(credit);
        }
        lines.extend(item_lines(store, &snapshot, now, end));
        let (after, events) = settle(ctx, store, id, &before, lines, Proration::AlwaysInvoice);
        return Ok((after, events));
    }
    let mut lines = Vec::new();
    if proration != Proration::None {
        lines.push(credit);
        lines.push(proration_line(store, &current, price, false, now));
    }
    store.subscriptions.get_mut(id).expect("exists").items[index].price = price.to_string();
    Ok(settle(ctx, store, id, &before, lines, proration))
}

/// A new `quantity` of item `item` (`POST /v1/subscriptions/{id}` with `items[i][id]` and
/// `items[i][quantity]`). Stripe prorates a quantity change like a price change ("We also
/// prorate when you make quantity changes"): a credit for the unused time at the old quantity
/// and a charge for the rest of the period at the new one, per `proration`. A trial is free, so
/// a change during it prorates nothing. The same quantity again changes nothing and sends no
/// event.
pub fn change_quantity(
    ctx: &Ctx,
    store: &mut Store,
    id: &str,
    item: &str,
    quantity: i64,
    proration: Proration,
) -> Step {
    let sub = live_subscription(store, id)?.clone();
    let index = sub
        .items
        .iter()
        .position(|i| i.id == item)
        .ok_or_else(|| not_found("subscription item", item))?;
    let current = sub.items[index].clone();
    if current.quantity == quantity {
        return Ok((ctx.sub(store, id), Vec::new()));
    }
    let now = store.clock.now();
    let before = ctx.sub(store, id);
    let mut lines = Vec::new();
    if proration != Proration::None && sub.status != "trialing" {
        lines.push(proration_line(store, &current, &current.price, true, now));
        let changed = SubItem {
            quantity,
            ..current.clone()
        };
        lines.push(proration_line(store, &changed, &current.price, false, now));
    }
    store.subscriptions.get_mut(id).expect("exists").items[index].quantity = quantity;
    Ok(settle(ctx, store, id, &before, lines, proration))
}

/// `POST /_emulator/subscriptions/{id}/add_item` `{"price", "quantity"?, "unit_amount"?,
/// "proration_behavior"?}`: a second item (an add-on). A price the emulator does not know is
/// created when `unit_amount` is given. The rest of the current period is prorated per
/// `proration_behavior`; later invoices carry a line per item.
pub fn add_item(ctx: &Ctx, store: &mut Store, id: &str, args: &Value) -> Step {
    let price = args["price"]
        .as_str()
        .ok_or_else(|| bad_request("price (string) is required"))?
        .to_string();
    let quantity = args["quantity"].as_i64().unwrap_or(1);
    if quantity < 1 {
        return Err(bad_request("quantity must be at least 1"));
    }
    let proration = Proration::parse(&args["proration_behavior"])?;
    running(store, id)?;
    let months = store.subscriptions[id].months;
    if !store.prices.contains_key(&price) {
        let amount = args["unit_amount"].as_i64().ok_or_else(|| {
            not_found("price", &price) // and no unit_amount to create it with
        })?;
        let created = store.clock.now();
        store.prices.insert(
            price.clone(),
            Price {
                id: price.clone(),
                kind: PriceKind::Recurring,
                unit_amount: amount,
                currency: "usd".into(),
                product: ids::short("prod"),
                created,
                months,
                active: true,
                meter: None,
            },
        );
    }
    let p = &store.prices[&price];
    if !p.is_recurring() || p.months != months {
        return Err(conflict(format!(
            "price {price} must be recurring with the subscription's interval"
        )));
    }
    let sub = &store.subscriptions[id];
    if sub.items.iter().any(|i| i.price == price) {
        return Err(conflict(format!(
            "subscription {id} already has price {price}"
        )));
    }
    let (start, end) = sub.period();
    let now = store.clock.now();
    let before = ctx.sub(store, id);
    let item = SubItem {
        id: ids::short("si"),
        price: price.clone(),
        quantity,
        created: now,
        period_start: start,
        period_end: end,
    };
    let lines = match proration {
        Proration::None => Vec::new(),
        _ => vec![proration_line(store, &item, &price, false, now)],
    };
    store
        .subscriptions
        .get_mut(id)
        .expect("exists")
        .items
        .push(item);
    Ok(settle(ctx, store, id, &before, lines, proration))
}

/// `POST /_emulator/subscriptions/{id}/end_trial` `{"early"?, "outcome"?}`. Naturally (at
/// `trial_end`): the first paid period starts and is billed like a renewal
/// (`subscription_cycle`: `invoice.created`, an hour later `invoice.finalized` and the
/// payment). Early (`trial_end=now`): the cycle restarts now and a full period is invoiced at
/// once (`subscription_update`). The `billing_reason` values are inferred from Stripe's enum
/// descriptions.
pub fn end_trial(ctx: &Ctx, store: &mut Store, id: &str, early: bool, outcome: Outcome) -> Step {
    let sub = store
        .subscriptions
        .get(id)
        .cloned()
        .ok_or_else(|| not_found("subscription", id))?;
    let (Some(trial_end), "trialing") = (sub.trial_end, sub.status.as_str()) else {
        return Err(conflict(format!("subscription {id} is not trialing")));
    };
    if !early {
        store.clock.advance_to(trial_end);
    }
    let now = store.clock.now();
    let before = ctx.sub(store, id);
    let mut s = sub.clone();
    let anchor = if early { now } else { trial_end };
    s.trial_end = Some(anchor);
    s.billing_cycle_anchor = anchor;
    s.cycle = 0;
    s.status = "active".into();
    let next = s.period_end(0);
    let prev = (sub.trial_start.unwrap_or(sub.created), anchor);
    let reason = if early {
        "subscription_update"
    } else {
        "subscription_cycle"
    };
    let inv = cycle_invoice(store, &mut s, reason, prev, (anchor, next));
    store.subscriptions.insert(id.to_string(), s);
    let mut events = vec![ctx.emit_subscription_updated(store, id, &before).1];
    if early {
        let mut invoice = store.invoices.remove(&inv).expect("just created");
        super::lifecycle::finalize(store, ctx.base_url, &mut invoice, now);
        invoice.period_start = now;
        invoice.period_end = now;
        let free = invoice.amount_due() == 0;
        store.invoices.insert(inv.clone(), invoice);
        let outcome = if free { Outcome::Paid } else { outcome };
        attempt(ctx, store, id, &inv, outcome, &mut events);
    } else {
        events.push(ctx.emit_now(store, "invoice.created", &inv));
        finish_cycle(ctx, store, id, &inv, outcome, &mut events);
    }
    Ok((ctx.sub(store, id), events))
}

/// `POST /_emulator/subscriptions/{id}/pause` `{"behavior", "resumes_at"?}` and `…/resume`:
/// `pause_collection` set or cleared, the status unchanged ("the subscription remains
/// `active`"). Renewals while paused follow the behavior (see `finish_cycle`).
pub fn pause(ctx: &Ctx, store: &mut Store, id: &str, pause: Option<(&str, Option<i64>)>) -> Step {
    if let Some((behavior, _)) = pause {
        if !matches!(behavior, "keep_as_draft" | "mark_uncollectible" | "void") {
            return Err(bad_request(
                "behavior must be keep_as_draft, mark_uncollectible or void",
            ));
        }
    }
    live_subscription(store, id)?;
    let before = ctx.sub(store, id);
    let s = store.subscriptions.get_mut(id).expect("checked");
    match pause {
        Some((behavior, resumes_at)) => {
            s.pause_collection = Some(json!({"behavior": behavior, "resumes_at": resumes_at}));
        }
        None if s.pause_collection.is_none() => {
            return Err(conflict(format!("subscription {id} is not paused")))
        }
        None => s.pause_collection = None,
    }
    let (after, event) = ctx.emit_subscription_updated(store, id, &before);
    Ok((after, vec![event]))
}
