//! The periodic job: runs `billing.prune()` (retention) at start-up and then every
//! `--prune-interval-seconds` (the SQL decides what goes: see its comment and
//! docs/operations.md), then `billing.warn_expiring_grants()` (expiry warnings, docs/tokens.md).
//! Several workers may run it at once; the deletes simply meet on the same rows, and a grant's
//! warning is keyed by the grant, so it is written once. `billing.prune()` also deletes the
//! warnings of grants no sweep can pick again (spent out, or expired over a day ago).
//!
//! A run gets a connection of its own, without the pool's 30 s statement bound: the first
//! run over a long history may take minutes, and a run cut short would roll back all it did.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// Longest a single run may take before it is abandoned (and rolled back).
const RUN_TIMEOUT: Duration = Duration::from_secs(3600);

/// Expiry warnings one call of `billing.warn_expiring_grants` writes, in one transaction; a run
/// calls it again while it writes this many, so a large backlog commits in steps.
const WARNINGS_PER_CALL: i32 = 1000;

/// Prunes every `interval` until `shutdown`.
pub async fn run(config: crate::db::DbConfig, interval: Duration, shutdown: CancellationToken) {
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(RUN_TIMEOUT, prune_once(&config)) => r,
        };
        match outcome {
            Ok(Ok(p)) => {
                telemetry::pruned(&p);
                tracing::info!(
                    requests_expired = p.requests_expired,
                    requests_deleted = p.requests_deleted,
                    events_deleted = p.events_deleted,
                    expiry_warnings_deleted = p.expiry_warnings_deleted,
                    "pruned"
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "billing.prune() failed; trying again at the next interval")
            }
            Err(_) => tracing::warn!(
                timeout_s = RUN_TIMEOUT.as_secs(),
                "billing.prune() took too long and was abandoned"
            ),
        }
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(RUN_TIMEOUT, warn_once(&config)) => r,
        };
        match outcome {
            Ok(Ok(written)) if written > 0 => {
                tracing::info!(
                    warnings_written = written,
                    "tokens_expiring warnings written"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                "billing.warn_expiring_grants() failed; trying again at the next interval"
            ),
            Err(_) => tracing::warn!(
                timeout_s = RUN_TIMEOUT.as_secs(),
                "billing.warn_expiring_grants() took too long and was abandoned"
            ),
        }
        if !crate::shutdown::sleep(interval, &shutdown).await {
            return;
        }
    }
}

/// What one run of `billing.prune()` did (the keys of its answer).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pruned {
    pub requests_expired: i64,
    pub requests_deleted: i64,
    pub events_deleted: i64,
    pub expiry_warnings_deleted: i64,
}

/// One run.
async fn prune_once(config: &crate::db::DbConfig) -> Result<Pruned, String> {
    let (client, connection) = config
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", crate::error_chain(&e)))?;
    let driver = tokio::spawn(connection);
    let result = client
        .query_one("SELECT billing.prune()", &[])
        .await
        .map_err(|e| crate::error_chain(&e));
    drop(client);
    let _ = driver.await;
    let outcome: serde_json::Value = result?.get(0);
    let count = |key: &str| {
        outcome
            .get(key)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0)
    };
    Ok(Pruned {
        requests_expired: count("requests_expired"),
        requests_deleted: count("requests_deleted"),
        events_deleted: count("events_deleted"),
        expiry_warnings_deleted: count("expiry_warnings_deleted"),
    })
}

/// One run of expiry warnings: how many it wrote, in calls of [`WARNINGS_PER_CALL`].
async fn warn_once(config: &crate::db::DbConfig) -> Result<i64, String> {
    let (client, connection) = config
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", crate::error_chain(&e)))?;
    let driver = tokio::spawn(connection);
    let mut written = 0_i64;
    let result = loop {
        match client
            .query_one(
                "SELECT billing.warn_expiring_grants($1)",
                &[&WARNINGS_PER_CALL],
            )
            .await
        {
            Ok(row) => {
                let n: i32 = row.get(0);
                written += i64::from(n);
                if n < WARNINGS_PER_CALL {
                    break Ok(written);
                }
            }
            Err(e) => break Err(crate::error_chain(&e)),
        }
    };
    drop(client);
    let _ = driver.await;
    result
}
