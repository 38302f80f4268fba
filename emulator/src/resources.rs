//! Checks shared by the create operations (redirect URLs, emails, metadata maps) and the
//! customer operations. Checkout Sessions are in `checkout.rs`, the Customer Portal in
//! `portal.rs`. Every rule names its source in `emulator/README.md` ("The emulator is held to
//! Stripe").

use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::lifecycle::Ctx;
use super::store::{ids, Customer, Store, StoredEvent};

pub(super) fn str_param(p: &Map<String, Value>, key: &str) -> Option<String> {
    p.get(key).and_then(Value::as_str).map(str::to_string)
}

/// A metadata map as stored: `metadata[k]=` (empty) unsets `k`, which on a new object means
/// the key is simply absent (the spec text: "Individual keys can be unset by posting an empty
/// value to them. All keys can be unset by posting an empty value to `metadata`.").
pub(super) fn metadata(v: Option<&Value>) -> Map<String, Value> {
    let mut map = v.and_then(Value::as_object).cloned().unwrap_or_default();
    map.retain(|_, v| v != "");
    map
}

/// Whether `url` is one the emulator takes as a redirect target: an absolute `http`/`https`
/// URL with a host, free of whitespace and control characters. Stripe answers `url_invalid`
/// for URLs it rejects and requires the scheme; which other URLs it rejects is not
/// documented, so the rest of this check is the emulator's reading.
pub fn is_valid_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return false;
    };
    // The WHATWG parser below would quietly drop tabs and newlines, encode spaces, read `\`
    // as `/` and skip extra slashes before the host; a strict parser rejects all of them.
    if rest.starts_with('/')
        || url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return false;
    }
    reqwest::Url::parse(url).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    })
}

/// Stripe's answer to a URL it cannot redirect to: 400, `url_invalid`, "Not a valid URL".
pub(super) fn check_url(p: &Map<String, Value>, key: &str) -> Result<(), ApiError> {
    match p.get(key).and_then(Value::as_str) {
        Some(url) if !is_valid_url(url) => {
            Err(ApiError::invalid(key, "Not a valid URL").code("url_invalid"))
        }
        _ => Ok(()),
    }
}

/// Stripe rejects addresses without a dotted domain (`a@com`), with spaces around them, or
/// with a full-width `＠`.
pub(super) fn is_valid_email(email: &str) -> bool {
    email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }) && !email.contains(char::is_whitespace)
        && email.matches('@').count() == 1
}

/// 400 `email_invalid`, "Invalid email address: …" for an address Stripe rejects.
pub(super) fn check_email(p: &Map<String, Value>, key: &str) -> Result<(), ApiError> {
    match p.get(key).and_then(Value::as_str) {
        Some(email) if !is_valid_email(email) => Err(ApiError::invalid(
            key,
            format!("Invalid email address: {email}"),
        )
        .code("email_invalid")),
        _ => Ok(()),
    }
}

/// Stores a new customer: a fresh id, `created` now, a random invoice prefix, every other
/// field empty until `fill` sets it. The one constructor for customers, whether created by
/// `POST /v1/customers` or by a completed Checkout. Returns the id.
pub(super) fn insert_customer(store: &mut Store, fill: impl FnOnce(&mut Customer)) -> String {
    let id = ids::customer();
    let mut customer = Customer {
        id: id.clone(),
        created: store.clock.now(),
        email: None,
        name: None,
        description: None,
        phone: None,
        metadata: Map::new(),
        address: Value::Null,
        preferred_locales: Vec::new(),
        invoice_prefix: ids::short("x")[2..10].to_uppercase(),
        deleted: false,
    };
    fill(&mut customer);
    store.customers.insert(id.clone(), customer);
    store.register(&id);
    id
}

/// `POST /v1/customers`.
pub fn create_customer(store: &mut Store, p: &Map<String, Value>) -> Result<String, ApiError> {
    check_email(p, "email")?;
    Ok(insert_customer(store, |c| {
        c.email = str_param(p, "email");
        c.name = str_param(p, "name");
        c.description = str_param(p, "description");
        c.phone = str_param(p, "phone");
        c.metadata = metadata(p.get("metadata"));
        if let Some(Value::Object(a)) = p.get("address") {
            c.address = Value::Object(a.clone());
        }
        c.preferred_locales = p
            .get("preferred_locales")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
    }))
}

/// What a customer reference in a create call must resolve to: a customer that exists and
/// was not deleted. Stripe answers both cases with "No such customer: '…'"
/// (`resource_missing`, param `customer`).
pub(super) fn existing_customer<'s>(
    store: &'s Store,
    id: &str,
    param: &str,
) -> Result<&'s Customer, ApiError> {
    store
        .live_customer(id)
        .ok_or_else(|| ApiError::no_such("customer", id, Some(param)))
}

/// The object `GET`/`DELETE /v1/customers/{id}` answer for a deleted customer.
pub fn deleted_stub(id: &str) -> Value {
    json!({"id": id, "object": "customer", "deleted": true})
}

/// `DELETE /v1/customers/{id}`: "Permanently deletes a customer. It cannot be undone. Also
/// immediately cancels any active subscriptions on the customer." Emits
/// `customer.subscription.deleted` for each canceled subscription, then `customer.deleted`
/// (carrying the customer as it was). Answers the deleted stub.
pub fn delete_customer(
    ctx: &Ctx,
    store: &mut Store,
    id: &str,
) -> Result<(Value, Vec<StoredEvent>), ApiError> {
    if store.live_customer(id).is_none() {
        return Err(ApiError::not_found("customer", id, "id"));
    }
    let now = store.clock.now();
    let live: Vec<String> = store
        .subscriptions
        .values()
        .filter(|s| {
            s.customer == id && !matches!(s.status.as_str(), "canceled" | "incomplete_expired")
        })
        .map(|s| s.id.clone())
        .collect();
    let mut events = Vec::new();
    for sub in live {
        let s = store.subscriptions.get_mut(&sub).expect("listed above");
        super::subscriptions::cancel_now(s, now, "cancellation_requested");
        let object = ctx.sub(store, &sub);
        events.push(ctx.emit(store, "customer.subscription.deleted", object, None));
    }
    let before = ctx.customer(store, id);
    store.customers.get_mut(id).expect("checked above").deleted = true;
    events.push(ctx.emit(store, "customer.deleted", before, None));
    Ok((deleted_stub(id), events))
}
