//! The Stripe event types the product applies. Normalising events (reading every API shape
//! into the one the effects read) is SQL's, `billing._normalize_event` in
//! `sql/events/normalize.sql`, the one implementation both editions run; this list is what the
//! worker needs without a database: the types its catch-up lists and the doctor asks an
//! endpoint to enable.

/// Every Stripe event type the product applies (others are stored and acknowledged with no
/// effect): the list a webhook endpoint should enable, and the types the worker's catch-up
/// reads from the events API. The SQL dispatcher (`billing._apply`) decides what each does.
pub const APPLIED_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "refund.created",
    "refund.updated",
    "refund.failed",
    // Before 2024-10-28.acacia the only report of a charge's refund failing.
    "charge.refund.updated",
    "credit_note.created",
    "credit_note.updated",
    "credit_note.voided",
    "invoice_payment.paid",
    // A price's amount, currency and interval, for the catalog (billing.prices).
    "price.created",
    "price.updated",
    // An auto top-up's charge: granted when it succeeds, turned off when it fails.
    "payment_intent.payment_failed",
    "payment_intent.succeeded",
];
