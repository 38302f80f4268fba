//! The money behind purchases: charges, refunds, disputes, credit notes and invoice payments,
//! normalised so the SQL can tie them to the purchase they reverse (see the module docs above
//! for the shape differences).
use super::input::{self, CreditNoteIn, DisputeIn, InvoicePaymentIn, RefundIn};
use super::{Charge, CreditNote, CreditNoteRefund, Data, Dispute, InvoicePayment, Refund};

pub(super) fn charge(c: input::ChargeIn) -> (Option<String>, Data) {
    let data = Charge {
        id: c.id.owned(),
        payment_intent: c.payment_intent.0,
        invoice: c.invoice.0,
        amount: c.amount.0,
        amount_refunded: c.amount_refunded.0,
        currency: c.currency.owned(),
    };
    (c.customer.0, Data::Charge(data))
}

pub(super) fn refund(r: RefundIn) -> (Option<String>, Data) {
    let data = Refund {
        id: r.id.owned(),
        charge: r.charge.0,
        payment_intent: r.payment_intent.0,
        amount: r.amount.0,
        currency: r.currency.owned(),
        status: r.status.owned(),
    };
    // Refunds name their customer only from 2026-07-29.dahlia on.
    (r.customer.0, Data::Refund(data))
}

pub(super) fn dispute(d: DisputeIn) -> (Option<String>, Data) {
    let data = Dispute {
        id: d.id.owned(),
        charge: d.charge.0,
        payment_intent: d.payment_intent.0,
        amount: d.amount.0,
        currency: d.currency.owned(),
        status: d.status.owned(),
    };
    (None, Data::Dispute(data))
}

pub(super) fn credit_note(n: CreditNoteIn) -> (Option<String>, Data) {
    let mut refunds: Vec<CreditNoteRefund> = n
        .refunds
        .0
        .unwrap_or_default()
        .into_iter()
        .map(|r| CreditNoteRefund {
            refund: r.refund.0,
            amount_refunded: r.amount_refunded.0,
        })
        .collect();
    if refunds.is_empty() {
        if let Some(id) = n.refund.0 {
            refunds.push(CreditNoteRefund {
                refund: Some(id),
                amount_refunded: None,
            });
        }
    }
    let data = CreditNote {
        id: n.id.owned(),
        invoice: n.invoice.0,
        status: n.status.owned(),
        note_type: n.note_type.owned(),
        total: n.total.0,
        out_of_band_amount: n.out_of_band_amount.0,
        currency: n.currency.owned(),
        refunds,
    };
    (n.customer.0, Data::CreditNote(data))
}

pub(super) fn invoice_payment(p: InvoicePaymentIn) -> (Option<String>, Data) {
    let payment = p.payment.0.unwrap_or_default();
    let data = InvoicePayment {
        id: p.id.owned(),
        invoice: p.invoice.0,
        status: p.status.owned(),
        amount_paid: p.amount_paid.0,
        payment_intent: payment.payment_intent.0,
        charge: payment.charge.0,
    };
    (None, Data::InvoicePayment(data))
}
