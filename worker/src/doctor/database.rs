//! The doctor's checks of the database: the extension version, the webhook signing secrets,
//! the security report, the catalog it hands to the Stripe checks, and NOTIFY.

use tokio_postgres::config::Host;

use super::account::Mode;
use super::Check;
use crate::db::Db;
use crate::queue::listen::{self, Listener, RoundTrip};
use crate::version;

/// Where the connection goes, without the password: `user@host:port/dbname`.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => config
            .get_hostaddrs()
            .first()
            .map_or_else(|| "?".into(), |a| a.to_string()),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("(default user)"),
        config.get_dbname().unwrap_or("(default database)")
    )
}

/// Whether the database is reachable and has the stripe_billing version this worker speaks
/// (either edition).
pub async fn version(db: &Db) -> Check {
    const NAME: &str = "database";
    match version::read(db).await {
        Err(e) => Check::unknown(NAME, format!("cannot read from it: {e}")),
        Ok(installed) => match version::check(installed.as_ref()) {
            Ok(()) => Check::passed(
                NAME,
                format!(
                    "stripe_billing {}, the version this worker speaks",
                    version::SUPPORTED
                ),
            ),
            Err(e @ version::VersionError::NotInstalled) => Check::problem(
                NAME,
                "the stripe_billing extension is not installed",
                e.to_string(),
            ),
            Err(e) => Check::problem(
                NAME,
                match installed.as_ref().and_then(version::Installed::version) {
                    Some(v) => format!("stripe_billing {v} is installed"),
                    None => "its stripe_billing version cannot be read".to_string(),
                },
                e.to_string(),
            ),
        },
    }
}

/// A signing secret as the check sees it (never the secret itself).
struct SecretRow {
    livemode: bool,
    unexpired: bool,
}

/// A webhook signing secret exists, is unexpired, and one of them has the key's mode.
pub async fn webhook_secrets(db: &Db, key_mode: Option<Mode>) -> Check {
    const NAME: &str = "webhook signing secret";
    let rows = async {
        let mut conn = db.get().await?;
        // Secrets kept in Supabase Vault count too (none where Vault is missing or unreadable).
        conn.query(
            "SELECT livemode, expires_at IS NULL OR expires_at > now() FROM billing.webhook_secrets
             UNION ALL SELECT livemode, true FROM billing._vault_webhook_secrets()",
            &[],
        )
        .await
    };
    let secrets: Vec<SecretRow> = match rows.await {
        Ok(rows) => rows
            .iter()
            .map(|r| SecretRow {
                livemode: r.get(0),
                unexpired: r.get(1),
            })
            .collect(),
        Err(e) => return Check::unknown(NAME, format!("cannot read billing.webhook_secrets: {e}")),
    };
    judge_secrets(&secrets, key_mode)
}

fn judge_secrets(secrets: &[SecretRow], key_mode: Option<Mode>) -> Check {
    const NAME: &str = "webhook signing secret";
    let mode = key_mode.unwrap_or(Mode::Test);
    let insert = format!(
        "INSERT INTO billing.webhook_secrets (secret, livemode) VALUES ('whsec_...', {});  -- the {} endpoint's signing secret, from the Dashboard or `stripe listen`",
        mode.is_live(),
        mode.name()
    );
    if secrets.is_empty() {
        return Check::problem(
            NAME,
            "none is configured: every webhook is refused (503) and nothing Stripe reports is applied",
            insert,
        );
    }
    let unexpired: Vec<&SecretRow> = secrets.iter().filter(|s| s.unexpired).collect();
    if unexpired.is_empty() {
        let which = match secrets.len() {
            1 => "the only configured secret has".to_string(),
            n => format!("all {n} configured secrets have"),
        };
        return Check::problem(
            NAME,
            format!("{which} expired: every webhook is refused (503)"),
            insert,
        );
    }
    let Some(mode) = key_mode else {
        return Check::passed(
            NAME,
            format!(
                "{} unexpired (their mode cannot be compared without a Stripe key)",
                unexpired.len()
            ),
        );
    };
    let fitting = unexpired
        .iter()
        .filter(|s| s.livemode == mode.is_live())
        .count();
    if fitting == 0 {
        let other = if mode.is_live() { "test" } else { "live" };
        return Check::problem(
            NAME,
            format!(
                "the unexpired secrets are {other}-mode, but the key is a {}-mode key: its events would be refused (BL009)",
                mode.name()
            ),
            insert,
        );
    }
    Check::passed(
        NAME,
        format!(
            "{fitting} unexpired {}-mode secret{}, matching the key",
            mode.name(),
            if fitting == 1 { "" } else { "s" }
        ),
    )
}

/// The HTTP API runs each call's SQL as `authenticated` (PostgREST's way, so row-level
/// security applies): the worker's role must be allowed to switch to it. Without that, every
/// API call fails in the database and answers 500, though nothing else looks wrong. Tried
/// the way the API does it, in a transaction that is rolled back.
pub async fn api_role(db: &Db) -> Check {
    const NAME: &str = "HTTP API role";
    const AS_USER: &str = "authenticated";
    let tried = async {
        let mut conn = db.get().await?;
        conn.batch("BEGIN").await?;
        let switched = conn
            .query(
                "SELECT current_user::text, set_config('role', $1, true)",
                &[&AS_USER],
            )
            .await;
        let _ = conn.batch("ROLLBACK").await;
        switched.map(|rows| rows[0].get::<_, String>(0))
    };
    match tried.await {
        Ok(_) => Check::passed(NAME, "the worker's role can act as authenticated"),
        Err(e) => match e.as_db_error().map(|d| (d.code().code(), d.message().to_string())) {
            // 42501: not a member (or no SET option); 22023: no such role.
            Some((code @ ("42501" | "22023"), message)) => Check::problem(
                NAME,
                format!(
                    "the worker's role cannot act as authenticated ({message}, SQLSTATE {code}): every HTTP API call answers 500"
                ),
                match code {
                    "22023" => "CREATE ROLE authenticated NOLOGIN;  -- Supabase has it; then GRANT authenticated TO <the worker's role>;".to_string(),
                    _ => format!("GRANT authenticated TO {};", role_of(db).await),
                },
            ),
            _ => Check::unknown(NAME, format!("cannot try SET ROLE authenticated: {e}")),
        },
    }
}

/// The role the worker logs in as, for a fix to name it (or a placeholder).
async fn role_of(db: &Db) -> String {
    let read = async {
        let mut conn = db.get().await?;
        conn.query_one("SELECT quote_ident(session_user::text)", &[])
            .await
            .map(|row| row.get::<_, String>(0))
    };
    read.await
        .unwrap_or_else(|_: crate::db::DbError| "<the worker's role>".into())
}

/// `billing.security_report()` is empty.
pub async fn security_report(db: &Db) -> Check {
    const NAME: &str = "security report";
    let rows = async {
        let mut conn = db.get().await?;
        conn.query(
            "SELECT object_type || ' ' || object_name || ': ' || problem FROM billing.security_report()",
            &[],
        )
        .await
    };
    match rows.await {
        Err(e) => Check::unknown(NAME, format!("cannot run billing.security_report(): {e}")),
        Ok(rows) if rows.is_empty() => Check::passed(NAME, "billing.security_report() is empty"),
        Ok(rows) => {
            let problems: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            Check::problem(
                NAME,
                format!("{} problems, first: {}", problems.len(), problems[0]),
                "SELECT billing.apply_grants();  -- then SELECT * FROM billing.security_report(); for what is left",
            )
        }
    }
}

/// A plan that can be bought, and the Stripe price it sells.
pub struct Plan {
    pub id: String,
    pub price: String,
    pub subscription: bool,
    /// The Billing Meter event of a plan that allows metered overage.
    pub meter_event_name: Option<String>,
}

/// The active plans, or the check that says why they could not be read.
pub async fn active_plans(db: &Db) -> Result<Vec<Plan>, Check> {
    let rows = async {
        let mut conn = db.get().await?;
        conn.query(
            "SELECT id, stripe_price_id, kind = 'subscription', meter_event_name FROM billing.plans WHERE active ORDER BY id",
            &[],
        )
        .await
    };
    match rows.await {
        Ok(rows) => Ok(rows
            .iter()
            .map(|r| Plan {
                id: r.get(0),
                price: r.get(1),
                subscription: r.get(2),
                meter_event_name: r.get(3),
            })
            .collect()),
        Err(e) => Err(Check::unknown(
            "prices",
            format!("cannot read billing.plans: {e}"),
        )),
    }
}

/// A notification sent on this database reaches a LISTEN connection (the worker's start-up
/// self-check, `queue::listen`).
pub async fn notify_round_trip(config: &crate::db::DbConfig, db: &Db) -> Check {
    const NAME: &str = "NOTIFY";
    let mut listener = match Listener::start(config).await {
        Ok(listener) => listener,
        Err(e) => return Check::unknown(NAME, format!("cannot LISTEN: {e}")),
    };
    match listen::round_trip(&mut listener, db, listen::ROUND_TRIP_TIMEOUT, |_| {}).await {
        Ok(RoundTrip::Arrived(took)) => Check::passed(
            NAME,
            format!(
                "a notification on {} reached a LISTEN connection in {} ms",
                listen::CHANNEL,
                took.as_millis()
            ),
        ),
        Ok(RoundTrip::Lost) => Check::problem(
            NAME,
            format!(
                "a notification on {} did not reach a LISTEN connection within {} s: the worker will find work by polling only",
                listen::CHANNEL,
                listen::ROUND_TRIP_TIMEOUT.as_secs()
            ),
            "DATABASE_URL probably goes through a transaction pooler (PgBouncer in transaction mode, Supabase's port 6543);\nuse a direct or session-mode connection string (Supabase: the direct connection, or the pooler's port 5432)",
        ),
        Err(e) => Check::unknown(NAME, format!("could not run: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn secret(livemode: bool, unexpired: bool) -> SecretRow {
        SecretRow {
            livemode,
            unexpired,
        }
    }

    #[test]
    fn secrets_must_exist_be_unexpired_and_match_the_key() {
        let status = |secrets: &[SecretRow], mode| judge_secrets(secrets, mode).status;
        assert_eq!(status(&[], Some(Mode::Test)), Status::Problem);
        assert_eq!(
            status(&[secret(false, false)], Some(Mode::Test)),
            Status::Problem
        );
        assert_eq!(
            status(&[secret(true, true)], Some(Mode::Test)),
            Status::Problem
        );
        assert_eq!(
            status(&[secret(true, true), secret(false, true)], Some(Mode::Test)),
            Status::Passed
        );
        assert_eq!(status(&[secret(true, true)], None), Status::Passed);
        let mismatch = judge_secrets(&[secret(false, true)], Some(Mode::Live));
        assert!(mismatch.detail.contains("test-mode"), "{mismatch}");
        assert!(
            mismatch.fix.unwrap().contains("VALUES ('whsec_...', true)"),
            "the fix inserts a live-mode secret"
        );
    }

    #[test]
    fn the_description_leaves_out_the_password() {
        let config: tokio_postgres::Config = "postgres://billing:hunter2@db.example.com:6543/app"
            .parse()
            .unwrap();
        assert_eq!(describe(&config), "billing@db.example.com:6543/app");
    }
}
