//! The emulator's in-memory state: catalog, objects, events, request log, idempotency cache,
//! injected faults, and a clock.
//!
//! Objects are kept as plain records and rendered into Stripe's JSON on demand
//! (`render.rs`), because the same subscription must come out in two API shapes: the one
//! the request asked for (`Stripe-Version`) and the account's version for webhooks.

use std::collections::{BTreeMap, HashMap};

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use super::clock::{add_months, format_date, real_now, Clock};
pub use super::credit_notes::CreditNote;
pub use super::events::DropRule;
pub use super::payments::{Charge, Dispute, PaymentIntent, Refund, WebhookEndpoint};

/// `recurring` prices bill every `months` months (1 or 12); `one_time` prices are for
/// payment-mode checkouts and first invoices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceKind {
    Recurring,
    OneTime,
}

#[derive(Debug, Clone, Serialize)]
pub struct Price {
    pub id: String,
    pub kind: PriceKind,
    pub unit_amount: i64,
    pub currency: String,
    pub product: String,
    pub created: i64,
    /// Billing interval of a recurring price in months (1 = month, 12 = year); 0 for one-time.
    pub months: i64,
    /// An archived price (`active: false`) cannot be bought.
    pub active: bool,
    /// The Billing Meter a metered price bills (`recurring.meter`, `usage_type` metered).
    pub meter: Option<String>,
}

impl Price {
    pub fn is_recurring(&self) -> bool {
        self.kind == PriceKind::Recurring
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Coupon {
    pub id: String,
    pub percent_off: Option<f64>,
    pub amount_off: Option<i64>,
}

impl Coupon {
    pub fn discount_on(&self, amount: i64) -> i64 {
        match (self.percent_off, self.amount_off) {
            (Some(p), _) => ((amount as f64) * p / 100.0).round() as i64,
            (None, Some(a)) => a.min(amount),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Customer {
    pub id: String,
    pub created: i64,
    pub email: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub phone: Option<String>,
    pub metadata: Map<String, Value>,
    pub address: Value,
    pub preferred_locales: Vec<Value>,
    pub invoice_prefix: String,
    /// `DELETE /v1/customers/{id}` keeps the id: a retrieve answers the deleted stub.
    pub deleted: bool,
}

/// The account's customer-portal configuration (`bpc_…`), when one has been saved.
#[derive(Debug, Clone)]
pub struct PortalConfiguration {
    pub id: String,
    pub created: i64,
}

#[derive(Debug, Clone)]
pub struct SessionLine {
    pub id: String,
    pub price: String,
    pub quantity: i64,
}

/// Checkout sessions expire after 24 hours unless `expires_at` says otherwise.
pub const SESSION_LIFETIME: i64 = 24 * 3600;

#[derive(Debug, Clone, Default)]
pub struct Session {
    pub id: String,
    pub created: i64,
    pub expires_at: i64,
    pub mode: String,
    pub status: String,
    pub payment_status: String,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub customer_creation: Option<String>,
    pub client_reference_id: Option<String>,
    pub metadata: Map<String, Value>,
    pub subscription_metadata: Map<String, Value>,
    pub lines: Vec<SessionLine>,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub url: String,
    pub currency: Option<String>,
    pub amount_subtotal: i64,
    pub amount_discount: i64,
    pub coupon: Option<String>,
    pub subscription: Option<String>,
    pub invoice: Option<String>,
    pub payment_intent: Option<String>,
    pub setup_intent: Option<String>,
    /// The validated request parameters, for fields that are echoed verbatim.
    pub params: Map<String, Value>,
}

impl Session {
    /// What the session charges: `amount_total`, the subtotal less the discount.
    pub fn total(&self) -> i64 {
        self.amount_subtotal - self.amount_discount
    }
}

#[derive(Debug, Clone)]
pub struct PortalSession {
    pub id: String,
    pub created: i64,
    pub customer: String,
    pub configuration: String,
    pub return_url: Option<String>,
    pub url: String,
    pub locale: Option<String>,
    pub flow: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct SubItem {
    pub id: String,
    pub price: String,
    pub quantity: i64,
    pub created: i64,
    pub period_start: i64,
    pub period_end: i64,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub status: String,
    pub items: Vec<SubItem>,
    pub metadata: Map<String, Value>,
    pub created: i64,
    pub billing_cycle_anchor: i64,
    /// Number of completed billing periods; period `n` is `anchor + n months`.
    pub cycle: i64,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    pub canceled_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub latest_invoice: Option<String>,
    pub currency: String,
    pub trial_start: Option<i64>,
    pub trial_end: Option<i64>,
    /// `{"behavior": …, "resumes_at": …}` while collection is paused.
    pub pause_collection: Option<Value>,
    /// `cancellation_details.reason` once canceled.
    pub cancellation_reason: Option<String>,
    /// Proration lines (`create_prorations`) waiting for the next invoice.
    pub pending_lines: Vec<InvoiceLine>,
    /// Billing interval of the subscription's prices in months.
    pub months: i64,
}

impl Subscription {
    pub fn period(&self) -> (i64, i64) {
        self.items
            .first()
            .map(|i| (i.period_start, i.period_end))
            .unwrap_or((self.created, self.created))
    }
    /// End of billing period number `cycle` (0 = the first) counted from the anchor.
    pub fn period_end(&self, cycle: i64) -> i64 {
        add_months(self.billing_cycle_anchor, (cycle + 1) * self.months.max(1))
    }
}

#[derive(Debug, Clone)]
pub struct InvoiceLine {
    pub id: String,
    pub price: String,
    pub quantity: i64,
    pub amount: i64,
    pub period_start: i64,
    pub period_end: i64,
    pub proration: bool,
    pub description: String,
    pub subscription_item: Option<String>,
    /// Proration lines come from invoice items.
    pub invoice_item: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Invoice {
    pub id: String,
    /// Assigned when the invoice is finalized; drafts have none.
    pub number: Option<String>,
    pub customer: String,
    pub customer_email: Option<String>,
    pub subscription: Option<String>,
    pub subscription_metadata: Option<Map<String, Value>>,
    pub billing_reason: String,
    pub status: String,
    pub lines: Vec<InvoiceLine>,
    pub created: i64,
    pub period_start: i64,
    pub period_end: i64,
    pub subtotal: i64,
    pub discount: i64,
    pub attempt_count: i64,
    pub paid_at: Option<i64>,
    pub payment_intent: Option<String>,
    /// The charge that paid the invoice (with `payment_intent`).
    pub charge: Option<String>,
    /// Sum of the issued (not voided) credit notes of a paid invoice.
    pub post_payment_credit: i64,
    pub currency: String,
    pub finalized_at: Option<i64>,
    pub hosted_invoice_url: Option<String>,
    /// The last payment attempt needs the customer (3-D Secure).
    pub requires_action: bool,
}

impl Invoice {
    pub fn total(&self) -> i64 {
        self.subtotal - self.discount
    }
    /// A credit (negative total) is not charged; Stripe moves it to the customer balance.
    pub fn amount_due(&self) -> i64 {
        self.total().max(0)
    }
    pub fn amount_paid(&self) -> i64 {
        if self.status == "paid" {
            self.amount_due()
        } else {
            0
        }
    }
}

/// A created event: its exact payload bytes are what gets signed and delivered.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub payload: String,
    /// Whether the event reached the webhook endpoint (`GET /v1/events?delivery_success=…`).
    pub delivery: DeliveryStatus,
}

/// Delivery of an event to the emulator's webhook URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// No webhook URL was set when the event was created: nothing to deliver.
    NoEndpoint,
    /// Not attempted yet (a control call with `"deliver": false`, or still being sent).
    Pending,
    Succeeded,
    /// The last attempt failed (an error status, no answer, or dropped on purpose).
    Failed,
}

/// One API request as seen by `GET /_emulator/requests`.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub id: String,
    pub method: String,
    pub path: String,
    pub params: Value,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    pub status: u16,
    pub replayed: bool,
    pub fault: Option<String>,
    pub time: i64,
}

/// A queued failure for matching requests (`POST /_emulator/faults`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// Exact path, or a prefix ending in `*` (`/v1/*`).
    pub path: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub should_retry: Option<bool>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    /// The failure happens once Stripe began executing the request (an internal error):
    /// the answer is stored under the request's idempotency key and replayed.
    #[serde(default)]
    pub during_execution: bool,
    /// The request executes (and its answer is stored) at once, but the answer is held back
    /// this long: an answer lost in the network, or a client that dies waiting, after Stripe
    /// did the work.
    #[serde(default)]
    pub answer_delay_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

impl Fault {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let path_ok = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => self.path == path,
        };
        path_ok
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// What an idempotency key maps to: a request still running, or its stored response.
#[derive(Debug, Clone)]
pub enum Idempotent {
    InFlight,
    Done {
        fingerprint: Value,
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
        request_id: String,
    },
}

/// Everything mutable, behind one mutex in the app state.
#[derive(Default)]
pub struct Store {
    pub prices: BTreeMap<String, Price>,
    pub coupons: BTreeMap<String, Coupon>,
    pub portal_configuration: Option<PortalConfiguration>,
    pub customers: BTreeMap<String, Customer>,
    pub sessions: BTreeMap<String, Session>,
    pub portal_sessions: BTreeMap<String, PortalSession>,
    pub subscriptions: BTreeMap<String, Subscription>,
    pub invoices: BTreeMap<String, Invoice>,
    pub events: Vec<StoredEvent>,
    pub requests: Vec<RequestRecord>,
    pub idempotency: HashMap<(String, String), Idempotent>,
    pub faults: Vec<Fault>,
    pub clock: Clock,
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    pub invoice_counter: u64,
    pub payment_intents: BTreeMap<String, PaymentIntent>,
    pub charges: BTreeMap<String, Charge>,
    pub refunds: BTreeMap<String, Refund>,
    pub disputes: BTreeMap<String, Dispute>,
    pub credit_notes: BTreeMap<String, CreditNote>,
    /// Endpoints registered with `POST /_emulator/webhook_endpoints` (listed, not delivered to).
    pub webhook_endpoints: Vec<WebhookEndpoint>,
    /// The id and creation time under which the emulator's own webhook URL is listed.
    pub own_endpoint: (String, i64),
    /// `POST /_emulator/webhook/drop`: deliveries that fail as if the endpoint were down.
    pub drop_rule: Option<DropRule>,
    /// Saved cards (`pm_…`): attached by Checkout with `setup_future_usage`, or by
    /// `POST /v1/payment_methods/{test card}/attach`.
    pub payment_methods: BTreeMap<String, super::intents::PaymentMethod>,
    /// Events an API call emits although it answers with an error (a declined PaymentIntent's
    /// `payment_intent.payment_failed`); `api::process` sends them with the error.
    pub failed_call_events: Vec<StoredEvent>,
    /// Creation order of customers and subscriptions, for lists (`created` has one-second
    /// resolution, so objects of one second are ordered by this).
    pub sequence: HashMap<String, u64>,
    /// Billing Meters and the meter events recorded (`meters.rs`).
    pub meters: super::meters::Meters,
}

impl Store {
    /// Takes one use of the first fault matching the request.
    pub fn take_fault(&mut self, method: &str, path: &str) -> Option<Fault> {
        let index = self.faults.iter().position(|f| f.matches(method, path))?;
        let fault = &mut self.faults[index];
        let taken = fault.clone();
        fault.count = fault.count.saturating_sub(1);
        if fault.count == 0 {
            self.faults.remove(index);
        }
        Some(taken)
    }

    /// A customer that exists and was not deleted.
    pub fn live_customer(&self, id: &str) -> Option<&Customer> {
        self.customers.get(id).filter(|c| !c.deleted)
    }

    /// Records that `id` was created now (for the order of lists).
    pub fn register(&mut self, id: &str) {
        let next = self.sequence.len() as u64 + 1;
        self.sequence.entry(id.to_string()).or_insert(next);
    }

    /// Sort key of a listed object: newest first means the largest key first.
    pub fn order_key(&self, created: i64, id: &str) -> (i64, u64) {
        (created, self.sequence.get(id).copied().unwrap_or(0))
    }

    pub fn next_invoice_number(&mut self, prefix: &str) -> String {
        self.invoice_counter += 1;
        format!("{prefix}-{:04}", self.invoice_counter)
    }
}

/// A Stripe-looking id: `prefix` + random alphanumerics.
pub fn new_id(prefix: &str, len: usize) -> String {
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), len)
    )
}

/// Ids in the lengths Stripe uses for each object.
pub mod ids {
    use super::new_id;
    pub fn customer() -> String {
        new_id("cus_", 14)
    }
    /// 66 characters like Stripe's, the maximum the GET schema allows.
    pub fn checkout_session() -> String {
        new_id("cs_test_a1", 56)
    }
    pub fn long(prefix: &str) -> String {
        new_id(&format!("{prefix}_1"), 23)
    }
    pub fn short(prefix: &str) -> String {
        new_id(&format!("{prefix}_"), 14)
    }
    pub fn request() -> String {
        new_id("req_", 14)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_used_up() {
        let mut s = Store::default();
        s.faults
            .push(serde_json::from_str(r#"{"path":"/v1/*","status":500,"count":2}"#).unwrap());
        assert!(s.take_fault("POST", "/v1/customers").is_some());
        assert!(s.take_fault("GET", "/other").is_none());
        assert!(s.take_fault("GET", "/v1/x").is_some());
        assert!(s.take_fault("GET", "/v1/x").is_none());
        assert_eq!(ids::checkout_session().len(), 66);
    }
}
