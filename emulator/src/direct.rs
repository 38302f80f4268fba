//! Objects made outside the worker, as in the Dashboard: a customer (with or without
//! `metadata[user_id]`) and a subscription for an existing customer, each with the events a
//! creation sends.

use serde_json::{Map, Value};

use super::completion::start_subscription;
use super::lifecycle::{bad_request, conflict, not_found, Ctx, Step};
use super::resources::{insert_customer, is_valid_email};
use super::store::{ids, Session, SessionLine, Store};

/// A metadata map from a control call: an object of strings (absent: empty).
fn metadata_arg(args: &Value) -> Result<Map<String, Value>, super::lifecycle::ControlError> {
    match &args["metadata"] {
        Value::Null => Ok(Map::new()),
        Value::Object(m) if m.values().all(Value::is_string) => Ok(m.clone()),
        _ => Err(bad_request("metadata must be an object of strings")),
    }
}

/// `POST /_emulator/customers` `{"email"?, "name"?, "metadata"?}`: `customer.created`
/// ("Occurs whenever a new customer is created").
pub fn create_customer(ctx: &Ctx, store: &mut Store, args: &Value) -> Step {
    let metadata = metadata_arg(args)?;
    let email = args["email"].as_str().map(str::to_string);
    if email.as_deref().is_some_and(|e| !is_valid_email(e)) {
        return Err(bad_request("email is not an address"));
    }
    let name = args["name"].as_str().map(str::to_string);
    let id = insert_customer(store, |c| {
        c.email = email;
        c.name = name;
        c.metadata = metadata;
    });
    let object = ctx.customer(store, &id);
    let event = ctx.emit(store, "customer.created", object.clone(), None);
    Ok((object, vec![event]))
}

/// `POST /_emulator/subscriptions` `{"customer", "price", "quantity"?, "metadata"?,
/// "paid"?}`: a subscription created for an existing customer without Checkout (the
/// Dashboard), charged at once like a Checkout subscription: `customer.subscription.created`
/// and, when paid, `invoice.paid` (unpaid: `incomplete`, the invoice open).
pub fn create_subscription(ctx: &Ctx, store: &mut Store, args: &Value) -> Step {
    let customer = args["customer"]
        .as_str()
        .ok_or_else(|| bad_request("customer (string) is required"))?
        .to_string();
    store
        .live_customer(&customer)
        .ok_or_else(|| not_found("customer", &customer))?;
    let price_id = args["price"]
        .as_str()
        .ok_or_else(|| bad_request("price (string) is required"))?
        .to_string();
    let price = store
        .prices
        .get(&price_id)
        .ok_or_else(|| not_found("price", &price_id))?;
    if !price.is_recurring() {
        return Err(bad_request(format!("price {price_id} is not recurring")));
    }
    if !price.active {
        return Err(conflict(format!("price {price_id} is inactive")));
    }
    let quantity = args["quantity"].as_i64().unwrap_or(1);
    if quantity < 1 {
        return Err(bad_request("quantity must be at least 1"));
    }
    let paid = args["paid"].as_bool().unwrap_or(true);
    let metadata = metadata_arg(args)?;
    let now = store.clock.now();
    // The subscription is built the way a completed Checkout builds it, from its items.
    let basis = Session {
        created: now,
        expires_at: now,
        mode: "subscription".into(),
        status: "complete".into(),
        customer: Some(customer.clone()),
        subscription_metadata: metadata,
        lines: vec![SessionLine {
            id: ids::long("li"),
            price: price_id,
            quantity,
        }],
        currency: Some("usd".into()),
        ..Default::default()
    };
    let (sub, invoice) = start_subscription(ctx, store, &basis, &customer, paid, now);
    let mut events = vec![ctx.emit_now(store, "customer.subscription.created", &sub)];
    if store.invoices[&invoice].status == "paid" {
        events.push(ctx.emit_now(store, "invoice.paid", &invoice));
    }
    Ok((ctx.sub(store, &sub), events))
}
