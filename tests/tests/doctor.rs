//! `stripe-billing-worker doctor` end to end: the real binary against a test database and the
//! local Stripe emulator, healthy and broken in each way it checks. Every broken set-up must
//! give exactly its own ✗ (with a fix) and exit code 1; docs/operations.md shows the real output of a
//! healthy and a broken set-up, which this file compares with a run.
mod worker_support;

use serde_json::json;
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;
use worker_support::pooler::TransactionPooler;
use worker_support::*;

/// A set-up the doctor finds healthy: the emulator's catalog (a recurring and a one-time
/// price) sold by a subscription plan and a token pack, a test-mode signing secret, and the
/// emulator's own webhook endpoint (all events) and default portal configuration.
struct Account {
    db: TestDb,
    owner: Client,
    emulator: Emulator,
}

async fn account() -> Account {
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
fn unmarked(line: &str) -> &str {
    line.split_once(' ').map_or("", |(_, rest)| rest)
}

/// What one run printed and its exit code.
struct Report {
    code: Option<i32>,
    out: String,
}

impl Report {
    /// The checklist lines (`✓ name: detail`, without the fix lines).
    fn checks(&self) -> Vec<&str> {
        self.out
            .lines()
            .filter(|l| ["✓ ", "✗ ", "? ", "- "].iter().any(|m| l.starts_with(m)))
            .collect()
    }

    fn marked(&self, mark: &str) -> Vec<&str> {
        self.checks()
            .into_iter()
            .filter(|l| l.starts_with(mark))
            .collect()
    }

    /// The fix printed under the check named `name`.
    fn fix(&self, name: &str) -> String {
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
    fn has_only_problem(&self, name: &str, needle: &str, fix: &str) {
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

async fn doctor_with(dsn: &str, stripe: Option<&str>, key: Option<&str>) -> Report {
    doctor_env(dsn, stripe, key, &[]).await
}

/// The doctor with extra environment variables (e.g. the HTTP API's JWT_SECRET).
async fn doctor_env(
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
    async fn doctor(&self) -> Report {
        doctor_with(&self.db.dsn, Some(&self.emulator.url), Some(SECRET_KEY)).await
    }
}

#[tokio::test]
async fn a_healthy_set_up_passes_every_check() {
    let a = account().await;
    let r = a.doctor().await;
    assert_eq!(r.code, Some(0), "{}", r.out);
    let names: Vec<&str> = r
        .checks()
        .iter()
        .map(|l| unmarked(l).split(':').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "database",
            "webhook signing secret",
            "security report",
            "Stripe key",
            "plan pack",
            "plan pro",
            "webhook endpoint",
            "customer portal",
            "NOTIFY"
        ],
        "{}",
        r.out
    );
    assert_eq!(r.marked("✓ ").len(), names.len(), "{}", r.out);
    assert!(r.out.contains("(key sk_test_…)"), "{}", r.out);
    assert!(r.out.trim_end().ends_with("9 passed"), "{}", r.out);
}

#[tokio::test]
async fn no_webhook_secret() {
    let a = account().await;
    a.owner
        .batch_execute("DELETE FROM billing.webhook_secrets")
        .await
        .unwrap();
    a.doctor().await.has_only_problem(
        "webhook signing secret",
        "none is configured",
        "INSERT INTO billing.webhook_secrets (secret, livemode) VALUES ('whsec_...', false)",
    );
}

#[tokio::test]
async fn an_expired_webhook_secret() {
    let a = account().await;
    a.owner
        .batch_execute("UPDATE billing.webhook_secrets SET expires_at = now() - interval '1 hour'")
        .await
        .unwrap();
    a.doctor().await.has_only_problem(
        "webhook signing secret",
        "the only configured secret has expired",
        "INSERT INTO billing.webhook_secrets",
    );
}

#[tokio::test]
async fn a_secret_of_the_other_mode_than_the_key() {
    let a = account().await;
    a.owner
        .batch_execute("UPDATE billing.webhook_secrets SET livemode = true")
        .await
        .unwrap();
    a.doctor().await.has_only_problem(
        "webhook signing secret",
        "the unexpired secrets are live-mode, but the key is a test-mode key",
        "VALUES ('whsec_...', false)",
    );
}

#[tokio::test]
async fn a_plan_whose_price_stripe_does_not_have() {
    let a = account().await;
    a.owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens)
             VALUES ('ghost', 'price_1QghostNotInStripe', 'Ghost', 'token_pack', 10)",
        )
        .await
        .unwrap();
    let r = a.doctor().await;
    r.has_only_problem(
        "plan ghost",
        "price price_1QghostNotInStripe does not exist in Stripe's test mode",
        "UPDATE billing.plans SET stripe_price_id = 'price_...' WHERE id = 'ghost';",
    );
    // An inactive plan is not for sale, so its price is not checked.
    a.owner
        .batch_execute("UPDATE billing.plans SET active = false WHERE id = 'ghost'")
        .await
        .unwrap();
    assert_eq!(a.doctor().await.code, Some(0));
}

#[tokio::test]
async fn an_archived_price() {
    let a = account().await;
    a.emulator
        .post("/_emulator/prices/price_pack", json!({"active": false}))
        .await;
    a.doctor().await.has_only_problem(
        "plan pack",
        "price price_pack is archived (inactive) in Stripe",
        "WHERE id = 'pack'",
    );
}

#[tokio::test]
async fn a_plan_with_overage_needs_its_meter_and_a_price_metered_on_it() {
    let a = account().await;
    a.owner
        .batch_execute("UPDATE billing.plans SET overage_limit = 500, meter_event_name = 'tokens_over' WHERE id = 'pro'")
        .await
        .unwrap();
    a.doctor().await.has_only_problem(
        "meter of plan pro",
        "no active Billing Meter has event_name tokens_over in Stripe's test mode",
        "create the meter in https://dashboard.stripe.com/test/meters",
    );
    let (status, meter) = a
        .emulator
        .stripe(
            reqwest::Method::POST,
            "/v1/billing/meters",
            "display_name=Over&event_name=tokens_over&default_aggregation[formula]=sum",
        )
        .await;
    assert_eq!(status, 200, "{meter}");
    let meter = meter["id"].as_str().unwrap();
    a.doctor().await.has_only_problem(
        "meter of plan pro",
        &format!("meter {meter} (tokens_over) exists, but no active price of product"),
        &format!("add a usage-based price on meter {meter}"),
    );
    a.emulator
        .post(
            "/_emulator/metered_prices",
            json!({"product_of": "price_pro", "meter": meter}),
        )
        .await;
    let r = a.doctor().await;
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out.contains(&format!(
            "✓ meter of plan pro: meter {meter} (tokens_over) is active"
        )),
        "{}",
        r.out
    );
}

#[tokio::test]
async fn a_one_time_price_on_a_subscription_plan_and_the_reverse() {
    let a = account().await;
    a.owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens, tokens) VALUES
                ('team', 'price_once', 'Team', 'subscription', 5000, NULL),
                ('refill', 'price_monthly', 'Refill', 'token_pack', NULL, 100);",
        )
        .await
        .unwrap();
    let r = a.doctor().await;
    assert_eq!(r.code, Some(1), "{}", r.out);
    let problems = r.marked("✗ ");
    assert_eq!(problems.len(), 2, "{}", r.out);
    assert!(
        problems[0].starts_with("✗ plan refill: the token pack sells price price_monthly, which is recurring; a token pack needs a one-time price"),
        "{}",
        r.out
    );
    assert!(
        problems[1].starts_with("✗ plan team: the subscription plan sells price price_once, which is one-time; a subscription plan needs a recurring price"),
        "{}",
        r.out
    );
}

#[tokio::test]
async fn no_webhook_endpoint() {
    let a = account().await;
    // Without a webhook URL the emulator's account has no endpoint at all.
    a.emulator
        .post("/_emulator/webhook", json!({"url": null}))
        .await;
    a.doctor().await.has_only_problem(
        "webhook endpoint",
        "Stripe has no enabled webhook endpoint in test mode",
        "https://dashboard.stripe.com/test/webhooks",
    );
}

#[tokio::test]
async fn an_endpoint_missing_event_types() {
    let a = account().await;
    a.emulator
        .post("/_emulator/webhook", json!({"url": null}))
        .await;
    a.emulator
        .post(
            "/_emulator/webhook_endpoints",
            json!({"url": "https://app.example.test/api/stripe/webhook",
                   "enabled_events": ["checkout.session.completed", "invoice.paid", "invoice.payment_failed"]}),
        )
        .await;
    let r = a.doctor().await;
    r.has_only_problem(
        "webhook endpoint",
        "(https://app.example.test/api/stripe/webhook) lacks checkout.session.async_payment_succeeded, ",
        "enable the missing events",
    );
    let line = r.marked("✗ ")[0];
    assert!(line.ends_with(", payment_intent.succeeded"), "{line}");
    for enabled in [
        "checkout.session.completed,",
        "invoice.paid,",
        "invoice.payment_failed,",
    ] {
        assert!(!line.contains(enabled), "{line}");
    }
    // An endpoint with every type, next to it, is enough.
    a.emulator
        .post(
            "/_emulator/webhook_endpoints",
            json!({"url": "https://app.example.test/other",
                   "enabled_events": stripe_billing_core::event::APPLIED_TYPES}),
        )
        .await;
    assert_eq!(a.doctor().await.code, Some(0));
}

#[tokio::test]
async fn no_customer_portal_configuration() {
    let a = account().await;
    a.emulator
        .post("/_emulator/portal_configuration", json!({"exists": false}))
        .await;
    a.doctor().await.has_only_problem(
        "customer portal",
        "no default Customer Portal configuration in test mode",
        "https://dashboard.stripe.com/test/settings/billing/portal",
    );
}

#[tokio::test]
async fn notify_does_not_arrive_through_a_transaction_pooler() {
    let a = account().await;
    let pooler = TransactionPooler::start(&a.db.dsn).await;
    let r = doctor_with(
        &pooler.dsn(&a.db.name),
        Some(&a.emulator.url),
        Some(SECRET_KEY),
    )
    .await;
    r.has_only_problem(
        "NOTIFY",
        "did not reach a LISTEN connection within 5 s",
        "use a direct or session-mode connection string",
    );
    // Every other check went through the pooler and passed.
    assert_eq!(r.marked("✓ ").len(), 8, "{}\n{}", r.out, pooler.log());
}

#[tokio::test]
async fn no_key_or_a_key_stripe_refuses() {
    let a = account().await;
    let r = doctor_with(&a.db.dsn, Some(&a.emulator.url), None).await;
    r.has_only_problem(
        "Stripe key",
        "STRIPE_SECRET_KEY is not set",
        "set STRIPE_SECRET_KEY",
    );
    assert_eq!(
        r.marked("- ").len(),
        3,
        "prices, endpoint, portal skipped: {}",
        r.out
    );
    let r = doctor_with(
        &a.db.dsn,
        Some(&a.emulator.url),
        Some("sk_test_revoked1234"),
    )
    .await;
    r.has_only_problem(
        "Stripe key",
        "Stripe refuses the test-mode key",
        "https://dashboard.stripe.com/test/apikeys",
    );
    assert!(!r.out.contains("sk_test_revoked1234"), "{}", r.out);
}

#[tokio::test]
async fn a_database_at_another_version() {
    let a = account().await;
    // Where each edition records its version (the extension's catalog row, or the pure-SQL
    // edition's own record), set to a version this worker does not speak.
    let (record, fix) = match Edition::current() {
        Edition::Extension => (
            "UPDATE pg_catalog.pg_extension SET extversion = '0.1.9' WHERE extname = 'stripe_billing'",
            "ALTER EXTENSION stripe_billing UPDATE TO",
        ),
        Edition::Pure => (
            "UPDATE billing.installation SET version = '0.1.9'",
            "apply the pure-SQL edition's upgrade migrations",
        ),
    };
    a.owner.batch_execute(record).await.unwrap();
    a.doctor()
        .await
        .has_only_problem("database", "stripe_billing 0.1.9 is installed", fix);
}

#[tokio::test]
async fn a_database_without_the_extension_or_out_of_reach() {
    let a = account().await;
    let empty = TestDb::empty().await;
    let r = doctor_with(&empty.dsn, Some(&a.emulator.url), Some(SECRET_KEY)).await;
    r.has_only_problem(
        "database",
        "the stripe_billing extension is not installed",
        "CREATE EXTENSION stripe_billing",
    );
    // Nothing to check against Stripe without a catalog, but the account still is.
    assert!(
        r.out.contains("- prices: the catalog could not be read"),
        "{}",
        r.out
    );
    // No database at all: nothing can be judged, exit code 2.
    let gone = "host=/nonexistent/stripe_billing port=5432 user=postgres dbname=x";
    let r = doctor_with(gone, Some(&a.emulator.url), Some(SECRET_KEY)).await;
    assert_eq!(r.code, Some(2), "{}", r.out);
    assert!(
        r.checks()[0].starts_with("? database: cannot read from it"),
        "{}",
        r.out
    );
    assert!(r.marked("✗ ").is_empty(), "{}", r.out);
}

/// With the HTTP API on, the worker's role must be able to act as `authenticated` (each API
/// call's SQL runs as the user); a role that is only a member of service_role passes every
/// other check, and its API answers 500. The doctor says so and names the GRANT.
#[tokio::test]
async fn a_worker_role_that_cannot_act_as_authenticated() {
    let a = account().await;
    let role = format!("billing_worker_{}", uuid::Uuid::new_v4().simple());
    a.owner
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT service_role TO {role};"
        ))
        .await
        .unwrap();
    let dsn = a.db.dsn.replace("user=postgres", &format!("user={role}"));
    assert_ne!(dsn, a.db.dsn);
    let api = [("JWT_SECRET", stripe_billing_tests::jwt::TEST_JWT_SECRET)];
    let r = doctor_env(&dsn, Some(&a.emulator.url), Some(SECRET_KEY), &api).await;
    r.has_only_problem(
        "HTTP API role",
        "cannot act as authenticated",
        &format!("GRANT authenticated TO {role};"),
    );
    // Without the API the right is not needed, and not checked.
    let r = doctor_env(&dsn, Some(&a.emulator.url), Some(SECRET_KEY), &[]).await;
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(!r.out.contains("HTTP API role"), "{}", r.out);
    // The fix it names works.
    a.owner
        .batch_execute(&format!("GRANT authenticated TO {role};"))
        .await
        .unwrap();
    let r = doctor_env(&dsn, Some(&a.emulator.url), Some(SECRET_KEY), &api).await;
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.checks()
            .contains(&"✓ HTTP API role: the worker's role can act as authenticated"),
        "{}",
        r.out
    );
}

/// docs/operations.md's doctor output blocks (```text after `<!-- doctor-output: NAME -->`), `…`
/// standing for what differs between runs (paths, ports, ids, timings).
fn readme_block(name: &str) -> Vec<String> {
    let path = shipped_sql::upgrade::repo_root().join("docs/operations.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let marker = format!("<!-- doctor-output: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/operations.md has no {marker}"))
        .1;
    let block = after
        .split_once("```text\n")
        .expect("a text block after the marker")
        .1
        .split_once("```")
        .expect("closed block")
        .0;
    block.lines().map(str::to_string).collect()
}

/// Whether `actual` matches `pattern`, where `…` stands for any text.
fn matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let Some((first, rest)) = parts.split_first() else {
        return true;
    };
    let Some(mut left) = actual.strip_prefix(first) else {
        return false;
    };
    for (i, part) in rest.iter().enumerate() {
        if i == rest.len() - 1 {
            return left.ends_with(part);
        }
        match left.find(part) {
            Some(at) => left = &left[at + part.len()..],
            None => return false,
        }
    }
    parts.len() == 1 && left.is_empty()
}

fn assert_readme_shows(name: &str, report: &Report) {
    let shown = readme_block(name);
    let real: Vec<&str> = report.out.lines().collect();
    let same = shown.len() == real.len() && shown.iter().zip(&real).all(|(s, r)| matches(s, r));
    assert!(
        same,
        "docs/operations.md's {name:?} doctor output differs from a real run:\n--- docs\n{}\n--- run\n{}",
        shown.join("\n"),
        report.out
    );
}

#[tokio::test]
async fn the_readme_shows_real_doctor_output() {
    let healthy = account().await;
    let r = healthy.doctor().await;
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert_readme_shows("healthy", &r);

    let broken = account().await;
    broken
        .owner
        .batch_execute(
            "UPDATE billing.webhook_secrets SET expires_at = now() - interval '1 day';
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens)
             VALUES ('team', 'price_once', 'Team', 'subscription', 5000);",
        )
        .await
        .unwrap();
    broken
        .emulator
        .post("/_emulator/portal_configuration", json!({"exists": false}))
        .await;
    let r = broken.doctor().await;
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert_readme_shows("broken", &r);
}

#[test]
fn wildcards_match_any_text() {
    assert!(matches("a…c", "abbbc"));
    assert!(matches("✓ NOTIFY: … in … ms", "✓ NOTIFY: sent in 3 ms"));
    assert!(matches("plain", "plain"));
    assert!(!matches("plain", "plainer"));
    assert!(!matches("a…c", "abd"));
}
