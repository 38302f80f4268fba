//! Test support: throwaway databases (`pg`), realistic Stripe events (`events`) and the local
//! Stripe emulator (`emulator`, also the `stripe-emulator` binary).

pub mod bench;
pub mod emulator;
pub mod events;
pub mod pg;
pub mod upgrade;
