//! Rendering of stored records into Stripe JSON, in the API shape of a given version, and
//! `expand[]` handling.
//!
//! Each object starts from a template derived from Stripe's own fixtures
//! (`emulator/fixtures/templates_*.json`), so fields the emulator does not model still
//! appear with realistic values. The shapes differ where the 2025-03-31 "basil" release
//! moved things: periods (`subscription.current_period_*` before, `items.data[].current_period_*`
//! after), invoice → subscription (`invoice.subscription` + `subscription_details` before,
//! `invoice.parent.subscription_details` after) and an invoice line's price (`price` object
//! before, `pricing.price_details.price` after).

use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::lists::paginate;
use super::store::{
    Customer, Invoice, InvoiceLine, PortalSession, PriceKind, Session, Store, Subscription,
};

const LEGACY: &str = include_str!("../fixtures/templates_v2023-08-16.json");
const BASIL: &str = include_str!("../fixtures/templates_v2025-03-31.basil.json");
/// Charges, PaymentIntents, refunds, disputes, credit notes, invoice payments and webhook
/// endpoints, derived from the response types of the SDK release of each version.
const LEGACY_PAYMENTS: &str = include_str!("../fixtures/templates_payments_v2023-08-16.json");
const BASIL_PAYMENTS: &str = include_str!("../fixtures/templates_payments_v2025-03-31.basil.json");

/// The first version with the "basil" shapes.
pub const BASIL_VERSION: &str = "2025-03-31";

/// How many of an invoice's lines the invoice embeds: one page, the first ten, with `has_more`
/// when there are more (tests/README.md, "invoice lines embedded in an invoice").
pub const EMBEDDED_INVOICE_LINES: usize = 10;

/// The payload shape of an API version: the one notion of "which Stripe shape" for the
/// emulator and the test events (`stripe_billing_tests::events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 2023-08-16 and every version before basil: periods on the subscription,
    /// `invoice.subscription`, `invoice.payment_intent`.
    V2023,
    /// 2025-03-31.basil and later (later releases are rendered like basil): periods on items,
    /// `invoice.parent.subscription_details`, payments as `invoice_payment` objects.
    Basil,
}

impl Shape {
    pub const ALL: [Shape; 2] = [Shape::V2023, Shape::Basil];

    /// The version the tests send for this shape.
    pub fn api_version(self) -> &'static str {
        match self {
            Shape::V2023 => "2023-08-16",
            Shape::Basil => "2025-03-31.basil",
        }
    }

    pub fn of(version: &str) -> Self {
        // Versions are ISO dates (plus a release name), so string order is release order.
        if version < BASIL_VERSION {
            Shape::V2023
        } else {
            Shape::Basil
        }
    }
}

pub struct Templates {
    legacy: Value,
    basil: Value,
}

impl Templates {
    pub fn load() -> Self {
        let merged = |a: &str, b: &str| {
            let mut set: Value = serde_json::from_str(a).expect("templates are JSON");
            let more: Map<String, Value> = serde_json::from_str(b).expect("templates are JSON");
            for (name, template) in more.into_iter().filter(|(k, _)| k != "_source") {
                set[name] = template;
            }
            set
        };
        Self {
            legacy: merged(LEGACY, LEGACY_PAYMENTS),
            basil: merged(BASIL, BASIL_PAYMENTS),
        }
    }

    /// A copy of the template of object `name` (`invoice`, `charge`, …) in this shape.
    pub fn get(&self, shape: Shape, name: &str) -> Value {
        let set = match shape {
            Shape::V2023 => &self.legacy,
            Shape::Basil => &self.basil,
        };
        let t = set[name].clone();
        assert!(t.is_object(), "template {name} exists");
        t
    }
}

fn map(m: &Map<String, Value>) -> Value {
    Value::Object(m.clone())
}

/// Renders records of one store in one shape.
pub struct Renderer<'a> {
    pub templates: &'a Templates,
    pub store: &'a Store,
    pub shape: Shape,
}

impl Renderer<'_> {
    pub fn price(&self, id: &str) -> Value {
        let mut v = self.templates.get(self.shape, "price");
        let Some(p) = self.store.prices.get(id) else {
            v["id"] = json!(id);
            return v;
        };
        v["id"] = json!(p.id);
        v["product"] = json!(p.product);
        v["created"] = json!(p.created);
        v["currency"] = json!(p.currency);
        v["unit_amount"] = json!(p.unit_amount);
        v["unit_amount_decimal"] = json!(p.unit_amount.to_string());
        v["active"] = json!(p.active);
        match p.kind {
            PriceKind::Recurring => {
                v["type"] = json!("recurring");
                v["recurring"]["interval"] = json!(if p.months == 12 { "year" } else { "month" });
                v["recurring"]["interval_count"] = json!(1);
                if let Some(meter) = &p.meter {
                    v["recurring"]["meter"] = json!(meter);
                    v["recurring"]["usage_type"] = json!("metered");
                }
            }
            PriceKind::OneTime => {
                v["type"] = json!("one_time");
                v["recurring"] = Value::Null;
            }
        }
        v
    }

    pub fn customer(&self, c: &Customer) -> Value {
        let mut v = self.templates.get(self.shape, "customer");
        v["id"] = json!(c.id);
        v["created"] = json!(c.created);
        v["email"] = json!(c.email);
        v["name"] = json!(c.name);
        v["description"] = json!(c.description);
        v["phone"] = json!(c.phone);
        v["metadata"] = map(&c.metadata);
        v["address"] = c.address.clone();
        v["preferred_locales"] = json!(c.preferred_locales);
        v["invoice_prefix"] = json!(c.invoice_prefix);
        v
    }

    pub fn session(&self, s: &Session) -> Value {
        let mut v = self.templates.get(self.shape, "checkout.session");
        for (key, value) in [
            ("id", json!(s.id)),
            ("created", json!(s.created)),
            ("expires_at", json!(s.expires_at)),
            ("mode", json!(s.mode)),
            ("status", json!(s.status)),
            ("payment_status", json!(s.payment_status)),
            ("customer", json!(s.customer)),
            ("customer_email", json!(s.customer_email)),
            ("customer_creation", json!(s.customer_creation)),
            ("client_reference_id", json!(s.client_reference_id)),
            ("metadata", map(&s.metadata)),
            ("success_url", json!(s.success_url)),
            ("cancel_url", json!(s.cancel_url)),
            ("currency", json!(s.currency)),
            ("subscription", json!(s.subscription)),
            ("invoice", json!(s.invoice)),
            ("payment_intent", json!(s.payment_intent)),
            ("setup_intent", json!(s.setup_intent)),
        ] {
            v[key] = value;
        }
        // Stripe clears the URL once the session is no longer open.
        v["url"] = if s.status == "open" {
            json!(s.url)
        } else {
            Value::Null
        };
        let has_amounts = s.mode != "setup";
        v["amount_subtotal"] = if has_amounts {
            json!(s.amount_subtotal)
        } else {
            Value::Null
        };
        v["amount_total"] = if has_amounts {
            json!(s.total())
        } else {
            Value::Null
        };
        v["total_details"] = if has_amounts {
            json!({"amount_discount": s.amount_discount, "amount_shipping": 0, "amount_tax": 0})
        } else {
            Value::Null
        };
        v["payment_method_types"] = json!(["card"]);
        v["allow_promotion_codes"] = s
            .params
            .get("allow_promotion_codes")
            .cloned()
            .unwrap_or(Value::Null);
        v["tax_id_collection"] = s
            .params
            .get("tax_id_collection")
            .map(|t| json!({"enabled": t["enabled"]}))
            .unwrap_or(json!({"enabled": false}));
        for key in [
            "locale",
            "billing_address_collection",
            "submit_type",
            "payment_method_collection",
        ] {
            if let Some(p) = s.params.get(key) {
                v[key] = p.clone();
            }
        }
        if s.mode == "payment" {
            let enabled = s
                .params
                .get("invoice_creation")
                .is_some_and(|i| i["enabled"] == true);
            v["invoice_creation"] = json!({"enabled": enabled, "invoice_data": {
                "account_tax_ids": null, "custom_fields": null, "description": null,
                "footer": null, "metadata": {}, "rendering_options": null}});
        }
        if self.shape == Shape::Basil {
            v["discounts"] = json!(s
                .coupon
                .iter()
                .map(|c| json!({"coupon": c, "promotion_code": null}))
                .collect::<Vec<_>>());
        }
        if s.status == "complete" {
            let email = s.customer_email.clone().or_else(|| {
                s.customer
                    .as_ref()
                    .and_then(|c| self.store.customers.get(c))
                    .and_then(|c| c.email.clone())
            });
            v["customer_details"] = json!({"address": null, "email": email, "name": null,
                "phone": null, "tax_exempt": "none", "tax_ids": []});
        }
        v
    }

    /// The session's line items (`object: "item"`). A session-level discount is spread over
    /// the lines in proportion to their amounts, the remainder on the last line.
    fn session_items(&self, s: &Session) -> Vec<Value> {
        let amounts: Vec<i64> = s
            .lines
            .iter()
            .map(|l| self.store.prices.get(&l.price).map_or(0, |p| p.unit_amount) * l.quantity)
            .collect();
        let total: i64 = amounts.iter().sum();
        let mut left = s.amount_discount;
        s.lines
            .iter()
            .zip(&amounts)
            .enumerate()
            .map(|(i, (line, amount))| {
                let discount = if i + 1 == s.lines.len() {
                    left
                } else if total > 0 {
                    s.amount_discount * amount / total
                } else {
                    0
                };
                left -= discount;
                let mut item = self.templates.get(self.shape, "item");
                item["id"] = json!(line.id);
                item["price"] = self.price(&line.price);
                item["quantity"] = json!(line.quantity);
                item["amount_subtotal"] = json!(amount);
                item["amount_discount"] = json!(discount);
                item["amount_tax"] = json!(0);
                item["amount_total"] = json!(amount - discount);
                item["currency"] = json!(s.currency.clone().unwrap_or_else(|| "usd".into()));
                item["description"] = json!(format!("Emulator product for {}", line.price));
                item
            })
            .collect()
    }

    /// The `line_items` list of a session as `expand[]=line_items` includes it: "the first
    /// handful" of items (the emulator's pages are 10 long).
    pub fn session_line_items(&self, s: &Session) -> Value {
        self.line_items_page(s, &Map::new())
            .expect("a first page has no cursor to miss")
    }

    /// `GET /v1/checkout/sessions/{id}/line_items`: one page of the items in the session's
    /// order, through Stripe's pagination (`lists::paginate`: an unknown cursor or both
    /// cursors are a 400).
    pub fn line_items_page(&self, s: &Session, p: &Map<String, Value>) -> Result<Value, ApiError> {
        let items = self.session_items(s);
        let n = items.len() as u64;
        // `paginate` lists the largest key first: the first line gets the largest.
        let key = |i: usize| (0, n - i as u64);
        let cursor = |id: &str| s.lines.iter().position(|l| l.id == id).map(key);
        let keyed = items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (key(i), v))
            .collect();
        let url = format!("/v1/checkout/sessions/{}/line_items", s.id);
        paginate(keyed, p, &url, cursor, "item")
    }

    /// `GET /v1/invoices/{id}/lines`: one page of the invoice's lines in its order (pending
    /// prorations first), through Stripe's pagination like a session's line items.
    pub fn invoice_lines_page(
        &self,
        inv: &Invoice,
        p: &Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let n = inv.lines.len() as u64;
        let key = |i: usize| (0, n - i as u64);
        let cursor = |id: &str| inv.lines.iter().position(|l| l.id == id).map(key);
        let keyed = inv
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| (key(i), self.invoice_line(inv, l)))
            .collect();
        let url = format!("/v1/invoices/{}/lines", inv.id);
        paginate(keyed, p, &url, cursor, "line_item")
    }

    pub fn portal(&self, p: &PortalSession) -> Value {
        let mut v = self.templates.get(self.shape, "billing_portal.session");
        v["id"] = json!(p.id);
        v["created"] = json!(p.created);
        v["customer"] = json!(p.customer);
        v["configuration"] = json!(p.configuration);
        v["return_url"] = json!(p.return_url);
        v["url"] = json!(p.url);
        v["locale"] = json!(p.locale);
        v["flow"] = p.flow.clone().unwrap_or(Value::Null);
        v["livemode"] = json!(false);
        v
    }

    pub fn subscription(&self, s: &Subscription) -> Value {
        let mut v = self.templates.get(self.shape, "subscription");
        let items: Vec<Value> = s
            .items
            .iter()
            .map(|item| {
                let mut i = self.templates.get(self.shape, "subscription_item");
                i["id"] = json!(item.id);
                i["subscription"] = json!(s.id);
                i["created"] = json!(item.created);
                i["price"] = self.price(&item.price);
                i["quantity"] = json!(item.quantity);
                if self.shape == Shape::Basil {
                    i["current_period_start"] = json!(item.period_start);
                    i["current_period_end"] = json!(item.period_end);
                }
                i
            })
            .collect();
        v["items"] = json!({"object": "list", "data": items, "has_more": false,
            "total_count": s.items.len(), "url": format!("/v1/subscription_items?subscription={}", s.id)});
        if self.shape == Shape::V2023 {
            let (start, end) = s.period();
            v["current_period_start"] = json!(start);
            v["current_period_end"] = json!(end);
        }
        for (key, value) in [
            ("id", json!(s.id)),
            ("customer", json!(s.customer)),
            ("status", json!(s.status)),
            ("metadata", map(&s.metadata)),
            ("created", json!(s.created)),
            ("start_date", json!(s.created)),
            ("billing_cycle_anchor", json!(s.billing_cycle_anchor)),
            ("cancel_at_period_end", json!(s.cancel_at_period_end)),
            ("cancel_at", json!(s.cancel_at)),
            ("canceled_at", json!(s.canceled_at)),
            ("ended_at", json!(s.ended_at)),
            ("latest_invoice", json!(s.latest_invoice)),
            ("currency", json!(s.currency)),
            ("trial_start", json!(s.trial_start)),
            ("trial_end", json!(s.trial_end)),
            (
                "pause_collection",
                s.pause_collection.clone().unwrap_or(Value::Null),
            ),
        ] {
            v[key] = value;
        }
        v["cancellation_details"]["reason"] = json!(s.cancellation_reason);
        v
    }

    fn invoice_line(&self, inv: &Invoice, line: &InvoiceLine) -> Value {
        let mut v = self.templates.get(self.shape, "line_item");
        v["id"] = json!(line.id);
        v["amount"] = json!(line.amount);
        v["currency"] = json!(inv.currency);
        v["description"] = json!(line.description);
        v["period"] = json!({"start": line.period_start, "end": line.period_end});
        v["quantity"] = json!(line.quantity);
        v["subscription"] = json!(inv.subscription);
        let product = self
            .store
            .prices
            .get(&line.price)
            .map(|p| p.product.clone());
        let unit = self
            .store
            .prices
            .get(&line.price)
            .map(|p| p.unit_amount.to_string());
        match self.shape {
            Shape::V2023 => {
                v["price"] = self.price(&line.price);
                v["proration"] = json!(line.proration);
                v["type"] = json!(if line.invoice_item.is_some() {
                    "invoiceitem"
                } else {
                    "subscription"
                });
                v["invoice_item"] = json!(line.invoice_item);
                v["subscription_item"] = json!(line.subscription_item);
                v["amount_excluding_tax"] = json!(line.amount);
                v["unit_amount_excluding_tax"] = json!(unit);
            }
            Shape::Basil => {
                v["invoice"] = json!(inv.id);
                v["subtotal"] = json!(line.amount);
                v["parent"]["subscription_item_details"] = json!({
                    "invoice_item": line.invoice_item, "proration": line.proration,
                    "proration_details": {"credited_items": null},
                    "subscription": inv.subscription, "subscription_item": line.subscription_item});
                // Stripe's proration lines carry no unit amount in basil (rules table).
                let unit = if line.proration { None } else { unit };
                v["pricing"] = json!({"type": "price_details", "unit_amount_decimal": unit,
                    "price_details": {"price": line.price, "product": product}});
            }
        }
        v
    }

    pub fn invoice(&self, inv: &Invoice) -> Value {
        let mut v = self.templates.get(self.shape, "invoice");
        let lines: Vec<Value> = inv
            .lines
            .iter()
            .take(EMBEDDED_INVOICE_LINES)
            .map(|l| self.invoice_line(inv, l))
            .collect();
        let finalized = inv.finalized_at;
        for (key, value) in [
            ("id", json!(inv.id)),
            ("number", json!(inv.number)),
            ("customer", json!(inv.customer)),
            ("customer_email", json!(inv.customer_email)),
            ("billing_reason", json!(inv.billing_reason)),
            ("status", json!(inv.status)),
            ("created", json!(inv.created)),
            ("hosted_invoice_url", json!(inv.hosted_invoice_url)),
            ("effective_at", json!(finalized)),
            ("period_start", json!(inv.period_start)),
            ("period_end", json!(inv.period_end)),
            ("currency", json!(inv.currency)),
            ("subtotal", json!(inv.subtotal)),
            ("subtotal_excluding_tax", json!(inv.subtotal)),
            ("total", json!(inv.total())),
            ("total_excluding_tax", json!(inv.total())),
            ("amount_due", json!(inv.amount_due())),
            ("amount_paid", json!(inv.amount_paid())),
            (
                "amount_remaining",
                json!(inv.amount_due() - inv.amount_paid()),
            ),
            ("attempt_count", json!(inv.attempt_count)),
            (
                "post_payment_credit_notes_amount",
                json!(inv.post_payment_credit),
            ),
            ("attempted", json!(inv.attempt_count > 0)),
            ("starting_balance", json!(0)),
            ("ending_balance", json!(0)),
            (
                "total_discount_amounts",
                json!(if inv.discount > 0 {
                    vec![json!({"amount": inv.discount, "discount": "di_emulator"})]
                } else {
                    vec![]
                }),
            ),
        ] {
            v[key] = value;
        }
        v["status_transitions"] = json!({"finalized_at": finalized, "marked_uncollectible_at": null,
            "paid_at": inv.paid_at, "voided_at": null});
        v["next_payment_attempt"] = if inv.status == "open" && !inv.requires_action {
            json!(inv.created + 3 * 86_400)
        } else {
            Value::Null
        };
        v["lines"] = json!({"object": "list", "data": lines,
            "has_more": inv.lines.len() > EMBEDDED_INVOICE_LINES,
            "total_count": inv.lines.len(), "url": format!("/v1/invoices/{}/lines", inv.id)});
        let sub_metadata = inv.subscription_metadata.as_ref().map(map);
        match self.shape {
            Shape::V2023 => {
                v["subscription"] = json!(inv.subscription);
                v["subscription_details"] = json!({"metadata": sub_metadata});
                v["paid"] = json!(inv.status == "paid");
                v["payment_intent"] = json!(inv.payment_intent);
                v["charge"] = json!(inv.charge);
            }
            Shape::Basil => {
                v["parent"] = match &inv.subscription {
                    Some(sub) => json!({"type": "subscription_details", "quote_details": null,
                        "subscription_details": {"metadata": sub_metadata, "subscription": sub}}),
                    None => Value::Null,
                };
            }
        }
        v
    }

    /// Renders any stored object by id (used by `expand[]`).
    pub fn by_id(&self, id: &str) -> Option<Value> {
        let s = self.store;
        s.customers
            .get(id)
            .map(|c| self.customer(c))
            .or_else(|| s.subscriptions.get(id).map(|x| self.subscription(x)))
            .or_else(|| s.invoices.get(id).map(|x| self.invoice(x)))
            .or_else(|| s.sessions.get(id).map(|x| self.session(x)))
            .or_else(|| s.charges.get(id).map(|x| self.charge(x)))
            .or_else(|| s.payment_intents.get(id).map(|x| self.payment_intent(x)))
            .or_else(|| s.refunds.get(id).map(|x| self.refund(x)))
            .or_else(|| s.disputes.get(id).map(|x| self.dispute(x)))
            .or_else(|| s.credit_notes.get(id).map(|x| self.credit_note(x)))
    }
}
