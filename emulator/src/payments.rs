//! The payments behind purchases (a PaymentIntent and its Charge for every paid payment-mode
//! session and every paid invoice), refunds and disputes of those charges, and the webhook
//! endpoints the account lists. Rendering is in `render_money.rs`; the control routes in
//! `control_money.rs`. Each event set cites its source in `emulator/README.md`.

use serde_json::{json, Value};

use super::lifecycle::{bad_request, conflict, not_found, Ctx, Step};
use super::store::{ids, Store};

/// A PaymentIntent (`pi_…`). `invoice` is shown only before basil.
#[derive(Debug, Clone)]
pub struct PaymentIntent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub customer: Option<String>,
    pub invoice: Option<String>,
    pub latest_charge: Option<String>,
    /// `succeeded` once charged, `processing` while a delayed payment is under way,
    /// `requires_payment_method` after it failed.
    pub status: String,
    pub created: i64,
    pub client_secret: String,
    /// Set by `POST /v1/payment_intents` (`intents.rs`); empty / None for Checkout's.
    pub metadata: serde_json::Map<String, Value>,
    pub payment_method: Option<String>,
    pub description: Option<String>,
    /// `last_payment_error` of a failed attempt.
    pub last_payment_error: Option<Value>,
}

/// A successful Charge (`ch_…`) and what happened to it since.
#[derive(Debug, Clone)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub customer: Option<String>,
    pub payment_intent: String,
    /// Shown only before basil.
    pub invoice: Option<String>,
    pub created: i64,
    pub disputed: bool,
}

impl Charge {
    pub fn refunded(&self) -> bool {
        self.amount_refunded >= self.amount
    }
}

/// A Refund (`re_…`); the emulator's refunds succeed at once, and fail only through
/// `POST /_emulator/refunds/{id}/fail`.
#[derive(Debug, Clone)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    pub charge: String,
    pub payment_intent: String,
    pub currency: String,
    pub created: i64,
    /// `succeeded` or `failed`.
    pub status: String,
}

/// The first API version that sends `refund.created`, `refund.updated` and `refund.failed` for
/// refunds of charges; before it they come "only for refunds without a corresponding charge",
/// and a charge's refund changing is `charge.refund.updated`
/// (https://docs.stripe.com/changelog/acacia/2024-10-28/refund-webhook-update).
const REFUND_EVENTS_FOR_CHARGES: &str = "2024-10-28";

/// Whether `version` (`YYYY-MM-DD[.name]`) sends `refund.*` events for refunds of charges.
pub(super) fn refund_events_for_charges(version: &str) -> bool {
    version.get(..10).unwrap_or(version) >= REFUND_EVENTS_FOR_CHARGES
}

/// A Dispute (`du_…`): `needs_response` until closed as `won` or `lost`.
#[derive(Debug, Clone)]
pub struct Dispute {
    pub id: String,
    pub amount: i64,
    pub charge: String,
    pub payment_intent: String,
    pub currency: String,
    pub created: i64,
    pub status: String,
}

/// A webhook endpoint registered on the account (`we_…`).
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    pub enabled_events: Vec<String>,
    pub created: i64,
}

/// Charges `amount` now: the PaymentIntent `intent` (a new one when `None`) succeeds with a
/// new Charge. Returns the PaymentIntent and Charge ids.
pub fn record_payment(
    store: &mut Store,
    amount: i64,
    currency: &str,
    customer: Option<&str>,
    intent: Option<&str>,
) -> (String, String) {
    let now = store.clock.now();
    let pi = intent.map_or_else(|| ids::long("pi"), str::to_string);
    let ch = ids::long("ch");
    store.charges.insert(
        ch.clone(),
        Charge {
            id: ch.clone(),
            amount,
            amount_refunded: 0,
            currency: currency.to_string(),
            customer: customer.map(str::to_string),
            payment_intent: pi.clone(),
            invoice: None,
            created: now,
            disputed: false,
        },
    );
    let intent = store
        .payment_intents
        .entry(pi.clone())
        .or_insert_with(|| new_intent(&pi, amount, currency, customer, now));
    intent.status = "succeeded".into();
    intent.latest_charge = Some(ch.clone());
    (pi, ch)
}

pub(super) fn new_intent(
    id: &str,
    amount: i64,
    currency: &str,
    customer: Option<&str>,
    now: i64,
) -> PaymentIntent {
    PaymentIntent {
        id: id.to_string(),
        amount,
        currency: currency.to_string(),
        customer: customer.map(str::to_string),
        invoice: None,
        latest_charge: None,
        status: "processing".into(),
        created: now,
        client_secret: format!("{id}_secret_{}", ids::short("x").split_off(2)),
        metadata: serde_json::Map::new(),
        payment_method: None,
        description: None,
        last_payment_error: None,
    }
}

/// A PaymentIntent that has not been charged yet (a delayed payment method still
/// processing). Returns its id.
pub fn pending_intent(
    store: &mut Store,
    amount: i64,
    currency: &str,
    customer: Option<&str>,
) -> String {
    let now = store.clock.now();
    let id = ids::long("pi");
    store
        .payment_intents
        .insert(id.clone(), new_intent(&id, amount, currency, customer, now));
    id
}

/// Links the payment `(pi, ch)` to the invoice it paid.
pub fn link_invoice(store: &mut Store, pi: &str, ch: &str, invoice: &str) {
    if let Some(i) = store.payment_intents.get_mut(pi) {
        i.invoice = Some(invoice.to_string());
    }
    if let Some(c) = store.charges.get_mut(ch) {
        c.invoice = Some(invoice.to_string());
    }
}

/// A positive amount in cents from a control call's `amount` (absent: `default`).
pub(super) fn amount_arg(
    args: &Value,
    default: i64,
) -> Result<i64, super::lifecycle::ControlError> {
    match &args["amount"] {
        Value::Null => Ok(default),
        v => v
            .as_i64()
            .filter(|a| *a > 0)
            .ok_or_else(|| bad_request("amount must be a positive integer (cents)")),
    }
}

/// Refunds `amount` of charge `ch`: the Refund, the charge's `amount_refunded`. Returns the
/// refund id; the caller emits the events.
pub(super) fn refund_charge(
    store: &mut Store,
    ch: &str,
    amount: Option<i64>,
) -> Result<String, super::lifecycle::ControlError> {
    let charge = store
        .charges
        .get(ch)
        .ok_or_else(|| not_found("charge", ch))?;
    let left = charge.amount - charge.amount_refunded;
    let amount = amount.unwrap_or(left);
    if left == 0 {
        return Err(conflict(format!("charge {ch} is already fully refunded")));
    }
    if amount > left {
        return Err(bad_request(format!(
            "amount {amount} is more than the {left} left to refund on charge {ch}"
        )));
    }
    let now = store.clock.now();
    let id = ids::long("re");
    let refund = Refund {
        id: id.clone(),
        amount,
        charge: ch.to_string(),
        payment_intent: charge.payment_intent.clone(),
        currency: charge.currency.clone(),
        created: now,
        status: "succeeded".into(),
    };
    store.refunds.insert(id.clone(), refund);
    store
        .charges
        .get_mut(ch)
        .expect("found above")
        .amount_refunded += amount;
    Ok(id)
}

/// `charge.refunded` (the charge as it is now), then from acacia on `refund.created`.
pub(super) fn refund_events(
    ctx: &Ctx,
    store: &mut Store,
    ch: &str,
    refund: &str,
    events: &mut Vec<super::store::StoredEvent>,
) {
    let charge = ctx.render(store, |r| r.charge(&store.charges[ch]));
    events.push(ctx.emit(store, "charge.refunded", charge, None));
    if refund_events_for_charges(ctx.api_version) {
        let refund = ctx.render(store, |r| r.refund(&store.refunds[refund]));
        events.push(ctx.emit(store, "refund.created", refund, None));
    }
}

/// `POST /_emulator/refunds/{id}/fail`: the refund `failed` and its amount no longer refunded
/// on the charge; from acacia on `refund.updated` then `refund.failed`, before it
/// `charge.refund.updated` (the refund object).
pub fn fail_refund(ctx: &Ctx, store: &mut Store, id: &str) -> Step {
    let refund = store
        .refunds
        .get_mut(id)
        .ok_or_else(|| not_found("refund", id))?;
    if refund.status != "succeeded" {
        return Err(conflict(format!(
            "refund {id} is already {}",
            refund.status
        )));
    }
    refund.status = "failed".into();
    let (ch, amount) = (refund.charge.clone(), refund.amount);
    if let Some(charge) = store.charges.get_mut(&ch) {
        charge.amount_refunded -= amount;
    }
    let object = ctx.render(store, |r| r.refund(&store.refunds[id]));
    let previous = json!({"status": "succeeded"});
    let events = if refund_events_for_charges(ctx.api_version) {
        vec![
            ctx.emit(store, "refund.updated", object.clone(), Some(&previous)),
            ctx.emit(store, "refund.failed", object.clone(), Some(&previous)),
        ]
    } else {
        vec![ctx.emit(
            store,
            "charge.refund.updated",
            object.clone(),
            Some(&previous),
        )]
    };
    Ok((object, events))
}

/// `POST /_emulator/charges/{id}/refund` `{"amount"?}` (default: what is left).
pub fn refund(ctx: &Ctx, store: &mut Store, ch: &str, args: &Value) -> Step {
    let amount = match &args["amount"] {
        Value::Null => None,
        _ => Some(amount_arg(args, 0)?),
    };
    let id = refund_charge(store, ch, amount)?;
    let mut events = Vec::new();
    refund_events(ctx, store, ch, &id, &mut events);
    Ok((ctx.render(store, |r| r.charge(&store.charges[ch])), events))
}

/// `POST /_emulator/charges/{id}/dispute` `{"amount"?}` (default: the charge's amount):
/// `charge.dispute.created`, then `charge.dispute.funds_withdrawn`.
pub fn dispute(ctx: &Ctx, store: &mut Store, ch: &str, args: &Value) -> Step {
    let charge = store
        .charges
        .get(ch)
        .ok_or_else(|| not_found("charge", ch))?;
    if charge.disputed {
        return Err(conflict(format!("charge {ch} is already disputed")));
    }
    let amount = amount_arg(args, charge.amount)?;
    if amount > charge.amount {
        return Err(bad_request(format!(
            "amount {amount} is more than the charge's {}",
            charge.amount
        )));
    }
    let id = ids::long("du");
    let dispute = Dispute {
        id: id.clone(),
        amount,
        charge: ch.to_string(),
        payment_intent: charge.payment_intent.clone(),
        currency: charge.currency.clone(),
        created: store.clock.now(),
        status: "needs_response".into(),
    };
    store.disputes.insert(id.clone(), dispute);
    store.charges.get_mut(ch).expect("found above").disputed = true;
    let object = ctx.render(store, |r| r.dispute(&store.disputes[&id]));
    let events = vec![
        ctx.emit(store, "charge.dispute.created", object.clone(), None),
        ctx.emit(
            store,
            "charge.dispute.funds_withdrawn",
            object.clone(),
            None,
        ),
    ];
    Ok((object, events))
}

/// `POST /_emulator/disputes/{id}/close` `{"won": bool}`: `charge.dispute.closed` (`won` or
/// `lost`), then, when won, `charge.dispute.funds_reinstated`.
pub fn close_dispute(ctx: &Ctx, store: &mut Store, id: &str, won: bool) -> Step {
    let dispute = store
        .disputes
        .get_mut(id)
        .ok_or_else(|| not_found("dispute", id))?;
    if dispute.status != "needs_response" {
        return Err(conflict(format!(
            "dispute {id} is already {}",
            dispute.status
        )));
    }
    dispute.status = if won { "won" } else { "lost" }.into();
    let object = ctx.render(store, |r| r.dispute(&store.disputes[id]));
    let mut events = vec![ctx.emit(store, "charge.dispute.closed", object.clone(), None)];
    if won {
        events.push(ctx.emit(
            store,
            "charge.dispute.funds_reinstated",
            object.clone(),
            None,
        ));
    }
    Ok((object, events))
}
