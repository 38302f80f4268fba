//! Harness for the worker's end-to-end tests: the `stripe-emulator` and
//! `stripe-billing-worker` processes (emulator.rs, worker.rs), a billing database to point them
//! at, the request queue's rows and waits (requests.rs), and webhooks sent by hand (webhooks.rs).
//!
//! The worker and the emulator are other packages' binaries, which `cargo test -p
//! stripe-billing-tests` does not build: run `cargo build -p stripe-billing-worker -p
//! stripe-emulator` first (scripts/integration-test.sh does).
#![allow(dead_code)]

mod emulator;
pub mod pooler;
mod requests;
mod webhooks;
mod worker;

// Re-exported, so the tests see one module; a test that uses none of a part's helpers must
// not warn about it.
#[allow(unused_imports)]
pub use emulator::Emulator;
#[allow(unused_imports)]
pub use requests::*;
#[allow(unused_imports)]
pub use webhooks::*;
#[allow(unused_imports)]
pub use worker::Worker;

use std::path::PathBuf;

use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

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

/// A database seeded by [`seed`] (with the webhook secret), an emulator that delivers its
/// webhooks to the worker's port, and that worker: where most end-to-end tests start.
pub struct Stack {
    pub db: TestDb,
    pub owner: Client,
    pub emulator: Emulator,
    pub worker: Worker,
}

impl Stack {
    /// Starts the emulator and the worker with their extra command-line arguments.
    pub async fn start(emulator_args: &[&str], worker_args: &[&str]) -> Stack {
        let db = TestDb::new().await;
        let owner = db.owner().await;
        seed(&owner, true).await;
        let port = free_port();
        let emulator = Emulator::delivering_to(port, emulator_args).await;
        let worker = Worker::start_on(port, &db.dsn, Some(&emulator.url), worker_args).await;
        Stack {
            db,
            owner,
            emulator,
            worker,
        }
    }
}
