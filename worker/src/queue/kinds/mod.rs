//! What each request kind asks of Stripe.

pub mod checkout;
