//! The worker's Postgres clients. The worker keeps two pools: one for the claim loop, request
//! tasks and the health check, and a smaller one for the (unauthenticated) webhook endpoint,
//! so a burst of webhooks cannot starve the queue. A client whose connection dropped is
//! thrown away and a new one is connected on the next use, so a database restart heals by
//! itself; callers decide how long to back off, and [`DbError::is_transient`] whether to.

mod conflict;
mod dsn;
mod error;
mod pool;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;

use std::time::Duration;

pub use error::DbError;
pub use pool::{Conn, Db};
pub use tls::DbConfig;

/// How long a query may take before the client is considered stuck and discarded.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
