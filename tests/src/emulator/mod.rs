//! A local Stripe API emulator for tests and the offline demo (binary `stripe-emulator`).
//!
//! It serves the endpoints the worker uses, validates form parameters against Stripe's
//! OpenAPI schemas and Stripe's documented rules, answers with objects built from Stripe's
//! fixtures, and drives checkouts and subscriptions through their lifecycle, delivering
//! signed webhooks. It is strict where it models the API: the 2023-08-16 form schemas
//! (unknown, missing, mistyped and empty parameters, enums, lengths, metadata limits) and the
//! business rules in `resources.rs` (mode rules, exclusive parameters, references that must
//! exist, URLs, emails, line-item quantities) are rejected with the status, error `type`,
//! `code` and `param` the real API uses. It is not a complete model: a request the real API
//! rejects for a rule not listed here may be accepted, and it rejects some requests the real
//! API accepts (see "Not emulated"). Error messages follow Stripe's wording where known but
//! are not guaranteed to be identical.
//!
//! # CLI
//! ```text
//! stripe-emulator [--listen 127.0.0.1:0] [--secret-key sk_test_emulator]
//!                 [--webhook-url URL] [--webhook-secret whsec_emulator]
//!                 [--api-version 2025-03-31.basil|2023-08-16|…] [--public-url URL]
//!                 [--price ID:recurring|one_time:AMOUNT_CENTS]… [--coupon ID:percent_off|amount_off:N]…
//! ```
//! On start it prints exactly one line to stdout, `listening on http://IP:PORT`; logs go to
//! stderr (`RUST_LOG`). `--api-version` is the account's version: it shapes webhook payloads
//! and responses to requests without a `Stripe-Version` header; a request's `Stripe-Version`
//! shapes that response. Versions before 2025-03-31 get the 2023-08-16 shape (periods on the
//! subscription, `invoice.subscription`, line `price`), later ones the basil shape (periods on
//! `items.data[]`, `invoice.parent.subscription_details`, line `pricing.price_details.price`).
//!
//! # API (auth: `Authorization: Bearer <key>` or HTTP basic with the key as user)
//! `POST /v1/customers`, `GET /v1/customers/{id}`, `POST /v1/checkout/sessions`,
//! `GET /v1/checkout/sessions/{id}`, `POST /v1/billing_portal/sessions`,
//! `GET /v1/subscriptions/{id}`, `GET /v1/invoices/{id}`; `expand[]` on the id fields.
//! Bodies are form-encoded with bracket notation. POSTs honour `Idempotency-Key` (per secret
//! key): a replay returns the stored status and body with `Idempotent-Replayed: true`;
//! different parameters give 400 `idempotency_error`; a concurrent duplicate 409. As on the
//! real API, only requests whose execution began are stored: auth errors, schema errors and
//! a concurrent duplicate are not, while business-rule errors (a 400 from `resources.rs`) are
//! stored and replayed like successes. Injected faults are not stored either (see below).
//!
//! `metadata[k]=` (empty value) is accepted: it unsets `k`, so on a new object the key is
//! absent. Each checkout line item needs `quantity` (≥ 1), as on the real API.
//!
//! A default customer-portal configuration (`bpc_…`, new on every reset) always exists, so
//! `POST /v1/billing_portal/sessions` works without `configuration`. A real test-mode account
//! has none until its customer-portal settings have been saved once in the Dashboard (or a
//! configuration was created through the API); until then the real call fails with a 400.
//!
//! # Injected faults
//! A fault models a failure that happens before the request reaches Stripe's API: a gateway
//! or load balancer answering 502/503, a 429 from rate limiting, or (with `delay_ms` and a
//! client timeout) a connection dropped on the way. Since Stripe never executed such a
//! request, nothing is stored under its idempotency key, and a retry with the same key runs
//! normally and can succeed. This is the case a client's retry logic must handle. The other
//! case is not emulated: once execution began, real Stripe stores the result, a 500 included,
//! and replays it for that key (usually with `Stripe-Should-Retry: false`), so retrying with
//! the same key returns the same 500. Any status can be injected (a 402 `card_error`, say)
//! and is handled the same way, never stored, even where the real API would have stored it.
//! Faults are taken after authentication, schema validation and the idempotency check (an
//! invalid request still gets its 400, a replay is answered from the store and consumes no
//! fault) and before the business rules; a fault without `status` only delays the request.
//!
//! # Control API (no auth; JSON bodies; `"deliver": false` returns events without POSTing)
//! - `POST /_emulator/faults` `{"path":"/v1/checkout/sessions"|"/v1/*","method"?,"status"?,
//!   "count"?:1,"should_retry"?:bool,"delay_ms"?,"message"?,"type"?,"code"?}`; `GET` lists,
//!   `DELETE` clears.
//! - `GET /_emulator/requests` (`DELETE` clears): `[{id,method,path,params,idempotency_key,
//!   stripe_version,status,replayed,fault,time}]`. `GET /_emulator/state`: counts and objects.
//! - `GET /_emulator/events`; `POST /_emulator/events/{id}/deliver` (fresh signature).
//! - `POST /_emulator/webhook` `{"url":…|null,"secret"?}`; `POST /_emulator/reset`.
//! - `POST /_emulator/checkout/{id}/complete` `{"payment_status":"paid"|"unpaid"}`,
//!   `POST /_emulator/checkout/{id}/async_payment` `{"succeeded":bool}`.
//! - `POST /_emulator/subscriptions/{id}/renew|fail_payment|recover|uncancel`,
//!   `…/change_price` `{"price":…,"item"?}`, `…/cancel` `{"at_period_end":bool}`.
//!
//! Lifecycle calls answer `{"object":…,"events":[{id,type,created,payload,signature_header,
//! delivery:{url,status,error,response_body}|null}]}`; events are delivered in order, one at
//! a time. `GET /pay/{session}` and `GET /p/session/{…}` serve minimal pages for the demo
//! (`POST /pay/{session}` completes as paid and redirects to `success_url`).
//!
//! # Events per step
//! - complete, subscription mode: `checkout.session.completed`, `customer.subscription.created`,
//!   `invoice.paid` (`subscription_create`); unpaid: the subscription is `incomplete`, the
//!   invoice `open`, no `invoice.paid`. Payment/setup mode: `checkout.session.completed`.
//! - async_payment: `checkout.session.async_payment_succeeded` (+ `invoice.paid`,
//!   `customer.subscription.updated` in subscription mode) or `…_failed`
//!   (+ `invoice.payment_failed`).
//! - renew: `invoice.paid` (`subscription_cycle`), `customer.subscription.updated`; when set to
//!   cancel at period end: `customer.subscription.deleted` instead. fail_payment:
//!   `invoice.payment_failed`, `customer.subscription.updated` (`past_due`). recover:
//!   `invoice.paid`, `customer.subscription.updated`. change_price:
//!   `customer.subscription.updated`, `invoice.paid` (`subscription_update`, a negative and a
//!   positive proration line). cancel: `customer.subscription.updated` (at period end) or
//!   `customer.subscription.deleted`.
//!
//! `*.updated` events carry `data.previous_attributes`. Event `created` comes from a clock that
//! never goes backwards and jumps to the period end on renew/fail_payment (like a test clock);
//! the `Stripe-Signature` timestamp is always the wall clock at sending.
//!
//! # Not emulated
//! `price_data` line items (400, register prices with `--price`), promotion codes (always
//! `resource_missing`), trials, quantities other than per-unit, taxes, other endpoints, and
//! events Stripe sends besides the ones above (`customer.created`, `invoice.created`, …).
//! Request parameters added after 2023-08-16 are unknown parameters. Neither are stored 500
//! results (see "Injected faults") nor a fresh account's missing portal configuration.

pub mod api;
pub mod auth;
pub mod changes;
pub mod checkout;
pub mod clock;
pub mod completion;
pub mod control;
pub mod error;
pub mod form;
pub mod idempotency;
pub mod lifecycle;
pub mod portal;
pub mod render;
pub mod resources;
pub mod schema;
pub mod store;
pub mod subscriptions;
pub mod webhook;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use render::{Shape, Templates};
use schema::Schemas;
use store::{ids, Coupon, Price, PriceKind, Store};

const API_VERSIONS: &str = include_str!("../../fixtures/stripe/api_versions.json");

/// Every API version Stripe has released (from the OpenAPI enum).
pub fn known_versions() -> Vec<String> {
    let doc: Value = serde_json::from_str(API_VERSIONS).expect("versions fixture is JSON");
    doc["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn parse_version(s: &str) -> Result<String, String> {
    if known_versions().iter().any(|v| v == s) {
        Ok(s.to_string())
    } else {
        Err(format!("unknown Stripe API version {s:?}"))
    }
}

fn parse_price(s: &str) -> Result<Price, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (id, kind, amount, interval) = match parts[..] {
        [id, kind, amount] => (id, kind, amount, "month"),
        [id, "recurring", amount, interval] => (id, "recurring", amount, interval),
        _ => return Err("expected ID:KIND:AMOUNT_CENTS or ID:recurring:AMOUNT_CENTS:year".into()),
    };
    let (kind, months) = match (kind, interval) {
        ("recurring", "month") => (PriceKind::Recurring, 1),
        ("recurring", "year") => (PriceKind::Recurring, 12),
        ("recurring", other) => {
            return Err(format!("interval must be month or year, not {other:?}"))
        }
        ("one_time", _) => (PriceKind::OneTime, 0),
        (other, _) => return Err(format!("KIND must be recurring or one_time, not {other:?}")),
    };
    let unit_amount: i64 = amount
        .parse()
        .map_err(|_| format!("bad amount {amount:?}"))?;
    if id.is_empty() || unit_amount < 0 {
        return Err("price id must be non-empty and the amount non-negative".into());
    }
    Ok(Price {
        id: id.to_string(),
        kind,
        unit_amount,
        currency: "usd".into(),
        product: ids::short("prod"),
        created: store::real_now(),
        months,
    })
}

fn parse_coupon(s: &str) -> Result<Coupon, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [id, kind, n] = parts[..] else {
        return Err("expected ID:percent_off:N or ID:amount_off:CENTS".into());
    };
    let bad = || format!("bad coupon value {n:?}");
    match kind {
        "percent_off" => Ok(Coupon {
            id: id.into(),
            percent_off: Some(n.parse().map_err(|_| bad())?),
            amount_off: None,
        }),
        "amount_off" => Ok(Coupon {
            id: id.into(),
            percent_off: None,
            amount_off: Some(n.parse().map_err(|_| bad())?),
        }),
        _ => Err("coupon kind must be percent_off or amount_off".into()),
    }
}

/// Command line / configuration of the emulator.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "stripe-emulator",
    about = "Local Stripe API emulator for stripe_billing tests"
)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The only secret key the API accepts.
    #[arg(long, default_value = "sk_test_emulator")]
    pub secret_key: String,
    /// Where webhook events are POSTed.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Secret that signs webhook events.
    #[arg(long, default_value = "whsec_emulator")]
    pub webhook_secret: String,
    /// The account's API version (webhook payload shape, default response shape).
    #[arg(long, default_value = "2025-03-31.basil", value_parser = parse_version)]
    pub api_version: String,
    /// Catalog entry `ID:recurring|one_time:AMOUNT_CENTS[:month|year]` (usd; recurring prices
    /// are monthly unless `:year` is given).
    #[arg(long = "price", value_parser = parse_price)]
    pub prices: Vec<Price>,
    /// Coupon `ID:percent_off:N` or `ID:amount_off:CENTS` (applies to the first invoice).
    #[arg(long = "coupon", value_parser = parse_coupon)]
    pub coupons: Vec<Coupon>,
    /// Base of checkout/portal URLs when the listen address is not reachable as is.
    #[arg(long)]
    pub public_url: Option<String>,
}

/// Shared state of a running emulator.
pub struct App {
    store: Mutex<Store>,
    pub schemas: Schemas,
    pub templates: Templates,
    pub secret_key: String,
    pub api_version: String,
    pub versions: Vec<String>,
    pub base_url: String,
    pub http: reqwest::Client,
    config: Config,
}

impl App {
    fn new(config: &Config, base_url: String) -> Self {
        let app = Self {
            store: Mutex::new(Store::default()),
            schemas: Schemas::load(),
            templates: Templates::load(),
            secret_key: config.secret_key.clone(),
            api_version: config.api_version.clone(),
            versions: known_versions(),
            base_url,
            // Webhook receivers are local test servers: a proxy from the environment must
            // not capture them.
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client builds"),
            config: config.clone(),
        };
        app.reset();
        app
    }

    /// The store; a panic while it was held must not wedge every later request.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Back to the configured catalog with no objects, events, requests or faults.
    pub fn reset(&self) {
        let mut store = self.lock();
        let clock = store.clock.clone();
        *store = Store::default();
        store.clock = clock; // time never goes backwards, even across resets
        store.prices = self
            .config
            .prices
            .iter()
            .map(|p| (p.id.clone(), p.clone()))
            .collect();
        store.coupons = self
            .config
            .coupons
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
        let now = store.clock.now();
        store.portal_configuration = Some(portal::default_configuration(now));
        store.webhook_url = self.config.webhook_url.clone();
        store.webhook_secret = self.config.webhook_secret.clone();
    }

    /// Shape of webhook payloads.
    pub fn account_shape(&self) -> Shape {
        Shape::of(&self.api_version)
    }
}

/// A running emulator (in-process), stopped by [`Running::shutdown`] or when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub base_url: String,
    pub app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting connections and waits for the server task.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap_or(Ok(()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn router(app: Arc<App>) -> Router {
    control::routes().fallback(api::handle).with_state(app)
}

/// Binds the listener and serves in a background task.
pub async fn start(config: Config) -> std::io::Result<Running> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let base_url = config
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{addr}"));
    let app = Arc::new(App::new(&config, base_url.clone()));
    let (tx, rx) = oneshot::channel::<()>();
    let service = router(app.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(Running {
        addr,
        base_url,
        app,
        shutdown: Some(tx),
        task,
    })
}
