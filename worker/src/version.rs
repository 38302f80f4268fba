//! The worker and the extension ship together: at start-up the worker reads the version of
//! `stripe_billing` installed in the database and refuses to serve one it was not built for,
//! since the SQL functions it calls change between releases.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff;
use crate::db::Db;

/// The extension version this worker speaks: its own.
pub const SUPPORTED: &str = env!("CARGO_PKG_VERSION");

/// Why the worker cannot serve this database.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("the database has no stripe_billing extension: run CREATE EXTENSION stripe_billing (version {SUPPORTED}) first")]
    NotInstalled,
    #[error(
        "the database has stripe_billing {installed}, but this worker needs {SUPPORTED}: {advice}"
    )]
    Unsupported { installed: String, advice: String },
}

/// Checks `installed` (None: not installed) against [`SUPPORTED`].
pub fn check(installed: Option<&str>) -> Result<(), VersionError> {
    let Some(installed) = installed else {
        return Err(VersionError::NotInstalled);
    };
    if installed == SUPPORTED {
        return Ok(());
    }
    let advice = if version_key(installed) < version_key(SUPPORTED) {
        format!("run ALTER EXTENSION stripe_billing UPDATE TO '{SUPPORTED}'")
    } else {
        format!("run the stripe-billing-worker of release {installed}")
    };
    Err(VersionError::Unsupported {
        installed: installed.to_string(),
        advice,
    })
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Reads the installed version, waiting (with backoff) while the database cannot be reached.
/// Ok(None) when the extension is not installed; Err when `shutdown` ended the wait.
pub async fn installed(db: &Db, shutdown: &CancellationToken) -> Result<Option<String>, ()> {
    let mut failures = 0u32;
    loop {
        let attempt = async {
            let mut conn = db.get().await?;
            let rows = conn
                .query(
                    "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'stripe_billing'",
                    &[],
                )
                .await?;
            Ok::<_, crate::db::DbError>(rows.first().map(|r| r.get::<_, String>(0)))
        };
        match attempt.await {
            Ok(version) => return Ok(version),
            Err(e) => {
                failures += 1;
                let wait = backoff::DB_BACKOFF.full_jitter(failures, &mut rand::rng());
                let wait = wait.max(Duration::from_millis(100));
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                    "cannot read the stripe_billing version yet, retrying");
                if !crate::shutdown::sleep(wait, shutdown).await {
                    return Err(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_version_is_served() {
        assert_eq!(check(Some(SUPPORTED)), Ok(()));
        assert_eq!(check(None), Err(VersionError::NotInstalled));
        let older = check(Some("0.1.0")).unwrap_err().to_string();
        assert_eq!(
            older,
            format!("the database has stripe_billing 0.1.0, but this worker needs {SUPPORTED}: run ALTER EXTENSION stripe_billing UPDATE TO '{SUPPORTED}'")
        );
        let newer = check(Some("99.0.0")).unwrap_err().to_string();
        assert!(
            newer.ends_with("run the stripe-billing-worker of release 99.0.0"),
            "{newer}"
        );
    }
}
