//! The `stripe_billing` Postgres extension: a thin pgrx layer over `stripe-billing-core`, plus
//! the schema SQL in `sql/` (tables, ledger, requests, webhook effects, access control).
mod errors;
mod legacy;
mod schema;
mod signature;

::pgrx::pg_module_magic!(name, version);

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
