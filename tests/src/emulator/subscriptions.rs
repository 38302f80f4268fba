//! Subscription lifecycle steps driven by the control API: renewal (paid or failed),
//! recovery of a failed payment, a price change with an immediate proration invoice, and
//! cancellation. Each returns the events Stripe would send, rendered at the moment they are
//! created.

use super::lifecycle::{
    conflict, line_description, mark_paid, new_invoice, not_found, ControlError, Ctx, Step,
};
use super::store::{add_months, format_date, ids, InvoiceLine, PriceKind, Store, Subscription};

fn live_subscription<'s>(
    store: &'s mut Store,
    id: &str,
) -> Result<&'s mut Subscription, ControlError> {
    let sub = store
        .subscriptions
        .get_mut(id)
        .ok_or_else(|| not_found("subscription", id))?;
    if matches!(
        sub.status.as_str(),
        "canceled" | "incomplete" | "incomplete_expired"
    ) {
        return Err(conflict(format!("subscription {id} is {}", sub.status)));
    }
    Ok(sub)
}

/// `renew` (paid) and `fail_payment`: the period ends, the next one starts with a
/// `subscription_cycle` invoice. A subscription set to cancel at period end is deleted instead.
pub fn renew(ctx: &Ctx, store: &mut Store, id: &str, pay: bool) -> Step {
    let sub = live_subscription(store, id)?.clone();
    let (start, end) = sub.period();
    store.clock.advance_to(end);
    let now = store.clock.now();
    let before = ctx.sub(store, id);
    if sub.cancel_at_period_end {
        let s = store.subscriptions.get_mut(id).expect("checked above");
        s.status = "canceled".into();
        s.ended_at = Some(end);
        let after = ctx.sub(store, id);
        let event = ctx.emit(store, "customer.subscription.deleted", after.clone(), None);
        return Ok((after, vec![event]));
    }
    let cycle = sub.cycle + 1;
    let next_end = add_months(sub.billing_cycle_anchor, cycle + 1);
    let mut renewed = sub.clone();
    renewed.cycle = cycle;
    for item in &mut renewed.items {
        item.period_start = end;
        item.period_end = next_end;
    }
    let lines: Vec<InvoiceLine> = renewed
        .items
        .iter()
        .map(|i| InvoiceLine {
            id: ids::long("il"),
            price: i.price.clone(),
            quantity: i.quantity,
            amount: store.prices.get(&i.price).map_or(0, |p| p.unit_amount) * i.quantity,
            period_start: end,
            period_end: next_end,
            proration: false,
            description: line_description(store, &i.price, i.quantity),
            subscription_item: Some(i.id.clone()),
            invoice_item: None,
        })
        .collect();
    let mut inv = new_invoice(
        store,
        &sub.customer,
        Some(&renewed),
        "subscription_cycle",
        lines,
    );
    // Stripe's invoice period is the one that just ended; the lines carry the new period.
    inv.period_start = start;
    inv.period_end = end;
    inv.attempt_count = 1;
    if pay {
        mark_paid(&mut inv, now);
        inv.attempt_count = 1;
        renewed.status = "active".into();
    } else {
        renewed.status = "past_due".into();
    }
    renewed.latest_invoice = Some(inv.id.clone());
    let invoice_id = inv.id.clone();
    store.invoices.insert(invoice_id.clone(), inv);
    store.subscriptions.insert(id.to_string(), renewed);
    let kind = if pay {
        "invoice.paid"
    } else {
        "invoice.payment_failed"
    };
    let first = ctx.emit_now(store, kind, &invoice_id);
    let (after, second) = ctx.emit_subscription_updated(store, id, &before);
    Ok((after, vec![first, second]))
}

/// `POST /_emulator/subscriptions/{id}/recover`: the open invoice is paid on retry.
pub fn recover(ctx: &Ctx, store: &mut Store, id: &str) -> Step {
    live_subscription(store, id)?;
    let open = store
        .invoices
        .values()
        .filter(|i| i.subscription.as_deref() == Some(id) && i.status == "open")
        .max_by_key(|i| i.created)
        .map(|i| i.id.clone())
        .ok_or_else(|| conflict(format!("subscription {id} has no open invoice")))?;
    let now = store.clock.now();
    let before = ctx.sub(store, id);
    mark_paid(store.invoices.get_mut(&open).expect("found above"), now);
    let first = ctx.emit_now(store, "invoice.paid", &open);
    store.subscriptions.get_mut(id).expect("checked").status = "active".into();
    let (after, second) = ctx.emit_subscription_updated(store, id, &before);
    Ok((after, vec![first, second]))
}

/// `POST /_emulator/subscriptions/{id}/change_price`: switch an item's price now and invoice
/// the proration at once (a credit for the unused time on the old price, a charge for the
/// remaining time on the new one).
pub fn change_price(
    ctx: &Ctx,
    store: &mut Store,
    id: &str,
    price: &str,
    item: Option<&str>,
) -> Step {
    let new_price = store
        .prices
        .get(price)
        .cloned()
        .ok_or_else(|| not_found("price", price))?;
    if new_price.kind != PriceKind::Recurring {
        return Err(conflict(format!("price {price} is not recurring")));
    }
    let sub = live_subscription(store, id)?.clone();
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
    let (start, end) = (current.period_start, current.period_end);
    let fraction = ((end - now) as f64 / (end - start).max(1) as f64).clamp(0.0, 1.0);
    let old_amount = store
        .prices
        .get(&current.price)
        .map_or(0, |p| p.unit_amount)
        * current.quantity;
    let date = format_date(now);
    let proration = |price: &str, amount: i64, description: String| InvoiceLine {
        id: ids::long("il"),
        price: price.to_string(),
        quantity: current.quantity,
        amount,
        period_start: now,
        period_end: end,
        proration: true,
        description,
        subscription_item: Some(current.id.clone()),
        invoice_item: Some(ids::long("ii")),
    };
    let lines = vec![
        proration(
            &current.price,
            -((old_amount as f64) * fraction).round() as i64,
            format!("Unused time on {} after {date}", current.price),
        ),
        proration(
            price,
            ((new_price.unit_amount * current.quantity) as f64 * fraction).round() as i64,
            format!("Remaining time on {price} after {date}"),
        ),
    ];
    let before = ctx.sub(store, id);
    let mut changed = sub.clone();
    changed.items[index].price = price.to_string();
    let mut inv = new_invoice(
        store,
        &sub.customer,
        Some(&changed),
        "subscription_update",
        lines,
    );
    mark_paid(&mut inv, now);
    changed.latest_invoice = Some(inv.id.clone());
    let invoice_id = inv.id.clone();
    store.invoices.insert(invoice_id.clone(), inv);
    store.subscriptions.insert(id.to_string(), changed);
    let (after, first) = ctx.emit_subscription_updated(store, id, &before);
    let second = ctx.emit_now(store, "invoice.paid", &invoice_id);
    Ok((after, vec![first, second]))
}

/// `POST /_emulator/subscriptions/{id}/cancel` (`at_period_end`) and `…/uncancel`.
pub fn cancel(ctx: &Ctx, store: &mut Store, id: &str, at_period_end: Option<bool>) -> Step {
    let sub = live_subscription(store, id)?.clone();
    let now = store.clock.now();
    let before = ctx.sub(store, id);
    let s = store.subscriptions.get_mut(id).expect("checked");
    let kind = match at_period_end {
        Some(true) if sub.cancel_at_period_end => {
            return Err(conflict(format!(
                "subscription {id} already cancels at period end"
            )))
        }
        Some(true) => {
            s.cancel_at_period_end = true;
            s.cancel_at = Some(sub.period().1);
            s.canceled_at = Some(now);
            "customer.subscription.updated"
        }
        Some(false) => {
            s.status = "canceled".into();
            s.cancel_at_period_end = false;
            s.canceled_at = Some(now);
            s.ended_at = Some(now);
            "customer.subscription.deleted"
        }
        None if !sub.cancel_at_period_end => {
            return Err(conflict(format!("subscription {id} is not set to cancel")))
        }
        None => {
            s.cancel_at_period_end = false;
            s.cancel_at = None;
            s.canceled_at = None;
            "customer.subscription.updated"
        }
    };
    let after = ctx.sub(store, id);
    let previous = (kind == "customer.subscription.updated").then_some(&before);
    let event = ctx.emit(store, kind, after.clone(), previous);
    Ok((after, vec![event]))
}
