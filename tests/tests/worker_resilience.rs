//! The worker under stress: two workers on one queue, a worker killed mid-request, a Stripe
//! call slower than the lease, a webhook flood, a shutdown with work still running, and a
//! Postgres restart underneath a running worker. Like worker_e2e.rs, these need
//! `cargo build -p stripe-billing-worker` first and the cluster of scripts/integration-test.sh
//! (the restart test starts its own cluster with scripts/pg.sh).
mod worker_support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stripe_billing_tests::pg::{connect, install_current, TestDb};
use uuid::Uuid;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn two_workers_on_one_queue_do_each_request_once() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, false).await;
    let emulator = Emulator::start(None).await;
    let w1 = Worker::start(&db.dsn, Some(&emulator.url), &["--worker-id", "w1"]).await;
    let w2 = Worker::start(&db.dsn, Some(&emulator.url), &["--worker-id", "w2"]).await;
    let mut api = db.api().await;
    let users: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    let mut ids = Vec::new();
    for round in 0..5 {
        for user in &users {
            let extra = format!(", quantity => {}", round + 1);
            ids.push(request_checkout(&mut api, *user, "price_pack", &extra).await);
        }
    }
    let rows = all_finished(&owner, &ids, WAIT).await;
    for (id, r) in ids.iter().zip(&rows) {
        assert_eq!(r.status, "succeeded", "{id}: {r:?}");
    }
    let session_ids: HashSet<&str> = rows
        .iter()
        .map(|r| r.result.as_ref().unwrap()["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        session_ids.len(),
        ids.len(),
        "one distinct session per request"
    );

    // Stripe saw one creation per request and one customer per user.
    let created = emulator.created("/v1/checkout/sessions").await;
    assert_eq!(created.len(), ids.len());
    for id in &ids {
        let prefix = format!("checkout-{id}-");
        let of_id = created
            .iter()
            .filter(|c| c["idempotency_key"].as_str().unwrap().starts_with(&prefix))
            .count();
        assert_eq!(of_id, 1, "{id}");
    }
    assert_eq!(emulator.created("/v1/customers").await.len(), users.len());

    // And each request was finished by exactly one of the workers.
    let (log1, log2) = (w1.logs(), w2.logs());
    let finished_in = |log: &str, id: &Uuid| {
        log.lines()
            .filter(|l| l.contains("request succeeded") && l.contains(&id.to_string()))
            .count()
    };
    let mut by_w1 = 0;
    for id in &ids {
        let (a, b) = (finished_in(&log1, id), finished_in(&log2, id));
        assert_eq!(
            a + b,
            1,
            "{id} finished {a} times by w1 and {b} times by w2"
        );
        by_w1 += a;
    }
    eprintln!("w1 finished {by_w1} of {}, w2 the rest", ids.len());
}

#[tokio::test]
async fn a_worker_killed_mid_request_is_replaced_without_a_duplicate_session() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, false).await;
    let emulator = Emulator::start(None).await;
    let lease = ["--lease-seconds", "2", "--stripe-timeout-ms", "1000"];
    let mut doomed = Worker::start(
        &db.dsn,
        Some(&emulator.url),
        &[&lease[..], &["--worker-id", "doomed"]].concat(),
    )
    .await;
    // The session call hangs for a while: the worker dies waiting for it.
    emulator
        .fault(json!({"path": "/v1/checkout/sessions", "delay_ms": 3000}))
        .await;
    let mut api = db.api().await;
    let user = Uuid::new_v4();
    let id = request_checkout(&mut api, user, "price_pack", "").await;
    emulator.wait_for_customer(user, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    doomed.signal("KILL");
    doomed.wait_exit(Duration::from_secs(10)).await;
    let orphan = row(&owner, id).await;
    assert_eq!(
        (orphan.status.as_str(), orphan.locked_by.as_deref()),
        ("running", Some("doomed"))
    );

    // A new worker takes the row over once the lease has run out.
    let rescuer = Worker::start(
        &db.dsn,
        Some(&emulator.url),
        &[&lease[..], &["--worker-id", "rescuer"]].concat(),
    )
    .await;
    let done = finished(&owner, id, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", rescuer.logs());
    assert!(done.attempts >= 2, "{done:?}");
    let sessions = sessions_for(&emulator, id).await;
    assert_eq!(
        sessions.len(),
        1,
        "one session despite the crash: {sessions:?}"
    );
    assert_eq!(done.result.unwrap()["session_id"], sessions[0].as_str());
    assert_eq!(emulator.created("/v1/customers").await.len(), 1);
}

#[tokio::test]
async fn a_call_slower_than_the_lease_is_cut_off_and_requeued_without_a_duplicate() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, false).await;
    let emulator = Emulator::start(None).await;
    // The session call takes longer than the 2 s lease. The worker cuts it off within its
    // lease (not after, when another claim could already be sending the same key) and
    // requeues the row itself; a later claim gets the one session.
    emulator
        .fault(json!({"path": "/v1/checkout/sessions", "delay_ms": 2500}))
        .await;
    let flags = |id: &'static str| {
        [
            "--lease-seconds",
            "2",
            "--stripe-timeout-ms",
            "1000",
            "--worker-id",
            id,
        ]
    };
    let a = Worker::start(&db.dsn, Some(&emulator.url), &flags("a")).await;
    let b = Worker::start(&db.dsn, Some(&emulator.url), &flags("b")).await;
    let mut api = db.api().await;
    let id = request_checkout(&mut api, Uuid::new_v4(), "price_pack", "").await;
    let done = finished(&owner, id, WAIT).await;
    let logs = format!("{}\n{}", a.logs(), b.logs());
    assert_eq!(done.status, "succeeded", "{done:?}\n{logs}");
    assert!(done.attempts >= 2, "{done:?}");
    let sessions = sessions_for(&emulator, id).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(done.result.unwrap()["session_id"], sessions[0].as_str());
    assert!(
        logs.contains("request failed, transiently") && logs.contains("status=\"pending\""),
        "{logs}"
    );
    assert!(
        !logs.contains("claim lost"),
        "every claim wrote its own outcome: {logs}"
    );
}

#[tokio::test]
async fn a_webhook_flood_gets_503_busy_and_does_not_starve_the_queue() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let emulator = Emulator::start(None).await;
    let worker = Worker::start(&db.dsn, Some(&emulator.url), &[]).await;
    // Three webhooks hang at their INSERT and hold the endpoint's three connections.
    let locker = block_event_inserts(&db.dsn).await;
    let mut held = Vec::new();
    for n in 0..3 {
        let body = event_body(&format!("evt_flood_{n}"));
        let header = sign(&owner, &body, WEBHOOK_SECRET, now()).await;
        let url = worker.webhook_url();
        held.push(tokio::spawn(async move {
            post_webhook_to(&url, body.into_bytes(), Some(&header)).await
        }));
    }
    wait_blocked_inserts(&owner, 3, WAIT).await;

    // The next one waits briefly for a connection, then is told to come back.
    let body = event_body("evt_flood_3");
    let header = sign(&owner, &body, WEBHOOK_SECRET, now()).await;
    let started = Instant::now();
    let (status, answer) = post_webhook(&worker, body.into_bytes(), Some(&header)).await;
    assert_eq!((status, &answer), (503, &json!({"error": "busy"})));
    assert!(started.elapsed() < Duration::from_secs(10));

    // Meanwhile the queue has its own connections.
    let mut api = db.api().await;
    let id = request_checkout(&mut api, Uuid::new_v4(), "price_pack", "").await;
    let done = finished(&owner, id, WAIT).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", worker.logs());

    locker.batch_execute("ROLLBACK").await.unwrap();
    for hook in held {
        let (status, answer) = hook.await.unwrap();
        assert_eq!(status, 200, "{answer}");
    }
}

#[tokio::test]
async fn shutdown_stays_within_one_timeout_and_requeues_what_it_stops() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let emulator = Emulator::start(None).await;
    let mut worker = Worker::start(
        &db.dsn,
        Some(&emulator.url),
        &["--shutdown-timeout-ms", "3000"],
    )
    .await;
    // A Stripe call that outlasts the shutdown timeout...
    emulator
        .fault(json!({"path": "/v1/checkout/sessions", "delay_ms": 20000}))
        .await;
    let mut api = db.api().await;
    let user = Uuid::new_v4();
    let id = request_checkout(&mut api, user, "price_pack", "").await;
    emulator.wait_for_customer(user, WAIT).await;
    // ...and a webhook that keeps an HTTP connection busy past it.
    let locker = block_event_inserts(&db.dsn).await;
    let body = event_body("evt_shutdown");
    let header = sign(&owner, &body, WEBHOOK_SECRET, now()).await;
    let url = worker.webhook_url();
    // (Its answer does not matter: the worker exits with the request still open.)
    let hook = tokio::spawn(async move {
        let request = reqwest::Client::new().post(&url).body(body);
        request.header("Stripe-Signature", header).send().await
    });
    wait_blocked_inserts(&owner, 1, WAIT).await;

    let signalled = Instant::now();
    worker.signal("TERM");
    let code = worker.wait_exit(Duration::from_secs(20)).await;
    let took = signalled.elapsed();
    let logs = worker.logs();
    assert_eq!(code, Some(0), "{logs}");
    // One 3 s deadline for the requests and the HTTP server together, not 3 s each.
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(5500),
        "{took:?}\n{logs}"
    );
    assert!(logs.contains("HTTP connections still open"), "{logs}");
    // The stopped request put its row back itself instead of leaving it to the lease.
    let r = row(&owner, id).await;
    assert_eq!(
        (r.status.as_str(), r.attempts),
        ("pending", 1),
        "{r:?}\n{logs}"
    );
    assert!(
        r.error.as_deref().is_some_and(|e| e.contains("stopped")),
        "{r:?}"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    let _ = hook.await;
}

/// A private cluster (scripts/pg.sh), stopped and removed when dropped.
struct Cluster {
    dir: PathBuf,
    dsn: String,
}

impl Cluster {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh")
    }

    fn run(&self, action: &str) -> String {
        let out = std::process::Command::new(Cluster::script())
            .args([action, self.dir.to_str().unwrap()])
            .output()
            .expect("run scripts/pg.sh");
        assert!(
            out.status.success(),
            "pg.sh {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!("sb_worker_pg_{}", std::process::id()));
        let mut cluster = Cluster {
            dir,
            dsn: String::new(),
        };
        cluster.dsn = cluster.run("start");
        cluster
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Cluster::script())
            .args(["stop", self.dir.to_str().unwrap()])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn health(worker: &Worker) -> Value {
    reqwest::get(format!("{}/healthz", worker.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_worker_survives_a_postgres_restart_and_finishes_the_backlog() {
    let mut cluster = Cluster::start();
    // The owner of the install (the superuser, or Supabase's postgres) connects from here on.
    cluster.dsn = install_current(&cluster.dsn).await;
    let admin = connect(&cluster.dsn).await;
    seed(&admin, false).await;
    drop(admin);
    let emulator = Emulator::start(None).await;
    // A 10-minute poll: after the outage only re-LISTEN's catch-up can find new work.
    let worker = Worker::start(
        &cluster.dsn,
        Some(&emulator.url),
        &["--poll-interval-ms", "600000"],
    )
    .await;

    let user = Uuid::new_v4();
    let new_api = || async {
        stripe_billing_tests::pg::Api {
            client: connect(&cluster.dsn).await,
        }
    };
    let owner = connect(&cluster.dsn).await;
    let mut api = new_api().await;
    let first = request_checkout(&mut api, user, "price_pack", "").await;
    assert_eq!(
        finished(&owner, first, WAIT).await.status,
        "succeeded",
        "{}",
        worker.logs()
    );

    // Three requests are in flight at Stripe when the database goes away: their outcomes
    // are written once it is back.
    emulator
        .fault(json!({"path": "/v1/checkout/sessions", "delay_ms": 2500, "count": 3}))
        .await;
    let mut in_flight = Vec::new();
    for _ in 0..3 {
        in_flight.push(request_checkout(&mut api, user, "price_pack", "").await);
    }
    for id in &in_flight {
        wait_row(&owner, *id, WAIT, |r| r.status == "running").await;
    }
    drop((owner, api));
    cluster.run("stop");
    assert_eq!(
        health(&worker).await,
        json!({"ok": true, "database": false})
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.run("start");
    let owner = connect(&cluster.dsn).await;
    let rows = all_finished(&owner, &in_flight, WAIT).await;
    for (id, r) in in_flight.iter().zip(&rows) {
        assert_eq!(r.status, "succeeded", "{id}: {r:?}\n{}", worker.logs());
        assert_eq!(sessions_for(&emulator, *id).await.len(), 1);
    }

    // Nothing in flight now. A backlog queued while the worker is still reconnecting is
    // found by the catch-up claim after re-LISTEN: there is no poll tick to find it.
    drop(owner);
    cluster.run("stop");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.run("start");
    let owner = connect(&cluster.dsn).await;
    let mut api = new_api().await;
    let mut backlog = Vec::new();
    for _ in 0..3 {
        backlog.push(request_checkout(&mut api, user, "price_pack", "").await);
    }
    let rows = all_finished(&owner, &backlog, WAIT).await;
    for (id, r) in backlog.iter().zip(&rows) {
        assert_eq!(r.status, "succeeded", "{id}: {r:?}\n{}", worker.logs());
    }
    assert_eq!(health(&worker).await, json!({"ok": true, "database": true}));
    let logs = worker.logs();
    assert!(logs.contains("LISTEN connection lost"), "{logs}");
    // At least one re-LISTEN (both outages may fall into one reconnect backoff).
    assert!(
        logs.matches("listening for queued requests").count() >= 2,
        "{logs}"
    );
}
