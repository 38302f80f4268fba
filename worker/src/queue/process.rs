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

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::claim::{self, Claimed};
use super::kinds::checkout::{self, CheckoutParams, PortalParams};
use crate::backoff;
use crate::db::{Db, DbError};
use crate::stripe::{Bounds, Stripe, StripeError};

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

/// How a request ended in this claim.
#[derive(Debug)]
enum Outcome {
    /// The result for `finish_request`.
    Done(Value),
    /// Transient: back to the queue.
    Retry(String),
    /// Permanent: the row fails with this message.
    Fail(String),
}

impl From<StripeError> for Outcome {
    fn from(e: StripeError) -> Outcome {
        match e {
            StripeError::Transient(message) => Outcome::Retry(message),
            StripeError::Rejected(message) => Outcome::Fail(message),
        }
    }
}

impl From<DbError> for Outcome {
    fn from(e: DbError) -> Outcome {
        if e.is_transient() {
            // Unreachable, restarting or a lost race: the next claim may get through.
            return Outcome::Retry(e.to_string());
        }
        match e.as_db_error() {
            // The database refused (e.g. the user already has another customer): final.
            Some(db) => Outcome::Fail(db.message().to_string()),
            None => Outcome::Fail(e.to_string()),
        }
    }
}

/// A 2xx answer that lacks what we need is final: a retry with the same idempotency key
/// would replay the very same answer.
fn malformed(problem: String) -> Outcome {
    Outcome::Fail(format!(
        "{problem}; Stripe replays this answer for the same idempotency key, so the request is not retried"
    ))
}

/// Runs one claimed request to its outcome and records it.
pub async fn process(ctx: Arc<Ctx>, req: Claimed) {
    let started = Instant::now();
    let outcome = match execute(&ctx, &req).await {
        Ok(result) => Outcome::Done(result),
        Err(outcome) => outcome,
    };
    record(&ctx, &req, outcome, started).await;
}

async fn execute(ctx: &Ctx, req: &Claimed) -> Result<Value, Outcome> {
    let Some(stripe) = &ctx.stripe else {
        return Err(Outcome::Fail(NOT_CONFIGURED.into()));
    };
    let bounds = Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    };
    match req.kind.as_str() {
        "checkout" => {
            let params = CheckoutParams::from_json(&req.params).map_err(Outcome::Fail)?;
            // The customer comes from billing.customers (via the claim) or is created and
            // linked here, never from the row's parameters: one user, one customer.
            let customer = match &req.stripe_customer_id {
                Some(customer) => customer.clone(),
                None => create_customer(ctx, stripe, req, params.email.as_deref()).await?,
            };
            let form = checkout::session_form(req.id, req.user_id, &customer, &params);
            let key = format!("checkout-{}", req.id);
            let session = stripe
                .post("/v1/checkout/sessions", &form, &key, bounds)
                .await?;
            checkout::session_result(&session, &customer).map_err(malformed)
        }
        "portal" => {
            let params = PortalParams::from_json(&req.params).map_err(Outcome::Fail)?;
            let customer = req.stripe_customer_id.clone().ok_or_else(|| {
                Outcome::Fail("no billing account yet: the user has no Stripe customer".into())
            })?;
            let form = checkout::portal_form(&customer, &params);
            let key = format!("portal-{}", req.id);
            let session = stripe
                .post("/v1/billing_portal/sessions", &form, &key, bounds)
                .await?;
            checkout::session_result(&session, &customer).map_err(malformed)
        }
        "customer" => {
            let customer = match &req.stripe_customer_id {
                Some(customer) => customer.clone(),
                None => {
                    let email = req.params.get("email").and_then(Value::as_str);
                    create_customer(ctx, stripe, req, email).await?
                }
            };
            Ok(json!({"customer": customer}))
        }
        other => Err(Outcome::Fail(format!(
            "unknown request kind {:?}",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

/// Creates the user's Stripe customer and links it. The key is per user, so concurrent or
/// repeated requests of one user end up with one customer.
async fn create_customer(
    ctx: &Ctx,
    stripe: &Stripe,
    req: &Claimed,
    email: Option<&str>,
) -> Result<String, Outcome> {
    let form = checkout::customer_form(req.user_id, email);
    let key = format!("customer-{}", req.user_id);
    let bounds = Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    };
    let created = stripe.post("/v1/customers", &form, &key, bounds).await?;
    let customer = checkout::customer_id(&created).map_err(malformed)?;
    let mut conn = ctx.db.get().await?;
    claim::link_customer(&mut conn, req.user_id, &customer, email).await?;
    tracing::info!(request_id = %req.id, user_id = %req.user_id, customer = %customer, "linked new Stripe customer");
    Ok(customer)
}

/// Writes the outcome. Postgres may be briefly away (a restart): keep trying until the lease
/// ends; after that the row is someone else's to retry, and the idempotency keys make that
/// retry return the same Stripe objects. (A write that arrives late is harmless: the claim's
/// attempt number fences it off from a newer claim.)
async fn record(ctx: &Ctx, req: &Claimed, outcome: Outcome, started: Instant) {
    let retry_after_ms = match &outcome {
        Outcome::Retry(_) => {
            let failures = u32::try_from(req.attempts).unwrap_or(1);
            let wait = backoff::REQUEUE_BACKOFF.equal_jitter(failures, &mut rand::rng());
            Some(i32::try_from(wait.as_millis()).unwrap_or(i32::MAX))
        }
        _ => None,
    };
    let mut failures = 0;
    loop {
        match write(ctx, req, &outcome, retry_after_ms).await {
            Ok(status) => {
                log_outcome(req, &outcome, status.as_deref(), retry_after_ms, started);
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
async fn write(
    ctx: &Ctx,
    req: &Claimed,
    outcome: &Outcome,
    retry_after_ms: Option<i32>,
) -> Result<Option<String>, DbError> {
    let mut conn = ctx.db.get().await?;
    let worker = ctx.worker_id.as_str();
    match outcome {
        Outcome::Done(result) => Ok(claim::finish(&mut conn, req, worker, result)
            .await?
            .then(|| "succeeded".to_string())),
        Outcome::Retry(error) => claim::fail(&mut conn, req, worker, error, retry_after_ms).await,
        Outcome::Fail(error) => claim::fail(&mut conn, req, worker, error, None).await,
    }
}

fn log_outcome(
    req: &Claimed,
    outcome: &Outcome,
    status: Option<&str>,
    retry_after_ms: Option<i32>,
    started: Instant,
) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
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
        Outcome::Retry(error) if status == "pending" => tracing::warn!(
            request_id = %req.id, kind = %req.kind, attempts = req.attempts, elapsed_ms,
            retry_after_ms, error = %error, "request failed, requeued"),
        Outcome::Retry(error) | Outcome::Fail(error) => tracing::warn!(
            request_id = %req.id, kind = %req.kind, attempts = req.attempts, elapsed_ms,
            status, error = %error, "request failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_of_failures() {
        let retry = |o: Outcome| matches!(o, Outcome::Retry(_));
        let fail = |o: Outcome| matches!(o, Outcome::Fail(_));
        assert!(retry(StripeError::Transient("HTTP 502".into()).into()));
        assert!(fail(StripeError::Rejected("No such price".into()).into()));
        assert!(retry(DbError::Timeout.into()));
        assert!(retry(DbError::Busy(4).into()));
        assert!(fail(DbError::RowCount(0).into()));
    }

    #[test]
    fn a_2xx_without_the_expected_fields_fails_for_good() {
        let session = json!({"id": "cs_1", "url": null});
        let outcome = checkout::session_result(&session, "cus_1").map_err(malformed);
        match outcome {
            Err(Outcome::Fail(message)) => {
                assert!(message.starts_with("Stripe's session response has no id or url"));
                assert!(message.contains("not retried"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let outcome = checkout::customer_id(&json!({"object": "customer"})).map_err(malformed);
        assert!(matches!(outcome, Err(Outcome::Fail(_))), "{outcome:?}");
    }
}
