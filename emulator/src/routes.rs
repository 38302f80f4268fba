//! The Stripe API routes the emulator serves: each path and method, and the key of its
//! operation's schema in the form-params fixtures (`api.rs` validates against it).

use axum::http::Method;

pub(crate) enum Route {
    CreateCustomer,
    GetCustomer(String),
    DeleteCustomer(String),
    CreateSession,
    GetSession(String),
    ListLineItems(String),
    CreatePortal,
    ListPortalConfigurations,
    GetSubscription(String),
    GetInvoice(String),
    ListInvoiceLines(String),
    ExpireSession(String),
    ListCustomers,
    ListSubscriptions,
    GetPrice(String),
    ListEvents,
    GetEvent(String),
    ListWebhookEndpoints,
    GetCharge(String),
    GetPaymentIntent(String),
    ListInvoicePayments,
    GetRefund(String),
    CreateMeter,
    ListMeters,
    CreateMeterEvent,
    ListPrices,
    ListPaymentMethods(String),
    AttachPaymentMethod(String),
    CreatePaymentIntent,
    UpdateSubscription(String),
}

impl Route {
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/v1/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| s.to_string();
        Some(match (method.as_str(), segments.as_slice()) {
            ("POST", ["customers"]) => Route::CreateCustomer,
            ("GET", ["customers", c]) => Route::GetCustomer(id(c)),
            ("DELETE", ["customers", c]) => Route::DeleteCustomer(id(c)),
            ("POST", ["checkout", "sessions"]) => Route::CreateSession,
            ("GET", ["checkout", "sessions", s]) => Route::GetSession(id(s)),
            ("GET", ["checkout", "sessions", s, "line_items"]) => Route::ListLineItems(id(s)),
            ("POST", ["billing_portal", "sessions"]) => Route::CreatePortal,
            ("GET", ["billing_portal", "configurations"]) => Route::ListPortalConfigurations,
            ("GET", ["subscriptions", s]) => Route::GetSubscription(id(s)),
            ("GET", ["invoices", i]) => Route::GetInvoice(id(i)),
            ("GET", ["invoices", i, "lines"]) => Route::ListInvoiceLines(id(i)),
            ("POST", ["checkout", "sessions", s, "expire"]) => Route::ExpireSession(id(s)),
            ("GET", ["customers"]) => Route::ListCustomers,
            ("GET", ["subscriptions"]) => Route::ListSubscriptions,
            ("GET", ["prices", p]) => Route::GetPrice(id(p)),
            ("GET", ["events"]) => Route::ListEvents,
            ("GET", ["events", e]) => Route::GetEvent(id(e)),
            ("GET", ["webhook_endpoints"]) => Route::ListWebhookEndpoints,
            ("GET", ["charges", c]) => Route::GetCharge(id(c)),
            ("GET", ["payment_intents", i]) => Route::GetPaymentIntent(id(i)),
            ("GET", ["invoice_payments"]) => Route::ListInvoicePayments,
            ("GET", ["refunds", r]) => Route::GetRefund(id(r)),
            ("POST", ["billing", "meters"]) => Route::CreateMeter,
            ("GET", ["billing", "meters"]) => Route::ListMeters,
            ("POST", ["billing", "meter_events"]) => Route::CreateMeterEvent,
            ("GET", ["prices"]) => Route::ListPrices,
            ("GET", ["customers", c, "payment_methods"]) => Route::ListPaymentMethods(id(c)),
            ("POST", ["payment_methods", m, "attach"]) => Route::AttachPaymentMethod(id(m)),
            ("POST", ["payment_intents"]) => Route::CreatePaymentIntent,
            ("POST", ["subscriptions", s]) => Route::UpdateSubscription(id(s)),
            _ => return None,
        })
    }

    /// The key of the operation's schema in the form-params fixtures.
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            Route::CreateCustomer => "POST /v1/customers",
            Route::GetCustomer(_) => "GET /v1/customers/{customer}",
            Route::DeleteCustomer(_) => "DELETE /v1/customers/{customer}",
            Route::CreateSession => "POST /v1/checkout/sessions",
            Route::GetSession(_) => "GET /v1/checkout/sessions/{session}",
            Route::ListLineItems(_) => "GET /v1/checkout/sessions/{session}/line_items",
            Route::CreatePortal => "POST /v1/billing_portal/sessions",
            Route::ListPortalConfigurations => "GET /v1/billing_portal/configurations",
            Route::GetSubscription(_) => "GET /v1/subscriptions/{subscription_exposed_id}",
            Route::GetInvoice(_) => "GET /v1/invoices/{invoice}",
            Route::ListInvoiceLines(_) => "GET /v1/invoices/{invoice}/lines",
            Route::ExpireSession(_) => "POST /v1/checkout/sessions/{session}/expire",
            Route::ListCustomers => "GET /v1/customers",
            Route::ListSubscriptions => "GET /v1/subscriptions",
            Route::GetPrice(_) => "GET /v1/prices/{price}",
            Route::ListEvents => "GET /v1/events",
            Route::GetEvent(_) => "GET /v1/events/{id}",
            Route::ListWebhookEndpoints => "GET /v1/webhook_endpoints",
            Route::GetCharge(_) => "GET /v1/charges/{charge}",
            Route::GetPaymentIntent(_) => "GET /v1/payment_intents/{intent}",
            Route::ListInvoicePayments => "GET /v1/invoice_payments",
            Route::GetRefund(_) => "GET /v1/refunds/{refund}",
            Route::CreateMeter => "POST /v1/billing/meters",
            Route::ListMeters => "GET /v1/billing/meters",
            Route::CreateMeterEvent => "POST /v1/billing/meter_events",
            Route::ListPrices => "GET /v1/prices",
            Route::ListPaymentMethods(_) => "GET /v1/customers/{customer}/payment_methods",
            Route::AttachPaymentMethod(_) => "POST /v1/payment_methods/{payment_method}/attach",
            Route::CreatePaymentIntent => "POST /v1/payment_intents",
            Route::UpdateSubscription(_) => "POST /v1/subscriptions/{subscription_exposed_id}",
        }
    }
}

/// The schema key of every route, for the test that each has a schema in both versions
/// (a missing one would only fail when the route is first called).
#[cfg(test)]
pub(crate) fn every_operation() -> Vec<&'static str> {
    let id = String::new;
    let routes = [
        Route::CreateCustomer,
        Route::GetCustomer(id()),
        Route::DeleteCustomer(id()),
        Route::CreateSession,
        Route::GetSession(id()),
        Route::ListLineItems(id()),
        Route::CreatePortal,
        Route::ListPortalConfigurations,
        Route::GetSubscription(id()),
        Route::GetInvoice(id()),
        Route::ListInvoiceLines(id()),
        Route::ExpireSession(id()),
        Route::ListCustomers,
        Route::ListSubscriptions,
        Route::GetPrice(id()),
        Route::ListEvents,
        Route::GetEvent(id()),
        Route::ListWebhookEndpoints,
        Route::GetCharge(id()),
        Route::GetPaymentIntent(id()),
        Route::ListInvoicePayments,
        Route::GetRefund(id()),
        Route::CreateMeter,
        Route::ListMeters,
        Route::CreateMeterEvent,
        Route::ListPrices,
        Route::ListPaymentMethods(id()),
        Route::AttachPaymentMethod(id()),
        Route::CreatePaymentIntent,
        Route::UpdateSubscription(id()),
    ];
    for route in &routes {
        // No wildcard: a new route does not compile here until it is also listed above.
        match route {
            Route::CreateCustomer
            | Route::GetCustomer(_)
            | Route::DeleteCustomer(_)
            | Route::CreateSession
            | Route::GetSession(_)
            | Route::ListLineItems(_)
            | Route::CreatePortal
            | Route::ListPortalConfigurations
            | Route::GetSubscription(_)
            | Route::GetInvoice(_)
            | Route::ListInvoiceLines(_)
            | Route::ExpireSession(_)
            | Route::ListCustomers
            | Route::ListSubscriptions
            | Route::GetPrice(_)
            | Route::ListEvents
            | Route::GetEvent(_)
            | Route::ListWebhookEndpoints
            | Route::GetCharge(_)
            | Route::GetPaymentIntent(_)
            | Route::ListInvoicePayments
            | Route::GetRefund(_)
            | Route::CreateMeter
            | Route::ListMeters
            | Route::CreateMeterEvent
            | Route::ListPrices => {}
            Route::ListPaymentMethods(_)
            | Route::AttachPaymentMethod(_)
            | Route::CreatePaymentIntent
            | Route::UpdateSubscription(_) => {}
        }
    }
    routes.iter().map(Route::operation).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(Route::parse(&Method::POST, "/v1/checkout/sessions").is_some());
        assert!(Route::parse(&Method::GET, "/v1/checkout/sessions").is_none());
        assert!(Route::parse(&Method::DELETE, "/v1/customers/cus_1").is_some());
        assert!(Route::parse(&Method::DELETE, "/v1/customers").is_none());
        assert!(Route::parse(&Method::GET, "/v1/checkout/sessions/cs_1/line_items").is_some());
        assert!(Route::parse(&Method::GET, "/v1/invoices/in_1/lines").is_some());
        assert!(Route::parse(&Method::GET, "/v1/billing_portal/configurations").is_some());
        assert!(Route::parse(&Method::GET, "/v2/customers/cus_1").is_none());
    }
}
