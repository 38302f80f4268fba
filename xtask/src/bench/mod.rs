//! `make bench`: throughput figures printed as ratios against baselines measured in the same
//! run (never timed assertions). Each benchmark gets a fresh database on the cluster that
//! `scripts/bench.sh` starts; see docs/benchmarks.md.
use std::time::{Duration, Instant};
use tokio_postgres::Client;

mod alerts;
mod api;
mod entitlements;
mod history;
mod ledger;
mod meter;
mod renewal;
mod signature;
mod top_up;
mod webhook;
mod worker;

/// How long each throughput measurement runs.
pub const RUN: Duration = Duration::from_secs(3);

/// Runs the benchmarks named in `which` (all when empty).
pub async fn main(which: &[String]) {
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if wants("signature") {
        signature::run().await;
    }
    if wants("ledger") {
        ledger::run().await;
    }
    if wants("webhook") {
        webhook::run().await;
    }
    if wants("worker") {
        worker::run().await;
    }
    if wants("renewal") {
        renewal::run().await;
    }
    if wants("api") {
        api::run().await;
    }
    if wants("meter") {
        meter::run().await;
    }
    if wants("alerts") {
        alerts::run().await;
    }
    if wants("history") {
        history::run().await;
    }
    if wants("entitlements") {
        entitlements::run().await;
    }
    if wants("top_up") {
        top_up::run().await;
    }
}

/// Runs `op` in a loop on each client concurrently for [`RUN`] and returns operations/s.
/// `op` gets the client, the client's index and a per-client counter.
pub async fn throughput<F>(clients: &[Client], op: F) -> f64
where
    F: AsyncFn(&Client, usize, u64),
{
    let (done, secs) = run_for(clients, &op, RUN, 0).await;
    done as f64 / secs
}

/// Measures two workloads in alternating slices (6 of each, [`RUN`] in all per workload), so
/// that a noisy neighbour or a frequency change hits both alike, each on its own connections
/// (e.g. to two databases). Returns (a/s, b/s).
pub async fn paired_on<A, B>(a_clients: &[Client], a: A, b_clients: &[Client], b: B) -> (f64, f64)
where
    A: AsyncFn(&Client, usize, u64),
    B: AsyncFn(&Client, usize, u64),
{
    const SLICES: u32 = 6;
    let slice = RUN / SLICES;
    let (mut a_done, mut a_secs, mut b_done, mut b_secs) = (0u64, 0f64, 0u64, 0f64);
    for _ in 0..SLICES {
        let (n, t) = run_for(a_clients, &a, slice, a_done).await;
        a_done += n;
        a_secs += t;
        let (n, t) = run_for(b_clients, &b, slice, b_done).await;
        b_done += n;
        b_secs += t;
    }
    (a_done as f64 / a_secs, b_done as f64 / b_secs)
}

/// Runs `op` on every client for `duration`; counters continue from `first`. Returns the
/// operations done and the seconds taken.
async fn run_for<F>(clients: &[Client], op: &F, duration: Duration, first: u64) -> (u64, f64)
where
    F: AsyncFn(&Client, usize, u64),
{
    let start = Instant::now();
    let per_client = clients.iter().enumerate().map(|(i, client)| async move {
        let mut done = 0u64;
        while start.elapsed() < duration {
            op(client, i, first + done).await;
            done += 1;
        }
        done
    });
    let total: u64 = futures_util::future::join_all(per_client)
        .await
        .into_iter()
        .sum();
    (total, start.elapsed().as_secs_f64())
}

/// `n` connections to the database at `dsn`.
pub async fn clients(dsn: &str, n: usize) -> Vec<Client> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(stripe_billing_tests::pg::connect(dsn).await);
    }
    out
}

/// Formats a rate with thousands separators.
pub fn rate(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
