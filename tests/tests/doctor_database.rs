//! `stripe-billing-worker doctor` end to end, the database broken in each way it checks: the
//! webhook signing secrets (none, expired, of the other mode than the key), NOTIFY through a
//! transaction pooler, another version or no extension or no database at all, and a worker role
//! that cannot act as `authenticated`. Each must give exactly its own ✗ (with a fix) and exit
//! code 1, or say what it could not check. The Stripe account's checks: doctor_account.rs.
mod doctor_support;
mod worker_support;

use doctor_support::*;
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::pg::TestDb;
use worker_support::pooler::TransactionPooler;
use worker_support::*;

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
