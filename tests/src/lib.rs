//! Test support: throwaway databases (`pg`) of either edition (`edition`), realistic Stripe
//! events (`events`, built on the templates of the `stripe_emulator` crate), the JWTs of the
//! worker's HTTP API (`jwt`), and the schema as comparable catalog facts (`catalog`). The
//! generated SQL the tests check comes from the `shipped_sql` crate (`xtask/shipped-sql/`).

pub mod catalog;
pub mod docs;
pub mod edition;
pub mod events;
pub mod jwt;
pub mod pg;
