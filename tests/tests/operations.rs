//! Operating it, end to end with the real worker and the emulator: `/metrics` and
//! `billing.health()` after real traffic (a paid checkout, a forged webhook, events held for an
//! unknown customer and one failing for an unknown price), the LISTEN self-check behind a real
//! transaction pooler, and retention on an interval. The table of metrics in docs/operations.md is compared
//! with a real scrape.
mod worker_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;
use worker_support::pooler::TransactionPooler;
use worker_support::*;

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    db: TestDb,
    owner: Client,
    emulator: Emulator,
    worker: Worker,
}

/// A worker and an emulator that delivers to it; `price_addon` is a recurring price Stripe
/// has and the catalog does not.
async fn setup(extra: &[&str]) -> Setup {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/api/stripe/webhook");
    let emulator =
        Emulator::start_with(Some(&hook), &["--price", "price_addon:recurring:500"]).await;
    let worker = Worker::start_on(port, &db.dsn, Some(&emulator.url), extra).await;
    Setup {
        db,
        owner,
        emulator,
        worker,
    }
}

/// What [`traffic`] made.
struct Traffic {
    /// The customer made in the Dashboard, whose events wait for a user.
    unlinked_customer: String,
}

/// A paid token-pack checkout through the worker, a forged webhook, a customer and a paid
/// subscription made in the Dashboard for nobody we know (held: BL007), and a subscription of
/// a known user to a price the catalog does not sell (failed: BL006).
async fn traffic(s: &Setup) -> Traffic {
    let mut api = s.db.api().await;
    let buyer = Uuid::new_v4();
    let id = request_checkout(&mut api, buyer, "price_pack", "").await;
    let row = finished(&s.owner, id, WAIT).await;
    assert_eq!(row.status, "succeeded", "{row:?}");
    let session = row.result.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    s.emulator.complete_checkout(&session).await;
    wait_for(&s.owner, "the pack is granted", async |c: &Client| {
        c.query_one("SELECT billing.token_balance($1)", &[&buyer])
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 500
    })
    .await;

    let (status, _) = post_webhook(&s.worker, b"{}".to_vec(), Some("t=1,v1=00")).await;
    assert_eq!(status, 400);

    let customer = s.emulator.post("/_emulator/customers", json!({})).await["object"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.emulator
        .post(
            "/_emulator/subscriptions",
            json!({"customer": customer, "price": "price_pro"}),
        )
        .await;
    let known = json!({"metadata": {"user_id": Uuid::new_v4().to_string()}});
    let linked = s.emulator.post("/_emulator/customers", known).await["object"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.emulator
        .post(
            "/_emulator/subscriptions",
            json!({"customer": linked, "price": "price_addon"}),
        )
        .await;
    wait_for(&s.owner, "a held and a failed event", async |c: &Client| {
        let r = c
            .query_one(
                "SELECT count(*) FILTER (WHERE error_code = 'BL007'), count(*) FILTER (WHERE error_code = 'BL006')
                 FROM billing.stripe_events WHERE processed_at IS NULL",
                &[],
            )
            .await
            .unwrap();
        r.get::<_, i64>(0) >= 1 && r.get::<_, i64>(1) == 1
    })
    .await;
    Traffic {
        unlinked_customer: customer,
    }
}

async fn wait_for(owner: &Client, what: &str, check: impl AsyncFn(&Client) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check(owner).await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scrape, parsed: `# HELP`/`# TYPE` by name, and every sample by name and sorted labels.
struct Scrape {
    text: String,
    help: BTreeMap<String, String>,
    kind: BTreeMap<String, String>,
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let end = after.find('"').expect("closed label value");
        out.insert(
            key.trim_start_matches(',').trim().to_string(),
            after[..end].to_string(),
        );
        rest = &after[end + 1..];
    }
    out
}

fn parse(text: String) -> Scrape {
    let (mut help, mut kind, mut samples) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap();
            help.insert(name.to_string(), h.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, k) = rest.split_once(' ').unwrap();
            kind.insert(name.to_string(), k.to_string());
        } else if !line.trim().is_empty() {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.insert((name.to_string(), labels), value.parse().unwrap());
        }
    }
    Scrape {
        text,
        help,
        kind,
        samples,
    }
}

impl Scrape {
    /// The sample `name` with exactly `labels`, if scraped.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_string(), labels)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{}", self.text))
    }
}

/// docs/operations.md's metric table: (name, type, help) rows.
fn readme_metrics() -> Vec<(String, String, String)> {
    let path = shipped_sql::upgrade::repo_root().join("docs/operations.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let table = readme
        .split_once("| metric | type | meaning |\n|---|---|---|\n")
        .expect("docs/operations.md has the table of metrics")
        .1;
    table
        .lines()
        .take_while(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (
                cells[0].trim_matches('`').to_string(),
                cells[1].to_string(),
                cells[2].to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn metrics_after_real_traffic() {
    let s = setup(&[]).await;
    s.worker.wait_log("LISTEN self-check passed", WAIT).await;
    traffic(&s).await;
    let m = parse(s.worker.metrics().await);

    // Every metric docs/operations.md lists is scraped, with its help text and type, and
    // nothing else is.
    let listed = readme_metrics();
    for (name, kind, help) in &listed {
        assert_eq!(m.help.get(name), Some(help), "HELP of {name}:\n{}", m.text);
        assert_eq!(m.kind.get(name), Some(kind), "TYPE of {name}:\n{}", m.text);
    }
    let names: Vec<&String> = listed.iter().map(|(n, _, _)| n).collect();
    assert_eq!(
        m.help.keys().collect::<Vec<_>>().len(),
        names.len(),
        "{}",
        m.text
    );

    let webhooks = "stripe_billing_webhooks_total";
    let applied = [
        ("outcome", "applied"),
        ("type", "checkout.session.completed"),
    ];
    assert!(m.value(webhooks, &applied) >= 1.0);
    assert_eq!(
        m.value(webhooks, &[("outcome", "rejected"), ("type", "unknown")]),
        1.0
    );
    assert!(m.value(webhooks, &[("outcome", "held"), ("type", "invoice.paid")]) >= 1.0);
    assert_eq!(
        m.value(webhooks, &[("outcome", "failed"), ("type", "invoice.paid")]),
        1.0
    );

    let calls = "stripe_billing_stripe_request_duration_seconds_count";
    for (method, endpoint) in [("POST", "/v1/customers"), ("POST", "/v1/checkout/sessions")] {
        let labels = [
            ("endpoint", endpoint),
            ("method", method),
            ("status", "200"),
        ];
        assert!(m.value(calls, &labels) >= 1.0, "{method} {endpoint}");
    }
    let requests = "stripe_billing_requests_total";
    assert_eq!(
        m.value(requests, &[("kind", "checkout"), ("outcome", "succeeded")]),
        1.0
    );
    assert!(m.value("stripe_billing_claim_latency_seconds_count", &[]) >= 1.0);
    assert!(m.value("stripe_billing_rate_limit_wait_seconds_count", &[]) >= 2.0);
    assert_eq!(m.value("stripe_billing_listen_notify", &[]), 1.0);
    assert_eq!(
        m.value("stripe_billing_pruned_total", &[("what", "events_deleted")]),
        0.0
    );

    // The database's figures are billing.health()'s.
    let h = s
        .owner
        .query_one(
            "SELECT requests_pending, events_held, events_failed,
                    extract(epoch FROM last_webhook_test)::double precision, oldest_failed_seconds
             FROM billing.health()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(m.value("stripe_billing_database_up", &[]), 1.0);
    let depth = m.value("stripe_billing_queue_depth", &[("status", "pending")]);
    assert_eq!(depth, h.get::<_, i64>(0) as f64);
    assert_eq!(
        m.value("stripe_billing_events_held", &[]),
        h.get::<_, i64>(1) as f64
    );
    assert_eq!(m.value("stripe_billing_events_failed", &[]), 1.0);
    assert_eq!(h.get::<_, i64>(2), 1);
    let last = m.value(
        "stripe_billing_webhook_last_received_timestamp_seconds",
        &[("mode", "test")],
    );
    assert_eq!(last, h.get::<_, f64>(3));
    assert!((now() as f64 - last).abs() < 120.0, "{last}");
    let live = [("mode", "live")];
    assert_eq!(
        m.value(
            "stripe_billing_webhook_last_received_timestamp_seconds",
            &live
        ),
        0.0
    );
    assert!(
        m.value(
            "stripe_billing_events_oldest_age_seconds",
            &[("state", "failed")]
        ) >= 0.0
    );
    // The failed event's age as the scrape read it: health()'s figure, read a moment earlier,
    // so not above what health() says now and only the time since the scrape below it.
    let failed_age = m.value(
        "stripe_billing_events_oldest_age_seconds",
        &[("state", "failed")],
    );
    let oldest_failed: f64 = h.get(4);
    assert!(
        failed_age > 0.0 && failed_age <= oldest_failed && oldest_failed - failed_age < 60.0,
        "metric {failed_age}, billing.health() {oldest_failed}"
    );
}

async fn health(c: &Client) -> Value {
    c.query_one("SELECT to_jsonb(h) FROM billing.health() h", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn health_after_real_traffic() {
    let mut s = setup(&[]).await;
    let t = traffic(&s).await;
    let h = health(&s.owner).await;
    let held: i64 = s
        .owner
        .query_one(
            "SELECT count(*) FROM billing.stripe_events WHERE stripe_customer_id = $1 AND processed_at IS NULL",
            &[&t.unlinked_customer],
        )
        .await
        .unwrap()
        .get(0);
    assert!(held >= 1);
    assert_eq!(h["events_held"], held, "{h}");
    assert_eq!(h["events_failed"], 1, "{h}");
    assert_eq!(
        (&h["requests_pending"], &h["requests_running"]),
        (&json!(0), &json!(0)),
        "{h}"
    );
    assert_eq!(h["oldest_pending_seconds"], Value::Null, "{h}");
    let age = |key: &str| h[key].as_f64().unwrap_or_else(|| panic!("{key}: {h}"));
    for key in [
        "oldest_held_seconds",
        "oldest_failed_seconds",
        "seconds_since_webhook_test",
    ] {
        assert!((0.0..120.0).contains(&age(key)), "{key}: {h}");
    }
    assert_eq!(
        (&h["last_webhook_live"], &h["seconds_since_webhook_live"]),
        (&Value::Null, &Value::Null)
    );

    // Linking the customer applies what waited for it.
    let user = Uuid::new_v4();
    s.owner
        .execute(
            "SELECT billing.link_customer($1, $2)",
            &[&user, &t.unlinked_customer],
        )
        .await
        .unwrap();
    let h = health(&s.owner).await;
    assert_eq!(
        (&h["events_held"], &h["oldest_held_seconds"]),
        (&json!(0), &Value::Null),
        "{h}"
    );

    // What the applied events asked the worker for (a retrieval of a paid invoice) is served
    // before it goes, so the one request below is the only one waiting.
    wait_for(&s.owner, "the queue is idle", async |c: &Client| {
        c.query_one(
            "SELECT count(*) FROM billing.stripe_requests WHERE status IN ('pending', 'running')",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 0
    })
    .await;
    // With the worker gone a request waits, and the queue shows it.
    s.worker.signal("KILL");
    s.worker.wait_exit(WAIT).await;
    let mut api = s.db.api().await;
    request_checkout(&mut api, Uuid::new_v4(), "price_pack", "").await;
    let h = health(&s.owner).await;
    assert_eq!(h["requests_pending"], 1, "{h}");
    assert!(
        (0.0..60.0).contains(&h["oldest_pending_seconds"].as_f64().unwrap()),
        "{h}"
    );

    // A live-mode delivery is counted apart from the test-mode ones.
    s.owner
        .batch_execute("INSERT INTO billing.webhook_secrets (secret, livemode) VALUES ('whsec_live_ops', true)")
        .await
        .unwrap();
    let body = event_body("evt_1QopsLiveMode").replace("\"livemode\":false", "\"livemode\":true");
    let header = sign(&s.owner, &body, "whsec_live_ops", now()).await;
    s.owner
        .query_one(
            "SELECT billing.handle_stripe_webhook($1, $2)",
            &[&body, &header],
        )
        .await
        .unwrap();
    let h = health(&s.owner).await;
    assert!(
        (0.0..60.0).contains(&h["seconds_since_webhook_live"].as_f64().unwrap()),
        "{h}"
    );
}

#[tokio::test]
async fn behind_a_transaction_pooler_the_worker_warns_once_and_polls() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, true).await;
    let emulator = Emulator::start(None).await;
    let pooler = TransactionPooler::start(&db.dsn).await;
    let worker = Worker::start(&pooler.dsn(&db.name), Some(&emulator.url), &[]).await;
    let warning = "did not reach the worker's LISTEN connection";
    worker.wait_log(warning, WAIT).await;
    assert_eq!(
        worker.logs().matches(warning).count(),
        1,
        "{}",
        worker.logs()
    );
    assert!(!worker.logs().contains("LISTEN self-check passed"));
    let m = parse(worker.metrics().await);
    assert_eq!(m.value("stripe_billing_listen_notify", &[]), 0.0);
    // Requests queued by the app (on a direct connection, which NOTIFYs) are still served.
    let mut api = db.api().await;
    for _ in 0..2 {
        let id = request_checkout(&mut api, Uuid::new_v4(), "price_pack", "").await;
        let row = finished(&owner, id, WAIT).await;
        assert_eq!(
            row.status,
            "succeeded",
            "{row:?}\n{}\n{}",
            worker.logs(),
            pooler.log()
        );
    }
    assert_eq!(
        worker.logs().matches(warning).count(),
        1,
        "{}",
        worker.logs()
    );
}

#[tokio::test]
async fn the_worker_prunes_on_its_interval() {
    let s = setup(&["--prune-interval-seconds", "1"]).await;
    // A request finished 40 days ago (retention: 30) and an applied event received 100 days
    // ago (retention: 90); and a fresh one of each, which stay.
    s.owner
        .batch_execute(
            "INSERT INTO billing.stripe_requests (user_id, kind, status, result, created_at, finished_at)
             VALUES (gen_random_uuid(), 'portal', 'succeeded', '{}', now() - interval '41 days', now() - interval '40 days'),
                    (gen_random_uuid(), 'portal', 'succeeded', '{}', now(), now());
             INSERT INTO billing.stripe_events (id, type, livemode, created, payload, received_at, processed_at)
             VALUES ('evt_1QopsOld', 'customer.created', false, now() - interval '100 days', '{}', now() - interval '100 days', now() - interval '100 days'),
                    ('evt_1QopsNew', 'customer.created', false, now(), '{}', now(), now());",
        )
        .await
        .unwrap();
    wait_for(&s.owner, "the old rows to be pruned", async |c: &Client| {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM billing.stripe_requests), (SELECT count(*) FROM billing.stripe_events WHERE id LIKE 'evt_1Qops%')",
                &[],
            )
            .await
            .unwrap();
        (r.get::<_, i64>(0), r.get::<_, i64>(1)) == (1, 1)
    })
    .await;
    let m = parse(s.worker.metrics().await);
    let pruned = "stripe_billing_pruned_total";
    assert_eq!(m.value(pruned, &[("what", "requests_deleted")]), 1.0);
    assert_eq!(m.value(pruned, &[("what", "events_deleted")]), 1.0);
}

#[tokio::test]
async fn the_worker_warns_of_expiring_grants_on_its_interval() {
    let s = setup(&["--prune-interval-seconds", "1"]).await;
    let user = Uuid::new_v4();
    // Warnings are off until the operator sets a window.
    s.owner
        .batch_execute("INSERT INTO billing.config (expiry_warning_days) VALUES (3) ON CONFLICT (id) DO UPDATE SET expiry_warning_days = 3")
        .await
        .unwrap();
    // One grant expiring within the window (3 days), one beyond it, one never.
    let grant = async |tokens: i64, days: Option<i32>| -> i64 {
        let g: Value = s
            .owner
            .query_one(
                "SELECT billing.grant_tokens($1, $2, expires_at => now() + make_interval(days => $3))",
                &[&user, &tokens, &days],
            )
            .await
            .unwrap()
            .get(0);
        g["grant_id"].as_i64().unwrap()
    };
    let soon = grant(40, Some(2)).await;
    grant(50, Some(10)).await;
    grant(60, None).await;
    let warnings = async |c: &Client| -> Vec<Value> {
        c.query(
            "SELECT payload FROM billing.notifications WHERE kind = 'tokens_expiring'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    wait_for(
        &s.owner,
        "the expiring grant to be warned",
        async |c: &Client| !warnings(c).await.is_empty(),
    )
    .await;
    // Several more runs of the job write nothing more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let all = warnings(&s.owner).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["grant_id"], soon);
    assert_eq!(all[0]["remaining"], 40);
    assert!(
        s.worker.logs().contains("tokens_expiring warnings written"),
        "{}",
        s.worker.logs()
    );
}
