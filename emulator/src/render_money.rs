//! Rendering of payments, refunds, disputes, credit notes, invoice payments and webhook
//! endpoints, in the shape of a version. The templates come from the response types of the
//! SDK release of each version (`templates_payments_*.json`); the differences that matter:
//! before basil an invoice names its `payment_intent` and `charge`, and a PaymentIntent and a
//! Charge name their `invoice`; from basil on those fields are gone and an invoice's payments
//! are the includable `payments` list (InvoicePayment objects), and a credit note's `refund`
//! became the `refunds` array
//! (https://docs.stripe.com/changelog/basil/2025-03-31/add-support-for-multiple-partial-payments-on-invoices).

use serde_json::{json, Value};

use super::credit_notes::CreditNote;
use super::payments::{Charge, Dispute, PaymentIntent, Refund};
use super::render::{Renderer, Shape};
use super::store::Invoice;

impl Renderer<'_> {
    pub fn charge(&self, c: &Charge) -> Value {
        let mut v = self.templates.get(self.shape, "charge");
        for (key, value) in [
            ("id", json!(c.id)),
            ("amount", json!(c.amount)),
            ("amount_captured", json!(c.amount)),
            ("amount_refunded", json!(c.amount_refunded)),
            ("captured", json!(true)),
            ("paid", json!(true)),
            ("status", json!("succeeded")),
            ("refunded", json!(c.refunded())),
            ("disputed", json!(c.disputed)),
            ("currency", json!(c.currency)),
            ("customer", json!(c.customer)),
            ("created", json!(c.created)),
            ("payment_intent", json!(c.payment_intent)),
            ("calculated_statement_descriptor", json!("EMULATOR")),
        ] {
            v[key] = value;
        }
        if self.shape == Shape::V2023 {
            v["invoice"] = json!(c.invoice);
        }
        // `refunds` is includable since 2022-11-15 (not in the object unless expanded):
        // https://docs.stripe.com/changelog/2022-11-15/deprecates-charges-auto-expand
        if let Some(o) = v.as_object_mut() {
            o.remove("refunds");
        }
        v
    }

    /// `expand[]=refunds` on a charge.
    pub fn charge_refunds(&self, c: &Charge) -> Value {
        let mut refunds: Vec<&Refund> = self
            .store
            .refunds
            .values()
            .filter(|r| r.charge == c.id)
            .collect();
        refunds.sort_by_key(|r| std::cmp::Reverse(r.created));
        let data: Vec<Value> = refunds.into_iter().map(|r| self.refund(r)).collect();
        json!({"object": "list", "data": data, "has_more": false,
               "url": format!("/v1/charges/{}/refunds", c.id)})
    }

    pub fn payment_intent(&self, i: &PaymentIntent) -> Value {
        let mut v = self.templates.get(self.shape, "payment_intent");
        let received = if i.status == "succeeded" { i.amount } else { 0 };
        for (key, value) in [
            ("id", json!(i.id)),
            ("amount", json!(i.amount)),
            ("amount_received", json!(received)),
            ("currency", json!(i.currency)),
            ("customer", json!(i.customer)),
            ("created", json!(i.created)),
            ("status", json!(i.status)),
            ("latest_charge", json!(i.latest_charge)),
            ("client_secret", json!(i.client_secret)),
            ("capture_method", json!("automatic")),
            ("confirmation_method", json!("automatic")),
            ("payment_method_types", json!(["card"])),
            ("metadata", json!(i.metadata)),
            ("payment_method", json!(i.payment_method)),
            ("description", json!(i.description)),
            ("last_payment_error", json!(i.last_payment_error)),
        ] {
            v[key] = value;
        }
        if self.shape == Shape::V2023 {
            v["invoice"] = json!(i.invoice);
        }
        v
    }

    pub fn refund(&self, r: &Refund) -> Value {
        let mut v = self.templates.get(self.shape, "refund");
        for (key, value) in [
            ("id", json!(r.id)),
            ("amount", json!(r.amount)),
            ("charge", json!(r.charge)),
            ("payment_intent", json!(r.payment_intent)),
            ("currency", json!(r.currency)),
            ("created", json!(r.created)),
            ("status", json!(r.status)),
            ("metadata", json!({})),
        ] {
            v[key] = value;
        }
        v
    }

    pub fn dispute(&self, d: &Dispute) -> Value {
        let mut v = self.templates.get(self.shape, "dispute");
        for (key, value) in [
            ("id", json!(d.id)),
            ("amount", json!(d.amount)),
            ("charge", json!(d.charge)),
            ("payment_intent", json!(d.payment_intent)),
            ("currency", json!(d.currency)),
            ("created", json!(d.created)),
            ("status", json!(d.status)),
            ("reason", json!("general")),
            ("is_charge_refundable", json!(d.status == "needs_response")),
        ] {
            v[key] = value;
        }
        v["evidence_details"]["due_by"] = json!(d.created + 7 * 86_400);
        v
    }

    pub fn credit_note(&self, c: &CreditNote) -> Value {
        let mut v = self.templates.get(self.shape, "credit_note");
        for (key, value) in [
            ("id", json!(c.id)),
            ("number", json!(c.number)),
            ("invoice", json!(c.invoice)),
            ("customer", json!(c.customer)),
            ("amount", json!(c.amount)),
            ("subtotal", json!(c.amount)),
            ("subtotal_excluding_tax", json!(c.amount)),
            ("total", json!(c.amount)),
            ("total_excluding_tax", json!(c.amount)),
            ("currency", json!(c.currency)),
            ("created", json!(c.created)),
            ("effective_at", json!(c.created)),
            ("status", json!(c.status)),
            ("voided_at", json!(c.voided_at)),
            ("type", json!("post_payment")),
            ("reason", json!(c.reason)),
            ("out_of_band_amount", json!(c.out_of_band_amount)),
            (
                "customer_balance_transaction",
                json!(c.customer_balance_transaction),
            ),
            ("metadata", json!({})),
            (
                "pdf",
                json!(format!(
                    "https://pay.stripe.com/credit_notes/emulator/{}/pdf",
                    c.id
                )),
            ),
        ] {
            v[key] = value;
        }
        match self.shape {
            Shape::V2023 => v["refund"] = json!(c.refund.as_ref().map(|(id, _)| id)),
            Shape::Basil => {
                v["refunds"] = json!(c
                    .refund
                    .iter()
                    .map(|(id, amount)| json!({"amount_refunded": amount, "refund": id}))
                    .collect::<Vec<_>>())
            }
        }
        let mut line = self.templates.get(self.shape, "credit_note_line_item");
        for (key, value) in [
            ("id", json!(c.line_id)),
            ("amount", json!(c.amount)),
            ("description", json!("Credit")),
            ("quantity", json!(1)),
            ("type", json!("custom_line_item")),
            ("unit_amount", json!(c.amount)),
            ("unit_amount_decimal", json!(c.amount.to_string())),
        ] {
            line[key] = value;
        }
        if self.shape == Shape::V2023 {
            line["amount_excluding_tax"] = json!(c.amount);
            line["unit_amount_excluding_tax"] = json!(c.amount.to_string());
        }
        v["lines"] = json!({"object": "list", "data": [line], "has_more": false,
            "url": format!("/v1/credit_notes/{}/lines", c.id)});
        v
    }

    /// The includable `payments` of an invoice (basil and later): the default payment of a
    /// paid invoice. Unpaid invoices list none here.
    pub fn invoice_payments(&self, inv: &Invoice) -> Value {
        let data: Vec<Value> = match (&inv.payment_intent, inv.status.as_str()) {
            (Some(pi), "paid") => {
                let mut p = self.templates.get(self.shape, "invoice_payment");
                let suffix = inv.id.strip_prefix("in_").unwrap_or(&inv.id);
                for (key, value) in [
                    ("id", json!(format!("inpay_{suffix}"))),
                    ("amount_paid", json!(inv.amount_paid())),
                    ("amount_requested", json!(inv.amount_due())),
                    ("created", json!(inv.finalized_at.unwrap_or(inv.created))),
                    ("currency", json!(inv.currency)),
                    ("invoice", json!(inv.id)),
                    ("is_default", json!(true)),
                    ("status", json!("paid")),
                    (
                        "payment",
                        json!({"type": "payment_intent", "payment_intent": pi}),
                    ),
                    (
                        "status_transitions",
                        json!({"canceled_at": null, "paid_at": inv.paid_at}),
                    ),
                ] {
                    p[key] = value;
                }
                vec![p]
            }
            _ => Vec::new(),
        };
        json!({"object": "list", "data": data, "has_more": false,
               "url": format!("/v1/invoice_payments?invoice={}", inv.id)})
    }

    pub fn webhook_endpoint(
        &self,
        id: &str,
        url: &str,
        enabled_events: &[String],
        created: i64,
        api_version: Option<&str>,
    ) -> Value {
        let mut v = self.templates.get(self.shape, "webhook_endpoint");
        for (key, value) in [
            ("id", json!(id)),
            ("url", json!(url)),
            ("enabled_events", json!(enabled_events)),
            ("created", json!(created)),
            ("status", json!("enabled")),
            ("api_version", json!(api_version)),
        ] {
            v[key] = value;
        }
        v
    }
}
