//! The worker process's life end to end: its command line and configuration refused with one
//! line and exit code 2, a database at another stripe_billing version refused until upgraded,
//! running without a Stripe key (requests fail clearly, webhooks still work), and SIGTERM letting
//! the requests in flight finish. What it does while running: worker_e2e.rs.
mod worker_support;

use std::time::Duration;

use serde_json::json;
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::pg::{with_user, TestDb};
use uuid::Uuid;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn cli_help_and_bad_configuration() {
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(worker_binary());
        cmd.env_remove("DATABASE_URL").args(args);
        cmd.output().expect("run the worker")
    };
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--database-url",
        "--stripe-secret-key",
        "--no-listen-notify",
        "--rate-limit",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    for (args, needle) in [
        (
            &["--database-url", "host=/tmp", "--listen", "nowhere"][..],
            "--listen",
        ),
        // A lease shorter than two Stripe timeouts (30 s by default).
        (
            &["--database-url", "host=/tmp", "--lease-seconds", "45"][..],
            "--lease-seconds",
        ),
        (
            &["--database-url", "postgres://u@h:port/db"][..],
            "--database-url",
        ),
        (
            &[
                "--database-url",
                "host=/tmp",
                "--stripe-api-base",
                "mailto:x",
            ][..],
            "--stripe-api-base",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{err}");
    }
    // clap's own usage errors exit with 2 as well, a number out of its bounds among them
    // (clap's message, with its hint on another line).
    assert_eq!(run(&[]).status.code(), Some(2));
    let out = run(&["--database-url", "host=/tmp", "--concurrency", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'--concurrency <CONCURRENCY>': 0 is not in 1..=1000"),
        "{err}"
    );
    assert_eq!(
        run(&["--database-url", "host=/tmp", "--bogus"])
            .status
            .code(),
        Some(2)
    );
}
#[tokio::test]
async fn an_extension_version_the_worker_was_not_built_for_is_refused() {
    let run = |dsn: &str| {
        std::process::Command::new(worker_binary())
            .args(["--database-url", dsn, "--listen", "127.0.0.1:0"])
            .env("STRIPE_SECRET_KEY", "sk_test_emulator")
            .output()
            .expect("run the worker")
    };
    let expected = env!("CARGO_PKG_VERSION");
    // An older schema: the released 0.1.0 extension, or (the pure-SQL edition has no older
    // release yet) a pure-SQL install whose record says it is older.
    let (old, old_message, upgrade) = match Edition::current() {
        Edition::Extension => (
            TestDb::with_version(Some("0.1.0")).await,
            format!("the database has stripe_billing 0.1.0, but this worker needs {expected}: run ALTER EXTENSION stripe_billing UPDATE TO '{expected}'"),
            "ALTER EXTENSION stripe_billing UPDATE".to_string(),
        ),
        Edition::Pure => {
            let db = TestDb::new().await;
            db.owner()
                .await
                .batch_execute("UPDATE billing.installation SET version = '0.1.9'")
                .await
                .unwrap();
            (
                db,
                format!("the database has stripe_billing 0.1.9, but this worker needs {expected}: apply the pure-SQL edition's upgrade migrations up to {expected}"),
                format!("UPDATE billing.installation SET version = '{expected}'"),
            )
        }
    };
    let none = TestDb::empty().await;
    let mut cases = vec![
        (&old.dsn, old_message),
        (
            &none.dsn,
            "the database has no stripe_billing: run CREATE EXTENSION stripe_billing, or apply the pure-SQL edition's migration".to_string(),
        ),
    ];
    // A role that may not read the pure-SQL edition's record is told so, not made to wait.
    let stranger = with_user(&old.dsn, "authenticator");
    if Edition::current() == Edition::Pure {
        cases.push((
            &stranger,
            "the worker's role may not read billing.installation".to_string(),
        ));
    }
    for (dsn, needle) in cases {
        let out = run(dsn);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains(" WARN ") && !l.contains(" INFO "))
            .collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(lines[0].contains(&needle), "{err}");
    }
    // After the upgrade the same worker starts.
    old.owner().await.batch_execute(&upgrade).await.unwrap();
    let mut worker = Worker::start(&old.dsn, None, &[]).await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(WAIT).await, Some(0));
}
#[tokio::test]
async fn without_a_secret_key_requests_fail_clearly_and_webhooks_still_work() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let worker = Worker::start(&db.dsn, None, &[]).await;
    let mut api = db.api().await;
    let id = request_checkout(&mut api, Uuid::new_v4(), "price_pack", "").await;
    let done = finished(&owner, id, WAIT).await;
    assert_eq!(done.status, "failed");
    assert_eq!(done.attempts, 1, "not retried");
    assert_eq!(
        done.error.as_deref(),
        Some("billing is not configured: STRIPE_SECRET_KEY is not set")
    );
    let body = event_body("evt_nokey_1");
    let header = sign(&owner, &body, WEBHOOK_SECRET, now()).await;
    let (status, answer) = post_webhook(&worker, body.into_bytes(), Some(&header)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["received"], true);
}
#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let mut s = Stack::start(&[], &["--shutdown-timeout-ms", "15000"]).await;
    // Both calls of the checkout are slow, so the signal arrives before the session call: a
    // claimed request is carried out in full (not skipped and requeued), and the call in
    // flight when the worker stops claiming completes.
    s.emulator
        .fault(json!({"path": "/v1/customers", "delay_ms": 1500}))
        .await;
    s.emulator
        .fault(json!({"path": "/v1/checkout/sessions", "delay_ms": 1500}))
        .await;
    let mut api = s.db.api().await;
    let id = request_checkout(&mut api, Uuid::new_v4(), "price_pack", "").await;
    // Signalled right after the claim, while the customer call is (about to be) in flight.
    wait_row(&s.owner, id, WAIT, |r| r.status == "running").await;
    s.worker.signal("TERM");
    let code = s.worker.wait_exit(Duration::from_secs(20)).await;
    let logs = s.worker.logs();
    assert_eq!(code, Some(0), "{logs}");
    let r = row(&s.owner, id).await;
    assert_eq!(
        (r.status.as_str(), r.attempts),
        ("succeeded", 1),
        "{r:?}\n{logs}"
    );
    let sessions = sessions_for(&s.emulator, id).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(r.result.unwrap()["session_id"], sessions[0].as_str());
    assert!(logs.contains("waiting for in-flight requests"), "{logs}");
    assert!(!logs.contains("requeued"), "{logs}");
}
