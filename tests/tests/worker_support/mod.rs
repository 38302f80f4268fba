//! Harness for the worker's end-to-end tests: the `stripe-emulator` and
//! `stripe-billing-worker` processes, a billing database to point them at, and waits.
//!
//! The worker and the emulator are other packages' binaries, which `cargo test -p
//! stripe-billing-tests` does not build: run `cargo build -p stripe-billing-worker -p
//! stripe-emulator` first (scripts/integration-test.sh does).
#![allow(dead_code)]

pub mod pooler;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stripe_billing_tests::pg::{Api, Caller};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::Client;
use uuid::Uuid;

pub const SECRET_KEY: &str = "sk_test_emulator";
pub const WEBHOOK_SECRET: &str = "whsec_emulator";
pub const OK_URL: &str = "https://app.example.test/ok";
pub const CANCEL_URL: &str = "https://app.example.test/cancel";
pub const RETURN_URL: &str = "https://app.example.test/account";

/// `target/debug/stripe-billing-worker` (or under `CARGO_TARGET_DIR`).
pub fn worker_binary() -> PathBuf {
    debug_binary("stripe-billing-worker")
}

/// `target/debug/stripe-emulator` (or under `CARGO_TARGET_DIR`).
pub fn emulator_binary() -> PathBuf {
    debug_binary("stripe-emulator")
}

/// The debug build of the binary `name`, which is also its package's name.
fn debug_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p {name}` before these tests",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Seeds the catalog the emulator knows (price_pro, price_pack) and a webhook secret.
pub async fn seed(owner: &Client, with_webhook_secret: bool) {
    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens, tokens) VALUES
                ('pro', 'price_pro', 'Pro', 'subscription', 1000, NULL),
                ('pack', 'price_pack', 'Pack', 'token_pack', NULL, 500),
                ('ghost', 'price_ghost', 'Not in Stripe', 'token_pack', NULL, 10);
             INSERT INTO billing.coupons (id, description) VALUES ('SPRING', 'spring sale');
             INSERT INTO billing.config (redirect_origins) VALUES ('{https://app.example.test}');",
        )
        .await
        .expect("seed plans");
    if with_webhook_secret {
        owner
            .execute(
                "INSERT INTO billing.webhook_secrets (secret, livemode) VALUES ($1, false)",
                &[&WEBHOOK_SECRET],
            )
            .await
            .expect("seed webhook secret");
    }
}

/// The local Stripe emulator, killed when dropped.
pub struct Emulator {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts `stripe-emulator` with prices price_pro (recurring) and price_pack (one-time),
    /// delivering webhooks to `webhook_url` if given.
    pub async fn start(webhook_url: Option<&str>) -> Emulator {
        Emulator::start_with(webhook_url, &[]).await
    }

    /// Like [`Emulator::start`], with more command-line arguments (say `--price …`).
    pub async fn start_with(webhook_url: Option<&str>, extra: &[&str]) -> Emulator {
        let mut cmd = Command::new(emulator_binary());
        cmd.args(extra);
        cmd.args(["--listen", "127.0.0.1:0", "--secret-key", SECRET_KEY])
            .args(["--webhook-secret", WEBHOOK_SECRET])
            .args(["--price", "price_pro:recurring:2000"])
            .args(["--price", "price_pack:one_time:900"])
            .args(["--coupon", "SPRING:percent_off:10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(url) = webhook_url {
            cmd.args(["--webhook-url", url]);
        }
        let mut child = cmd.spawn().expect("start stripe-emulator");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("stripe-emulator prints its address")
            .expect("read stdout")
            .expect("a line");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_string();
        Emulator {
            child,
            url,
            http: reqwest::Client::new(),
        }
    }

    /// A control or API call that must succeed; returns the JSON answer.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("emulator control call");
        let status = resp.status();
        let body: Value = resp.json().await.expect("emulator answers JSON");
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// A control call (`POST /_emulator/...`, see the emulator's module docs); its answer.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.control(reqwest::Method::POST, path, Some(body)).await
    }

    /// Queues a fault (see the emulator's control API).
    pub async fn fault(&self, fault: Value) {
        self.control(reqwest::Method::POST, "/_emulator/faults", Some(fault))
            .await;
    }

    /// Every API call the emulator served.
    pub async fn requests(&self) -> Vec<Value> {
        let log = self
            .control(reqwest::Method::GET, "/_emulator/requests", None)
            .await;
        log.as_array().cloned().unwrap_or_default()
    }

    /// Calls to `path` that created an object (200 and not an idempotent replay).
    pub async fn created(&self, path: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["path"] == path && r["status"] == 200 && r["replayed"] != true)
            .collect()
    }

    /// All calls to `path` with idempotency key `key`.
    pub async fn calls(&self, path: &str, key: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["path"] == path && r["idempotency_key"] == key)
            .collect()
    }

    /// The Checkout Session calls of request `id`, whatever customer they sent: the key is
    /// `checkout-<request id>-<customer id>`.
    pub async fn checkout_calls(&self, id: Uuid) -> Vec<Value> {
        let prefix = format!("checkout-{id}-");
        self.requests()
            .await
            .into_iter()
            .filter(|r| {
                r["path"] == "/v1/checkout/sessions"
                    && r["idempotency_key"]
                        .as_str()
                        .is_some_and(|k| k.starts_with(&prefix))
            })
            .collect()
    }

    /// Completes a Checkout Session as if the customer paid; returns the lifecycle report.
    /// Waits until the worker has asked for `user`'s Stripe customer (the first call of a
    /// checkout), so a test can act while the session call is still to come.
    pub async fn wait_for_customer(&self, user: Uuid, within: Duration) {
        let deadline = Instant::now() + within;
        let for_user = |calls: Vec<Value>| {
            calls
                .iter()
                .any(|c| c["params"]["metadata"]["user_id"] == user.to_string().as_str())
        };
        while !for_user(self.created("/v1/customers").await) {
            assert!(Instant::now() < deadline, "the customer was never created");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn complete_checkout(&self, session_id: &str) -> Value {
        self.control(
            reqwest::Method::POST,
            &format!("/_emulator/checkout/{session_id}/complete"),
            Some(json!({"payment_status": "paid"})),
        )
        .await
    }
}

impl Emulator {
    /// A Stripe API call with the secret key (`form` is form-encoded); returns status and JSON.
    pub async fn stripe(&self, method: reqwest::Method, path: &str, form: &str) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(SECRET_KEY)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .await
            .expect("emulator API call");
        (
            resp.status().as_u16(),
            resp.json().await.expect("JSON answer"),
        )
    }

    /// The latest charge of a PaymentIntent.
    pub async fn charge_of(&self, payment_intent: &str) -> String {
        let path = format!("/v1/payment_intents/{payment_intent}");
        let (status, pi) = self.stripe(reqwest::Method::GET, &path, "").await;
        assert_eq!(status, 200, "{path}: {pi}");
        pi["latest_charge"].as_str().unwrap().to_string()
    }

    /// Every event the emulator has made so far, in order, as Stripe would send them.
    pub async fn events(&self) -> Vec<Value> {
        let list = self
            .control(reqwest::Method::GET, "/_emulator/events", None)
            .await;
        list.as_array()
            .expect("a list of events")
            .iter()
            .map(|e| {
                serde_json::from_str(e["payload"].as_str().expect("payload")).expect("JSON payload")
            })
            .collect()
    }
}

/// A running worker process, killed when dropped.
pub struct Worker {
    child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Worker {
    /// Starts the worker against `dsn` and the emulator at `stripe` (no key when None), with
    /// `extra` flags (and a 200 ms poll unless they set one), and waits until its HTTP
    /// server answers.
    pub async fn start(dsn: &str, stripe: Option<&str>, extra: &[&str]) -> Worker {
        Worker::start_on(free_port(), dsn, stripe, extra).await
    }

    pub async fn start_on(port: u16, dsn: &str, stripe: Option<&str>, extra: &[&str]) -> Worker {
        let dir = std::env::temp_dir().join("stripe_billing_worker_e2e");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("worker-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(worker_binary());
        // Nothing from the test's own environment may configure the worker: every setting it
        // gets is passed here, so a new WORKER_*/STRIPE_* variable cannot leak in unnoticed.
        cmd.env_clear();
        cmd.env("RUST_LOG", "info,stripe_billing_worker=debug")
            .args(["--database-url", dsn])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        if !extra.contains(&"--poll-interval-ms") {
            cmd.args(["--poll-interval-ms", "200"]);
        }
        if let Some(base) = stripe {
            cmd.args(["--stripe-api-base", base, "--stripe-secret-key", SECRET_KEY]);
        }
        let child = cmd.spawn().expect("start stripe-billing-worker");
        let worker = Worker {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        worker.wait_healthy().await;
        worker
    }

    /// The webhook URL of this worker.
    pub fn webhook_url(&self) -> String {
        format!("{}/api/stripe/webhook", self.base)
    }

    /// The worker's log so far (for assertion messages).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A scrape of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let resp = reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("GET /metrics");
        assert!(resp.status().is_success(), "/metrics: {}", resp.status());
        resp.text().await.expect("metrics text")
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the worker never logged {needle:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_healthy(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = http.get(format!("{}/healthz", self.base)).send().await {
                if resp.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "worker did not come up:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal by name (TERM, INT, KILL).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("worker still running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("worker still running after {within:?}:\n{}", self.logs()))
            .expect("wait for worker");
        status.code()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Keep the log of a failed test for a look afterwards; the rest is noise.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A request row's state.
#[derive(Debug, Clone)]
pub struct Row {
    pub status: String,
    pub attempts: i32,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub locked_by: Option<String>,
}

pub async fn row(owner: &Client, id: Uuid) -> Row {
    let r = owner
        .query_one(
            "SELECT status, attempts, result, error, locked_by FROM billing.stripe_requests WHERE id = $1",
            &[&id],
        )
        .await
        .expect("request row");
    Row {
        status: r.get(0),
        attempts: r.get(1),
        result: r.get(2),
        error: r.get(3),
        locked_by: r.get(4),
    }
}

/// Waits until the request is succeeded or failed.
pub async fn finished(owner: &Client, id: Uuid, within: Duration) -> Row {
    let deadline = Instant::now() + within;
    loop {
        let r = row(owner, id).await;
        if r.status == "succeeded" || r.status == "failed" {
            return r;
        }
        assert!(Instant::now() < deadline, "request {id} still {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `check` holds for the request row.
pub async fn wait_row(
    owner: &Client,
    id: Uuid,
    within: Duration,
    check: impl Fn(&Row) -> bool,
) -> Row {
    let deadline = Instant::now() + within;
    loop {
        let r = row(owner, id).await;
        if check(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "request {id}: condition not met, {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A user's checkout of `price` through the worker (the RPC path), served: the id of the
/// Checkout Session it made.
pub async fn checkout_session(
    api: &mut Api,
    owner: &Client,
    user: Uuid,
    price: &str,
    worker: &Worker,
) -> String {
    let request = request_checkout(api, user, price, "").await;
    let done = finished(owner, request, Duration::from_secs(30)).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", worker.logs());
    done.result.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Queues a checkout for `user` through the SQL API, as the app would.
pub async fn request_checkout(api: &mut Api, user: Uuid, price: &str, extra: &str) -> Uuid {
    let sql = format!(
        "SELECT billing.request_checkout('{price}', success_url => '{OK_URL}', cancel_url => '{CANCEL_URL}'{extra})"
    );
    api.call(&Caller::User(user), &sql, &[])
        .await
        .unwrap_or_else(|e| panic!("request_checkout: {e:?}"))[0]
        .get(0)
}

/// Queues a portal session for `user`.
pub async fn request_portal(api: &mut Api, user: Uuid) -> Result<Uuid, tokio_postgres::Error> {
    let sql = format!("SELECT billing.request_portal('{RETURN_URL}')");
    api.call(&Caller::User(user), &sql, &[])
        .await
        .map(|rows| rows[0].get(0))
}

/// POSTs a webhook body with an optional Stripe-Signature header; returns (status, JSON).
pub async fn post_webhook(worker: &Worker, body: Vec<u8>, signature: Option<&str>) -> (u16, Value) {
    post_webhook_to(&worker.webhook_url(), body, signature).await
}

/// [`post_webhook`] by URL, for a spawned task that cannot borrow the worker.
pub async fn post_webhook_to(url: &str, body: Vec<u8>, signature: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url).body(body);
    if let Some(sig) = signature {
        req = req.header("Stripe-Signature", sig);
    }
    let resp = req.send().await.expect("webhook POST");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A Stripe-Signature header for `body`, made by the extension's own helper.
pub async fn sign(owner: &Client, body: &str, secret: &str, t: i64) -> String {
    owner
        .query_one(
            "SELECT billing.stripe_signature_header($1, $2, $3)",
            &[&body, &secret, &t],
        )
        .await
        .expect("sign")
        .get(0)
}

pub fn now() -> i64 {
    stripe_billing_tests::events::unix_now()
}

/// A minimal signed-webhook body (a `customer.created` event of a new customer) with id `id`.
pub fn event_body(id: &str) -> String {
    json!({
        "id": id, "object": "event", "type": "customer.created", "api_version": "2025-03-31.basil",
        "created": now(), "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": {"id": stripe_emulator::store::ids::customer(), "object": "customer"}}
    })
    .to_string()
}

/// Waits until every request in `ids` is finished; returns their rows.
pub async fn all_finished(owner: &Client, ids: &[Uuid], within: Duration) -> Vec<Row> {
    let deadline = Instant::now() + within;
    loop {
        let done: i64 = owner
            .query_one(
                "SELECT count(*) FROM billing.stripe_requests WHERE id = ANY($1) AND status IN ('succeeded', 'failed')",
                &[&ids],
            )
            .await
            .unwrap()
            .get(0);
        if done as usize == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} finished",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rows = Vec::new();
    for id in ids {
        rows.push(row(owner, *id).await);
    }
    rows
}

/// Checkout sessions the emulator holds for request `id` (by the metadata the worker sets).
pub async fn sessions_for(emulator: &Emulator, id: Uuid) -> Vec<String> {
    let state: Value = reqwest::get(format!("{}/_emulator/state", emulator.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    state["checkout_sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["metadata"]["request_id"] == id.to_string().as_str())
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect()
}

/// Holds a lock on `billing.stripe_events` that lets readers through but makes every webhook
/// wait at its INSERT (so a test can keep webhook requests in flight); released on ROLLBACK.
pub async fn block_event_inserts(dsn: &str) -> Client {
    let locker = stripe_billing_tests::pg::connect(dsn).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE billing.stripe_events IN SHARE MODE")
        .await
        .expect("lock stripe_events");
    locker
}

/// Waits until `n` sessions wait for the lock of [`block_event_inserts`].
pub async fn wait_blocked_inserts(owner: &Client, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let waiting: i64 = owner
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'billing.stripe_events'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} of {n} webhooks blocked"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
