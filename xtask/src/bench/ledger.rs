//! Ledger throughput: `spend_tokens` and `token_balance` with 1 and 2 connections, for one
//! hot user and for 10,000 users, with 10,000 and 1,000,000 grants in the table, beside a naive
//! baseline that sums all of a user's grant and spend rows. The large table holds the same live
//! grants plus 99 spent-out or expired grants per user: the history a real ledger accumulates.
//! Then the same workloads on the small table in the pure-SQL edition: the ledger is SQL in
//! both editions, so the two should match.
use super::{clients, paired_on, rate};
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

pub(super) const USERS: i64 = 10_000;

pub(super) fn user(i: i64) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x1000_0000_0000_0000_0000_0000_0000_0000 + i as u128)
}

/// Loads the ledger with one live grant per user plus `history` dead grants per user, and the
/// naive tables with the same rows.
pub(super) async fn load(client: &tokio_postgres::Client, history: i64) {
    let sql = format!(
        "INSERT INTO billing.token_grants (user_id, source, tokens, remaining, expires_at, created_at)
         SELECT ('10000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid, 'plan', 1000,
                CASE WHEN h % 2 = 0 THEN 0 ELSE 500 END, now() - interval '1 day', now() - interval '30 days'
         FROM generate_series(0, {USERS} - 1) u, generate_series(1, {history}) h;
         INSERT INTO billing.token_grants (user_id, source, tokens, remaining)
         SELECT ('10000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid, 'manual', 100000000000, 100000000000
         FROM generate_series(0, {USERS} - 1) u;
         CREATE TABLE naive_grants (user_id uuid, tokens bigint, expires_at timestamptz);
         CREATE TABLE naive_spends (user_id uuid, amount bigint);
         INSERT INTO naive_grants SELECT user_id, tokens, expires_at FROM billing.token_grants;
         INSERT INTO naive_spends SELECT user_id, tokens - remaining FROM billing.token_grants WHERE remaining < tokens;
         CREATE INDEX ON naive_grants (user_id);
         CREATE INDEX ON naive_spends (user_id);"
    );
    client.batch_execute(&sql).await.unwrap();
    // A multi-statement batch runs as one transaction, which VACUUM refuses.
    client.batch_execute("VACUUM ANALYZE").await.unwrap();
}

const NAIVE_BALANCE: &str = "SELECT (SELECT coalesce(sum(tokens), 0) FROM naive_grants
                                     WHERE user_id = $1 AND (expires_at IS NULL OR expires_at > now()))
                                  - (SELECT coalesce(sum(amount), 0) FROM naive_spends WHERE user_id = $1)";

/// One row of results: ops/s on the small and the large table.
struct Row {
    name: String,
    small: f64,
    large: f64,
}

/// Every workload on both tables, measured in alternating slices.
async fn measure_all(small_dsn: &str, large_dsn: &str) -> Vec<Row> {
    let mut out = Vec::new();
    for conns in [1usize, 2] {
        let small = clients(small_dsn, conns).await;
        let large = clients(large_dsn, conns).await;
        for (label, hot) in [("hot user", true), ("10k users", false)] {
            let pick = |i: usize, n: u64| {
                if hot {
                    user(0)
                } else {
                    user(((n as i64) * 7919 + i as i64 * 4999) % USERS)
                }
            };
            for (name, sql) in [
                ("token_balance", "SELECT billing.token_balance($1)"),
                ("spend_tokens", "SELECT billing.spend_tokens($1, 1)"),
                ("naive sum() balance", NAIVE_BALANCE),
            ] {
                let op = async |c: &Client, i, n| {
                    c.query_one(sql, &[&pick(i, n)]).await.unwrap();
                };
                let (s, l) = paired_on(&small, op, &large, op).await;
                out.push(Row {
                    name: format!("{name}, {label}, {conns} conn"),
                    small: s,
                    large: l,
                });
            }
        }
    }
    out
}

/// The ledger's own workloads on the small table, in each edition (fresh databases loaded alike).
async fn measure_editions(extension_dsn: &str, pure_dsn: &str) {
    println!("\n| small table, 1 conn | extension | pure-SQL edition | extension/pure |");
    println!("|---|---|---|---|");
    let (ext, pure) = (clients(extension_dsn, 1).await, clients(pure_dsn, 1).await);
    for (label, hot) in [("hot user", true), ("10k users", false)] {
        let pick = |i: usize, n: u64| {
            if hot {
                user(0)
            } else {
                user(((n as i64) * 7919 + i as i64 * 4999) % USERS)
            }
        };
        for (name, sql) in [
            ("token_balance", "SELECT billing.token_balance($1)"),
            ("spend_tokens", "SELECT billing.spend_tokens($1, 1)"),
        ] {
            let op = async |c: &Client, i, n| {
                c.query_one(sql, &[&pick(i, n)]).await.unwrap();
            };
            let (e, p) = paired_on(&ext, op, &pure, op).await;
            println!(
                "| {name}, {label} | {} | {} | {:.2} |",
                rate(e),
                rate(p),
                e / p
            );
        }
    }
}

pub async fn run() {
    let small_db = TestDb::new().await;
    load(&small_db.owner().await, 0).await;
    let large_db = TestDb::new().await;
    load(&large_db.owner().await, 99).await;
    let rows = measure_all(&small_db.dsn, &large_db.dsn).await;
    println!("\n## Ledger (transactions/s; 10,000 users; small = 10,000 grants, large = 1,000,000 grants)\n");
    println!("| workload | small table | large table | large/small |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2} |",
            r.name,
            rate(r.small),
            rate(r.large),
            r.large / r.small
        );
    }
    println!("\n| large table, 1 conn, 10k users | token_balance | naive sum() | ratio |");
    println!("|---|---|---|---|");
    let find = |n: &str| {
        rows.iter()
            .find(|r| r.name == n)
            .map(|r| r.large)
            .unwrap_or(f64::NAN)
    };
    for label in ["hot user", "10k users"] {
        let ours = find(&format!("token_balance, {label}, 1 conn"));
        let naive = find(&format!("naive sum() balance, {label}, 1 conn"));
        println!(
            "| {label} | {} | {} | {:.2}x |",
            rate(ours),
            rate(naive),
            ours / naive
        );
    }
    // Two fresh databases with the same history: the first updates of freshly loaded rows cost
    // more than later ones, so neither may have been used before.
    let (ext_db, pure_db) = (
        TestDb::with_edition(Edition::Extension).await,
        TestDb::with_edition(Edition::Pure).await,
    );
    load(&ext_db.owner().await, 0).await;
    load(&pure_db.owner().await, 0).await;
    measure_editions(&ext_db.dsn, &pure_db.dsn).await;
}
