//! The worker and the database schema ship together: at start-up the worker reads which
//! version of `stripe_billing` the database has and refuses one it was not built for, since the
//! SQL functions it calls change between releases. Either edition will do (DESIGN.md, "Two
//! editions"): the extension's version is in `pg_extension`, the pure-SQL edition's in
//! `billing.installation`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff;
use crate::db::Db;

/// The stripe_billing version this worker speaks: its own.
pub const SUPPORTED: &str = env!("CARGO_PKG_VERSION");

/// What the database has installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// `CREATE EXTENSION stripe_billing`, at this version.
    Extension(String),
    /// The pure-SQL edition's migrations, at this version.
    PureSql(String),
    /// `billing.installation` exists but the worker's role may not read it.
    Unreadable,
}

/// Why the worker cannot serve this database.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("the database has no stripe_billing: run CREATE EXTENSION stripe_billing, or apply the pure-SQL edition's migration (version {SUPPORTED}) first")]
    NotInstalled,
    #[error(
        "the database has stripe_billing {installed}, but this worker needs {SUPPORTED}: {advice}"
    )]
    Unsupported { installed: String, advice: String },
    #[error("the worker's role may not read billing.installation: connect as service_role or as the owner of schema billing")]
    Unreadable,
}

/// Checks what is installed (None: nothing) against [`SUPPORTED`].
pub fn check(installed: Option<&Installed>) -> Result<(), VersionError> {
    let (version, upgrade) = match installed {
        None => return Err(VersionError::NotInstalled),
        Some(Installed::Unreadable) => return Err(VersionError::Unreadable),
        Some(Installed::Extension(v)) => (
            v,
            format!("run ALTER EXTENSION stripe_billing UPDATE TO '{SUPPORTED}'"),
        ),
        Some(Installed::PureSql(v)) => (
            v,
            format!("apply the pure-SQL edition's upgrade migrations up to {SUPPORTED}"),
        ),
    };
    if version == SUPPORTED {
        return Ok(());
    }
    let advice = if version_key(version) < version_key(SUPPORTED) {
        upgrade
    } else {
        format!("run the stripe-billing-worker of release {version}")
    };
    Err(VersionError::Unsupported {
        installed: version.clone(),
        advice,
    })
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// One look at the database: the extension first, then the pure-SQL edition's record and
/// whether this role may read it (from the catalog: naming a table in a schema the role may not
/// use is an error).
const INSTALLED: &str = "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'stripe_billing'),
        (SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE') AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'billing' AND c.relname = 'installation')";

/// What the database has installed, in one attempt (None: stripe_billing is not installed).
pub async fn read(db: &Db) -> Result<Option<Installed>, crate::db::DbError> {
    let mut conn = db.get().await?;
    let row = conn.query_one(INSTALLED, &[]).await?;
    let extension: Option<String> = row.get(0);
    let readable: Option<bool> = row.get(1);
    Ok(match (extension, readable) {
        (Some(v), _) => Some(Installed::Extension(v)),
        (None, None) => None,
        (None, Some(false)) => Some(Installed::Unreadable),
        (None, Some(true)) => {
            let row = conn
                .query_one("SELECT version FROM billing.installation", &[])
                .await?;
            Some(Installed::PureSql(row.get(0)))
        }
    })
}

impl Installed {
    /// The installed version, when it could be read.
    pub fn version(&self) -> Option<&str> {
        match self {
            Installed::Extension(v) | Installed::PureSql(v) => Some(v),
            Installed::Unreadable => None,
        }
    }
}

/// Reads what is installed, waiting (with backoff) while the database cannot be reached.
/// Ok(None) when stripe_billing is not installed; Err(None) when `shutdown` ended the wait,
/// Err(Some) when connecting failed for a reason no wait can change.
pub async fn installed(
    db: &Db,
    shutdown: &CancellationToken,
) -> Result<Option<Installed>, Option<crate::db::DbError>> {
    let mut failures = 0u32;
    loop {
        match read(db).await {
            Ok(installed) => return Ok(installed),
            // A refused certificate, or TLS required of a server without it: waiting cannot
            // help, and a worker that retries quietly looks like one that runs.
            Err(crate::db::DbError::Connect(e)) if crate::db::tls::is_refusal(&e) => {
                return Err(Some(crate::db::DbError::Connect(e)));
            }
            Err(e) => {
                failures += 1;
                let wait = backoff::DB_BACKOFF.full_jitter(failures, &mut rand::rng());
                let wait = wait.max(Duration::from_millis(100));
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                    "cannot read the stripe_billing version yet, retrying");
                if !crate::shutdown::sleep(wait, shutdown).await {
                    return Err(None);
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
        let ext = |v: &str| Installed::Extension(v.to_string());
        let pure = |v: &str| Installed::PureSql(v.to_string());
        assert_eq!(check(Some(&ext(SUPPORTED))), Ok(()));
        assert_eq!(check(Some(&pure(SUPPORTED))), Ok(()));
        assert_eq!(check(None), Err(VersionError::NotInstalled));
        assert_eq!(
            check(Some(&Installed::Unreadable)),
            Err(VersionError::Unreadable)
        );
        let older = check(Some(&ext("0.1.0"))).unwrap_err().to_string();
        assert_eq!(
            older,
            format!("the database has stripe_billing 0.1.0, but this worker needs {SUPPORTED}: run ALTER EXTENSION stripe_billing UPDATE TO '{SUPPORTED}'")
        );
        let older_pure = check(Some(&pure("0.1.9"))).unwrap_err().to_string();
        assert!(
            older_pure.ends_with(&format!(
                "apply the pure-SQL edition's upgrade migrations up to {SUPPORTED}"
            )),
            "{older_pure}"
        );
        for newer in [ext("99.0.0"), pure("99.0.0")] {
            let newer = check(Some(&newer)).unwrap_err().to_string();
            assert!(
                newer.ends_with("run the stripe-billing-worker of release 99.0.0"),
                "{newer}"
            );
        }
    }
}
