//! A local Stripe API emulator for tests and the offline demo (binary `stripe-emulator`).
//!
//! It serves the endpoints the worker uses, validates form parameters against the request
//! schema of the API version each request is made with, applies the business rules Stripe
//! is known to apply, answers with objects built from Stripe's fixtures, and drives checkouts
//! and subscriptions through their lifecycle, delivering signed webhooks.
//!
//! Real Stripe is the oracle, not this emulator: every rule it enforces cites a source (a
//! Stripe doc, the OpenAPI spec or Stripe-authored SDK types of the version, or a public
//! report of Stripe's answer), listed in `emulator/README.md` ("The emulator is held to
//! Stripe"). A rule nobody could source is not enforced. So it is not a complete model: a
//! request the real API rejects for a rule not listed there may be accepted (see "Not
//! emulated"). Error messages are Stripe's where a source quotes them; the table says which
//! `param` and `code` values are unverified.
//!
//! # CLI
//! ```text
//! stripe-emulator [--listen 127.0.0.1:0] [--secret-key sk_test_emulator]
//!                 [--webhook-url URL] [--webhook-secret whsec_emulator]
//!                 [--api-version 2025-03-31.basil|2023-08-16|…] [--public-url URL]
//!                 [--price ID:recurring|one_time:AMOUNT_CENTS[:month|year]]…
//!                 [--coupon ID:percent_off|amount_off:N]… [--inactive-price ID]…
//! ```
//! `--inactive-price` archives a `--price` (`active: false`); an id that is not a `--price`
//! stops the start.
//! On start it prints exactly one line to stdout, `listening on http://IP:PORT`; logs go to
//! stderr (`RUST_LOG`). `--api-version` is the account's version: it shapes webhook payloads
//! and responses to requests without a `Stripe-Version` header; a request's `Stripe-Version`
//! shapes that response.
//!
//! # Versions
//! Requests are validated against the schema of their version (`Stripe-Version`, else the
//! account's): `emulator/fixtures/form_params_v2023-08-16.json` for every version before
//! 2025-03-31, `form_params_v2025-03-31.basil.json` for basil and later. The basil fixture
//! (from the stripe@18.0.0 types) has no `maxLength`; where a parameter path exists in both,
//! the 2023-08-16 limit applies (`schema.rs`). Payloads come in two shapes: 2023-08-16 for
//! versions before 2025-03-31 (periods on the subscription, `invoice.subscription`, line
//! `price`) and basil for basil and later (periods on `items.data[]`,
//! `invoice.parent.subscription_details`, line `pricing.price_details.price`). Releases after
//! basil are validated and shaped as basil: their changelog entries change nothing the worker
//! reads (see `emulator/README.md`); dahlia's renamed `ui_mode` values are not modelled.
//!
//! # API (auth: `Authorization: Bearer <key>` or HTTP basic with the key as user)
//! `POST /v1/customers`, `GET|DELETE /v1/customers/{id}`, `POST /v1/checkout/sessions`,
//! `GET /v1/checkout/sessions/{id}`, `GET /v1/checkout/sessions/{id}/line_items`
//! (`limit`, `starting_after`, `ending_before`), `POST /v1/billing_portal/sessions`,
//! `GET /v1/billing_portal/configurations` (`is_default`, `active`, cursors),
//! `GET /v1/subscriptions/{id}`, `GET /v1/invoices/{id}` (the first 10 lines embedded),
//! `GET /v1/invoices/{id}/lines` (cursors, in the invoice's order),
//! `POST /v1/checkout/sessions/{id}/expire`, `GET /v1/customers` (`email`, `created`),
//! `GET /v1/subscriptions` (`customer`, `status` incl. `all`/`ended`, `price`, `created`),
//! `GET /v1/prices/{id}`, `GET /v1/prices`, `POST`/`GET /v1/billing/meters`,
//! `POST /v1/billing/meter_events`, `GET /v1/events` (`type` with `*`, `types[]`, `created`,
//! `delivery_success`), `GET /v1/events/{id}`, `GET /v1/webhook_endpoints`,
//! `GET /v1/charges/{id}`, `GET /v1/payment_intents/{id}`, from basil `GET /v1/invoice_payments`
//! (`invoice`, `payment[type]`, `payment[payment_intent]`, `status`). Lists are newest first (line items
//! and lines in the session's or invoice's order) with `limit` (1–100, default 10),
//! `starting_after` / `ending_before` (exclusive, not both; an unknown cursor is a 400
//! `resource_missing`), `has_more` and `url`. `expand[]` on the id fields and
//! the includable `line_items` (sessions), `refunds` (charges) and, from basil, `payments`
//! (invoices), at most 4 levels, walking through sub-objects and lists
//! (`payments.data.payment.payment_intent`, `data.customer`). Bodies are form-encoded with
//! bracket notation.
//!
//! Payments: every paid payment-mode session and every paid invoice with an amount due has a
//! PaymentIntent (`succeeded`, `latest_charge`) and a Charge (`amount`, `amount_refunded`,
//! `refunded`, `disputed`, `customer`, `payment_intent`). Before basil the invoice carries
//! `payment_intent` and `charge` and both carry `invoice`; from basil on those fields are
//! gone and the invoice's payment is in `expand[]=payments` (an `invoice_payment` with
//! `payment.payment_intent`). A session paid later (`async_payment`) has a `processing`
//! PaymentIntent until then. Zero-amount invoices and sessions have no payment. Events
//! (`GET /v1/events`) are the stored payloads of the last 30 days by the emulator's clock,
//! with `pending_webhooks` as it is now; `delivery_success=false` lists events not delivered
//! yet or whose last delivery failed (events made while no webhook URL was set count as
//! delivered). `GET /v1/webhook_endpoints` lists the webhook URL (id fixed until a reset,
//! `enabled_events: ["*"]`, the account's version) and the endpoints registered through the
//! control API; events are delivered to the webhook URL only.
//!
//! `DELETE /v1/customers/{id}` answers `{"id","object":"customer","deleted":true}`, cancels the
//! customer's live subscriptions (`customer.subscription.deleted` each) and emits
//! `customer.deleted`; these events are delivered after the answer. A retrieve of a deleted
//! customer answers the same stub; a checkout or portal session for it is "No such customer".
//!
//! Idempotency (POST only, per secret key): as Stripe documents, a result is stored once
//! execution began and replayed with `Idempotent-Replayed: true` (business-rule errors and
//! 500s during execution included); schema errors, auth errors and faults before execution
//! are not stored. Other parameters with a used key: 400 `idempotency_error`. A key whose
//! request is still running: 409 `invalid_request_error`, code `idempotency_key_in_use`
//! (whatever the parameters). Stripe prunes keys at least 24 hours old; the emulator keeps
//! them until a reset.
//!
//! `metadata[k]=` (empty value) is accepted: it unsets `k`, so on a new object the key is
//! absent.
//!
//! A default customer-portal configuration (`bpc_…`) exists on start and after a reset;
//! `POST /_emulator/portal_configuration {"exists": false}` removes it, as on a test-mode
//! account whose portal settings were never saved: portal sessions then fail with Stripe's
//! 400 and the configurations list is empty.
//!
//! # Injected faults
//! `POST /_emulator/faults` queues failures. By default a fault models a failure before the
//! request reaches Stripe's API (a gateway 502/503, a 429 from rate limiting, or with
//! `delay_ms` and a client timeout a dropped connection): nothing is stored under the
//! idempotency key, and a retry with the same key runs normally. With `"during_execution":
//! true` it models an internal error once execution began: the error is stored under the key
//! and replayed for it (with its `Stripe-Should-Retry` header), as Stripe documents for 500s.
//! Any status can be injected (a 402 `card_error`, say). Faults are taken after
//! authentication, schema validation and the idempotency check (an invalid request still gets
//! its 400, a replay is answered from the store and consumes no fault) and before the
//! business rules; a fault without `status` only delays the request.
//!
//! # Control API (no auth; JSON bodies; `"deliver": false` returns events without POSTing)
//! - `POST /_emulator/faults` `{"path":"/v1/checkout/sessions"|"/v1/*","method"?,"status"?,
//!   "count"?:1,"should_retry"?:bool,"delay_ms"?,"message"?,"type"?,"code"?,
//!   "during_execution"?:bool,"answer_delay_ms"?}`; `GET` lists, `DELETE` clears.
//!   `answer_delay_ms` executes the request at once (stored under its key) and holds the answer
//!   back: an answer lost after Stripe did the work.
//! - `DELETE /_emulator/idempotency_keys`: forgets every stored idempotency key, as Stripe
//!   prunes keys at least 24 hours old.
//! - `GET /_emulator/requests` (`DELETE` clears): `[{id,method,path,params,idempotency_key,
//!   stripe_version,status,replayed,fault,time}]`. `GET /_emulator/state`: counts and objects.
//! - `GET /_emulator/events`; `POST /_emulator/events/{id}/deliver` (fresh signature).
//! - `POST /_emulator/webhook` `{"url":…|null,"secret"?}`; `POST /_emulator/reset`.
//! - `POST /_emulator/portal_configuration` `{"exists":bool}`.
//! - `POST /_emulator/checkout/{id}/complete` `{"payment_status":"paid"|"unpaid"}`,
//!   `POST /_emulator/checkout/{id}/async_payment` `{"succeeded":bool}`,
//!   `POST /_emulator/checkout/external` `{"price","quantity"?:1,"customer"?,
//!   "client_reference_id"?,"customer_email"?,"customer_creation"?}`: a payment-mode session
//!   created outside the worker (Payment Link, Dashboard), without metadata, completed and
//!   paid.
//! - `POST /_emulator/subscriptions/{id}/renew|fail_payment|require_action|recover|
//!   complete_action|uncancel|expire|resume`, `…/cancel` `{"at_period_end":bool,
//!   "reason"?:"cancellation_requested"|"payment_failed"|"payment_disputed"}`,
//!   `…/change_price` `{"price","item"?,"proration_behavior"?:"create_prorations"|
//!   "always_invoice"|"none"}`, `…/add_item` `{"price","quantity"?,"unit_amount"?,
//!   "proration_behavior"?}`, `…/end_trial` `{"early"?:bool,"outcome"?:"paid"|"failed"|
//!   "action_required"}`, `…/pause` `{"behavior":"void"|"keep_as_draft"|"mark_uncollectible",
//!   "resumes_at"?}`.
//! - `POST /_emulator/invoices/{id}/pay`: an open invoice is paid (late).
//! - `POST /_emulator/charges/{id}/refund` `{"amount"?}` (default: what is left; refunds add
//!   up), `POST /_emulator/refunds/{id}/fail`, `POST /_emulator/charges/{id}/dispute` `{"amount"?}`,
//!   `POST /_emulator/disputes/{id}/close` `{"won":bool}`.
//! - `POST /_emulator/invoices/{id}/credit_note` `{"amount","refund"?:bool,"refund_amount"?,
//!   "out_of_band"?:bool,"reason"?}` (paid invoices; neither flag: a customer-balance credit;
//!   `refund_amount` below `amount`: the rest a customer-balance credit),
//!   `POST /_emulator/credit_notes/{id}/void`.
//! - `POST /_emulator/webhook/drop` `{"all"?:bool,"types"?:["invoice.*",…],"fraction"?:0..1,
//!   "seed"?:n}`: matching deliveries fail as if the endpoint were down (`delivery.dropped`);
//!   `DELETE` stops. `POST /_emulator/clock/advance` `{"days"?,"seconds"?}` moves the event
//!   clock forward (nothing renews by itself); answers `{"clock"}`.
//! - `POST /_emulator/webhook_endpoints` `{"url","enabled_events":[…]}`;
//!   `POST /_emulator/prices/{id}` `{"active":bool}` (sends `price.updated`).
//!   `POST /_emulator/metered_prices` `{"product_of","meter","unit_amount"?}`: a metered
//!   price on the product of price `product_of`; `GET /_emulator/meter_events?customer=`: the
//!   meter events recorded (`meters.rs`).
//! - `POST /_emulator/customers` `{"email"?,"name"?,"metadata"?}`,
//!   `POST /_emulator/subscriptions` `{"customer","price","quantity"?,"metadata"?,"paid"?:true}`:
//!   made as in the Dashboard (metadata only as given).
//!
//! Lifecycle calls answer `{"object":…,"events":[{id,type,created,payload,signature_header,
//! delivery:{url,status,error,response_body}|null}]}`; events are delivered in order, one at
//! a time. `GET /pay/{session}`, `GET /p/session/{…}` and `GET /invoice/{id}` (the
//! `hosted_invoice_url`) serve minimal pages for the demo; `POST /pay/{session}` completes as
//! paid and redirects to `success_url`, `POST /invoice/{id}` pays the invoice (confirming
//! 3-D Secure).
//!
//! # Events per step
//! Event `created` has one-second resolution and comes from a clock that never goes backwards
//! and jumps forward like a test clock (to the period end on a renewal, an hour later for
//! finalization), so events of one step share a second as in production. The
//! `Stripe-Signature` timestamp is always the wall clock at sending. `*.updated` events carry
//! `data.previous_attributes`.
//! - complete, subscription mode: `checkout.session.completed`, `customer.subscription.created`,
//!   `invoice.paid` (`subscription_create`); unpaid: the subscription is `incomplete`, the
//!   invoice `open`, no `invoice.paid`. With `subscription_data[trial_period_days|trial_end]`:
//!   `trialing`, a $0 invoice paid, session `payment_status=no_payment_required`. Payment
//!   mode: `checkout.session.completed` only; a zero total (100%-off coupon) gives
//!   `payment_status=no_payment_required`, `amount_total` 0, no PaymentIntent, and a created
//!   customer. Setup mode: `checkout.session.completed`.
//! - async_payment: `checkout.session.async_payment_succeeded` (+ `invoice.paid`,
//!   `customer.subscription.updated` in subscription mode) or `…_failed`
//!   (+ `invoice.payment_failed`).
//! - renew / fail_payment / require_action: at the period end `customer.subscription.updated`
//!   (new period) and `invoice.created` (`draft`, `subscription_cycle`, pending prorations
//!   first, then a line per item); an hour later (`created` + 3600) `invoice.finalized` and
//!   `invoice.paid`, or `invoice.payment_failed` / `invoice.payment_action_required` (with
//!   `hosted_invoice_url`) followed by `customer.subscription.updated` (`past_due`). Set to
//!   cancel at period end: `customer.subscription.deleted` instead. Paused collection:
//!   `void` → `invoice.voided` instead of finalizing; `keep_as_draft` → the draft stays;
//!   `mark_uncollectible` → `invoice.finalized`, `invoice.marked_uncollectible`.
//! - recover / complete_action: `invoice.paid`, `customer.subscription.updated` (`active`).
//! - cancel: `customer.subscription.updated` (at period end) or
//!   `customer.subscription.deleted` (open invoices stay open). invoices/{id}/pay:
//!   `invoice.paid` (a canceled subscription stays canceled; a past-due one whose latest
//!   invoice it is becomes active, + `customer.subscription.updated`).
//! - expire (incomplete only): `invoice.voided`, `customer.subscription.updated`
//!   (`incomplete_expired`).
//! - change_price: `customer.subscription.updated`; with `always_invoice` also `invoice.paid`
//!   (`subscription_update`, a negative and a positive proration line); with
//!   `create_prorations` (the default, as on Stripe) the proration lines wait for the next
//!   cycle invoice; `none` prorates nothing. A price of another interval restarts the cycle
//!   now and always invoices the new period at once (`subscription_update`, the credit for the
//!   old period unless `none`).
//! - add_item: like change_price (a proration line for the rest of the period).
//! - end_trial: naturally like a renewal at `trial_end` (`subscription_cycle`); `early`:
//!   `customer.subscription.updated`, `invoice.paid` (`subscription_update`, a full period,
//!   the cycle anchored now).
//! - pause / resume: `customer.subscription.updated` (`pause_collection`; status unchanged).
//! - `POST /v1/checkout/sessions/{id}/expire`: `checkout.session.expired` (after the answer).
//! - refund: `charge.refunded` (the charge with the new `amount_refunded`/`refunded`), then,
//!   from 2024-10-28.acacia on, `refund.created` (`re_…`, `status: succeeded`). A refund that
//!   fails: `refund.updated` and `refund.failed` from acacia on, `charge.refund.updated` before
//!   (`failed`; the charge's `amount_refunded` drops by its amount). dispute: `charge.dispute.created`, then
//!   `charge.dispute.funds_withdrawn` (`du_…`, `needs_response`); close:
//!   `charge.dispute.closed` (`won`/`lost`), then, when won, `charge.dispute.funds_reinstated`.
//! - credit_note: with `refund`, the refund's events first; then
//!   `credit_note.created` (`cn_…`, `issued`, one `custom_line_item` line; `refund` before
//!   basil, `refunds` from basil). void: `credit_note.voided` (a refund it made stays).
//! - customers: `customer.created`. subscriptions: `customer.subscription.created`, and
//!   `invoice.paid` when paid (unpaid: `incomplete`, the invoice open).
//!
//! # Changes to earlier behaviour (each because a source says so)
//! Renewals now follow Stripe's draft-then-finalize timing (they answered `invoice.paid`,
//! `customer.subscription.updated` at once); `change_price` defaults to `create_prorations`
//! (it always invoiced at once); a concurrent idempotent request is a 409
//! `invalid_request_error` (was `idempotency_error`); a missing line-item quantity and a
//! non-integer have no `code`; the recurring-price-in-payment-mode error names
//! `line_items[i]`; metadata messages are Stripe's; `customer_creation` is refused only in
//! subscription mode (the spec allows setup mode) and `submit_type` in subscription mode only
//! before basil. No longer rejected, for want of a source: a missing `mode` or `line_items`,
//! `customer` with `customer_creation`, `setup_intent_data` outside setup mode, and the
//! `flow_data` checks of portal sessions. `expand[]` now walks through a sub-object or list it
//! cannot expand (it refused: Stripe documents `payments.data.payment.payment_intent`), and a
//! session's `payment_intent` expands. Additions that change no earlier answer: an unpaid
//! payment-mode session's `payment_intent` is now a `processing` PaymentIntent, invoices
//! render `charge` (2023-08-16) and `post_payment_credit_notes_amount`, prices `active`,
//! `GET /_emulator/events` entries a `delivery` status and delivery reports `dropped`.
//!
//! # Not emulated
//! `price_data` line items (400, register prices with `--price`), promotion codes (every id
//! is unknown), quantities other than per-unit, taxes, endpoints not listed above (no
//! refunds, disputes or credit notes over the API: they happen
//! through the control API), credit notes on open invoices, expanding a price's `product`,
//! sessions expiring by themselves at `expires_at` (even when the clock passes it), payment
//! retries on a schedule, webhook retries, deliveries to registered endpoints, and
//! events Stripe sends besides the ones above (`customer.created` for `POST /v1/customers`
//! and Checkout customers, `invoice.created` for invoices finalized at once,
//! `invoice.payment_succeeded`, `invoice_payment.paid`, `payment_intent.*`,
//! `charge.succeeded`, `charge.dispute.updated`, …). A missing `mode` is taken as payment
//! mode (Stripe's answer is unsourced).

pub mod api;
pub mod auth;
pub mod changes;
pub mod checkout;
pub mod clock;
pub mod completion;
pub mod control;
pub mod control_money;
pub mod credit_notes;
pub mod direct;
pub mod error;
pub mod events;
pub mod expand;
pub mod form;
pub mod idempotency;
pub mod intents;
pub mod lifecycle;
pub mod lists;
pub mod meters;
pub mod payments;
pub mod portal;
pub mod render;
pub mod render_money;
pub mod resources;
pub mod routes;
pub mod schema;
pub mod store;
pub mod subscriptions;
pub mod updates;
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

const API_VERSIONS: &str = include_str!("../fixtures/api_versions.json");

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
        active: true,
        meter: None,
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
    /// A catalog price (given with `--price`) that is archived (`active: false`).
    #[arg(long = "inactive-price")]
    pub inactive_prices: Vec<String>,
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
        for id in &self.config.inactive_prices {
            if let Some(p) = store.prices.get_mut(id) {
                p.active = false;
            }
        }
        let now = store.clock.now();
        store.portal_configuration = Some(portal::default_configuration(now));
        let endpoint = ids::long("we");
        store.register(&endpoint);
        store.own_endpoint = (endpoint, now);
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
    control::routes()
        .merge(control_money::routes())
        .merge(meters::routes())
        .fallback(api::handle)
        .with_state(app)
}

/// Binds the listener and serves in a background task.
pub async fn start(config: Config) -> std::io::Result<Running> {
    if let Some(unknown) = config
        .inactive_prices
        .iter()
        .find(|id| !config.prices.iter().any(|p| &p.id == *id))
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--inactive-price {unknown}: no such --price"),
        ));
    }
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
