//! The API's SQL: each call runs as the user exactly as PostgREST would run it (one
//! transaction, `role` = `authenticated`, the verified claims in `request.jwt.claims`, the
//! request headers SQL reads in `request.headers`), so it gets the RPC path's rules and
//! row-level security and nothing else. The worker's database role must be allowed to
//! `SET ROLE authenticated` (a member of it, as Supabase's `postgres` is).

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use super::{ApiError, ApiState, Call, ACQUIRE_TIMEOUT};
use crate::db::{Conn, DbError};
use crate::http::auth::Caller;
use crate::queue::{self, Claimed};

/// Becomes the caller for the rest of the transaction.
const AS_USER: &str = "SELECT set_config('role', 'authenticated', true), \
     set_config('request.jwt.claims', $1, true), set_config('request.headers', $2, true)";

/// Back to the worker's own role, without the caller's claims.
const AS_WORKER: &str = "SELECT set_config('role', 'none', true), \
     set_config('request.jwt.claims', '', true), set_config('request.headers', '', true)";

const REQUEST_CHECKOUT: &str = "SELECT billing.request_checkout(price_id => $1, mode => $2, \
     success_url => $3, cancel_url => $4, project_id => $5::text::uuid, coupon => $6, \
     allow_promotion_codes => coalesce($7::boolean, false), quantity => coalesce($8::integer, 1), \
     account_id => $9::text::uuid)";

const REQUEST_PORTAL: &str =
    "SELECT billing.request_portal(return_url => $1, account_id => $2::text::uuid)";

const AWAIT_REQUEST: &str = "SELECT billing.await_request($1, $2)";

/// A queued request, and the claim on it when this worker got it.
pub struct Queued {
    pub id: Uuid,
    pub claimed: Option<Claimed>,
}

/// Queues the call's request as the caller and, in the same transaction, claims it for this
/// worker. Claiming before the commit means the NOTIFY that wakes other workers (sent at
/// commit) can never find the row still pending.
pub async fn queue(
    api: &ApiState,
    caller: &Caller,
    idempotency_key: Option<&str>,
    call: &Call,
) -> Result<Queued, ApiError> {
    let mut conn = api.ctx.db.get_within(ACQUIRE_TIMEOUT).await?;
    let claims = caller.claims.to_string();
    let headers = match idempotency_key {
        Some(key) => json!({"idempotency-key": key}),
        None => json!({}),
    }
    .to_string();
    let worker = api.ctx.worker_id.as_str();
    let lease_seconds = api.lease_seconds;
    let mut failure = None;
    let result = conn
        .in_transaction(async |conn: &mut Conn| {
            if let Err(e) = conn.query(AS_USER, &[&claims, &headers]).await {
                failure = Some(ApiError::cannot_become_user(&e));
                return Err(e);
            }
            let id = request(conn, call).await?;
            conn.query(AS_WORKER, &[]).await?;
            let claimed = queue::claim_one(conn, worker, id, lease_seconds).await?;
            Ok(Queued { id, claimed })
        })
        .await;
    result.map_err(|e| failure.unwrap_or_else(|| e.into()))
}

async fn request(conn: &mut Conn, call: &Call) -> Result<Uuid, DbError> {
    let row = match call {
        Call::Checkout(b) => {
            conn.query_one(
                REQUEST_CHECKOUT,
                &[
                    &b.price_id,
                    &b.mode,
                    &b.success_url,
                    &b.cancel_url,
                    &b.project_id,
                    &b.coupon,
                    &b.allow_promotion_codes,
                    &b.quantity,
                    &b.account_id,
                ],
            )
            .await?
        }
        Call::Portal(b) => {
            conn.query_one(REQUEST_PORTAL, &[&b.return_url, &b.account_id])
                .await?
        }
    };
    Ok(row.try_get(0)?)
}

/// Claims the pending request `id` for this worker (outside any user's transaction).
pub async fn claim(api: &ApiState, id: Uuid) -> Result<Option<Claimed>, ApiError> {
    let mut conn = api.ctx.db.get_within(ACQUIRE_TIMEOUT).await?;
    Ok(queue::claim_one(&mut conn, &api.ctx.worker_id, id, api.lease_seconds).await?)
}

/// The request's state as `billing.await_request` reports it to the caller, after waiting up
/// to `wait` for it to finish (no wait when it is finished already).
pub async fn await_outcome(
    api: &ApiState,
    caller: &Caller,
    id: Uuid,
    wait: Duration,
) -> Result<Value, ApiError> {
    let mut conn = api.ctx.db.get_within(ACQUIRE_TIMEOUT).await?;
    let claims = caller.claims.to_string();
    // At most --api-wait-ms, itself at most 60 s (config), so this fits.
    let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    let mut failure = None;
    let result = conn
        .in_transaction(async |conn: &mut Conn| {
            if let Err(e) = conn.query(AS_USER, &[&claims, &"{}"]).await {
                failure = Some(ApiError::cannot_become_user(&e));
                return Err(e);
            }
            let row = conn.query_one(AWAIT_REQUEST, &[&id, &wait_ms]).await?;
            Ok(row.try_get::<_, Value>(0)?)
        })
        .await;
    result.map_err(|e| failure.unwrap_or_else(|| e.into()))
}
