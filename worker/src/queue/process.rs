//! What happens to one claimed request: the Stripe calls for its kind, then exactly one write
//! of the outcome (`finish_request` or `fail_request`) back to the row.
//!
//! Every Stripe call carries an idempotency key derived from the row (or, for the customer,
//! from the user), so repeating a request after a crash, a lost lease or a requeue returns
//! the object created the first time instead of a second one.
//!
//! The calls run within the claim's `work_until` (see `claim::work_budget`); what does not fit
//! is requeued, so no call of this claim is still running when another claim takes the row.

use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::claim::{self, Claimed};
use super::kinds::{self, RequestKind, UnknownKind};
use super::outcome::Outcome;
use crate::backoff;
use crate::db::{Conn, Db, DbError};
use crate::stripe::Stripe;

/// The error a request gets when the worker runs without a Stripe key.
pub const NOT_CONFIGURED: &str = "billing is not configured: STRIPE_SECRET_KEY is not set";

/// What request tasks share.
pub struct Ctx {
    pub db: Db,
    /// None when no secret key is configured.
    pub stripe: Option<Stripe>,
    pub worker_id: String,
    /// Cancelled only when the shutdown timeout runs out. A shutdown itself merely stops
    /// the claiming: requests already claimed are finished, Stripe calls included.
    pub abort: CancellationToken,
}

/// Runs one claimed request to its outcome and records it.
pub async fn process(ctx: Arc<Ctx>, req: Claimed) {
    let started = Instant::now();
    // The lock costs a second connection and two statements; only a user waits on it.
    let awaited = req.kind.parse().is_ok_and(RequestKind::awaited);
    let lock = if awaited {
        RequestLock::take(&ctx.db, &req).await
    } else {
        None
    };
    let outcome = match execute(&ctx, &req).await {
        Ok(result) => Outcome::Done(result),
        Err(outcome) => outcome,
    };
    record(&ctx, &req, outcome, started).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
}

/// The request's advisory lock (`billing._request_lock_key`), held on a connection of its own
/// while this task serves a request a user awaits: `billing.await_request` waits on it, and so wakes the
/// moment the outcome is committed instead of polling. Without it (the database refused) the
/// request is still served and waiting callers poll. A lock not released in order (the task
/// was stopped) closes its connection, which releases it.
struct RequestLock {
    conn: Conn,
    request: uuid::Uuid,
    released: bool,
}

impl RequestLock {
    async fn take(db: &Db, req: &Claimed) -> Option<RequestLock> {
        let mut conn = db.get().await.ok()?;
        conn.query(
            "SELECT pg_advisory_lock(billing._request_lock_key($1))",
            &[&req.id],
        )
        .await
        .map_err(|e| tracing::debug!(request_id = %req.id, error = %e, "no request lock; waiters will poll"))
        .ok()?;
        Some(RequestLock {
            conn,
            request: req.id,
            released: false,
        })
    }

    async fn release(mut self) {
        let unlocked = self
            .conn
            .query(
                "SELECT pg_advisory_unlock(billing._request_lock_key($1))",
                &[&self.request],
            )
            .await;
        self.released = unlocked.is_ok();
    }
}

impl Drop for RequestLock {
    fn drop(&mut self) {
        if !self.released {
            self.conn.discard();
        }
    }
}

async fn execute(ctx: &Ctx, req: &Claimed) -> Result<Value, Outcome> {
    let Some(stripe) = &ctx.stripe else {
        return Err(Outcome::fail(NOT_CONFIGURED));
    };
    let kind: RequestKind = req
        .kind
        .parse()
        .map_err(|e: UnknownKind| Outcome::fail(e.to_string()))?;
    kinds::execute(kind, ctx, stripe, req).await
}

/// Writes the outcome. Postgres may be briefly away (a restart): keep trying until the lease
/// ends; after that the row is someone else's to retry, and the idempotency keys make that
/// retry return the same Stripe objects. (A write that arrives late is harmless: the claim's
/// attempt number fences it off from a newer claim.)
async fn record(ctx: &Ctx, req: &Claimed, outcome: Outcome, started: Instant) {
    let mut failures = 0;
    loop {
        match write(ctx, req, &outcome).await {
            Ok(status) => {
                log_outcome(req, &outcome, status.as_deref(), started);
                return;
            }
            Err(e) if !e.is_transient() => {
                tracing::error!(request_id = %req.id, error = %e, "the database refused the request's outcome");
                return;
            }
            Err(e) => {
                failures += 1;
                let wait = backoff::DB_BACKOFF.full_jitter(failures, &mut rand::rng());
                if Instant::now() + wait >= req.lease_end {
                    tracing::error!(request_id = %req.id, error = %e,
                        "cannot record the request's outcome before the lease ends; it will be claimed again");
                    return;
                }
                tracing::warn!(request_id = %req.id, error = %e, retry_in_ms = wait.as_millis() as u64,
                    "cannot record the request's outcome, retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One attempt to write the outcome; returns the row's new status (None: claim lost).
async fn write(ctx: &Ctx, req: &Claimed, outcome: &Outcome) -> Result<Option<String>, DbError> {
    let mut conn = ctx.db.get().await?;
    let worker = ctx.worker_id.as_str();
    match outcome {
        Outcome::Done(result) => Ok(claim::finish(&mut conn, req, worker, result)
            .await?
            .then(|| "succeeded".to_string())),
        Outcome::Retry(error) => claim::fail(&mut conn, req, worker, error, true, None).await,
        Outcome::Fail(rejection) => {
            claim::fail(
                &mut conn,
                req,
                worker,
                &rejection.message,
                false,
                Some(rejection),
            )
            .await
        }
    }
}

fn log_outcome(req: &Claimed, outcome: &Outcome, status: Option<&str>, started: Instant) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    crate::telemetry::request_handled(
        &req.kind,
        match status {
            None => "lost",
            Some("succeeded") => "succeeded",
            Some("failed") => "failed",
            Some(_) => "retry",
        },
    );
    let Some(status) = status else {
        tracing::warn!(request_id = %req.id, kind = %req.kind, elapsed_ms,
            "claim lost before the outcome was written (lease expired); another claim decides");
        return;
    };
    match outcome {
        Outcome::Done(result) => {
            let session_id = result
                .get("session_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            tracing::info!(request_id = %req.id, kind = %req.kind, attempts = req.attempts,
                elapsed_ms, session_id, "request succeeded")
        }
        Outcome::Retry(error) => tracing::warn!(
            request_id = %req.id, kind = %req.kind, attempts = req.attempts, elapsed_ms,
            status, error = %error, "request failed, transiently"),
        Outcome::Fail(rejection) => tracing::warn!(
            request_id = %req.id, kind = %req.kind, attempts = req.attempts, elapsed_ms,
            status, error = %rejection.message, code = rejection.code.as_deref().unwrap_or(""),
            "request refused"),
    }
}
