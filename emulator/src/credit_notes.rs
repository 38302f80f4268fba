//! Credit notes on paid invoices, issued and voided through the control API (their event
//! sets and sources are rows of the table in `emulator/README.md`).
//!
//! For a paid invoice a credit note "does not affect its `amount_due`. Instead, it can result
//! in any combination of" a refund, a customer balance credit and a credit outside Stripe
//! (spec text of the create operation): `{"refund": true}` refunds the invoice's charge
//! (`"refund_amount"` of it, the rest credited to the customer's balance),
//! `{"out_of_band": true}` records `out_of_band_amount`, otherwise the customer's balance is
//! credited. Open invoices (where a credit note lowers `amount_due`) are not modelled.

use serde_json::Value;

use super::lifecycle::{bad_request, conflict, not_found, Ctx, Step};
use super::payments::{amount_arg, refund_charge, refund_events};
use super::store::{ids, Store};

/// `reason` values of the CreditNote type (stripe@13.0.0 and stripe@18.0.0).
const REASONS: [&str; 4] = [
    "duplicate",
    "fraudulent",
    "order_change",
    "product_unsatisfactory",
];

#[derive(Debug, Clone)]
pub struct CreditNote {
    pub id: String,
    pub number: String,
    pub invoice: String,
    pub customer: String,
    pub amount: i64,
    pub currency: String,
    pub created: i64,
    /// `issued` or `void`.
    pub status: String,
    pub voided_at: Option<i64>,
    /// The refund it made and how much of it applies to this credit note.
    pub refund: Option<(String, i64)>,
    pub out_of_band_amount: Option<i64>,
    pub customer_balance_transaction: Option<String>,
    pub reason: Option<String>,
    /// The id of its one line (`custom_line_item`).
    pub line_id: String,
}

/// `POST /_emulator/invoices/{id}/credit_note` `{"amount", "refund"?, "refund_amount"?,
/// "out_of_band"?, "reason"?}`: with a refund its events first (`refund_amount` of it refunded,
/// default all, the rest a customer-balance credit), then `credit_note.created`.
pub fn issue(ctx: &Ctx, store: &mut Store, invoice: &str, args: &Value) -> Step {
    let inv = store
        .invoices
        .get(invoice)
        .ok_or_else(|| not_found("invoice", invoice))?;
    if inv.status != "paid" {
        return Err(conflict(format!(
            "invoice {invoice} is {}: the emulator issues credit notes for paid invoices only",
            inv.status
        )));
    }
    if args["amount"].is_null() {
        return Err(bad_request("amount (cents) is required"));
    }
    let amount = amount_arg(args, 0)?;
    let left = inv.amount_paid() - inv.post_payment_credit;
    if amount > left {
        return Err(bad_request(format!(
            "amount {amount} is more than the {left} of invoice {invoice} not yet credited"
        )));
    }
    let flag = |k: &str| args[k].as_bool().unwrap_or(false);
    let (refund, out_of_band) = (flag("refund"), flag("out_of_band"));
    if refund && out_of_band {
        return Err(bad_request("refund and out_of_band exclude each other"));
    }
    // Part refunded, the rest credited to the customer's balance (the create operation's
    // `refund_amount` and `credit_amount`, which add up to the post-payment amount).
    let refund_amount = match &args["refund_amount"] {
        Value::Null => amount,
        _ if !refund => return Err(bad_request("refund_amount needs refund")),
        _ => amount_arg(&serde_json::json!({"amount": args["refund_amount"]}), 0)?,
    };
    if refund_amount > amount {
        return Err(bad_request("refund_amount is more than amount"));
    }
    let reason = match args["reason"].as_str() {
        None => None,
        Some(r) if REASONS.contains(&r) => Some(r.to_string()),
        Some(r) => {
            return Err(bad_request(format!(
                "reason must be one of {}, not {r:?}",
                REASONS.join(", ")
            )))
        }
    };
    let (customer, currency, charge) = (
        inv.customer.clone(),
        inv.currency.clone(),
        inv.charge.clone(),
    );
    let count = store
        .credit_notes
        .values()
        .filter(|c| c.invoice == invoice)
        .count();
    let number = format!(
        "{}-CN-{:02}",
        inv.number.clone().unwrap_or_else(|| invoice.to_string()),
        count + 1
    );
    let mut events = Vec::new();
    let refund = match (refund, charge) {
        (false, _) => None,
        (true, None) => {
            return Err(conflict(format!(
                "invoice {invoice} has no charge to refund"
            )))
        }
        (true, Some(ch)) => {
            let id = refund_charge(store, &ch, Some(refund_amount))?;
            refund_events(ctx, store, &ch, &id, &mut events);
            Some((id, refund_amount))
        }
    };
    let id = ids::long("cn");
    let note = CreditNote {
        id: id.clone(),
        number,
        invoice: invoice.to_string(),
        customer,
        amount,
        currency,
        created: store.clock.now(),
        status: "issued".into(),
        voided_at: None,
        customer_balance_transaction: (!out_of_band
            && refund.as_ref().is_none_or(|(_, r)| *r < amount))
        .then(|| ids::long("cbtxn")),
        out_of_band_amount: out_of_band.then_some(amount),
        refund,
        reason,
        line_id: ids::long("cnli"),
    };
    store.credit_notes.insert(id.clone(), note);
    store
        .invoices
        .get_mut(invoice)
        .expect("found above")
        .post_payment_credit += amount;
    let object = ctx.render(store, |r| r.credit_note(&store.credit_notes[&id]));
    events.push(ctx.emit(store, "credit_note.created", object.clone(), None));
    Ok((object, events))
}

/// `POST /_emulator/credit_notes/{id}/void`: `credit_note.voided`. A refund it made stays.
pub fn void(ctx: &Ctx, store: &mut Store, id: &str) -> Step {
    let now = store.clock.now();
    let note = store
        .credit_notes
        .get_mut(id)
        .ok_or_else(|| not_found("credit note", id))?;
    if note.status != "issued" {
        return Err(conflict(format!(
            "credit note {id} is already {}",
            note.status
        )));
    }
    note.status = "void".into();
    note.voided_at = Some(now);
    let (invoice, amount) = (note.invoice.clone(), note.amount);
    if let Some(inv) = store.invoices.get_mut(&invoice) {
        inv.post_payment_credit -= amount;
    }
    let object = ctx.render(store, |r| r.credit_note(&store.credit_notes[id]));
    let event = ctx.emit(store, "credit_note.voided", object.clone(), None);
    Ok((object, vec![event]))
}
