//! `stripe_billing_worker`: the worker of the stripe_billing extension as a library. It serves
//! the `billing.stripe_requests` queue against the Stripe API (Checkout and Portal sessions)
//! and receives Stripe webhooks over HTTP. The binary (`main.rs`) only parses flags, sets up
//! logging and maps [`app::run`]'s outcome to an exit code; everything else lives here so
//! that other entry points (the `doctor` subcommand, tests) reuse the configuration
//! and the database code instead of copying them.
//!
//! - [`config`]: flags, environment fallbacks and the configuration validated from them.
//! - [`db`]: the connection pools and which database errors are worth another try.
//! - `queue`: the claim loop, the SQL calls of the queue protocol and one module per request
//!   kind.
//! - `stripe`: the Stripe API client (form encoding, retries, rate limit).
//! - `http`: the webhook endpoint and the health check.
//! - `sync`: catching up from Stripe's events API, and adopting an existing account.
//! - [`version`]: the check that the database has the extension version this worker speaks.
//! - `telemetry`: the Prometheus metrics; `prune`: retention and expiry warnings on an interval.
//! - [`doctor`]: the `doctor` subcommand, a checklist of the whole set-up.
//! - [`app`]: wires them together and runs until a shutdown signal (`shutdown`).
//! - `contracts` (tests only): the lists the SQL and this crate both keep, held together.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod db;
pub mod doctor;
pub mod version;

mod backoff;
mod http;
mod prune;
mod queue;
mod shutdown;
mod stripe;
mod sync;
mod telemetry;

#[cfg(test)]
mod contracts;

/// An error with its causes, `top: cause: cause`. Library errors put the useful part in the
/// source ("db error" / "error sending request" alone say little).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
