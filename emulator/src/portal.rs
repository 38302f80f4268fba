//! The Customer Portal: `POST /v1/billing_portal/sessions` and
//! `GET /v1/billing_portal/configurations`.
//!
//! A test-mode account has no portal configuration until its portal settings are saved in the
//! Dashboard; until then Stripe refuses portal sessions with a 400. The emulator starts with a
//! saved default configuration (so the worker's tests run), and
//! `POST /_emulator/portal_configuration {"exists": false}` removes it.

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::lists::paginate;
use super::resources::{check_url, existing_customer, str_param};
use super::store::{ids, PortalConfiguration, PortalSession, Store};

/// Stripe's answer in test mode when no portal configuration was ever saved.
pub const NO_CONFIGURATION: &str = "You can't create a portal session in test mode until you \
     save your customer portal settings in test mode at \
     https://dashboard.stripe.com/test/settings/billing/portal.";

/// `POST /v1/billing_portal/sessions`, after the schema check (`customer` is required).
pub fn create_portal_session(
    store: &mut Store,
    base_url: &str,
    p: &Map<String, Value>,
) -> Result<String, ApiError> {
    let customer = str_param(p, "customer").unwrap_or_default();
    existing_customer(store, &customer, "customer")?;
    let configuration = match (str_param(p, "configuration"), &store.portal_configuration) {
        (Some(given), Some(saved)) if given == saved.id => given,
        (Some(given), _) => {
            return Err(ApiError::no_such(
                "configuration",
                &given,
                Some("configuration"),
            ))
        }
        (None, Some(saved)) => saved.id.clone(),
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                NO_CONFIGURATION,
            ))
        }
    };
    check_url(p, "return_url")?;
    let id = ids::long("bps");
    let secret = ids::short("test");
    let session = PortalSession {
        id: id.clone(),
        created: store.clock.now(),
        customer,
        configuration,
        return_url: str_param(p, "return_url"),
        url: format!("{base_url}/p/session/{secret}"),
        locale: str_param(p, "locale"),
        flow: p.get("flow_data").cloned(),
    };
    store.portal_sessions.insert(id.clone(), session);
    Ok(id)
}

/// A `billing_portal.configuration` object with the documented fields.
pub fn render_configuration(c: &PortalConfiguration) -> Value {
    json!({
        "id": c.id,
        "object": "billing_portal.configuration",
        "active": true,
        "application": null,
        "business_profile": {"headline": null, "privacy_policy_url": null,
            "terms_of_service_url": null},
        "created": c.created,
        "default_return_url": null,
        "features": {
            "customer_update": {"allowed_updates": ["email", "tax_id"], "enabled": true},
            "invoice_history": {"enabled": true},
            "payment_method_update": {"enabled": true},
            "subscription_cancel": {"cancellation_reason": {"enabled": false, "options": []},
                "enabled": true, "mode": "at_period_end", "proration_behavior": "none"},
            "subscription_update": {"default_allowed_updates": [], "enabled": false,
                "proration_behavior": "none", "products": []},
        },
        "is_default": true,
        "livemode": false,
        "login_page": {"enabled": false, "url": null},
        "metadata": {},
        "name": null,
        "updated": c.created,
    })
}

/// `GET /v1/billing_portal/configurations`: the saved configuration, or an empty list.
/// `is_default` and `active` filter (the one configuration is both); Stripe's pagination.
pub fn list_configurations(store: &Store, p: &Map<String, Value>) -> Result<Value, ApiError> {
    let keep = |flag: &str| p.get(flag).and_then(Value::as_bool).unwrap_or(true);
    let items = store
        .portal_configuration
        .iter()
        .filter(|_| keep("is_default") && keep("active"))
        .map(|c| (store.order_key(c.created, &c.id), render_configuration(c)))
        .collect();
    let cursor = |id: &str| {
        store
            .portal_configuration
            .as_ref()
            .filter(|c| c.id == id)
            .map(|c| store.order_key(c.created, &c.id))
    };
    paginate(
        items,
        p,
        "/v1/billing_portal/configurations",
        cursor,
        "billing_portal.configuration",
    )
}

/// A new saved default configuration (the emulator's start state).
pub fn default_configuration(created: i64) -> PortalConfiguration {
    PortalConfiguration {
        id: ids::long("bpc"),
        created,
    }
}
