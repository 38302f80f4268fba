//! Pure logic shared by the `stripe_billing` extension, the worker and the test support.
//!
//! Nothing here touches Postgres or the network, so everything is unit-tested with plain
//! `cargo test`. The extension wraps these functions in a thin pgrx layer.
#![forbid(unsafe_code)]

pub mod errors;
pub mod event;
pub mod signature;
