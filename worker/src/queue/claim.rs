//! The worker's side of the queue: thin calls of the SQL API in `sql/requests/worker.sql`
//! (`billing.claim_requests`, `claim_request`, `finish_request`, `fail_request`) and
//! `billing.link_customer`.
//! The locking (FOR UPDATE SKIP LOCKED, leases) lives in SQL; nothing here decides who owns
//! a row.
//!
//! Each claim increments the row's `attempts`; passing that value back to `finish_request` /
//! `fail_request` fences the write, so a task that outlived its lease cannot overwrite the
//! outcome of a newer claim of the same row (even one by a worker with the same id).

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use crate::db::{Conn, DbError};
use crate::stripe::Rejection;

/// A request row this worker now holds until its lease ends.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: Uuid,
    pub kind: String,
    pub user_id: Uuid,
    pub params: Value,
    /// Claims so far, this one included.
    pub attempts: i32,
    /// The user's Stripe customer, when one is linked already.
    pub stripe_customer_id: Option<String>,
    /// Calls to Stripe for this claim must be over by then: the lease less a safety margin.
    pub work_until: Instant,
    /// When the lease runs out and another claim may take the row.
    pub lease_end: Instant,
}

/// The part of a lease that may be spent calling Stripe. The rest is a margin for writing the
/// outcome and for the delay between our clock reading and the database's: a tenth of the
/// lease, at least 5 s, but at most a quarter of it (only tests use leases under 20 s).
pub fn work_budget(lease: Duration) -> Duration {
    let margin = (lease / 10).max(Duration::from_secs(5).min(lease / 4));
    lease.saturating_sub(margin)
}

/// Claims up to `max_count` ready rows for `lease_seconds`.
pub async fn claim(
    conn: &mut Conn,
    worker: &str,
    max_count: usize,
    lease_seconds: u32,
) -> Result<Vec<Claimed>, DbError> {
    // Read before the query: the database starts the lease later, so deadlines derived from
    // this instant end before the real lease does.
    let claimed_at = Instant::now();
    let lease = Duration::from_secs(u64::from(lease_seconds));
    // Both fit: concurrency is at most 1000 and the lease at most a day (`config`).
    let max_count = i32::try_from(max_count).unwrap_or(i32::MAX);
    let lease_seconds = i32::try_from(lease_seconds).unwrap_or(i32::MAX);
    let rows = conn
        .query(
            "SELECT id, kind, user_id, params, attempts, stripe_customer_id, waited_seconds
             FROM billing.claim_requests($1, $2, $3)",
            &[&worker, &max_count, &lease_seconds],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let waited: Option<f64> = row.try_get("waited_seconds")?;
            crate::telemetry::claim_latency(waited.unwrap_or(0.0));
            claimed(row, claimed_at, lease)
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(DbError::Query)
}

/// Claims the one request `id` for `lease_seconds` under the rules of `claim_requests`
/// (`billing.claim_request`); None when it is not ready, another worker holds it, or another
/// request of the same user is running.
pub async fn claim_one(
    conn: &mut Conn,
    worker: &str,
    id: Uuid,
    lease_seconds: u32,
) -> Result<Option<Claimed>, DbError> {
    let claimed_at = Instant::now();
    let lease = Duration::from_secs(u64::from(lease_seconds));
    let lease_seconds = i32::try_from(lease_seconds).unwrap_or(i32::MAX);
    let rows = conn
        .query(
            "SELECT id, kind, user_id, params, attempts, stripe_customer_id
             FROM billing.claim_request($1, $2, $3)",
            &[&id, &worker, &lease_seconds],
        )
        .await?;
    rows.first()
        .map(|row| claimed(row, claimed_at, lease))
        .transpose()
        .map_err(DbError::Query)
}

/// A claimed row as `claim_requests` and `claim_request` return it.
fn claimed(
    row: &tokio_postgres::Row,
    claimed_at: Instant,
    lease: Duration,
) -> Result<Claimed, tokio_postgres::Error> {
    Ok(Claimed {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        user_id: row.try_get("user_id")?,
        params: row.try_get("params")?,
        attempts: row.try_get("attempts")?,
        stripe_customer_id: row.try_get("stripe_customer_id")?,
        work_until: claimed_at + work_budget(lease),
        lease_end: claimed_at + lease,
    })
}

/// Marks the row succeeded with `result`; false when the claim was lost (the lease ran out
/// and another claim took the row).
pub async fn finish(
    conn: &mut Conn,
    req: &Claimed,
    worker: &str,
    result: &Value,
) -> Result<bool, DbError> {
    let row = conn
        .query_one(
            "SELECT billing.finish_request(request_id => $1, worker => $2, result => $3, attempt => $4)",
            &[&req.id, &worker, result, &req.attempts],
        )
        .await?;
    Ok(row.try_get::<_, Option<bool>>(0)?.unwrap_or(false))
}

/// Records a failed attempt: whether it was transient, and what Stripe answered (its error
/// code and param). The database decides what happens to the row: back to the queue after a
/// delay (transient, within the attempt limit), failed for good, or retried with a new
/// customer when Stripe no longer has the user's. Returns the new status, or None when the
/// claim was lost.
pub async fn fail(
    conn: &mut Conn,
    req: &Claimed,
    worker: &str,
    error: &str,
    retryable: bool,
    stripe: Option<&Rejection>,
) -> Result<Option<String>, DbError> {
    let code = stripe.and_then(|r| r.code.as_deref());
    let param = stripe.and_then(|r| r.param.as_deref());
    let row = conn
        .query_one(
            "SELECT billing.fail_request(request_id => $1, worker => $2, error => $3, attempt => $4,
                                         retryable => $5, stripe_code => $6, stripe_param => $7)",
            &[&req.id, &worker, &error, &req.attempts, &retryable, &code, &param],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Stores the user's Stripe customer (idempotent; raises if the user has another one).
pub async fn link_customer(
    conn: &mut Conn,
    user_id: Uuid,
    customer: &str,
    email: Option<&str>,
) -> Result<(), DbError> {
    conn.query(
        "SELECT billing.link_customer($1, $2, $3)",
        &[&user_id, &customer, &email],
    )
    .await?;
    Ok(())
}

/// The user's linked Stripe customer, if any.
pub async fn customer_of(conn: &mut Conn, user_id: Uuid) -> Result<Option<String>, DbError> {
    let rows = conn
        .query(
            "SELECT stripe_customer_id FROM billing.customers WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    Ok(rows.first().map(|r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_budget_leaves_a_margin() {
        let secs = Duration::from_secs;
        // The default lease: a tenth.
        assert_eq!(work_budget(secs(60)), secs(54));
        // Mid-sized leases keep 5 s.
        assert_eq!(work_budget(secs(30)), secs(25));
        // Short (test) leases keep a quarter.
        assert_eq!(work_budget(secs(2)), Duration::from_millis(1500));
        assert_eq!(work_budget(secs(1)), Duration::from_millis(750));
        // Long leases keep a tenth.
        assert_eq!(work_budget(secs(600)), secs(540));
        // With the 2x rule of `config`, a full Stripe timeout always fits.
        for lease in [2u64, 10, 20, 60, 120, 86_400] {
            assert!(work_budget(secs(lease)) >= secs(lease) / 2 + secs(lease) / 4);
        }
    }
}
