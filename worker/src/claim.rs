//! The worker's side of the queue: thin calls of the SQL API in `sql/04_requests.sql`
//! (`billing.claim_requests`, `finish_request`, `fail_request`) and `billing.link_customer`.
//! The locking (FOR UPDATE SKIP LOCKED, leases) lives in SQL; nothing here decides who owns
//! a row.

use serde_json::Value;
use uuid::Uuid;

use crate::db::{Conn, DbError};

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
}

/// Claims up to `max_count` ready rows for `lease_seconds`.
pub async fn claim(
    conn: &mut Conn,
    worker: &str,
    max_count: usize,
    lease_seconds: u32,
) -> Result<Vec<Claimed>, DbError> {
    // Both fit: concurrency is at most 1000 and the lease at most a day (config.rs).
    let max_count = i32::try_from(max_count).unwrap_or(i32::MAX);
    let lease_seconds = i32::try_from(lease_seconds).unwrap_or(i32::MAX);
    let rows = conn
        .query(
            "SELECT id, kind, user_id, params, attempts, stripe_customer_id
             FROM billing.claim_requests($1, $2, $3)",
            &[&worker, &max_count, &lease_seconds],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Claimed {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                user_id: row.try_get("user_id")?,
                params: row.try_get("params")?,
                attempts: row.try_get("attempts")?,
                stripe_customer_id: row.try_get("stripe_customer_id")?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(DbError::Query)
}

/// Marks the row succeeded with `result`; false when the claim was lost (the lease ran out
/// and another worker took the row).
pub async fn finish(
    conn: &mut Conn,
    id: Uuid,
    worker: &str,
    result: &Value,
) -> Result<bool, DbError> {
    let row = conn
        .query_one(
            "SELECT billing.finish_request($1, $2, $3)",
            &[&id, &worker, result],
        )
        .await?;
    Ok(row.try_get::<_, Option<bool>>(0)?.unwrap_or(false))
}

/// Records a failed attempt. With `retry_after_ms` the row goes back to the queue (until the
/// database's attempt limit), without it the row fails for good. Returns the new status, or
/// None when the claim was lost.
pub async fn fail(
    conn: &mut Conn,
    id: Uuid,
    worker: &str,
    error: &str,
    retry_after_ms: Option<i32>,
) -> Result<Option<String>, DbError> {
    let row = conn
        .query_one(
            "SELECT billing.fail_request($1, $2, $3, $4)",
            &[&id, &worker, &error, &retry_after_ms],
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
