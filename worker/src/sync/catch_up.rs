//! Catching up from Stripe's events API: list the events of the types the product applies
//! created since where the last catch-up got to (less a margin, within Stripe's 30-day
//! window), and ingest each, oldest first. A webhook and a catch-up of the same event apply
//! once: the event id is the key of `billing.stripe_events`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::list_all;
use crate::db::Db;
use crate::stripe::Stripe;
use stripe_billing_core::event::APPLIED_TYPES;

/// Stripe's `types` filter takes at most 20 names.
const TYPES_PER_LIST: usize = 20;

/// What one catch-up did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events Stripe listed.
    pub listed: usize,
    /// Of those, events the database did not have (missed deliveries).
    pub new: usize,
    /// Of the new ones, those whose effects failed or wait (see billing.stripe_events).
    pub not_applied: usize,
}

/// One catch-up run.
pub async fn run_once(
    db: &Db,
    stripe: &Stripe,
    margin: Duration,
    abort: &CancellationToken,
) -> Result<Report, String> {
    let margin_seconds = i32::try_from(margin.as_secs()).unwrap_or(86_400);
    // No connection is held while Stripe lists (minutes, for a long gap): the pool keeps none
    // spare for the catch-up, and the health check and metrics would wait for it.
    let since: SystemTime = db
        .get()
        .await
        .map_err(|e| e.to_string())?
        .query_one("SELECT billing.catch_up_since($1)", &[&margin_seconds])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let since_unix = since
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Everything created before the first answer is in the listing.
    let mut checked_until: Option<SystemTime> = None;
    let mut events: Vec<Value> = Vec::new();
    for types in APPLIED_TYPES.chunks(TYPES_PER_LIST) {
        let query = json!({"created": {"gte": since_unix}, "types": types});
        let listing = list_all(stripe, "/v1/events", &query, abort)
            .await
            .map_err(|e| format!("listing events: {e}"))?;
        checked_until = match (checked_until, listing.date) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        events.extend(listing.data);
    }
    // Oldest first, as Stripe created them (same-second order is the database's to settle).
    let mut seen = std::collections::HashSet::new();
    events.retain(|e| seen.insert(e.get("id").cloned()));
    events.sort_by_key(|e| e.get("created").and_then(Value::as_i64).unwrap_or(0));
    let mut report = Report {
        listed: events.len(),
        ..Report::default()
    };
    let mut conn = db.get().await.map_err(|e| e.to_string())?;
    for event in &events {
        let payload = event.to_string();
        // A conflict with a webhook of the same object is retried, not the end of the run.
        let answer: Value = conn
            .query_one_retrying_conflicts("SELECT billing.ingest_api_event($1)", &[&payload])
            .await
            .map_err(|e| format!("ingesting {}: {e}", event["id"]))?
            .get(0);
        if answer["duplicate"] == json!(false) {
            report.new += 1;
            if answer["processed"] != json!(true) {
                report.not_applied += 1;
            }
        }
    }
    let until = checked_until.unwrap_or_else(SystemTime::now);
    let (listed, new) = (report.listed as i32, report.new as i32);
    conn.query_one(
        "SELECT billing.record_catch_up($1, $2, $3)::text",
        &[&until, &listed, &new],
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(report)
}

/// Catches up at start and then every `interval`, until `token` is cancelled.
pub async fn run_loop(
    db: Db,
    stripe: Stripe,
    interval: Duration,
    margin: Duration,
    token: CancellationToken,
) {
    loop {
        match run_once(&db, &stripe, margin, &token).await {
            Ok(r) if r.new > 0 => tracing::warn!(
                listed = r.listed,
                new = r.new,
                not_applied = r.not_applied,
                "catch-up found events that were never delivered; applied them"
            ),
            Ok(r) => tracing::info!(listed = r.listed, "catch-up: nothing missed"),
            Err(e) if token.is_cancelled() => {
                tracing::debug!(error = %e, "catch-up stopped by shutdown");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "catch-up failed; trying again at the next interval")
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
