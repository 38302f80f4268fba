//! Stripe webhook events for tests, in both API shapes, built on the emulator's object
//! templates (`emulator/fixtures/templates_*.json`, every field each version has) so that
//! every payload carries the many fields real events have.
use serde_json::{json, Value};
use std::sync::OnceLock;
use stripe_emulator::render::Templates;
use stripe_emulator::store::ids;

pub use stripe_emulator::render::Shape;

/// The emulator's object template (every field the version has) for `resource`.
fn fixture(shape: Shape, resource: &str) -> Value {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(Templates::load).get(shape, resource)
}

/// A billing period in Unix seconds.
#[derive(Clone, Copy, Debug)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

/// Overwrites `target`'s keys with `patch`'s (one level deep, like a Stripe update).
fn merge(mut target: Value, patch: Value) -> Value {
    if let (Some(t), Value::Object(p)) = (target.as_object_mut(), patch) {
        for (k, v) in p {
            t.insert(k, v);
        }
    }
    target
}

/// Wraps an object in an event envelope.
pub fn envelope(shape: Shape, id: &str, event_type: &str, created: i64, object: Value) -> Value {
    merge(
        fixture(shape, "event"),
        json!({
            "id": id, "type": event_type, "created": created, "api_version": shape.api_version(),
            "livemode": false, "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "data": {"object": object}
        }),
    )
}

/// Any object of the emulator's templates (`charge`, `refund`, `dispute`, `credit_note`,
/// `invoice_payment`, `customer`, ...) in `shape`, with `patch`'s keys set over it: money
/// events carry every field real ones do, like the session and invoice builders' do.
pub fn object(shape: Shape, resource: &str, patch: Value) -> Value {
    merge(fixture(shape, resource), patch)
}

/// Fields of a Checkout Session event.
pub struct Session<'a> {
    pub id: &'a str,
    pub mode: &'a str,
    pub payment_status: &'a str,
    pub customer: &'a str,
    pub user_id: Option<&'a str>,
    pub price_id: &'a str,
    pub subscription: Option<&'a str>,
    pub invoice: Option<&'a str>,
    pub amount_total: i64,
    /// The request our checkout made the session for (its metadata names it); None for a
    /// session created elsewhere (a Payment Link, the Dashboard).
    pub request_id: Option<&'a str>,
}

pub fn checkout_session(shape: Shape, s: &Session) -> Value {
    let mut metadata = json!({"price_id": s.price_id});
    if let Some(user) = s.user_id {
        metadata["user_id"] = json!(user);
    }
    if let Some(request) = s.request_id {
        metadata["request_id"] = json!(request);
    }
    merge(
        fixture(shape, "checkout.session"),
        json!({
            "id": s.id, "object": "checkout.session", "mode": s.mode, "status": "complete",
            "payment_status": s.payment_status, "customer": s.customer,
            "client_reference_id": s.user_id, "subscription": s.subscription, "invoice": s.invoice,
            "amount_total": s.amount_total, "amount_subtotal": s.amount_total, "currency": "usd",
            "metadata": metadata, "livemode": false,
            "payment_intent": if s.mode == "payment" && s.amount_total > 0 { json!(ids::long("pi")) } else { Value::Null }
        }),
    )
}

/// Fields of a subscription object.
pub struct Sub<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub status: &'a str,
    pub price_id: &'a str,
    pub period: Period,
    pub cancel_at_period_end: bool,
    pub ended_at: Option<i64>,
    pub user_id: Option<&'a str>,
}

pub fn subscription(shape: Shape, s: &Sub) -> Value {
    let mut item = fixture(shape, "subscription_item");
    item["price"]["id"] = json!(s.price_id);
    item["subscription"] = json!(s.id);
    item["quantity"] = json!(1);
    let metadata = match s.user_id {
        Some(u) => json!({"user_id": u, "price_id": s.price_id}),
        None => json!({}),
    };
    let mut sub = merge(
        fixture(shape, "subscription"),
        json!({
            "id": s.id, "object": "subscription", "customer": s.customer, "status": s.status,
            "cancel_at_period_end": s.cancel_at_period_end,
            "cancel_at": if s.cancel_at_period_end { json!(s.period.end) } else { Value::Null },
            "canceled_at": s.ended_at, "ended_at": s.ended_at, "metadata": metadata, "livemode": false
        }),
    );
    match shape {
        Shape::V2023 => {
            sub["current_period_start"] = json!(s.period.start);
            sub["current_period_end"] = json!(s.period.end);
            if let Some(o) = item.as_object_mut() {
                o.remove("current_period_start");
                o.remove("current_period_end");
            }
        }
        Shape::Basil => {
            if let Some(o) = sub.as_object_mut() {
                o.remove("current_period_start");
                o.remove("current_period_end");
            }
            item["current_period_start"] = json!(s.period.start);
            item["current_period_end"] = json!(s.period.end);
        }
    }
    sub["items"] = json!({"object": "list", "data": [item], "has_more": false});
    sub
}

/// One invoice line.
pub struct Line<'a> {
    pub price_id: &'a str,
    pub amount: i64,
    pub proration: bool,
    pub period: Period,
}

/// Fields of an invoice object.
pub struct Invoice<'a> {
    pub id: &'a str,
    pub subscription: &'a str,
    pub customer: &'a str,
    pub billing_reason: &'a str,
    pub paid: bool,
    pub lines: Vec<Line<'a>>,
    pub user_id: Option<&'a str>,
}

pub fn invoice(shape: Shape, inv: &Invoice) -> Value {
    let total: i64 = inv.lines.iter().map(|l| l.amount).sum();
    let metadata = match inv.user_id {
        Some(u) => json!({"user_id": u}),
        None => json!({}),
    };
    let lines: Vec<Value> = inv
        .lines
        .iter()
        .map(|l| {
            let mut line = fixture(shape, "line_item");
            line["amount"] = json!(l.amount);
            line["quantity"] = json!(1);
            line["period"] = json!({"start": l.period.start, "end": l.period.end});
            match shape {
                Shape::V2023 => {
                    line["price"] = merge(fixture(shape, "price"), json!({"id": l.price_id}));
                    line["proration"] = json!(l.proration);
                    line["subscription"] = json!(inv.subscription);
                    line["type"] = json!("subscription");
                }
                Shape::Basil => {
                    line["pricing"] = json!({"type": "price_details",
                        "price_details": {"price": l.price_id, "product": "prod_test"},
                        "unit_amount_decimal": null});
                    line["parent"] = json!({"type": "subscription_item_details",
                        "subscription_item_details": {"invoice_item": null, "proration": l.proration,
                            "proration_details": {"credited_items": null},
                            "subscription": inv.subscription, "subscription_item": "si_test"}});
                }
            }
            // A period line of quantity 1 charges its price's unit amount; a proration's unit
            // amount is its price's, which the line does not say: unknown until a test sets it
            // (set_unit_amount).
            set_unit_amount(shape, &mut line, (!l.proration).then_some(l.amount));
            line
        })
        .collect();
    let mut out = merge(
        fixture(shape, "invoice"),
        json!({
            "id": inv.id, "object": "invoice", "customer": inv.customer,
            "billing_reason": inv.billing_reason, "status": if inv.paid { "paid" } else { "open" },
            "total": total, "subtotal": total, "amount_due": total.max(0), "amount_paid": if inv.paid { total.max(0) } else { 0 },
            "amount_remaining": if inv.paid { 0 } else { total.max(0) }, "currency": "usd",
            "livemode": false, "lines": {"object": "list", "data": lines, "has_more": false}
        }),
    );
    let o = out.as_object_mut().expect("invoice is an object");
    match shape {
        Shape::V2023 => {
            o.insert("subscription".into(), json!(inv.subscription));
            o.insert("subscription_details".into(), json!({"metadata": metadata}));
            o.insert("paid".into(), json!(inv.paid));
            o.remove("parent");
        }
        Shape::Basil => {
            // Basil removed these fields; a test that still found them would prove nothing.
            o.remove("subscription");
            o.remove("subscription_details");
            o.remove("paid");
            o.insert(
                "parent".into(),
                json!({"type": "subscription_details", "quote_details": null,
                "subscription_details": {"subscription": inv.subscription, "metadata": metadata}}),
            );
        }
    }
    out
}

/// Sets the unit amount of an invoice line object, where each API shape says it: basil's
/// `pricing.unit_amount_decimal` (a decimal string), the expanded `price`'s `unit_amount` and
/// `unit_amount_decimal` before (Stripe's OpenAPI: line_item.pricing, price). None: no unit
/// amount, as for a tiered price. Basil's proration lines carry `pricing.unit_amount_decimal:
/// null` whatever the price (recorded Stripe responses, emulator/README.md's rules table), so
/// theirs stays null: the catalog's synced price says it ([`price`]).
pub fn set_unit_amount(shape: Shape, line: &mut Value, unit: Option<i64>) {
    let decimal = unit.map(|u| u.to_string());
    match shape {
        Shape::V2023 => {
            line["price"]["unit_amount"] = json!(unit);
            line["price"]["unit_amount_decimal"] = json!(decimal);
        }
        Shape::Basil => {
            let proration = line["parent"]["subscription_item_details"]["proration"] == true
                || line["parent"]["invoice_item_details"]["proration"] == true;
            line["pricing"]["unit_amount_decimal"] = if proration {
                Value::Null
            } else {
                json!(decimal)
            };
        }
    }
}

/// A monthly Stripe Price (the same object in both API shapes): `unit` cents of usd, or None
/// for a tiered price (Stripe's `unit_amount` and `unit_amount_decimal` are null then).
pub fn price(id: &str, unit: Option<i64>, created: i64) -> Value {
    json!({
        "id": id, "object": "price", "active": true,
        "billing_scheme": if unit.is_some() { "per_unit" } else { "tiered" },
        "created": created, "currency": "usd", "custom_unit_amount": null, "livemode": false,
        "lookup_key": null, "metadata": {}, "nickname": null, "product": ids::long("prod"),
        "recurring": {"interval": "month", "interval_count": 1, "meter": null,
                      "trial_period_days": null, "usage_type": "licensed"},
        "tax_behavior": "unspecified", "tiers_mode": if unit.is_some() { Value::Null } else { json!("graduated") },
        "transform_quantity": null, "type": "recurring",
        "unit_amount": unit, "unit_amount_decimal": unit.map(|u| u.to_string()),
    })
}

/// A new Stripe-shaped event id: random, like Stripe's, so no test can lean on their order.
pub fn event_id() -> String {
    ids::long("evt")
}

/// Wraps an object in an event envelope with a fresh random id.
pub fn event(shape: Shape, event_type: &str, created: i64, object: Value) -> Value {
    envelope(shape, &event_id(), event_type, created, object)
}

/// The signing secret the webhook tests configure.
pub const TEST_SECRET: &str = "whsec_test_secret";

/// The current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Serialises an event and signs it now with `secret`, as Stripe would: (body, header).
pub fn signed(event: &Value, secret: &str) -> (String, String) {
    let body = serde_json::to_string_pretty(event).expect("serialisable event");
    let header =
        stripe_billing_core::signature::signature_header(body.as_bytes(), secret, unix_now());
    (body, header)
}

/// Delivers an event to `billing.handle_stripe_webhook` on `client` and returns its answer.
pub async fn deliver(
    client: &tokio_postgres::Client,
    event: &Value,
) -> Result<Value, tokio_postgres::Error> {
    let (body, header) = signed(event, TEST_SECRET);
    let row = client
        .query_one(
            "SELECT billing.handle_stripe_webhook($1, $2)",
            &[&body, &header],
        )
        .await?;
    Ok(row.get(0))
}

/// Normalises `body` with the one event normaliser both editions run
/// (`billing._normalize_event`): its value, or its error as `SQLSTATE: message`.
pub async fn normalise(client: &tokio_postgres::Client, body: &str) -> Result<Value, String> {
    client
        .query_one("SELECT billing._normalize_event($1::text)", &[&body])
        .await
        .map(|row| row.get::<_, Option<Value>>(0).unwrap_or(Value::Null))
        .map_err(|e| {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
            format!("{}: {}", db.code().code(), db.message())
        })
}
