//! The lifecycle model of ledger_model.rs: random customer lifecycles (a seeded generator, so
//! a failing case is replayed from its seed) and what the README's rules say they leave the
//! user with. Written from README.md ("What events do", "Refunds, disputes and credit notes"),
//! not from the SQL: the test compares the two.
#![allow(dead_code)]

pub mod render;

use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeMap;

/// The catalog the test installs: a pack of 500 tokens for 900 cents, and subscription plans
/// (monthly tokens, unit amount in cents) — basic below pro, for plan changes.
pub const PACK_TOKENS: i64 = 500;
pub const PACK_PRICE: i64 = 900;
pub const PLANS: [(&str, i64, i64); 2] = [("price_mbasic", 1000, 2000), ("price_mpro", 3000, 5000)];

/// Plan changes with proration invoices, modelled by the `upgrades` branch's rule (tokens
/// proportional to the proration money). Off, the generator draws none (a ledger that grants
/// an upgrade the full difference, as 0.2.0 did, fails the model when they are on).
pub const PLAN_CHANGES: bool = true;

/// What happens to the money of one payment, in Stripe's order.
#[derive(Clone, Debug)]
pub enum MoneyOp {
    /// A refund of `amount`; `fails` when it later fails (it moved no money).
    Refund { amount: i64, fails: bool },
    /// A dispute of what is left of the charge, ending as `end`.
    Dispute { end: DisputeEnd },
    /// A credit note of `amount` on the invoice (invoices only).
    CreditNote { amount: i64, kind: NoteKind },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DisputeEnd {
    /// Still open (funds withdrawn).
    Open,
    Won,
    Lost,
    /// An inquiry (warning_needs_response, then warning_closed): no funds move.
    Inquiry,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NoteKind {
    /// Refunds its amount to the card (a refund object beside the note).
    Refund,
    /// Credited to the customer's balance.
    CustomerBalance,
    /// Settled outside Stripe.
    OutOfBand,
    /// Issued to the customer's balance, then voided.
    Voided,
}

/// A token pack bought through a Checkout Session created elsewhere (a Payment Link): its
/// tokens come from the line items the worker retrieves.
#[derive(Clone, Debug)]
pub struct Pack {
    pub quantity: i64,
    /// A 100%-off session (no_payment_required): nothing paid, nothing to reverse.
    pub free: bool,
    pub money: Vec<MoneyOp>,
}

/// One subscription invoice. `plan` indexes PLANS; `prorations` are (plan, amount) lines.
#[derive(Clone, Debug)]
pub struct SubInvoice {
    pub reason: &'static str,
    pub plan: usize,
    pub quantity: i64,
    /// Whether it bills a period (a plan change's own invoice bills only prorations).
    pub period_line: bool,
    /// The period line's amount (0 on a trial invoice).
    pub period_amount: i64,
    /// Proration lines: (plan, amount; below 0 credits).
    pub prorations: Vec<(usize, i64)>,
    /// A pre-payment credit note lowered what was paid by this much (it reverses nothing).
    pub pre_payment_credit: i64,
    /// Paid wholly from the customer's credit balance (amount_paid 0, total above 0): paid,
    /// not free, with no payment to reverse.
    pub from_balance: bool,
    /// A payment attempt failed before the one that paid (invoice.payment_failed).
    pub failed_attempt: bool,
    pub money: Vec<MoneyOp>,
}

impl SubInvoice {
    pub fn total(&self) -> i64 {
        self.period_amount + self.prorations.iter().map(|(_, a)| a).sum::<i64>()
    }
    /// What is due: the total less pre-payment credit, never below 0.
    pub fn due(&self) -> i64 {
        (self.total() - self.pre_payment_credit).max(0)
    }
    /// What a payment paid (nothing when the credit balance paid it).
    pub fn paid(&self) -> i64 {
        if self.from_balance {
            0
        } else {
            self.due()
        }
    }
}

#[derive(Clone, Debug)]
pub struct Lifecycle {
    pub packs: Vec<Pack>,
    /// Auto top-ups: one pack each, charged off-session (payment_intent.succeeded grants it,
    /// keyed by the PaymentIntent), and what happened to its money.
    pub top_ups: Vec<Vec<MoneyOp>>,
    pub invoices: Vec<SubInvoice>,
    /// customer.subscription.deleted at the end.
    pub canceled: bool,
    /// customer.deleted at the end.
    pub customer_deleted: bool,
    /// Tokens spent, per mille of what the purchases granted, between the purchases and the
    /// money reports (0: no spend, and every event is delivered in one shuffled stream).
    pub spend_permille: i64,
}

/// Draws reversals of a payment of `paid` cents; `invoice` allows credit notes.
fn money_ops(rng: &mut StdRng, paid: i64, invoice: bool) -> Vec<MoneyOp> {
    let mut ops = Vec::new();
    if paid == 0 {
        return ops;
    }
    let mut left = paid;
    for _ in 0..rng.random_range(0..=3) {
        if left == 0 {
            break;
        }
        let amount = match rng.random_range(0..4) {
            0 => left,
            _ => rng.random_range(1..=left),
        };
        match rng.random_range(0..if invoice { 10 } else { 7 }) {
            0..=3 => {
                let fails = rng.random_bool(0.25);
                ops.push(MoneyOp::Refund { amount, fails });
                if !fails {
                    left -= amount;
                }
            }
            4..=6 => {
                let end = [
                    DisputeEnd::Open,
                    DisputeEnd::Won,
                    DisputeEnd::Lost,
                    DisputeEnd::Inquiry,
                ][rng.random_range(0..4)];
                ops.push(MoneyOp::Dispute { end });
                // A charge is disputed once; nothing follows a dispute.
                break;
            }
            _ => {
                let kind = [
                    NoteKind::Refund,
                    NoteKind::CustomerBalance,
                    NoteKind::OutOfBand,
                    NoteKind::Voided,
                ][rng.random_range(0..4)];
                ops.push(MoneyOp::CreditNote { amount, kind });
                if kind != NoteKind::Voided {
                    left -= amount;
                }
            }
        }
    }
    ops
}

/// Plan changes on, by the switch or MODEL_PLAN_CHANGES=1 (to see the test fail on a ledger
/// without proportional plan changes).
pub fn plan_changes() -> bool {
    PLAN_CHANGES || std::env::var("MODEL_PLAN_CHANGES").is_ok_and(|v| v == "1")
}

/// Draws how an invoice was paid (pre-payment credit, the customer's credit balance) and what
/// happened to its money.
fn with_money(rng: &mut StdRng, mut inv: SubInvoice, renewal: bool) -> SubInvoice {
    if inv.total() > 0 && rng.random_bool(0.15) {
        inv.pre_payment_credit = rng.random_range(1..=inv.total() / 2);
    }
    inv.from_balance = renewal && inv.due() > 0 && rng.random_bool(0.15);
    inv.money = money_ops(rng, inv.paid(), true);
    inv
}

/// A random lifecycle of one customer.
pub fn generate(rng: &mut StdRng) -> Lifecycle {
    let mut packs = Vec::new();
    for _ in 0..rng.random_range(0..=2) {
        let quantity = rng.random_range(1..=3);
        let free = rng.random_bool(0.1);
        let money = money_ops(rng, if free { 0 } else { PACK_PRICE * quantity }, false);
        packs.push(Pack {
            quantity,
            free,
            money,
        });
    }
    let mut invoices = Vec::new();
    if rng.random_bool(0.75) {
        let trial = rng.random_bool(0.25);
        let mut plan = rng.random_range(0..PLANS.len());
        let quantity = rng.random_range(1..=2);
        for k in 0..rng.random_range(1..=4) {
            let mut prorations = Vec::new();
            if plan_changes() && k > 0 && rng.random_bool(0.35) {
                // A change with `part` per cent of the period left: the new plan charged for
                // it, the old one credited.
                let to = 1 - plan;
                let part = rng.random_range(1..=99);
                prorations.push((to, PLANS[to].2 * quantity * part / 100));
                prorations.push((plan, -(PLANS[plan].2 * quantity * part / 100)));
                plan = to;
                if rng.random_bool(0.5) {
                    // proration_behavior=always_invoice: an invoice of its own, now.
                    let change = SubInvoice {
                        reason: "subscription_update",
                        plan,
                        quantity,
                        period_line: false,
                        period_amount: 0,
                        prorations: std::mem::take(&mut prorations),
                        pre_payment_credit: 0,
                        from_balance: false,
                        failed_attempt: false,
                        money: Vec::new(),
                    };
                    invoices.push(with_money(rng, change, false));
                }
                // Else Stripe's default create_prorations: billed with the next renewal.
            }
            let inv = SubInvoice {
                reason: if k == 0 {
                    "subscription_create"
                } else {
                    "subscription_cycle"
                },
                plan,
                quantity,
                period_line: true,
                period_amount: if trial && k == 0 {
                    0
                } else {
                    PLANS[plan].2 * quantity
                },
                prorations,
                pre_payment_credit: 0,
                from_balance: false,
                failed_attempt: rng.random_bool(0.15),
                money: Vec::new(),
            };
            invoices.push(with_money(rng, inv, k > 0));
        }
    }
    let mut life = Lifecycle {
        packs,
        top_ups: Vec::new(),
        canceled: !invoices.is_empty() && rng.random_bool(0.3),
        invoices,
        customer_deleted: rng.random_bool(0.2),
        spend_permille: if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(1..=1000)
        },
    };
    // Drawn last, so a seed's other purchases are what they were before auto top-up.
    for _ in 0..rng.random_range(0..=2) {
        life.top_ups.push(money_ops(rng, PACK_PRICE, false));
    }
    life
}

/// One grant the rules promise: its tokens, source, what its purchase paid and had reversed.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub tokens: i64,
    pub source: &'static str,
    pub paid: i64,
    pub reversed: i64,
}

impl Grant {
    /// The README's rule: tokens × reversed ÷ paid, rounded; all of them once all is reversed.
    pub fn revoked(&self) -> i64 {
        if self.paid == 0 || self.reversed == 0 {
            0
        } else if self.reversed >= self.paid {
            self.tokens
        } else {
            // round() of a positive numeric: half away from zero.
            (2 * self.tokens * self.reversed + self.paid) / (2 * self.paid)
        }
    }
}

/// What the money reports of one payment reverse: refunds that did not fail, open or lost
/// disputes (inquiries take nothing), post-payment credit notes still issued (one that
/// refunded counts once, as its refund); at most what was paid.
pub fn reversed(paid: i64, ops: &[MoneyOp]) -> i64 {
    let mut total = 0;
    let mut refunded = 0;
    for op in ops {
        match op {
            MoneyOp::Refund { amount, fails } => {
                if !fails {
                    total += amount;
                    refunded += amount;
                }
            }
            MoneyOp::Dispute { end } => {
                if matches!(end, DisputeEnd::Open | DisputeEnd::Lost) {
                    total += paid - refunded;
                }
            }
            MoneyOp::CreditNote { amount, kind } => {
                if *kind != NoteKind::Voided {
                    total += amount;
                }
                if *kind == NoteKind::Refund {
                    refunded += amount;
                }
            }
        }
    }
    total.min(paid)
}

/// Tokens one invoice grants, by grant key suffix ("" for the period, ":upgrade"), and what a
/// downgrade takes back. Prorations (the `upgrades` branch's rule): each line is worth
/// monthly_tokens × quantity × min(|amount| ÷ (unit amount × quantity), 1), exactly; the net
/// of charging less crediting lines is granted rounded down, or taken back rounded up.
pub fn invoice_grants(inv: &SubInvoice) -> (Vec<(&'static str, i64, &'static str)>, i64) {
    let free = inv.total() <= 0;
    let mut out = Vec::new();
    let monthly = PLANS[inv.plan].1 * inv.quantity;
    if inv.period_line && (inv.period_amount > 0 || (inv.period_amount == 0 && free)) {
        let source = if inv.reason == "subscription_create" {
            "subscription_start"
        } else {
            "plan"
        };
        out.push(("", monthly, source));
    }
    // net × D exactly, D a multiple of every unit amount.
    let d: i128 = PLANS.iter().map(|p| p.2 as i128).product();
    let mut net: i128 = 0;
    for (plan, amount) in &inv.prorations {
        let (_, tokens, unit) = PLANS[*plan];
        let paid_for = (amount.abs()).min(unit * inv.quantity) as i128;
        let worth = tokens as i128 * paid_for * (d / unit as i128);
        net += if *amount > 0 { worth } else { -worth };
    }
    let mut take_back = 0;
    if net >= d {
        out.push((":upgrade", (net / d) as i64, "plan_upgrade"));
    } else if net < 0 {
        take_back = ((-net + d - 1) / d) as i64;
    }
    (out, take_back)
}

/// Invariant (c), apart from the model: an invoice's tokens never exceed its plans' tokens
/// times the part of a period each line pays for (a full period line: all of it; a proration:
/// its amount over the price's; a trial: all of it, as the README's free-invoice rule says).
pub fn period_cap(inv: &SubInvoice) -> f64 {
    let free = inv.total() <= 0;
    let mut cap = 0.0;
    if inv.period_line && (inv.period_amount > 0 || free) {
        cap += (PLANS[inv.plan].1 * inv.quantity) as f64;
    }
    for (plan, amount) in &inv.prorations {
        if *amount > 0 {
            let part = (*amount as f64 / (PLANS[*plan].2 * inv.quantity) as f64).min(1.0);
            cap += PLANS[*plan].1 as f64 * inv.quantity as f64 * part;
        }
    }
    cap
}

/// Everything the rules say the user holds at the end, keyed like the database's grants.
pub struct Expected {
    pub grants: BTreeMap<String, Grant>,
    /// Tokens granted before any money report (what the spend is a share of).
    pub granted: i64,
    /// Tokens downgrades took back.
    pub taken_back: i64,
    pub spent: i64,
}

impl Expected {
    pub fn balance_less_debt(&self) -> i64 {
        self.grants
            .values()
            .map(|g| g.tokens - g.revoked())
            .sum::<i64>()
            - self.taken_back
            - self.spent
    }
    /// Per source: (tokens granted, tokens revoked).
    pub fn by_source(&self) -> BTreeMap<String, (i64, i64)> {
        let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for g in self.grants.values() {
            let e = out.entry(g.source.to_string()).or_default();
            e.0 += g.tokens;
            e.1 += g.revoked();
        }
        out
    }
}

/// The model: the grants of a lifecycle whose objects got the ids `ids` (session, invoice and
/// top-up PaymentIntent ids, in the order of the lifecycle's packs, invoices and top-ups).
pub fn expected(
    life: &Lifecycle,
    sessions: &[String],
    invoices: &[String],
    top_ups: &[String],
) -> Expected {
    let mut grants = BTreeMap::new();
    // An auto top-up is a pack bought with a PaymentIntent, keyed by it.
    for (money, id) in life.top_ups.iter().zip(top_ups) {
        grants.insert(
            id.clone(),
            Grant {
                tokens: PACK_TOKENS,
                source: "auto_top_up",
                paid: PACK_PRICE,
                reversed: reversed(PACK_PRICE, money),
            },
        );
    }
    for (pack, id) in life.packs.iter().zip(sessions) {
        let paid = if pack.free {
            0
        } else {
            PACK_PRICE * pack.quantity
        };
        grants.insert(
            id.clone(),
            Grant {
                tokens: PACK_TOKENS * pack.quantity,
                source: "payg_purchase",
                paid,
                reversed: reversed(paid, &pack.money),
            },
        );
    }
    let mut taken_back = 0;
    for (inv, id) in life.invoices.iter().zip(invoices) {
        let (made, took) = invoice_grants(inv);
        taken_back += took;
        for (suffix, tokens, source) in made {
            grants.insert(
                format!("{id}{suffix}"),
                Grant {
                    tokens,
                    source,
                    paid: inv.paid(),
                    reversed: reversed(inv.paid(), &inv.money),
                },
            );
        }
    }
    let granted: i64 = grants.values().map(|g| g.tokens).sum();
    Expected {
        grants,
        granted,
        taken_back,
        // What the purchases leave to spend (a downgrade may have taken some back).
        spent: (granted - taken_back).max(0) * life.spend_permille / 1000,
    }
}
