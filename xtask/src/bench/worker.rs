//! The worker loop: requests/s from INSERT to `succeeded` with the local emulator answering at
//! once, for 1 and 4 requests in flight; NOTIFY-to-claim latency (`claimed_at - created_at`)
//! p50/p99; the worker's peak RSS. Beside it, the same loop with LISTEN disabled (poll only,
//! at the default 1 s poll interval) in the same run, as a ratio.
use super::{clients, rate, RUN};
use std::process::Stdio;
use std::time::{Duration, Instant};
use stripe_billing_tests::pg::TestDb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::Client;
use uuid::Uuid;

const USERS: usize = 4;

/// A binary built next to this one (scripts/bench.sh builds them all in release mode).
pub(super) fn binary(name: &str) -> std::path::PathBuf {
    let me = std::env::current_exe().expect("own path");
    me.parent().expect("a directory").join(name)
}

/// Starts a process that prints `listening on URL` first and returns it with the URL.
/// The worker as the queue benchmarks run it: four at a time, Stripe's rate limit out of the way,
/// against the emulator at `stripe`; quiet but for errors.
pub(super) fn queue_worker(dsn: &str, stripe: &str) -> Command {
    let mut cmd = Command::new(binary("stripe-billing-worker"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--concurrency",
        "4",
        "--rate-limit",
        "10000",
    ])
    .env("DATABASE_URL", dsn)
    .env("STRIPE_SECRET_KEY", "sk_test_emulator")
    .env("STRIPE_API_BASE", stripe)
    .env("RUST_LOG", "error");
    cmd
}

pub(super) async fn start(mut cmd: Command) -> (Child, String) {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .expect("start process (run scripts/bench.sh, which builds it)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("process prints its address")
        .unwrap()
        .unwrap_or_default();
    let url = line
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    (child, url)
}

fn peak_rss_kib(child: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Queues a token-pack checkout the way a signed-in user does through PostgREST.
async fn insert(client: &Client, user: Uuid) -> Uuid {
    let claims = serde_json::json!({"sub": user, "role": "authenticated"}).to_string();
    client
        .batch_execute("BEGIN; SET LOCAL ROLE authenticated")
        .await
        .unwrap();
    client
        .execute(
            "SELECT set_config('request.jwt.claims', $1, true)",
            &[&claims],
        )
        .await
        .unwrap();
    let id = client
        .query_one("SELECT billing.request_checkout('bench')", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("COMMIT").await.unwrap();
    id
}

async fn wait_done(client: &Client, id: Uuid) {
    loop {
        let status: String = client
            .query_one(
                "SELECT status FROM billing.stripe_requests WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        match status.as_str() {
            "succeeded" => return,
            "failed" => panic!("request {id} failed"),
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

struct Result {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Keeps `in_flight` requests going for [`RUN`] (at least `min` requests) and reads the queue
/// waits back from the rows.
async fn measure(db: &TestDb, in_flight: usize, users: &[Uuid], min: usize) -> Result {
    let cs = clients(&db.dsn, in_flight).await;
    let owner = db.owner().await;
    let since: std::time::SystemTime = owner
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .unwrap()
        .get(0);
    let start = Instant::now();
    let per_client = cs.iter().enumerate().map(|(i, c)| async move {
        let mut done = 0usize;
        while start.elapsed() < RUN || done * in_flight < min {
            let id = insert(c, users[i % users.len()]).await;
            wait_done(c, id).await;
            done += 1;
        }
        done
    });
    let total: usize = futures_util::future::join_all(per_client)
        .await
        .into_iter()
        .sum();
    let elapsed = start.elapsed().as_secs_f64();
    let row = owner
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
             FROM (SELECT extract(epoch FROM claimed_at - created_at) * 1000 AS ms FROM billing.stripe_requests
                   WHERE created_at >= $1 AND status = 'succeeded') w",
            &[&since],
        )
        .await
        .unwrap();
    Result {
        per_second: total as f64 / elapsed,
        p50_ms: row.get(0),
        p99_ms: row.get(1),
    }
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
    println!("\n## Worker (requests/s from INSERT to succeeded; emulator answers at once)\n");
    println!(
        "| mode | in flight | requests/s | claim wait p50 | claim wait p99 | LISTEN/poll ratio |"
    );
    println!("|---|---|---|---|---|---|");
    let mut listen_rates = Vec::new();
    let mut rss = Vec::new();
    for (mode, extra) in [
        ("LISTEN + poll", None),
        ("poll only", Some("--no-listen-notify")),
    ] {
        let db = TestDb::new().await;
        let owner = db.owner().await;
        owner
            .batch_execute(
                "INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES ('bench', 'price_bench', 'Bench', 'token_pack', 100);
                 INSERT INTO billing.config (checkout_success_url, checkout_cancel_url) VALUES ('https://app.example.test/ok', 'https://app.example.test/no')",
            )
            .await
            .unwrap();
        let mut cmd = queue_worker(&db.dsn, &stripe);
        cmd.env("RUST_LOG", "warn");
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        let (worker, _) = start(cmd).await;
        let users: Vec<Uuid> = (0..USERS).map(|_| Uuid::new_v4()).collect();
        // Warm-up: one request per user creates its Stripe customer.
        let warm = db.owner().await;
        for u in &users {
            let id = insert(&warm, *u).await;
            wait_done(&warm, id).await;
        }
        for (k, in_flight) in [1usize, 4].into_iter().enumerate() {
            let r = measure(&db, in_flight, &users, 8).await;
            let ratio = match extra {
                None => {
                    listen_rates.push(r.per_second);
                    "".to_string()
                }
                Some(_) => format!("{:.1}x", listen_rates[k] / r.per_second),
            };
            println!(
                "| {mode} | {in_flight} | {} | {:.1} ms | {:.1} ms | {ratio} |",
                rate(r.per_second),
                r.p50_ms,
                r.p99_ms
            );
        }
        rss.push((mode, peak_rss_kib(&worker)));
    }
    for (mode, kib) in rss {
        println!(
            "\nworker peak RSS ({mode}): {}",
            kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
        );
    }
}
