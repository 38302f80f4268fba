//! What older schemas need of this library until `ALTER EXTENSION stripe_billing UPDATE`.
//!
//! One shared library serves every installed schema version. Releases before 0.3.0 normalised
//! events in Rust: 0.1.0's install script creates `billing.normalize_event` from the symbol
//! `normalize_event_wrapper`, 0.2.0's creates `billing._normalize_event` from
//! `normalize_event_json_wrapper`, and PostgreSQL checks that a C function's symbol exists when
//! it creates the function, so installing those releases (to upgrade them) needs the symbols.
//! Normalising events is SQL's since 0.3.0 (`sql/events/normalize.sql`), so the symbols only say
//! what to do: a webhook that reaches an old schema in the window between installing the new
//! files and running the update is refused before anything is stored, and Stripe delivers it
//! again after the update (it retries for days). Remove each once no supported upgrade starts
//! at its release.
use crate::errors::raise;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};

/// 0.1.0's `billing.normalize_event`, now a stub (no SQL is generated for it).
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn normalize_event(_payload: &str) -> JsonB {
    older_schema()
}

/// 0.2.0's `billing._normalize_event`, now a stub (no SQL is generated for it).
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn normalize_event_json(_payload: &str) -> JsonB {
    older_schema()
}

fn older_schema() -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "the stripe_billing schema is older than its library".into(),
        Some("events are normalised in SQL since stripe_billing 0.3.0".into()),
        Some("Run ALTER EXTENSION stripe_billing UPDATE; Stripe redelivers the refused events."),
    )
}
