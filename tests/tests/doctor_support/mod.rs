//! The doctor's harness shared by doctor.rs, doctor_account.rs and doctor_database.rs: a
//! set-up it finds healthy, and one run of the real binary with what it printed.
#![allow(dead_code)]

use crate::worker_support::*;
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

/// A set-up the doctor finds healthy: the emulator's catalog (a recurring and a one-time
/// price) sold by a subscription plan and a token pack, a test-mode signing secret, and the
/// emulator's own webhook endpoint (all events) and default portal configuration.
pub struct Account {
    pub db: TestDb,
    pub owner: Client,
    pub emulator: Emulator,
}

pub async fn account() -> Account {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens, tokens) VALUES
                ('pro', 'price_pro', 'Pro', 'subscription', 1000, NULL),
                ('pack', 'price_pack', 'Pack', 'token_pack', NULL, 500);",
        )
        .await
        .expect("catalog");
    owner
        .execute(
            "INSERT INTO billing.webhook_secrets (secret, livemode) VALUES ($1, false)",
            &[&WEBHOOK_SECRET],
        )
        .await
        .expect("secret");
    // Deliveries would go nowhere; the doctor causes none. Two prices no plan sells yet.
    let emulator = Emulator::start_with(
        Some("https://app.example.test/api/stripe/webhook"),
        &[
            "--price",
            "price_once:one_time:300",
            "--price",
            "price_monthly:recurring:700",
        ],
    )
    .await;
    Account {
        db,
        owner,
        emulator,
    }
}

/// A checklist line without its mark (✓, ✗, ?, -).
pub fn unmarked(line: &str) -> &str {
    line.split_once(' ').map_or("", |(_, rest)| rest)
}

/// What one run printed and its exit code.
pub struct Report {
    pub code: Option<i32>,
    pub out: String,
}

impl Report {
    /// The checklist lines (`✓ name: detail`, without the fix lines).
    pub fn checks(&self) -> Vec<&str> {
        self.out
            .lines()
            .filter(|l| ["✓ ", "✗ ", "? ", "- "].iter().any(|m| l.starts_with(m)))
            .collect()
    }

    pub fn marked(&self, mark: &str) -> Vec<&str> {
        self.checks()
            .into_iter()
            .filter(|l| l.starts_with(mark))
            .collect()
    }

    /// The fix printed under the check named `name`.
    pub fn fix(&self, name: &str) -> String {
        let mut lines = self
            .out
            .lines()
            .skip_while(|l| !unmarked(l).starts_with(&format!("{name}: ")));
        lines.next();
        lines
            .take_while(|l| l.starts_with("    "))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Exactly one ✗, on the check `name`, mentioning `needle`, with a fix mentioning `fix`.
    pub fn has_only_problem(&self, name: &str, needle: &str, fix: &str) {
        assert_eq!(self.code, Some(1), "{}", self.out);
        let problems = self.marked("✗ ");
        assert_eq!(problems.len(), 1, "{}", self.out);
        assert!(
            problems[0].starts_with(&format!("✗ {name}: ")) && problems[0].contains(needle),
            "{}",
            self.out
        );
        assert!(self.fix(name).contains(fix), "{}", self.out);
        assert!(self.marked("? ").is_empty(), "{}", self.out);
    }
}

pub async fn doctor_with(dsn: &str, stripe: Option<&str>, key: Option<&str>) -> Report {
    doctor_env(dsn, stripe, key, &[]).await
}

/// The doctor with extra environment variables (e.g. the HTTP API's JWT_SECRET).
pub async fn doctor_env(
    dsn: &str,
    stripe: Option<&str>,
    key: Option<&str>,
    env: &[(&str, &str)],
) -> Report {
    let mut cmd = tokio::process::Command::new(worker_binary());
    cmd.env_clear().args(["--database-url", dsn]);
    cmd.envs(env.iter().copied());
    if let Some(base) = stripe {
        cmd.args(["--stripe-api-base", base]);
    }
    cmd.arg("doctor");
    if let Some(key) = key {
        cmd.env("STRIPE_SECRET_KEY", key);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("the doctor finishes within a minute")
        .expect("run the doctor");
    let report = Report {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
    };
    // Nothing secret is ever printed.
    for secret in [SECRET_KEY, WEBHOOK_SECRET] {
        assert!(!report.out.contains(secret), "{}", report.out);
    }
    report
}

impl Account {
    pub async fn doctor(&self) -> Report {
        doctor_with(&self.db.dsn, Some(&self.emulator.url), Some(SECRET_KEY)).await
    }
}
