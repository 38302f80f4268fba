//! Test support: throwaway databases (`pg`), realistic Stripe events (`events`) and the local
//! Stripe emulator (`emulator`, also the `stripe-emulator` binary), the JWTs of the worker's
//! HTTP API (`jwt`), and the generators of the upgrade scripts (`upgrade`) and of the pure-SQL
//! edition's migrations (`pure_sql`).

pub mod bench;
pub mod edition;
pub mod emulator;
pub mod events;
pub mod jwt;
pub mod pg;
pub mod pure_sql;
pub mod upgrade;
