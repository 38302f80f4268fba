//! Test support: throwaway databases (`pg`), realistic Stripe events (`events`, built on the
//! templates of the `stripe_emulator` crate), the JWTs of the worker's HTTP API (`jwt`), and the
//! generators of the upgrade scripts (`upgrade`) and of the pure-SQL edition's migrations
//! (`pure_sql`).

pub mod bench;
pub mod edition;
pub mod events;
pub mod jwt;
pub mod pg;
pub mod pure_sql;
pub mod upgrade;
