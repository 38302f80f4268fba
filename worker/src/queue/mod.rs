//! The request queue, the worker's side of `billing.stripe_requests`: a loop that claims rows
//! when LISTEN or the poll tick suggests work, a task per claimed row that makes the row's
//! Stripe calls and writes the outcome back, and the drain that finishes those tasks on
//! shutdown. The locking and the bookkeeping of attempts live in SQL; this side only calls
//! the SQL functions (`claim`).
//!
//! - `main_loop`: the `select!` loop that claims and spawns.
//! - `listen`: the LISTEN connection that wakes the loop, and its self-check (also `doctor`'s).
//! - `claim`: the calls of `claim_requests`, `claim_request`, `finish_request`, `fail_request`,
//!   `link_customer`.
//! - `process`: one claimed row from start to its recorded outcome (`outcome`: retry or fail).
//! - `kinds`: what each request kind (checkout, portal) asks of Stripe.
//! - `drain`: in-flight requests at shutdown.
//!
//! The HTTP API serves the request it has just queued without waiting for this loop: it
//! claims that one row (`claim_one`) in the transaction that inserted it and runs `process`
//! itself, so the same rules, idempotency keys and outcome writes apply.

mod claim;
mod drain;
pub(crate) mod kinds;
pub(crate) mod listen;
mod main_loop;
mod outcome;
mod process;

pub use claim::{claim_one, Claimed};
pub use drain::{drain, drain_tracked};
pub use kinds::RequestKind;
pub use listen::run as listen;
pub use main_loop::{run, Settings};
pub use process::{process, Ctx, NOT_CONFIGURED};
