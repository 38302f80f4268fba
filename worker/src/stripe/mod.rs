//! The Stripe API as the worker uses it: a handful of form-encoded POSTs with idempotency
//! keys and GETs of objects, not a full SDK (which would pin its own API version and cost minutes of compile
//! time).
//!
//! - `client`: the HTTP client, its timeouts and in-process retries.
//! - `form`: Stripe's bracket-notation form encoding.
//! - `list`: reading a list endpoint page by page.
//! - `retry`: which failures to retry and the backoff between tries.
//! - `ratelimit`: the token bucket in front of every call.

mod client;
pub mod form;
mod list;
mod ratelimit;
pub mod retry;

pub use client::{Answer, Bounds, Rejection, Stripe, StripeError};
pub use list::Listing;
