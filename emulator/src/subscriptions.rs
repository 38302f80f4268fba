//! Subscription lifecycle steps driven by the control API: renewal with Stripe's timing and
//! its outcome (paid, failed, needing 3-D Secure), recovery, cancellation (also for
//! non-payment), paying an old invoice, and an incomplete subscription expiring. Plan
//! changes, items, trials and pauses are in `changes.rs`.
//!
//! Renewal timing (https://docs.stripe.com/invoicing/integration/workflow-transitions): at
//! the period end Stripe creates a `draft` invoice (`invoice.created`) and moves the
//! subscription into the new period (`customer.subscription.updated`); about an hour later
//! it finalizes the invoice (`invoice.finalized`) and attempts payment (`invoice.paid`, or
//! `invoice.payment_failed`, or `invoice.payment_action_required`).

use super::lifecycle::{
    conflict, draft_invoice, finalize, item_lines, mark_paid_id, not_found, ControlError, Ctx, Step,
};
use super::store::{Store, StoredEvent, Subscription};

/// How a payment attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Paid,
    Failed,
    /// The card needs 3-D Secure: the customer must act on the hosted invoice page.
    ActionRequired,
}

/// About an hour between a renewal invoice's creation and its finalization and payment.
pub const FINALIZE_AFTER: i64 = 3600;

pub(super) fn live_subscription<'s>(
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

/// Attempts payment of the open invoice `inv` of subscription `sub`: the invoice event of the
/// outcome, then `customer.subscription.updated` when the status changes (`active` when paid,
/// `past_due` otherwise: "it becomes `past_due` when payment is required but cannot be paid
/// (due to failed payment or awaiting additional user actions)").
pub(super) fn attempt(
    ctx: &Ctx,
    store: &mut Store,
    sub: &str,
    inv: &str,
    outcome: Outcome,
    events: &mut Vec<StoredEvent>,
) {
    let now = store.clock.now();
    let before = ctx.sub(store, sub);
    let (kind, status) = match outcome {
        Outcome::Paid => {
            mark_paid_id(store, inv, now);
            ("invoice.paid", "active")
        }
        Outcome::Failed => {
            store.invoices.get_mut(inv).expect("exists").attempt_count += 1;
            ("invoice.payment_failed", "past_due")
        }
        Outcome::ActionRequired => {
            let invoice = store.invoices.get_mut(inv).expect("the invoice exists");
            invoice.attempt_count += 1;
            invoice.requires_action = true;
            ("invoice.payment_action_required", "past_due")
        }
    };
    events.push(ctx.emit_now(store, kind, inv));
    let s = store
        .subscriptions
        .get_mut(sub)
        .expect("the subscription exists");
    if s.status != status && s.status != "canceled" {
        s.status = status.into();
        events.push(ctx.emit_subscription_updated(store, sub, &before).1);
    }
}

/// A cycle invoice for the new period `start..end`, after the period `prev_start..prev_end`:
/// pending proration lines first, then a line per item. Returns its id.
pub(super) fn cycle_invoice(
    store: &mut Store,
    sub: &mut Subscription,
    reason: &str,
    (prev_start, prev_end): (i64, i64),
    (start, end): (i64, i64),
) -> String {
    let mut lines = std::mem::take(&mut sub.pending_lines);
    for item in &mut sub.items {
        item.period_start = start;
        item.period_end = end;
    }
    lines.extend(item_lines(store, sub, start, end));
    let mut inv = draft_invoice(store, &sub.customer, Some(sub), reason, lines);
    // Stripe's invoice period is the one that just ended; the lines carry the new period.
    inv.period_start = prev_start;
    inv.period_end = prev_end;
    sub.latest_invoice = Some(inv.id.clone());
    let id = inv.id.clone();
    store.invoices.insert(id.clone(), inv);
    id
}

/// After `invoice.created`: what the hour until finalization brings. A paused subscription's
/// invoice is kept as a draft, voided, or finalized and marked uncollectible; otherwise it is
/// finalized and its payment attempted.
pub(super) fn finish_cycle(
    ctx: &Ctx,
    store: &mut Store,
    sub: &str,
    inv: &str,
    outcome: Outcome,
    events: &mut Vec<StoredEvent>,
) {
    let paused = store.subscriptions[sub]
        .pause_collection
        .as_ref()
        .and_then(|p| p["behavior"].as_str().map(str::to_string));
    match paused.as_deref() {
        Some("keep_as_draft") => return,
        Some("void") => {
            store.invoices.get_mut(inv).expect("exists").status = "void".into();
            events.push(ctx.emit_now(store, "invoice.voided", inv));
            return;
        }
        _ => {}
    }
    let created = store.invoices[inv].created;
    store.clock.advance_to(created + FINALIZE_AFTER);
    let now = store.clock.now();
    let mut invoice = store.invoices.remove(inv).expect("exists");
    finalize(store, ctx.base_url, &mut invoice, now);
    store.invoices.insert(inv.to_string(), invoice);
    events.push(ctx.emit_now(store, "invoice.finalized", inv));
    if paused.as_deref() == Some("mark_uncollectible") {
        store.invoices.get_mut(inv).expect("exists").status = "uncollectible".into();
        events.push(ctx.emit_now(store, "invoice.marked_uncollectible", inv));
        return;
    }
    if store.invoices[inv].amount_due() == 0 {
        attempt(ctx, store, sub, inv, Outcome::Paid, events);
    } else {
        attempt(ctx, store, sub, inv, outcome, events);
    }
}

/// `renew`, `fail_payment` and `require_action`: the period ends and the next one starts
/// with a `subscription_cycle` invoice (see the module docs for the events). A subscription
/// set to cancel at period end is deleted instead.
pub fn renew(ctx: &Ctx, store: &mut Store, id: &str, outcome: Outcome) -> Step {
    let sub = live_subscription(store, id)?.clone();
    if sub.status == "trialing" {
        return Err(conflict(format!(
            "subscription {id} is trialing: end the trial with …/end_trial"
        )));
    }
    let (start, end) = sub.period();
    store.clock.advance_to(end);
    let before = ctx.sub(store, id);
    if sub.cancel_at_period_end {
        let s = store.subscriptions.get_mut(id).expect("checked above");
        s.status = "canceled".into();
        s.ended_at = Some(end);
        let after = ctx.sub(store, id);
        let event = ctx.emit(store, "customer.subscription.deleted", after.clone(), None);
        return Ok((after, vec![event]));
    }
    let mut renewed = sub.clone();
    renewed.cycle += 1;
    let next_end = renewed.period_end(renewed.cycle);
    let inv = cycle_invoice(
        store,
        &mut renewed,
        "subscription_cycle",
        (start, end),
        (end, next_end),
    );
    store.subscriptions.insert(id.to_string(), renewed);
    let mut events = vec![ctx.emit_subscription_updated(store, id, &before).1];
    events.push(ctx.emit_now(store, "invoice.created", &inv));
    finish_cycle(ctx, store, id, &inv, outcome, &mut events);
    Ok((ctx.sub(store, id), events))
}

/// `recover` and `complete_action`: the subscription's latest open invoice is paid (a retry
/// that succeeds, or the customer confirming 3-D Secure on the hosted invoice page).
pub fn recover(ctx: &Ctx, store: &mut Store, id: &str, needs_action: bool) -> Step {
    live_subscription(store, id)?;
    let open = store
        .invoices
        .values()
        .filter(|i| i.subscription.as_deref() == Some(id) && i.status == "open")
        .filter(|i| !needs_action || i.requires_action)
        .max_by_key(|i| i.created)
        .map(|i| i.id.clone())
        .ok_or_else(|| {
            conflict(format!(
                "subscription {id} has no open invoice{}",
                if needs_action {
                    " awaiting customer action"
                } else {
                    ""
                }
            ))
        })?;
    let mut events = Vec::new();
    attempt(ctx, store, id, &open, Outcome::Paid, &mut events);
    Ok((ctx.sub(store, id), events))
}

/// `POST /_emulator/invoices/{id}/pay`: an open invoice is paid, for instance long after its
/// subscription was canceled for non-payment. `invoice.paid`; a canceled subscription stays
/// canceled (paying does not reactivate it), a past-due one whose latest invoice this is
/// becomes active.
pub fn pay_invoice(ctx: &Ctx, store: &mut Store, id: &str) -> Step {
    let inv = store
        .invoices
        .get(id)
        .ok_or_else(|| not_found("invoice", id))?;
    if inv.status != "open" {
        return Err(conflict(format!(
            "invoice {id} is {}, not open",
            inv.status
        )));
    }
    let sub = inv.subscription.clone();
    let mut events = Vec::new();
    let revives = sub.as_ref().is_some_and(|s| {
        let s = &store.subscriptions[s];
        s.status == "past_due" && s.latest_invoice.as_deref() == Some(id)
    });
    match sub {
        Some(sub) if revives => attempt(ctx, store, &sub, id, Outcome::Paid, &mut events),
        _ => {
            let now = store.clock.now();
            mark_paid_id(store, id, now);
            events.push(ctx.emit_now(store, "invoice.paid", id));
        }
    }
    Ok((ctx.invoice(store, id), events))
}

/// `POST /_emulator/subscriptions/{id}/cancel` (`at_period_end`, `reason`) and `…/uncancel`.
/// An immediate cancel for non-payment (`reason: payment_failed`) leaves the open invoices
/// open: Stripe stops collecting them but does not void them.
pub fn cancel(
    ctx: &Ctx,
    store: &mut Store,
    id: &str,
    at_period_end: Option<bool>,
    reason: Option<&str>,
) -> Step {
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
            s.cancellation_reason = Some(reason.unwrap_or("cancellation_requested").into());
            "customer.subscription.updated"
        }
        Some(false) => {
            cancel_now(s, now, reason.unwrap_or("cancellation_requested"));
            "customer.subscription.deleted"
        }
        None if !sub.cancel_at_period_end => {
            return Err(conflict(format!("subscription {id} is not set to cancel")))
        }
        None => {
            s.cancel_at_period_end = false;
            s.cancel_at = None;
            s.canceled_at = None;
            s.cancellation_reason = None;
            "customer.subscription.updated"
        }
    };
    let after = ctx.sub(store, id);
    let previous = (kind == "customer.subscription.updated").then_some(&before);
    let event = ctx.emit(store, kind, after.clone(), previous);
    Ok((after, vec![event]))
}

/// Ends a subscription at once (an immediate cancel, or its customer deleted): `canceled`,
/// `canceled_at` and `ended_at` now.
pub fn cancel_now(s: &mut Subscription, now: i64, reason: &str) {
    s.status = "canceled".into();
    s.cancel_at_period_end = false;
    s.canceled_at = Some(now);
    s.ended_at = Some(now);
    s.cancellation_reason = Some(reason.into());
}

/// `POST /_emulator/subscriptions/{id}/expire`: an `incomplete` subscription whose first
/// invoice was not paid in time becomes `incomplete_expired` ("a terminal status, the open
/// invoice will be voided"): `invoice.voided`, then `customer.subscription.updated`.
pub fn expire(ctx: &Ctx, store: &mut Store, id: &str) -> Step {
    let sub = store
        .subscriptions
        .get(id)
        .ok_or_else(|| not_found("subscription", id))?;
    if sub.status != "incomplete" {
        return Err(conflict(format!(
            "subscription {id} is {}, not incomplete",
            sub.status
        )));
    }
    let open: Vec<String> = store
        .invoices
        .values()
        .filter(|i| i.subscription.as_deref() == Some(id) && i.status == "open")
        .map(|i| i.id.clone())
        .collect();
    let before = ctx.sub(store, id);
    let mut events = Vec::new();
    for inv in open {
        store.invoices.get_mut(&inv).expect("listed").status = "void".into();
        events.push(ctx.emit_now(store, "invoice.voided", &inv));
    }
    let now = store.clock.now();
    let s = store.subscriptions.get_mut(id).expect("checked");
    s.status = "incomplete_expired".into();
    s.canceled_at = Some(now);
    s.ended_at = Some(now);
    let (after, event) = ctx.emit_subscription_updated(store, id, &before);
    events.push(event);
    Ok((after, events))
}
