//! Test support: throwaway databases (`pg`) of either edition (`edition`), realistic Stripe
//! events (`events`, built on the templates of the `stripe_emulator` crate), the JWTs of the
//! worker's HTTP API (`jwt`), the schema as comparable catalog facts (`catalog`), and the
//! ledger's grants, spends and balances as the back end calls them (`tokens`). The
//! generated SQL the tests check comes from the `shipped_sql` crate (`xtask/shipped-sql/`).

pub mod catalog;
pub mod docs;
pub mod edition;
pub mod events;
pub mod jwt;
pub mod pg;
pub mod tokens;
