//! Prometheus metrics, served at `GET /metrics` on the worker's HTTP server. The code records
//! through the `metrics` facade; `metrics-exporter-prometheus` keeps the values and renders
//! them. Every metric is listed in [`METRICS`] with its help text, which the exporter prints
//! as `# HELP`; the table of metrics in docs/operations.md is compared with a real scrape by a test.
//!
//! Two sources: what this process saw (Stripe calls, claims, webhooks, the rate limiter) and
//! the database's figures (`billing.health()`: the queue, held and failed events, the newest
//! webhook), read again on every scrape so they are never older than the scrape.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::queue::RequestKind;

/// What a metric is, for its `# TYPE` and how the code records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric: its name, kind and help text.
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn metric(name: &'static str, kind: Kind, help: &'static str) -> Metric {
    Metric { name, kind, help }
}

pub const CLAIM_LATENCY: &str = "stripe_billing_claim_latency_seconds";
pub const STRIPE_CALLS: &str = "stripe_billing_stripe_request_duration_seconds";
pub const RATE_LIMIT_WAIT: &str = "stripe_billing_rate_limit_wait_seconds";
pub const REQUESTS: &str = "stripe_billing_requests_total";
pub const WEBHOOKS: &str = "stripe_billing_webhooks_total";
pub const LISTEN_NOTIFY: &str = "stripe_billing_listen_notify";
pub const PRUNED: &str = "stripe_billing_pruned_total";
pub const DATABASE_UP: &str = "stripe_billing_database_up";
pub const QUEUE_DEPTH: &str = "stripe_billing_queue_depth";
pub const QUEUE_OLDEST: &str = "stripe_billing_queue_oldest_age_seconds";
pub const EVENTS_HELD: &str = "stripe_billing_events_held";
pub const EVENTS_FAILED: &str = "stripe_billing_events_failed";
pub const EVENTS_OLDEST: &str = "stripe_billing_events_oldest_age_seconds";
pub const LAST_WEBHOOK: &str = "stripe_billing_webhook_last_received_timestamp_seconds";

/// Every metric the worker exports.
pub const METRICS: &[Metric] = &[
    metric(CLAIM_LATENCY, Kind::Histogram, "How long a request had been ready before a worker claimed it."),
    metric(STRIPE_CALLS, Kind::Histogram, "Stripe API calls by method, endpoint and HTTP status (network_error: no answer)."),
    metric(RATE_LIMIT_WAIT, Kind::Histogram, "How long each Stripe call waited for the rate limiter."),
    metric(REQUESTS, Kind::Counter, "Queued requests handled, by kind and outcome (succeeded, failed, retry, lost)."),
    metric(WEBHOOKS, Kind::Counter, "Webhook deliveries by event type and outcome (applied, duplicate, held, failed, rejected, busy, unavailable, error)."),
    metric(LISTEN_NOTIFY, Kind::Gauge, "1 while notifications wake this worker, 0 when it finds work by polling only."),
    metric(PRUNED, Kind::Counter, "Rows billing.prune() expired or deleted for this worker, by what."),
    metric(DATABASE_UP, Kind::Gauge, "1 when this scrape could read billing.health(), else 0 (the database figures are then stale)."),
    metric(QUEUE_DEPTH, Kind::Gauge, "Requests in the queue by status (pending, running)."),
    metric(QUEUE_OLDEST, Kind::Gauge, "Age of the oldest pending request (since queued) and running request (since claimed); 0 when none."),
    metric(EVENTS_HELD, Kind::Gauge, "Stored events waiting for their user or for data from Stripe; they apply by themselves."),
    metric(EVENTS_FAILED, Kind::Gauge, "Stored events that failed and wait for the operator (billing.reprocess_events())."),
    metric(EVENTS_OLDEST, Kind::Gauge, "Age of the oldest held and failed event (since received); 0 when none."),
    metric(LAST_WEBHOOK, Kind::Gauge, "Unix time the newest event of each mode (test, live) arrived by webhook; 0 when none has."),
];

/// Histogram buckets in seconds: from a fast local call to a Stripe call at its timeout.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the process-wide recorder and describes every metric. Once per process: a second
/// recorder is refused.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .map_err(|e| format!("cannot set up metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("cannot set up metrics: {e}"))?;
    for m in METRICS {
        match m.kind {
            Kind::Counter => describe_counter!(m.name, m.help),
            Kind::Gauge => describe_gauge!(m.name, m.help),
            Kind::Histogram => describe_histogram!(m.name, m.help),
        }
    }
    Ok(handle)
}

/// Keeps the recorder's histogram buffers small between scrapes; runs until the process ends.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// The endpoint label of a Stripe API path: object ids become `{id}`, so the label has a few
/// values, not one per object. `/v1/checkout/sessions/cs_…/expire` →
/// `/v1/checkout/sessions/{id}/expire`.
pub fn endpoint_label(path: &str) -> String {
    // Resources that live under a namespace take two segments before their id.
    const NAMESPACES: [&str; 3] = ["checkout", "billing_portal", "test_helpers"];
    let path = path.split('?').next().unwrap_or("");
    let Some(rest) = path.strip_prefix("/v1/") else {
        return "other".into();
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let collection = if segments.first().is_some_and(|s| NAMESPACES.contains(s)) {
        2
    } else {
        1
    };
    let mut label = String::from("/v1");
    for (i, segment) in segments.iter().enumerate() {
        label.push('/');
        label.push_str(if i == collection { "{id}" } else { segment });
    }
    label
}

/// One Stripe HTTP exchange: `status` is the HTTP status, or None when no answer came.
pub fn stripe_call(method: &str, path: &str, status: Option<u16>, took: Duration) {
    let status = status.map_or_else(|| "network_error".to_string(), |s| s.to_string());
    histogram!(STRIPE_CALLS, "method" => method.to_string(), "endpoint" => endpoint_label(path), "status" => status)
        .record(took.as_secs_f64());
}

pub fn rate_limit_wait(waited: Duration) {
    histogram!(RATE_LIMIT_WAIT).record(waited.as_secs_f64());
}

pub fn claim_latency(seconds: f64) {
    histogram!(CLAIM_LATENCY).record(seconds.max(0.0));
}

/// A request's claim ended: `outcome` is succeeded, failed, retry or lost.
pub fn request_handled(kind: &str, outcome: &'static str) {
    counter!(REQUESTS, "kind" => kind_label(kind), "outcome" => outcome).increment(1);
}

/// Request kinds are a closed set in SQL; anything else is counted as one label.
fn kind_label(kind: &str) -> &'static str {
    kind.parse().map_or("other", RequestKind::as_str)
}

/// A webhook delivery: `event_type` as the verified event says, or "" when it was not verified.
pub fn webhook(event_type: &str, outcome: &'static str) {
    counter!(WEBHOOKS, "type" => event_type_label(event_type), "outcome" => outcome).increment(1);
}

/// An unverified delivery (no type) and an absurdly long type share one label: a forged post
/// must not mint label values.
fn event_type_label(event_type: &str) -> String {
    if event_type.is_empty() || event_type.len() > 100 {
        "unknown".to_string()
    } else {
        event_type.to_string()
    }
}

pub fn listen_notify(working: bool) {
    gauge!(LISTEN_NOTIFY).set(if working { 1.0 } else { 0.0 });
}

/// What one run of `billing.prune()` did.
pub fn pruned(p: &crate::prune::Pruned) {
    for (what, n) in [
        ("requests_expired", p.requests_expired),
        ("requests_deleted", p.requests_deleted),
        ("events_deleted", p.events_deleted),
        ("expiry_warnings_deleted", p.expiry_warnings_deleted),
    ] {
        counter!(PRUNED, "what" => what).increment(n.max(0) as u64);
    }
}

/// The database's figures, one row of `billing.health()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    pub requests_pending: i64,
    pub requests_running: i64,
    pub oldest_pending_seconds: Option<f64>,
    pub oldest_running_seconds: Option<f64>,
    pub events_held: i64,
    pub events_failed: i64,
    pub oldest_held_seconds: Option<f64>,
    pub oldest_failed_seconds: Option<f64>,
    /// Unix seconds.
    pub last_webhook_test: Option<f64>,
    pub last_webhook_live: Option<f64>,
}

/// The SQL that reads [`Health`].
pub const HEALTH_SQL: &str = "SELECT requests_pending, requests_running, oldest_pending_seconds,
        oldest_running_seconds, events_held, events_failed, oldest_held_seconds, oldest_failed_seconds,
        extract(epoch FROM last_webhook_test)::double precision,
        extract(epoch FROM last_webhook_live)::double precision
    FROM billing.health()";

impl Health {
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Health, tokio_postgres::Error> {
        Ok(Health {
            requests_pending: row.try_get(0)?,
            requests_running: row.try_get(1)?,
            oldest_pending_seconds: row.try_get(2)?,
            oldest_running_seconds: row.try_get(3)?,
            events_held: row.try_get(4)?,
            events_failed: row.try_get(5)?,
            oldest_held_seconds: row.try_get(6)?,
            oldest_failed_seconds: row.try_get(7)?,
            last_webhook_test: row.try_get(8)?,
            last_webhook_live: row.try_get(9)?,
        })
    }
}

/// Sets the database gauges from a scrape's read of `billing.health()` (None: it failed, and
/// only `database_up` changes).
pub fn set_health(health: Option<&Health>) {
    gauge!(DATABASE_UP).set(if health.is_some() { 1.0 } else { 0.0 });
    let Some(h) = health else {
        return;
    };
    gauge!(QUEUE_DEPTH, "status" => "pending").set(h.requests_pending as f64);
    gauge!(QUEUE_DEPTH, "status" => "running").set(h.requests_running as f64);
    gauge!(QUEUE_OLDEST, "status" => "pending").set(h.oldest_pending_seconds.unwrap_or(0.0));
    gauge!(QUEUE_OLDEST, "status" => "running").set(h.oldest_running_seconds.unwrap_or(0.0));
    gauge!(EVENTS_HELD).set(h.events_held as f64);
    gauge!(EVENTS_FAILED).set(h.events_failed as f64);
    gauge!(EVENTS_OLDEST, "state" => "held").set(h.oldest_held_seconds.unwrap_or(0.0));
    gauge!(EVENTS_OLDEST, "state" => "failed").set(h.oldest_failed_seconds.unwrap_or(0.0));
    gauge!(LAST_WEBHOOK, "mode" => "test").set(h.last_webhook_test.unwrap_or(0.0));
    gauge!(LAST_WEBHOOK, "mode" => "live").set(h.last_webhook_live.unwrap_or(0.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_leave_the_endpoint_label() {
        for (path, label) in [
            ("/v1/customers", "/v1/customers"),
            ("/v1/customers/cus_Q1a2", "/v1/customers/{id}"),
            ("/v1/checkout/sessions", "/v1/checkout/sessions"),
            (
                "/v1/checkout/sessions/cs_test_a1/expire",
                "/v1/checkout/sessions/{id}/expire",
            ),
            (
                "/v1/checkout/sessions/cs_test_a1/line_items",
                "/v1/checkout/sessions/{id}/line_items",
            ),
            (
                "/v1/billing_portal/configurations",
                "/v1/billing_portal/configurations",
            ),
            ("/v1/billing_portal/sessions", "/v1/billing_portal/sessions"),
            (
                "/v1/subscriptions/sub_1?expand[]=x",
                "/v1/subscriptions/{id}",
            ),
            ("/v1/prices/price_pro", "/v1/prices/{id}"),
            ("/v1/webhook_endpoints", "/v1/webhook_endpoints"),
            ("/elsewhere", "other"),
        ] {
            assert_eq!(endpoint_label(path), label, "{path}");
        }
    }

    #[test]
    fn names_are_unique_and_prometheus_shaped() {
        let mut seen = std::collections::HashSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "duplicate {}", m.name);
            assert!(m.name.starts_with("stripe_billing_"), "{}", m.name);
            assert!(
                m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert!(!m.help.contains('|') && m.help.ends_with('.'), "{}", m.name);
        }
    }

    #[test]
    fn unverified_webhooks_and_unknown_kinds_cannot_mint_labels() {
        assert_eq!(kind_label("checkout"), "checkout");
        assert_eq!(kind_label("whatever"), "other");
        assert_eq!(kind_label("line_items"), "line_items");
        assert_eq!(event_type_label("invoice.paid"), "invoice.paid");
        assert_eq!(event_type_label(""), "unknown");
        assert_eq!(event_type_label(&"x".repeat(100)), "x".repeat(100));
        assert_eq!(event_type_label(&"x".repeat(101)), "unknown");
    }
}
