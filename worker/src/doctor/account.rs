//! The doctor's checks of the Stripe account, made with the worker's own key and client: the
//! key is accepted, every active plan's price exists and fits the plan, the webhook endpoints
//! (endpoints.rs) and the plans' meters (meters.rs) are as they must be, and a default Customer
//! Portal configuration exists.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::database::Plan;
use super::endpoints;
use super::Check;
use crate::config::{Config, Secret};
use crate::stripe::{Bounds, Rejection, Stripe, StripeError};

/// Test or live mode, as a key's prefix says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Test,
    Live,
}

impl Mode {
    pub fn is_live(self) -> bool {
        self == Mode::Live
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Live => "live",
        }
    }

    /// A Dashboard page of this mode.
    pub(super) fn dashboard(self, page: &str) -> String {
        match self {
            Mode::Test => format!("https://dashboard.stripe.com/test/{page}"),
            Mode::Live => format!("https://dashboard.stripe.com/{page}"),
        }
    }
}

/// Secret (`sk_`) and restricted (`rk_`) keys of either mode; publishable keys are refused
/// when the flags are read.
const PREFIXES: [(&str, Mode); 4] = [
    ("sk_test_", Mode::Test),
    ("sk_live_", Mode::Live),
    ("rk_test_", Mode::Test),
    ("rk_live_", Mode::Live),
];

/// What the doctor knows about the key without asking Stripe.
pub enum Key {
    Missing,
    /// Not one of [`PREFIXES`].
    Unrecognised,
    Known {
        mode: Mode,
        prefix: &'static str,
    },
}

impl Key {
    pub fn from_config(config: &Config) -> Key {
        match &config.stripe_secret_key {
            None => Key::Missing,
            Some(key) => PREFIXES
                .iter()
                .find(|(p, _)| key.expose().starts_with(p))
                .map_or(Key::Unrecognised, |(prefix, mode)| Key::Known {
                    mode: *mode,
                    prefix,
                }),
        }
    }

    pub fn mode(&self) -> Option<Mode> {
        match self {
            Key::Known { mode, .. } => Some(*mode),
            _ => None,
        }
    }
}

/// The key as the header line shows it: its mode prefix, never more.
pub fn describe_key(key: Option<&Secret>) -> String {
    match key {
        None => "no key".into(),
        Some(key) => match PREFIXES.iter().find(|(p, _)| key.expose().starts_with(p)) {
            Some((prefix, _)) => format!("key {prefix}…"),
            None => "key of an unrecognised kind".into(),
        },
    }
}

const KEY: &str = "Stripe key";
const PORTAL: &str = "customer portal";

/// The Stripe checks, in checklist order. `plans` is the catalog, or the check that says why
/// it could not be read.
pub async fn checks(config: &Config, key: &Key, plans: Result<Vec<Plan>, Check>) -> Vec<Check> {
    let skip_all = |why: &str, first: Check| {
        vec![
            first,
            Check::skipped("prices", why),
            Check::skipped(endpoints::ENDPOINT, why),
            Check::skipped(PORTAL, why),
        ]
    };
    let mode = match key {
        Key::Missing => {
            return skip_all(
                "no Stripe key",
                Check::problem(
                    KEY,
                    "STRIPE_SECRET_KEY is not set: every checkout and portal request fails",
                    "set STRIPE_SECRET_KEY (or --stripe-secret-key) to a secret key (sk_...) or a restricted key (rk_...) from Dashboard > Developers > API keys",
                ),
            )
        }
        Key::Unrecognised => {
            return skip_all(
                "no usable Stripe key",
                Check::problem(
                    KEY,
                    "the key is neither a secret key (sk_test_, sk_live_) nor a restricted key (rk_test_, rk_live_)",
                    "set STRIPE_SECRET_KEY to a secret or restricted key from Dashboard > Developers > API keys",
                ),
            )
        }
        Key::Known { mode, prefix } => (*mode, *prefix),
    };
    let (mode, prefix) = mode;
    let stripe = match Stripe::from_config(config) {
        Ok(Some(stripe)) => stripe,
        Ok(None) => unreachable!("a known key is set"),
        Err(e) => return skip_all("no Stripe client", Check::unknown(KEY, e)),
    };
    let client = Client {
        stripe,
        abort: CancellationToken::new(),
        timeout: config.stripe_timeout,
    };

    // Listing the endpoints is the first call; its answer also says whether the key works.
    let endpoints = client.list("/v1/webhook_endpoints").await;
    let key_check = match &endpoints {
        Err(StripeError::Rejected(r)) if r.status == Some(401) => {
            return skip_all(
                "Stripe refuses the key",
                Check::problem(
                    KEY,
                    format!("Stripe refuses the {}-mode key: {}", mode.name(), r.message),
                    format!(
                        "set STRIPE_SECRET_KEY to a current key from {}",
                        mode.dashboard("apikeys")
                    ),
                ),
            )
        }
        Err(StripeError::Transient(e)) => Check::unknown(
            KEY,
            format!("cannot reach Stripe at {}: {e}", config.stripe_api_base),
        ),
        _ => Check::passed(
            KEY,
            format!("{}-mode key ({prefix}…), accepted by Stripe", mode.name()),
        ),
    };
    let mut out = vec![key_check];
    match plans {
        Err(check) => out.push(check),
        Ok(plans) if plans.is_empty() => out.push(Check::problem(
            "prices",
            "no active plan in billing.plans: there is nothing to buy",
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES ('pro', 'price_...', 'Pro', 'subscription', 1000);",
        )),
        Ok(plans) => {
            for plan in &plans {
                out.push(price_check(&client, plan, mode).await);
            }
            out.extend(super::meters::checks(&client, &plans, mode).await);
        }
    }
    let version_warning = endpoints
        .as_ref()
        .ok()
        .and_then(|list| endpoints::version_check(list));
    out.push(endpoints::endpoint_check(endpoints, mode));
    out.extend(version_warning);
    out.push(portal_check(&client, mode).await);
    out
}

/// The Stripe client with the bounds the doctor gives each call.
pub(super) struct Client {
    stripe: Stripe,
    abort: CancellationToken,
    timeout: Duration,
}

/// Pages of a list read at most (100 objects each).
const MAX_PAGES: usize = 10;

impl Client {
    fn bounds(&self) -> Bounds<'_> {
        Bounds {
            // Room for a retry of a call that used its whole timeout.
            until: Instant::now() + self.timeout * 3,
            abort: &self.abort,
        }
    }

    pub(super) async fn get(&self, path: &str, params: Value) -> Result<Value, StripeError> {
        Ok(self.stripe.get(path, &params, self.bounds()).await?.object)
    }

    /// Every object of a list, for up to [`MAX_PAGES`] pages.
    pub(super) async fn list(&self, path: &str) -> Result<Vec<Value>, StripeError> {
        self.list_with(path, json!({})).await
    }

    /// [`Client::list`] with filters.
    pub(super) async fn list_with(
        &self,
        path: &str,
        params: Value,
    ) -> Result<Vec<Value>, StripeError> {
        let listing = self
            .stripe
            .list(path, &params, MAX_PAGES, || self.bounds())
            .await?;
        Ok(listing.data)
    }
}

/// A path segment made of an id read from the database: anything outside Stripe's id
/// alphabet is percent-encoded, so it cannot change the path.
pub(super) fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What Stripe's refusal says, for a check's detail.
pub(super) fn refused(r: &Rejection) -> String {
    match r.status {
        Some(403) => format!("the key may not read this (HTTP 403): {}", r.message),
        _ => r.message.clone(),
    }
}

async fn price_check(client: &Client, plan: &Plan, mode: Mode) -> Check {
    let name = format!("plan {}", plan.id);
    let repoint = format!(
        "create or restore the price in {}, or point the plan at a fitting price: UPDATE billing.plans SET stripe_price_id = 'price_...' WHERE id = '{}';",
        mode.dashboard("products"),
        plan.id
    );
    let price = match client
        .get(&format!("/v1/prices/{}", segment(&plan.price)), json!({}))
        .await
    {
        Ok(price) => price,
        Err(StripeError::Rejected(r)) if r.code.as_deref() == Some("resource_missing") => {
            return Check::problem(
                name,
                format!(
                    "price {} does not exist in Stripe's {} mode: checkouts of this plan fail",
                    plan.price,
                    mode.name()
                ),
                repoint,
            )
        }
        Err(StripeError::Rejected(r)) => {
            return Check::unknown(
                name,
                format!("cannot read price {}: {}", plan.price, refused(&r)),
            )
        }
        Err(StripeError::Transient(e)) => {
            return Check::unknown(name, format!("cannot read price {}: {e}", plan.price))
        }
    };
    let kind = if plan.subscription {
        "subscription plan"
    } else {
        "token pack"
    };
    if price["active"] == json!(false) {
        return Check::problem(
            name,
            format!(
                "price {} is archived (inactive) in Stripe: Checkout refuses it",
                plan.price
            ),
            repoint,
        );
    }
    let recurring = price["type"] == json!("recurring");
    if recurring != plan.subscription {
        let (has, needs) = if recurring {
            ("recurring", "one-time")
        } else {
            ("one-time", "recurring")
        };
        return Check::problem(
            name,
            format!(
                "the {kind} sells price {}, which is {has}; a {kind} needs a {needs} price, or Checkout refuses it",
                plan.price
            ),
            repoint,
        );
    }
    let interval = price["recurring"]["interval"].as_str().unwrap_or("");
    Check::passed(
        name,
        if recurring {
            format!(
                "{kind}, price {} is active and recurring ({interval})",
                plan.price
            )
        } else {
            format!("{kind}, price {} is active and one-time", plan.price)
        },
    )
}

async fn portal_check(client: &Client, mode: Mode) -> Check {
    let params = json!({"is_default": true, "active": true, "limit": 1});
    match client.get("/v1/billing_portal/configurations", params).await {
        Ok(list) => match list["data"].as_array().and_then(|d| d.first()) {
            Some(c) => Check::passed(
                PORTAL,
                format!(
                    "default configuration {}",
                    c["id"].as_str().unwrap_or("?")
                ),
            ),
            None => Check::problem(
                PORTAL,
                format!(
                    "no default Customer Portal configuration in {} mode: every portal request fails until the portal settings are saved",
                    mode.name()
                ),
                format!(
                    "save the portal settings once at {}",
                    mode.dashboard("settings/billing/portal")
                ),
            ),
        },
        Err(StripeError::Rejected(r)) => Check::unknown(
            PORTAL,
            format!("cannot list portal configurations: {}", refused(&r)),
        ),
        Err(StripeError::Transient(e)) => {
            Check::unknown(PORTAL, format!("cannot list portal configurations: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_change_the_path() {
        assert_eq!(segment("price_1PgafmB7"), "price_1PgafmB7");
        assert_eq!(segment("../customers"), "%2E%2E%2Fcustomers");
        assert_eq!(segment("a b?c"), "a%20b%3Fc");
    }

    #[test]
    fn keys_show_their_mode_only() {
        let key = |s: &str| Some(s.parse::<Secret>().unwrap());
        assert_eq!(
            describe_key(key("sk_live_51HxSECRET").as_ref()),
            "key sk_live_…"
        );
        assert_eq!(
            describe_key(key("rk_test_51HxSECRET").as_ref()),
            "key rk_test_…"
        );
        assert_eq!(
            describe_key(key("whatever").as_ref()),
            "key of an unrecognised kind"
        );
        assert_eq!(describe_key(None), "no key");
    }
}
