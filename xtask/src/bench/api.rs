//! Checkout latency, one call at a time, through three paths against the local emulator
//! (which answers at once, so the figures are this product's own cost):
//! - bare: `POST /v1/checkout/sessions` straight to the emulator, the floor any path pays;
//! - HTTP API: `POST /api/stripe/checkout` with a user's JWT, served at once by the worker
//!   that accepts it;
//! - RPC: `billing.request_checkout` as the user, then `billing.await_request`, served by the
//!   worker's queue loop (LISTEN + claim).
//!
//! Slices of the three alternate, so a noisy neighbour hits all alike. Percentiles per path,
//! and each path's p50 over the bare call's.
use std::time::Instant;

use serde_json::{json, Value};
use tokio::process::Command;
use tokio_postgres::Client;
use uuid::Uuid;

use super::worker::{binary, start};
use super::RUN;
use stripe_billing_tests::jwt::{hs256, user_claims, TEST_JWT_SECRET};
use stripe_billing_tests::pg::TestDb;

const USERS: usize = 4;
const SLICES: u32 = 6;
const OK_URL: &str = "https://app.example.test/ok";
const NO_URL: &str = "https://app.example.test/no";

struct Paths {
    http: reqwest::Client,
    stripe: String,
    customer: String,
    worker: String,
    tokens: Vec<String>,
    users: Vec<Uuid>,
    db: Client,
}

impl Paths {
    async fn bare(&self, n: u64) {
        let form = [
            ("customer", self.customer.as_str()),
            ("mode", "payment"),
            ("line_items[0][price]", "price_bench"),
            ("line_items[0][quantity]", "1"),
            ("success_url", OK_URL),
            ("cancel_url", NO_URL),
        ];
        let resp = self
            .http
            .post(format!("{}/v1/checkout/sessions", self.stripe))
            .basic_auth("sk_test_emulator", Some(""))
            .header(
                "idempotency-key",
                format!("bench-bare-{n}-{}", Uuid::new_v4()),
            )
            .form(&form)
            .send()
            .await
            .expect("emulator");
        assert!(resp.status().is_success(), "bare call: {}", resp.status());
    }

    async fn api(&self, n: u64) {
        let token = &self.tokens[n as usize % USERS];
        let resp = self
            .http
            .post(format!("{}/api/stripe/checkout", self.worker))
            .bearer_auth(token)
            .json(&json!({"priceId": "price_bench", "mode": "payment", "successUrl": OK_URL, "cancelUrl": NO_URL}))
            .send()
            .await
            .expect("worker");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success() && body["sessionId"].is_string(),
            "HTTP API: {status} {body}"
        );
    }

    async fn rpc(&self, n: u64) {
        let user = self.users[n as usize % USERS];
        let claims = user_claims(user).to_string();
        let as_user = "SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)";
        self.db.batch_execute("BEGIN").await.unwrap();
        self.db.execute(as_user, &[&claims]).await.unwrap();
        let id: Uuid = self
            .db
            .query_one(
                "SELECT billing.request_checkout('price_bench', 'payment', $1, $2)",
                &[&OK_URL, &NO_URL],
            )
            .await
            .unwrap()
            .get(0);
        self.db.batch_execute("COMMIT; BEGIN").await.unwrap();
        self.db.execute(as_user, &[&claims]).await.unwrap();
        let r: Value = self
            .db
            .query_one("SELECT billing.await_request($1, 10000)", &[&id])
            .await
            .unwrap()
            .get(0);
        self.db.batch_execute("COMMIT").await.unwrap();
        assert_eq!(r["status"], "succeeded", "RPC: {r}");
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run() {
    let (_emulator, stripe) = start({
        let mut c = Command::new(binary("stripe-emulator"));
        c.args([
            "--listen",
            "127.0.0.1:0",
            "--price",
            "price_bench:one_time:100",
        ]);
        c
    })
    .await;
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES ('bench', 'price_bench', 'Bench', 'token_pack', 100);
             INSERT INTO billing.config (redirect_origins, max_pending_requests) VALUES ('{https://app.example.test}', 1000)",
        )
        .await
        .unwrap();
    let mut cmd = Command::new(binary("stripe-billing-worker"));
    cmd.args(["--listen", "127.0.0.1:0", "--rate-limit", "10000"])
        .args(["--api-rate-limit", "100000", "--api-burst", "10000"])
        .env("DATABASE_URL", &db.dsn)
        .env("STRIPE_SECRET_KEY", "sk_test_emulator")
        .env("STRIPE_API_BASE", &stripe)
        .env("JWT_SECRET", TEST_JWT_SECRET)
        .env("RUST_LOG", "warn");
    let (_worker, worker) = start(cmd).await;
    let http = reqwest::Client::new();
    let customer: Value = http
        .post(format!("{stripe}/v1/customers"))
        .basic_auth("sk_test_emulator", Some(""))
        .form(&[("email", "bench@example.test")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users: Vec<Uuid> = (0..USERS).map(|_| Uuid::new_v4()).collect();
    let paths = Paths {
        http,
        stripe,
        customer: customer["id"].as_str().expect("a customer").to_string(),
        worker,
        tokens: users
            .iter()
            .map(|u| hs256(TEST_JWT_SECRET, &user_claims(*u)))
            .collect(),
        users,
        db: db.owner().await,
    };
    // Warm-up: each user's first checkout creates their Stripe customer; connections open.
    for n in 0..USERS as u64 {
        paths.api(n).await;
        paths.rpc(n).await;
        paths.bare(n).await;
    }

    let slice = RUN / SLICES;
    let mut samples: [Vec<f64>; 3] = Default::default();
    let mut n = 0u64;
    for _ in 0..SLICES {
        for (k, samples) in samples.iter_mut().enumerate() {
            let start = Instant::now();
            while start.elapsed() < slice {
                let t = Instant::now();
                match k {
                    0 => paths.bare(n).await,
                    1 => paths.api(n).await,
                    _ => paths.rpc(n).await,
                }
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
                n += 1;
            }
        }
    }
    println!("\n## HTTP API (checkout latency, one call at a time; emulator answers at once)\n");
    println!("| path | calls | p50 | p90 | p99 | p50 over the bare call |");
    println!("|---|---|---|---|---|---|");
    let names = [
        "bare Stripe call (POST /v1/checkout/sessions)",
        "HTTP API (POST /api/stripe/checkout)",
        "RPC (request_checkout + await_request)",
    ];
    let mut bare_p50 = 0.0;
    for (k, samples) in samples.iter_mut().enumerate() {
        samples.sort_by(f64::total_cmp);
        let (p50, p90, p99) = (
            percentile(samples, 0.5),
            percentile(samples, 0.9),
            percentile(samples, 0.99),
        );
        let over = if k == 0 {
            bare_p50 = p50;
            String::new()
        } else {
            format!("+{:.1} ms ({:.1}x)", p50 - bare_p50, p50 / bare_p50)
        };
        println!(
            "| {} | {} | {p50:.1} ms | {p90:.1} ms | {p99:.1} ms | {over} |",
            names[k],
            samples.len()
        );
    }
}
