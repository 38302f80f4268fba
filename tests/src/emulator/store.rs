//! The emulator's in-memory state: catalog, objects, events, request log, idempotency cache,
//! injected faults, and a clock.
//!
//! Objects are kept as plain records and rendered into Stripe's JSON on demand
//! (`render.rs`), because the same subscription must come out in two API shapes: the one
//! the request asked for (`Stripe-Version`) and the account's version for webhooks.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `recurring` prices are monthly; `one_time` prices are for payment-mode checkouts.
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
}

#[derive(Debug, Clone)]
pub struct SessionLine {
    pub id: String,
    pub price: String,
    pub quantity: i64,
}

#[derive(Debug, Clone)]
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
}

impl Subscription {
    pub fn period(&self) -> (i64, i64) {
        self.items
            .first()
            .map(|i| (i.period_start, i.period_end))
            .unwrap_or((self.created, self.created))
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
    pub number: String,
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
    pub currency: String,
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
    InFlight {
        fingerprint: Value,
    },
    Done {
        fingerprint: Value,
        status: u16,
        body: String,
        request_id: String,
    },
}

/// Event times follow a clock that never goes backwards and can be moved forward (a renewal
/// happens at the period end, like Stripe's test clocks), so `created` stays consistent
/// with the periods in the objects.
#[derive(Debug, Default, Clone)]
pub struct Clock {
    offset: i64,
    last: i64,
}

pub fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Clock {
    pub fn now(&mut self) -> i64 {
        self.last = self.last.max(real_now() + self.offset);
        self.last
    }
    pub fn advance_to(&mut self, t: i64) {
        if t > self.now() {
            self.offset = t - real_now();
            self.last = t;
        }
    }
}

/// Everything mutable, behind one mutex in the app state.
#[derive(Default)]
pub struct Store {
    pub prices: BTreeMap<String, Price>,
    pub coupons: BTreeMap<String, Coupon>,
    pub portal_configuration: String,
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

const SECONDS_PER_DAY: i64 = 86_400;

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Proleptic Gregorian calendar, counted in 400-year eras (146097 days each).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)
}

/// `anchor` plus `months` calendar months (UTC), clamped to the month's last day the way
/// Stripe bills a subscription anchored on the 31st.
pub fn add_months(anchor: i64, months: i64) -> i64 {
    let days = anchor.div_euclid(SECONDS_PER_DAY);
    let secs = anchor.rem_euclid(SECONDS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m - 1) + months;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * SECONDS_PER_DAY + secs
}

/// `12 Feb 2026`, as in Stripe's proration line descriptions.
pub fn format_date(ts: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d) = civil_from_days(ts.div_euclid(SECONDS_PER_DAY));
    format!("{d} {} {y}", MONTHS[(m - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months() {
        // 2024-01-31T12:00:00Z
        let jan31 = 1_706_702_400;
        assert_eq!(add_months(jan31, 1), 1_709_208_000); // 2024-02-29T12:00:00Z
        assert_eq!(add_months(jan31, 2), 1_711_886_400); // 2024-03-31T12:00:00Z
        assert_eq!(add_months(jan31, 12), 1_738_324_800); // 2025-01-31T12:00:00Z
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(format_date(jan31), "31 Jan 2024");
    }

    #[test]
    fn clock_is_monotonic_and_advances() {
        let mut c = Clock::default();
        let a = c.now();
        c.advance_to(a + 1000);
        assert!(c.now() >= a + 1000);
        c.advance_to(a); // never backwards
        assert!(c.now() >= a + 1000);
    }

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
