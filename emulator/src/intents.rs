//! Saved cards and PaymentIntents created through the API: what an auto top-up does (the
//! worker's `top_up` kind). A card is saved to a customer by a paid Checkout Session with
//! `payment_intent_data[setup_future_usage]`, or by attaching one of Stripe's test
//! PaymentMethods (`POST /v1/payment_methods/{pm_card_…}/attach`); the customer's cards are
//! listed newest first; `POST /v1/payment_intents` with `confirm=true` charges one at once.
//! Each rule cites its source in `emulator/README.md` ("Saved cards and PaymentIntents").

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::lifecycle::Ctx;
use super::payments::{self, new_intent};
use super::render::{Renderer, Shape};
use super::store::{ids, Store, StoredEvent};

/// What charging a saved card does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Charged.
    Succeeds,
    /// Attaching succeeds, every charge is declined (`card_declined`).
    Declines,
    /// Every payment needs the cardholder's authentication (3D Secure): off-session it fails
    /// with `authentication_required`.
    NeedsAuthentication,
}

/// A card saved to a customer (`pm_…`).
#[derive(Debug, Clone)]
pub struct PaymentMethod {
    pub id: String,
    pub customer: Option<String>,
    pub behaviour: Behaviour,
    pub last4: &'static str,
    pub created: i64,
}

/// Stripe's test PaymentMethods this emulator knows (https://docs.stripe.com/testing): the
/// behaviour and the last four digits of the card each stands for.
pub fn test_card(token: &str) -> Option<(Behaviour, &'static str)> {
    match token {
        "pm_card_visa" => Some((Behaviour::Succeeds, "4242")),
        "pm_card_chargeCustomerFail" => Some((Behaviour::Declines, "0341")),
        "pm_card_authenticationRequired" => Some((Behaviour::NeedsAuthentication, "3184")),
        _ => None,
    }
}

/// Saves a new card to `customer`; returns its id.
pub fn save_card(
    store: &mut Store,
    customer: &str,
    behaviour: Behaviour,
    last4: &'static str,
) -> String {
    let id = ids::long("pm");
    let created = store.clock.now();
    store.register(&id);
    store.payment_methods.insert(
        id.clone(),
        PaymentMethod {
            id: id.clone(),
            customer: Some(customer.to_string()),
            behaviour,
            last4,
            created,
        },
    );
    id
}

pub fn render(pm: &PaymentMethod) -> Value {
    json!({
        "id": pm.id,
        "object": "payment_method",
        "type": "card",
        "card": {"brand": "visa", "last4": pm.last4, "exp_month": 12, "exp_year": 2034,
                 "funding": "credit", "country": "US"},
        "billing_details": {"address": null, "email": null, "name": null, "phone": null},
        "customer": pm.customer,
        "created": pm.created,
        "livemode": false,
        "metadata": {},
    })
}

/// `POST /v1/payment_methods/{id}/attach`: a test token attaches a new card (its own `pm_`
/// id); a saved card attaches to the customer unless another customer has it.
pub fn attach(store: &mut Store, id: &str, p: &Map<String, Value>) -> Result<Value, ApiError> {
    let customer = p
        .get("customer")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if store.live_customer(&customer).is_none() {
        return Err(ApiError::no_such("customer", &customer, Some("customer")));
    }
    let saved = if let Some((behaviour, last4)) = test_card(id) {
        save_card(store, &customer, behaviour, last4)
    } else {
        let pm = store
            .payment_methods
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found("payment_method", id, "payment_method"))?;
        match &pm.customer {
            Some(other) if *other != customer => {
                return Err(ApiError::invalid(
                    "payment_method",
                    "The payment method you provided has already been attached to a customer.",
                ))
            }
            _ => pm.customer = Some(customer),
        }
        id.to_string()
    };
    Ok(render(&store.payment_methods[&saved]))
}

/// `GET /v1/customers/{id}/payment_methods`: newest first, `type` filters (cards are all
/// this emulator has), `limit` as every list.
pub fn list(
    store: &Store,
    customer: &str,
    p: &Map<String, Value>,
    limit: usize,
) -> Result<Value, ApiError> {
    if !store.customers.contains_key(customer) {
        return Err(ApiError::not_found("customer", customer, "customer"));
    }
    let wanted = p.get("type").and_then(Value::as_str);
    let mut cards: Vec<&PaymentMethod> = store
        .payment_methods
        .values()
        .filter(|pm| pm.customer.as_deref() == Some(customer) && wanted.is_none_or(|t| t == "card"))
        .collect();
    cards.sort_by_key(|pm| std::cmp::Reverse(store.order_key(pm.created, &pm.id)));
    let has_more = cards.len() > limit;
    Ok(json!({
        "object": "list",
        "data": cards.iter().take(limit).map(|pm| render(pm)).collect::<Vec<_>>(),
        "has_more": has_more,
        "url": format!("/v1/customers/{customer}/payment_methods"),
    }))
}

fn flag(p: &Map<String, Value>, key: &str) -> bool {
    // off_session is a boolean or one_off / recurring (both mean off-session).
    matches!(p.get(key), Some(Value::Bool(true)) | Some(Value::String(_)))
}

/// `POST /v1/payment_intents`. Without `confirm` the PaymentIntent waits for confirmation;
/// with it the card is charged at once: a success is `succeeded` with a Charge; a decline, or a
/// card that needs authentication off-session, is a 402 `card_error` naming the PaymentIntent,
/// which is left in `requires_payment_method`, and `payment_intent.payment_failed` is sent.
pub fn create(
    ctx: &Ctx,
    store: &mut Store,
    shape: Shape,
    p: &Map<String, Value>,
) -> Result<(Value, Vec<StoredEvent>), ApiError> {
    let amount = p.get("amount").and_then(Value::as_i64).unwrap_or(0);
    let currency = p
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if amount < 1 {
        return Err(
            ApiError::invalid("amount", "This value must be greater than or equal to 1.")
                .code("parameter_invalid_integer"),
        );
    }
    if currency == "usd" && amount < 50 {
        return Err(
            ApiError::invalid("amount", "Amount must be at least $0.50 usd")
                .code("amount_too_small"),
        );
    }
    let customer = p
        .get("customer")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(c) = &customer {
        if store.live_customer(c).is_none() {
            return Err(ApiError::no_such("customer", c, Some("customer")));
        }
    }
    let confirm = flag(p, "confirm");
    let off_session = flag(p, "off_session");
    if off_session && !confirm {
        return Err(ApiError::invalid(
            "off_session",
            "off_session can only be used with confirm=true.",
        ));
    }
    let method = p
        .get("payment_method")
        .and_then(Value::as_str)
        .map(str::to_string);
    let behaviour = match &method {
        None if confirm => {
            return Err(ApiError::invalid(
                "payment_method",
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
            ))
        }
        None => None,
        Some(m) => Some(match (test_card(m), store.payment_methods.get(m)) {
            (Some((b, _)), _) => b,
            (None, Some(pm)) if pm.customer.is_some() && pm.customer != customer => {
                return Err(ApiError::invalid(
                    "payment_method",
                    "The provided PaymentMethod is attached to another customer; payment methods attached to other customers cannot be used with this PaymentIntent.",
                ))
            }
            (None, Some(pm)) => pm.behaviour,
            (None, None) => return Err(ApiError::no_such("PaymentMethod", m, Some("payment_method"))),
        }),
    };
    let now = store.clock.now();
    let id = ids::long("pi");
    let mut intent = new_intent(&id, amount, &currency, customer.as_deref(), now);
    intent.metadata = p
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    intent.description = p
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    intent.payment_method = method.clone();
    intent.status = match (&method, confirm) {
        (None, _) => "requires_payment_method",
        (Some(_), false) => "requires_confirmation",
        (Some(_), true) => "processing",
    }
    .into();
    store.payment_intents.insert(id.clone(), intent);
    let mut events = vec![];
    let created = render_intent(ctx, store, &id);
    events.push(ctx.emit(store, "payment_intent.created", created, None));
    let failure = match (confirm, behaviour) {
        (false, _) | (_, None) => None,
        (true, Some(Behaviour::Succeeds)) => None,
        (true, Some(Behaviour::Declines)) => Some((
            "card_declined",
            "generic_decline",
            "Your card was declined.",
        )),
        (true, Some(Behaviour::NeedsAuthentication)) if off_session => Some((
            "authentication_required",
            "authentication_required",
            "Your card was declined. This transaction requires authentication.",
        )),
        (true, Some(Behaviour::NeedsAuthentication)) => {
            // On-session the customer is asked to authenticate: no error, no charge yet.
            let intent = store.payment_intents.get_mut(&id).expect("just stored");
            intent.status = "requires_action".into();
            return Ok((answer(store, ctx, shape, &id), events));
        }
    };
    match failure {
        None if confirm => {
            let (_, charge) =
                payments::record_payment(store, amount, &currency, customer.as_deref(), Some(&id));
            let charged = ctx.render(store, |r| r.charge(&r.store.charges[&charge]));
            events.push(ctx.emit(store, "charge.succeeded", charged, None));
            let succeeded = render_intent(ctx, store, &id);
            events.push(ctx.emit(store, "payment_intent.succeeded", succeeded, None));
            Ok((answer(store, ctx, shape, &id), events))
        }
        None => Ok((answer(store, ctx, shape, &id), events)),
        Some((code, decline_code, message)) => {
            let pm_object = method
                .as_deref()
                .and_then(|m| store.payment_methods.get(m))
                .map(render)
                .unwrap_or(Value::Null);
            let error = json!({"type": "card_error", "code": code, "decline_code": decline_code,
                               "message": message, "payment_method": pm_object});
            let intent = store.payment_intents.get_mut(&id).expect("just stored");
            intent.status = "requires_payment_method".into();
            intent.last_payment_error = Some(error);
            let failed = render_intent(ctx, store, &id);
            events.push(ctx.emit(store, "payment_intent.payment_failed", failed, None));
            let mut e =
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "card_error", message).code(code);
            e.extra.insert("decline_code".into(), json!(decline_code));
            e.extra
                .insert("payment_intent".into(), answer(store, ctx, shape, &id));
            e.extra.insert("payment_method".into(), pm_object);
            store.failed_call_events.extend(events);
            Err(e)
        }
    }
}

/// The PaymentIntent as the account's webhooks show it.
fn render_intent(ctx: &Ctx, store: &Store, id: &str) -> Value {
    ctx.render(store, |r| r.payment_intent(&r.store.payment_intents[id]))
}

/// The PaymentIntent as the caller's API version shows it.
fn answer(store: &Store, ctx: &Ctx, shape: Shape, id: &str) -> Value {
    let r = Renderer {
        templates: ctx.templates,
        store,
        shape,
    };
    r.payment_intent(&store.payment_intents[id])
}
