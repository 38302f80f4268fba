//! `stripe-billing-worker doctor`: one run that checks the whole set-up against the database
//! and the Stripe account, and prints a checklist with the fix for each problem. It takes the
//! worker's own flags and environment, so it checks exactly what the worker would use.
//!
//! - `database`: the extension version, the webhook signing secrets, the security report, and
//!   whether NOTIFY reaches a LISTEN connection (the worker's own self-check).
//! - `account`: the key's mode, every active plan's price and the Customer Portal
//!   configuration, read from Stripe.
//! - `endpoints`: the webhook endpoints' event types and API versions.
//! - `meters`: the Billing Meter and metered price of each plan that allows overage.
//!
//! Exit codes: 0 when every check passed, 1 when at least one found a problem, 2 when none
//! did but some could not be carried out (the database or Stripe unreachable, a bad flag).
//! Nothing secret is printed: keys show their mode prefix only, secrets only their count.

mod account;
mod database;
mod endpoints;
mod meters;

use std::fmt;
use std::io::Write;

use crate::config::Config;
use crate::db::Db;

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Passed,
    /// Something is wrong; the check says how to fix it.
    Problem,
    /// The check could not be carried out (say, Stripe did not answer).
    Unknown,
    /// Not run, because an earlier problem makes it meaningless.
    Skipped,
    /// Works, but worth a look; not a failure (exit code 0).
    Warning,
}

/// One line of the checklist (and its fix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn passed(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(name, Status::Passed, detail, None)
    }

    pub fn problem(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(name, Status::Problem, detail, Some(fix.into()))
    }

    pub fn unknown(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(name, Status::Unknown, detail, None)
    }

    pub fn warning(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(name, Status::Warning, detail, None)
    }

    pub fn skipped(name: impl Into<String>, why: impl Into<String>) -> Check {
        Check::new(name, Status::Skipped, why, None)
    }

    fn new(
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.status {
            Status::Passed => "✓",
            Status::Problem => "✗",
            Status::Unknown => "?",
            Status::Skipped => "-",
            Status::Warning => "!",
        };
        write!(f, "{mark} {}: {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            for (i, line) in fix.lines().enumerate() {
                let lead = if i == 0 { "fix:" } else { "    " };
                write!(f, "\n    {lead} {line}")?;
            }
        }
        Ok(())
    }
}

/// The exit code for a finished checklist: 1 for any problem, else 2 for anything that could
/// not be checked, else 0.
pub fn exit_code(checks: &[Check]) -> u8 {
    let any = |s: Status| checks.iter().any(|c| c.status == s);
    if any(Status::Problem) {
        1
    } else if any(Status::Unknown) {
        2
    } else {
        0
    }
}

/// The closing line.
pub fn summary(checks: &[Check]) -> String {
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let mut parts = vec![format!("{} passed", count(Status::Passed))];
    for (status, one, many) in [
        (Status::Problem, "problem", "problems"),
        (Status::Unknown, "not checked", "not checked"),
        (Status::Warning, "warning", "warnings"),
        (Status::Skipped, "skipped", "skipped"),
    ] {
        match count(status) {
            0 => {}
            1 => parts.push(format!("1 {one}")),
            n => parts.push(format!("{n} {many}")),
        }
    }
    parts.join(", ")
}

/// Prints checks as they finish.
struct Printer {
    checks: Vec<Check>,
}

impl Printer {
    fn add(&mut self, check: Check) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{check}");
        let _ = out.flush();
        self.checks.push(check);
    }

    fn extend(&mut self, checks: Vec<Check>) {
        for check in checks {
            self.add(check);
        }
    }
}

/// Runs every check, printing the checklist to stdout; returns the exit code.
pub async fn run(config: Config) -> u8 {
    println!("stripe-billing-worker doctor");
    println!(
        "  database: {}, sslmode={}",
        database::describe(&config.database),
        config.database.tls.mode().as_str()
    );
    println!(
        "  Stripe:   {} ({})",
        config.stripe_api_base,
        account::describe_key(config.stripe_secret_key.as_ref())
    );
    println!();
    let mut printer = Printer { checks: Vec::new() };
    let db = match Db::new(config.database.clone(), 2, config.db_max_lifetime) {
        Ok(db) => db,
        Err(e) => {
            printer.add(Check::unknown(
                "database",
                format!("cannot set up a connection pool: {e}"),
            ));
            return finish(&printer.checks);
        }
    };
    let version = database::version(&db).await;
    let reachable = version.status != Status::Unknown;
    let schema_fits = version.status == Status::Passed;
    printer.add(version);
    let key = account::Key::from_config(&config);
    if reachable && schema_fits {
        printer.add(database::webhook_secrets(&db, key.mode()).await);
        printer.add(database::security_report(&db).await);
        // Only where the HTTP API is on: a worker that serves no API needs no such right.
        if config.api.enabled() {
            printer.add(database::api_role(&db).await);
        }
        if let Some(check) = meters::failed_events(&db).await {
            printer.add(check);
        }
    } else {
        let why = if reachable {
            "the extension does not fit this worker"
        } else {
            "no database"
        };
        printer.add(Check::skipped("webhook signing secret", why));
        printer.add(Check::skipped("security report", why));
    }
    let plans = if reachable && schema_fits {
        database::active_plans(&db).await
    } else {
        Err(Check::skipped("prices", "the catalog could not be read"))
    };
    printer.extend(account::checks(&config, &key, plans).await);
    if reachable {
        printer.add(database::notify_round_trip(&config.database, &db).await);
    } else {
        printer.add(Check::skipped("NOTIFY", "no database"));
    }
    finish(&printer.checks)
}

fn finish(checks: &[Check]) -> u8 {
    println!("\n{}", summary(checks));
    exit_code(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_print_their_fix_indented() {
        let c = Check::problem(
            "webhook signing secret",
            "none is configured",
            "INSERT INTO billing.webhook_secrets ...;\nthen restart",
        );
        assert_eq!(
            c.to_string(),
            "✗ webhook signing secret: none is configured\n    fix: INSERT INTO billing.webhook_secrets ...;\n         then restart"
        );
        assert_eq!(
            Check::passed("database", "stripe_billing 0.2.0").to_string(),
            "✓ database: stripe_billing 0.2.0"
        );
    }

    #[test]
    fn a_problem_outranks_what_could_not_be_checked() {
        let ok = Check::passed("a", "");
        let bad = Check::problem("b", "", "x");
        let unknown = Check::unknown("c", "");
        let skipped = Check::skipped("d", "");
        assert_eq!(exit_code(&[ok.clone(), skipped.clone()]), 0);
        assert_eq!(exit_code(&[ok.clone(), unknown.clone()]), 2);
        assert_eq!(exit_code(&[bad.clone(), unknown.clone(), ok.clone()]), 1);
        assert_eq!(
            summary(&[ok.clone(), ok, bad, unknown, skipped]),
            "2 passed, 1 problem, 1 not checked, 1 skipped"
        );
    }
}
