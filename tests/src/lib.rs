//! Test support: throwaway databases (`pg`), realistic Stripe events (`events`) and the local
//! Stripe emulator (`emulator`, also the `stripe-emulator` binary), and the JWTs of the worker's
//! HTTP API (`jwt`).

pub mod bench;
pub mod emulator;
pub mod events;
pub mod jwt;
pub mod pg;
pub mod upgrade;
