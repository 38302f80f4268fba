//! The retrievals the event effects ask for, when a webhook alone cannot settle something:
//! - `refresh`: two reports of a subscription in the same second disagree, and the lifecycle
//!   cannot order them; Stripe's current object, as of its answer's `Date`, is applied as the
//!   newest report (`billing.ingest_retrieved`). Also an invoice with its payments (basil and
//!   later send neither its PaymentIntent nor its charge with invoice events), queued by 0.2.0.
//!   Also a credit note's refund whose amount no event reported (`GET /v1/refunds/{id}`): before
//!   basil a credit note names its refund without an amount, and before acacia Stripe sends no
//!   `refund.*` event for it. And the invoices a PaymentIntent paid (`GET /v1/invoice_payments`),
//!   asked only when a basil refund or dispute names a payment that no purchase is linked to,
//!   never per renewal (`billing.store_invoice_payments` links them and settles what the
//!   payment's recorded refunds and disputes take). Also a price whose amount the catalog
//!   lacks (basil's proration lines carry none), stored by `billing.store_price`;
//! - `line_items`: a session our checkout did not create sold something; webhooks do not carry
//!   line items, so they are fetched (`billing.store_line_items`), which applies the event that
//!   waited for them. Also every line of an invoice whose events carry one page of them
//!   (`lines.has_more`), so that its grants count them all (`billing.store_invoice_lines`).
//!
//! Both are GETs: nothing is created, so no idempotency key is needed.

use serde_json::{json, Value};

use super::Ctx;
use crate::queue::claim::Claimed;
use crate::queue::outcome::Outcome;
use crate::stripe::{Answer, Bounds, Stripe};

/// The Stripe id the row asks for, checked against the id's form before it goes into a path.
fn object_id<'a>(req: &'a Claimed, prefix: &str) -> Result<&'a str, Outcome> {
    req.params
        .get("object_id")
        .and_then(Value::as_str)
        .filter(|id| super::is_stripe_id(id, prefix))
        .ok_or_else(|| {
            Outcome::fail(format!(
                "invalid retrieval parameters: object_id must be a {prefix}… id"
            ))
        })
}

fn bounds<'a>(ctx: &'a Ctx, req: &Claimed) -> Bounds<'a> {
    Bounds {
        until: req.work_until,
        abort: &ctx.abort,
    }
}

/// `GET /v1/subscriptions/{id}`, applied as the authoritative state; or
/// `GET /v1/invoices/{id}?expand[]=payments`, whose payments say which PaymentIntent paid it; or
/// `GET /v1/refunds/{id}`, a credit note's refund with its real amount and status; or for a
/// PaymentIntent, [`invoice_payments`]; or `GET /v1/prices/{id}`, a price whose amount an
/// invoice's prorations are valued against.
pub async fn refresh(ctx: &Ctx, stripe: &Stripe, req: &Claimed) -> Result<Value, Outcome> {
    if let Ok(id) = object_id(req, "pi_") {
        return invoice_payments(ctx, stripe, req, id).await;
    }
    if let Ok(id) = object_id(req, "price_") {
        return price(ctx, stripe, req, id).await;
    }
    let (path, query, id) = if let Ok(id) = object_id(req, "in_") {
        (
            format!("/v1/invoices/{id}"),
            json!({"expand": ["payments"]}),
            id,
        )
    } else if let Ok(id) = object_id(req, "re_") {
        (format!("/v1/refunds/{id}"), json!({}), id)
    } else {
        let id = object_id(req, "sub_")?;
        (format!("/v1/subscriptions/{id}"), json!({}), id)
    };
    let answer = stripe.get(&path, &query, bounds(ctx, req)).await?;
    let applied = ingest(ctx, req, &answer).await?;
    Ok(json!({"object_id": id, "applied": applied}))
}

/// Applies Stripe's answer to `req` as the object's state at the answer's `Date`
/// (`billing.ingest_retrieved`, once per request); returns what it applied.
pub(super) async fn ingest(ctx: &Ctx, req: &Claimed, answer: &Answer) -> Result<Value, Outcome> {
    let at = answer.date.unwrap_or_else(std::time::SystemTime::now);
    let mut conn = ctx.db.get().await?;
    let row = conn
        .query_one(
            "SELECT billing.ingest_retrieved($1, $2, $3)",
            &[&req.id, &answer.object, &at],
        )
        .await?;
    Ok(row.try_get(0).map_err(crate::db::DbError::from)?)
}

/// `GET /v1/prices/{id}` into the catalog's `billing.prices`, as of the answer's `Date`.
async fn price(ctx: &Ctx, stripe: &Stripe, req: &Claimed, id: &str) -> Result<Value, Outcome> {
    let answer = stripe
        .get(&format!("/v1/prices/{id}"), &json!({}), bounds(ctx, req))
        .await?;
    let at = answer.date.unwrap_or_else(std::time::SystemTime::now);
    let mut conn = ctx.db.get().await?;
    let row = conn
        .query_one("SELECT billing.store_price($1, $2)", &[&answer.object, &at])
        .await?;
    let applied: i32 = row.try_get(0).map_err(crate::db::DbError::from)?;
    Ok(json!({"object_id": id, "events_applied": applied}))
}

/// `GET /v1/checkout/sessions/{id}/line_items` or `GET /v1/invoices/{id}/lines`, every page,
/// stored for the waiting event.
pub async fn line_items(ctx: &Ctx, stripe: &Stripe, req: &Claimed) -> Result<Value, Outcome> {
    let (path, store, id) = match object_id(req, "in_") {
        Ok(id) => (
            format!("/v1/invoices/{id}/lines"),
            "SELECT billing.store_invoice_lines($1, $2)",
            id,
        ),
        Err(_) => {
            let id = object_id(req, "cs_")?;
            (
                format!("/v1/checkout/sessions/{id}/line_items"),
                "SELECT billing.store_line_items($1, $2)",
                id,
            )
        }
    };
    let items = stripe
        .list(&path, &json!({}), usize::MAX, || bounds(ctx, req))
        .await?
        .data;
    let count = items.len();
    let list = json!({"object": "list", "data": items});
    let mut conn = ctx.db.get().await?;
    let row = conn.query_one(store, &[&id, &list]).await?;
    let applied: i32 = row.try_get(0).map_err(crate::db::DbError::from)?;
    Ok(json!({"object_id": id, "line_items": count, "events_applied": applied}))
}

/// `GET /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]={id}`, every
/// page: which invoices one PaymentIntent paid, and how much of it each (from basil one payment
/// may pay several invoices). Stored for the refunds and disputes that waited for it.
async fn invoice_payments(
    ctx: &Ctx,
    stripe: &Stripe,
    req: &Claimed,
    id: &str,
) -> Result<Value, Outcome> {
    let query = json!({"payment": {"type": "payment_intent", "payment_intent": id}});
    let payments = stripe
        .list("/v1/invoice_payments", &query, usize::MAX, || {
            bounds(ctx, req)
        })
        .await?
        .data;
    let count = payments.len();
    let list = json!({"object": "list", "data": payments});
    let mut conn = ctx.db.get().await?;
    let row = conn
        .query_one(
            "SELECT billing.store_invoice_payments($1, $2)",
            &[&id, &list],
        )
        .await?;
    let applied: i32 = row.try_get(0).map_err(crate::db::DbError::from)?;
    Ok(json!({"object_id": id, "invoice_payments": count, "events_applied": applied}))
}
