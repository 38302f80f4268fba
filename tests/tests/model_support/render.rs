//! A lifecycle as the events Stripe sends for it, in either API shape, on the emulator's
//! templates (tests/src/events.rs). Ids come from the case's seeded generator, so a seed
//! replays the very same events.
use super::*;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};
use stripe_billing_tests::events::{self, Invoice, Line, Period, Session, Shape, Sub};
use uuid::Uuid;

const DAY: i64 = 86_400;

/// Purchases (and what links them: sessions, subscriptions, invoices, invoice payments) come
/// first when the case spends between them and the money reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    Purchase,
    Money,
}

pub struct Rendered {
    pub user: Uuid,
    pub customer: String,
    pub events: Vec<(Phase, Value)>,
    pub sessions: Vec<String>,
    pub invoices: Vec<String>,
    /// The PaymentIntent of each auto top-up.
    pub top_ups: Vec<String>,
    /// The line items Stripe reports for each session (what the worker would retrieve).
    pub line_items: BTreeMap<String, Value>,
}

struct Out<'a> {
    rng: &'a mut StdRng,
    shape: Shape,
    clock: i64,
    customer: String,
    events: Vec<(Phase, Value)>,
}

impl Out<'_> {
    fn id(&mut self, prefix: &str, len: usize) -> String {
        format!("{prefix}{}", Alphanumeric.sample_string(self.rng, len))
    }
    /// Stripe's `created`: every event a few seconds or minutes after the one before.
    fn tick(&mut self) -> i64 {
        self.clock += self.rng.random_range(2..=300);
        self.clock
    }
    fn emit(&mut self, phase: Phase, event_type: &str, object: Value) {
        let created = self.tick();
        let id = self.id("evt_1", 24);
        let e = events::envelope(self.shape, &id, event_type, created, object);
        self.events.push((phase, e));
    }
    fn object(&self, resource: &str, patch: Value) -> Value {
        events::object(self.shape, resource, patch)
    }
}

/// One payment: its charge, PaymentIntent, amount and (invoices) the invoice it paid.
struct Payment {
    charge: String,
    intent: String,
    amount: i64,
    invoice: Option<String>,
}

fn charge(out: &Out, p: &Payment, refunded: i64) -> Value {
    let mut c = out.object(
        "charge",
        json!({"id": p.charge, "payment_intent": p.intent, "amount": p.amount, "amount_captured": p.amount,
               "amount_refunded": refunded, "refunded": refunded == p.amount, "captured": true, "paid": true,
               "status": "succeeded", "currency": "usd", "customer": out.customer}),
    );
    // Before basil a charge names its invoice; basil removed the field.
    if out.shape == Shape::V2023 {
        c["invoice"] = json!(p.invoice);
    }
    c
}

fn refund(out: &Out, id: &str, p: &Payment, amount: i64, status: &str) -> Value {
    out.object(
        "refund",
        json!({"id": id, "charge": p.charge, "payment_intent": p.intent, "amount": amount,
               "currency": "usd", "status": status}),
    )
}

/// The events of what happens to one payment's money after it was paid.
fn money(out: &mut Out, p: &Payment, ops: &[MoneyOp]) {
    let mut live = 0; // refunded and not failed: the charge's amount_refunded
    for op in ops {
        match op {
            MoneyOp::Refund { amount, fails } => {
                let re = out.id("re_3", 24);
                live += amount;
                out.emit(Phase::Money, "charge.refunded", charge(out, p, live));
                if out.shape == Shape::Basil {
                    let r = refund(out, &re, p, *amount, "succeeded");
                    out.emit(Phase::Money, "refund.created", r);
                }
                if *fails {
                    live -= amount;
                    let r = refund(out, &re, p, *amount, "failed");
                    // Before acacia, refunds of charges are reported as charge.refund.updated.
                    let t = match out.shape {
                        Shape::V2023 => "charge.refund.updated",
                        Shape::Basil => "refund.failed",
                    };
                    out.emit(Phase::Money, t, r);
                }
            }
            MoneyOp::Dispute { end } => {
                let amount = p.amount - live;
                if amount == 0 {
                    continue;
                }
                let dp = out.id("dp_1", 24);
                let d = |out: &Out, status: &str| {
                    out.object(
                        "dispute",
                        json!({"id": dp, "charge": p.charge, "payment_intent": p.intent, "amount": amount,
                               "currency": "usd", "status": status, "reason": "fraudulent"}),
                    )
                };
                if *end == DisputeEnd::Inquiry {
                    let o = d(out, "warning_needs_response");
                    out.emit(Phase::Money, "charge.dispute.created", o);
                    let o = d(out, "warning_closed");
                    out.emit(Phase::Money, "charge.dispute.closed", o);
                    continue;
                }
                let o = d(out, "needs_response");
                out.emit(Phase::Money, "charge.dispute.created", o.clone());
                out.emit(Phase::Money, "charge.dispute.funds_withdrawn", o);
                match end {
                    DisputeEnd::Open => {
                        let o = d(out, "under_review");
                        out.emit(Phase::Money, "charge.dispute.updated", o);
                    }
                    DisputeEnd::Won => {
                        let o = d(out, "won");
                        out.emit(Phase::Money, "charge.dispute.closed", o.clone());
                        out.emit(Phase::Money, "charge.dispute.funds_reinstated", o);
                    }
                    _ => {
                        let o = d(out, "lost");
                        out.emit(Phase::Money, "charge.dispute.closed", o);
                    }
                }
            }
            MoneyOp::CreditNote { amount, kind } => {
                let invoice = p.invoice.clone().expect("credit notes are of invoices");
                let cn = out.id("cn_1", 24);
                let mut note = out.object(
                    "credit_note",
                    json!({"id": cn, "invoice": invoice, "customer": out.customer, "type": "post_payment",
                           "status": "issued", "total": amount, "amount": amount, "subtotal": amount,
                           "currency": "usd", "number": format!("MODEL-{}", &cn[4..10])}),
                );
                match kind {
                    NoteKind::Refund => {
                        let re = out.id("re_3", 24);
                        live += amount;
                        out.emit(Phase::Money, "charge.refunded", charge(out, p, live));
                        if out.shape == Shape::Basil {
                            let r = refund(out, &re, p, *amount, "succeeded");
                            out.emit(Phase::Money, "refund.created", r);
                            note["refunds"] = json!([{"refund": re, "amount_refunded": amount}]);
                        } else {
                            note["refund"] = json!(re);
                        }
                    }
                    NoteKind::OutOfBand => note["out_of_band_amount"] = json!(amount),
                    NoteKind::CustomerBalance | NoteKind::Voided => {
                        note["customer_balance_transaction"] = json!(out.id("cbtxn_1", 24));
                    }
                }
                out.emit(Phase::Money, "credit_note.created", note.clone());
                if *kind == NoteKind::Voided {
                    note["status"] = json!("void");
                    note["voided_at"] = json!(out.clock);
                    out.emit(Phase::Money, "credit_note.voided", note);
                }
            }
        }
    }
}

/// Renders `life` in `shape` with fresh ids from `rng`; periods end around now, so no grant
/// has expired when the test looks.
pub fn render(life: &Lifecycle, shape: Shape, rng: &mut StdRng, now: i64) -> Rendered {
    let user = Uuid::from_u128(rng.random());
    let mut out = Out {
        customer: String::new(),
        rng,
        shape,
        clock: now - 3 * DAY,
        events: Vec::new(),
    };
    out.customer = out.id("cus_", 14);
    let customer = out.customer.clone();
    let user_s = user.to_string();
    let mut sessions = Vec::new();
    let mut line_items = BTreeMap::new();
    for pack in &life.packs {
        let session = out.id("cs_test_a1", 56);
        let amount = if pack.free {
            0
        } else {
            PACK_PRICE * pack.quantity
        };
        let p = Payment {
            charge: out.id("ch_3", 24),
            intent: out.id("pi_3", 24),
            amount,
            invoice: None,
        };
        // A Payment Link's session: no metadata of ours, its line items say what was bought.
        let mut s = events::checkout_session(
            shape,
            &Session {
                id: &session,
                mode: "payment",
                payment_status: if pack.free {
                    "no_payment_required"
                } else {
                    "paid"
                },
                customer: &customer,
                user_id: Some(&user_s),
                price_id: "price_pack",
                subscription: None,
                invoice: None,
                amount_total: amount,
                request_id: None,
            },
        );
        s["metadata"] = json!({});
        s["payment_intent"] = if pack.free {
            Value::Null
        } else {
            json!(p.intent)
        };
        out.emit(Phase::Purchase, "checkout.session.completed", s);
        line_items.insert(
            session.clone(),
            json!({"object": "list", "has_more": false,
                   "url": format!("/v1/checkout/sessions/{session}/line_items"),
                   "data": [{"id": out.id("li_1", 24), "object": "item", "quantity": pack.quantity,
                             "price": {"id": "price_pack", "object": "price", "unit_amount": PACK_PRICE},
                             "amount_total": amount, "currency": "usd"}]}),
        );
        money(&mut out, &p, &pack.money);
        sessions.push(session);
    }
    // Auto top-ups: the worker's PaymentIntent, charged at once; its metadata carries the
    // tokens and the user (the request row is not part of the model).
    let mut top_ups = Vec::new();
    for money_ops in &life.top_ups {
        let p = Payment {
            charge: out.id("ch_3", 24),
            intent: out.id("pi_3", 24),
            amount: PACK_PRICE,
            invoice: None,
        };
        let created = out.clock;
        let card = out.id("pm_1", 24);
        let pi = out.object(
            "payment_intent",
            json!({"id": p.intent, "amount": PACK_PRICE, "amount_received": PACK_PRICE, "currency": "usd",
                   "customer": customer, "status": "succeeded", "latest_charge": p.charge, "created": created,
                   "payment_method": card,
                   "metadata": {"user_id": user_s, "plan_id": "pack", "top_up_tokens": PACK_TOKENS.to_string()}}),
        );
        out.emit(Phase::Purchase, "payment_intent.succeeded", pi);
        money(&mut out, &p, money_ops);
        top_ups.push(p.intent);
    }
    let mut invoices = Vec::new();
    let sub_id = out.id("sub_1", 24);
    let n = life.invoices.len() as i64;
    let mut period = Period { start: 0, end: 0 };
    for (k, inv) in life.invoices.iter().enumerate() {
        // The last period runs from 15 days ago to 15 days ahead.
        let start = now - 15 * DAY - (n - 1 - k as i64) * 30 * DAY;
        period = Period {
            start,
            end: start + 30 * DAY,
        };
        let status = if inv.period_line && inv.period_amount == 0 {
            "trialing"
        } else {
            "active"
        };
        let sub = subscription(
            shape, &sub_id, &customer, status, inv, period, &user_s, None,
        );
        let t = if k == 0 {
            "customer.subscription.created"
        } else {
            "customer.subscription.updated"
        };
        out.emit(Phase::Purchase, t, sub);
        let id = out.id("in_1", 24);
        let p = Payment {
            charge: out.id("ch_3", 24),
            intent: out.id("pi_3", 24),
            amount: inv.paid(),
            invoice: Some(id.clone()),
        };
        if inv.pre_payment_credit > 0 {
            let cn = out.id("cn_1", 24);
            let note = out.object(
                "credit_note",
                json!({"id": cn, "invoice": id, "customer": customer, "type": "pre_payment", "status": "issued",
                       "total": inv.pre_payment_credit, "amount": inv.pre_payment_credit,
                       "subtotal": inv.pre_payment_credit, "currency": "usd",
                       "number": format!("MODEL-{}", &cn[4..10])}),
            );
            out.emit(Phase::Money, "credit_note.created", note);
        }
        if inv.failed_attempt && inv.paid() > 0 {
            let o = invoice(&out, false, &id, &sub_id, inv, period, &user_s, None);
            out.emit(Phase::Purchase, "invoice.payment_failed", o);
        }
        let paid = (inv.paid() > 0).then_some(&p);
        let o = invoice(&out, true, &id, &sub_id, inv, period, &user_s, paid);
        out.emit(Phase::Purchase, "invoice.paid", o);
        if shape == Shape::Basil && inv.paid() > 0 {
            // From basil on only the invoice's payments say which PaymentIntent paid it.
            let inpay = out.id("inpay_1", 24);
            let ip = out.object(
                "invoice_payment",
                json!({"id": inpay, "invoice": id, "status": "paid",
                       "amount_paid": inv.paid(), "amount_requested": inv.paid(), "currency": "usd",
                       "is_default": true,
                       "payment": {"type": "payment_intent", "payment_intent": p.intent}}),
            );
            out.emit(Phase::Purchase, "invoice_payment.paid", ip);
        }
        money(&mut out, &p, &inv.money);
        invoices.push(id);
    }
    if life.canceled {
        let last = life.invoices.last().expect("a subscription");
        let ended = out.clock + 2;
        let sub = subscription(
            shape,
            &sub_id,
            &customer,
            "canceled",
            last,
            period,
            &user_s,
            Some(ended),
        );
        out.emit(Phase::Money, "customer.subscription.deleted", sub);
    }
    if life.customer_deleted {
        let c = out.object(
            "customer",
            json!({"id": customer, "email": "model@example.com", "metadata": {"user_id": user_s}}),
        );
        out.emit(Phase::Money, "customer.deleted", c);
    }
    Rendered {
        user,
        customer,
        events: out.events,
        sessions,
        invoices,
        top_ups,
        line_items,
    }
}

#[allow(clippy::too_many_arguments)]
fn subscription(
    shape: Shape,
    id: &str,
    customer: &str,
    status: &str,
    inv: &SubInvoice,
    period: Period,
    user: &str,
    ended_at: Option<i64>,
) -> Value {
    let mut s = events::subscription(
        shape,
        &Sub {
            id,
            customer,
            status,
            price_id: PLANS[inv.plan].0,
            period,
            cancel_at_period_end: false,
            ended_at,
            user_id: Some(user),
        },
    );
    s["items"]["data"][0]["quantity"] = json!(inv.quantity);
    s
}

/// An invoice of the subscription, `paid` or not; `paid_by` is the payment that paid it
/// (None: nothing to pay, or not paid).
#[allow(clippy::too_many_arguments)]
fn invoice(
    out: &Out,
    paid: bool,
    id: &str,
    sub: &str,
    inv: &SubInvoice,
    period: Period,
    user: &str,
    paid_by: Option<&Payment>,
) -> Value {
    // The period line (unless the invoice bills only a plan change), then the prorations.
    let period_line = inv
        .period_line
        .then_some((inv.plan, inv.period_amount, false));
    let all: Vec<(usize, i64, bool)> = period_line
        .into_iter()
        .chain(inv.prorations.iter().map(|(p, a)| (*p, *a, true)))
        .collect();
    let lines = all
        .iter()
        .map(|(plan, amount, proration)| Line {
            price_id: PLANS[*plan].0,
            amount: *amount,
            proration: *proration,
            period,
        })
        .collect();
    let units: Vec<i64> = all.iter().map(|(p, _, _)| PLANS[*p].2).collect();
    let mut o = events::invoice(
        out.shape,
        &Invoice {
            id,
            subscription: sub,
            customer: &out.customer,
            billing_reason: inv.reason,
            paid,
            lines,
            user_id: Some(user),
        },
    );
    let total = inv.total();
    let due = inv.due();
    o["total"] = json!(total);
    o["subtotal"] = json!(total);
    o["amount_due"] = json!(due);
    o["amount_paid"] = json!(if paid { inv.paid() } else { 0 });
    o["amount_remaining"] = json!(if paid { 0 } else { due });
    o["pre_payment_credit_notes_amount"] = json!(inv.pre_payment_credit);
    if inv.from_balance {
        // The customer's credit balance paid it: amount_due is what was left to charge.
        o["starting_balance"] = json!(-due);
        o["ending_balance"] = json!(0);
        o["amount_due"] = json!(0);
    }
    for (line, unit) in o["lines"]["data"]
        .as_array_mut()
        .expect("lines")
        .iter_mut()
        .zip(units)
    {
        line["quantity"] = json!(inv.quantity);
        match out.shape {
            Shape::V2023 => {
                line["price"]["unit_amount"] = json!(unit);
                line["price"]["unit_amount_decimal"] = json!(unit.to_string());
            }
            // Stripe leaves a basil proration line's unit amount null (plan_change_prices.rs);
            // the catalog's synced price values it.
            Shape::Basil
                if line["parent"]["subscription_item_details"]["proration"] == json!(true) =>
            {
                line["pricing"]["unit_amount_decimal"] = Value::Null
            }
            Shape::Basil => line["pricing"]["unit_amount_decimal"] = json!(unit.to_string()),
        }
    }
    if out.shape == Shape::V2023 {
        o["charge"] = json!(paid_by.map(|p| &p.charge));
        o["payment_intent"] = json!(paid_by.map(|p| &p.intent));
    }
    o
}
