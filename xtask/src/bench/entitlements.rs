//! Entitlements in RLS (issue 23, item 3): an app table of 100,000 rows read by their owner
//! through a policy that only checks ownership, beside the same table whose policy also asks
//! `(select billing.has_feature('export'))` (goal: within 10%), and the same policy written
//! without the `select` (evaluated per row) to show what the recommended form saves; then the
//! latency of one `has_feature` call (goal: p99 under 1 ms), in each edition.
use super::{clients, paired_on};
use std::time::Instant;
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

const ROWS: i64 = 100_000;
const SUBSCRIBERS: i64 = 10_000;
const ME: &str = "20000000-0000-0000-0000-000000000000";

/// The catalog, 10,000 subscribers (the reader among them), and three copies of the app table
/// that differ only by their policy.
async fn load(owner: &Client) {
    let mut sql = format!(
        "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens)
             VALUES ('pro', 'price_pro', 'Pro', 'subscription', 1000);
         INSERT INTO billing.plan_features (plan_id, feature, limit_value)
             VALUES ('pro', 'export', 100), ('pro', 'api', NULL);
         INSERT INTO billing.subscriptions (stripe_subscription_id, user_id, plan_id, stripe_price_id,
                                            status, status_since)
         SELECT 'sub_bench' || u, ('20000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid, 'pro',
                'price_pro', CASE WHEN u % 10 = 9 THEN 'past_due' ELSE 'active' END, now() - interval '1 day'
         FROM generate_series(0, {SUBSCRIBERS} - 1) u;
         CREATE SCHEMA app;
         GRANT USAGE ON SCHEMA app TO authenticated;"
    );
    for (table, policy) in [
        ("rows_owned", "owner_id = (select billing.current_user_id())"),
        (
            "rows_featured",
            "owner_id = (select billing.current_user_id()) AND (select billing.has_feature('export'))",
        ),
        (
            "rows_per_row",
            "owner_id = (select billing.current_user_id()) AND billing.has_feature('export')",
        ),
    ] {
        sql.push_str(&format!(
            "CREATE TABLE app.{table} (id bigint PRIMARY KEY, owner_id uuid NOT NULL, title text NOT NULL);
             INSERT INTO app.{table} SELECT i, '{ME}', 'row ' || i FROM generate_series(1, {ROWS}) i;
             ALTER TABLE app.{table} ENABLE ROW LEVEL SECURITY;
             CREATE POLICY reader ON app.{table} FOR SELECT TO authenticated USING ({policy});
             GRANT SELECT ON app.{table} TO authenticated;"
        ));
    }
    owner.batch_execute(&sql).await.unwrap();
    owner.batch_execute("VACUUM ANALYZE").await.unwrap();
}

/// Connections signed in as the reader, for the whole session, as PostgREST would per request.
async fn readers(dsn: &str, n: usize) -> Vec<Client> {
    let out = clients(dsn, n).await;
    for c in &out {
        c.batch_execute(&format!(
            "SET ROLE authenticated;
             SELECT set_config('request.jwt.claims', '{{\"sub\":\"{ME}\",\"role\":\"authenticated\"}}', false);"
        ))
        .await
        .unwrap();
    }
    out
}

/// One RLS-filtered read of the whole table, aggregated in the server so that the figure is the
/// policy's cost rather than the client's decoding of 100,000 rows.
async fn read_all(c: &Client, table: &str) {
    let n: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT id, title FROM app.{table} WHERE title <> '') t"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, ROWS, "{table}: the reader has the feature");
}

/// Round trips of `SELECT billing.has_feature('export')`: (p50, p99, max) in microseconds.
async fn latency(c: &Client, n: usize) -> (f64, f64, f64) {
    let stmt = c
        .prepare("SELECT billing.has_feature('export')")
        .await
        .unwrap();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let has: bool = c.query_one(&stmt, &[]).await.unwrap().get(0);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(has);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| times[((n as f64 * q) as usize).min(n - 1)];
    (at(0.5), at(0.99), times[n - 1])
}

/// One call's time inside the database, without the client round trip: (p50, p99, max) in
/// microseconds over `n` calls timed by clock_timestamp() around each.
async fn in_database(c: &Client, n: i64) -> (f64, f64, f64) {
    // A volatile argument per call keeps the planner from folding the calls into one.
    let sql = format!(
        "WITH calls AS MATERIALIZED (
             SELECT clock_timestamp() AS t0,
                    billing.has_feature(CASE WHEN g >= 0 THEN 'export' END) AS has,
                    clock_timestamp() AS t1
             FROM generate_series(1, {n}) g)
         SELECT count(*) FILTER (WHERE has),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t1 - t0)) * 1e6,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM t1 - t0)) * 1e6,
                max(extract(epoch FROM t1 - t0))::float8 * 1e6
         FROM calls"
    );
    let row = c.query_one(&sql, &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), n);
    (row.get(1), row.get(2), row.get(3))
}

pub async fn run() {
    println!("\n## Entitlements in RLS (100,000 rows read by their owner; 10,000 subscribers)\n");
    println!("| edition | ownership policy (reads/s) | + (select has_feature) (reads/s) | ratio | + has_feature per row (reads/s) | ratio | has_feature p50 / p99 / max, in the database (µs) | p50 / p99 / max, round trip (µs) |");
    println!("|---|---|---|---|---|---|---|---|");
    for edition in [Edition::Extension, Edition::Pure] {
        let db = TestDb::with_edition(edition).await;
        load(&db.owner().await).await;
        let (a, b) = (readers(&db.dsn, 1).await, readers(&db.dsn, 1).await);
        // Warm both tables' pages once before timing.
        read_all(&a[0], "rows_owned").await;
        read_all(&b[0], "rows_featured").await;
        let (owned, featured) = paired_on(
            &a,
            async |c: &Client, _, _| read_all(c, "rows_owned").await,
            &b,
            async |c: &Client, _, _| read_all(c, "rows_featured").await,
        )
        .await;
        // The per-row form is slow: a few reads, timed alone.
        let t = Instant::now();
        for _ in 0..2 {
            read_all(&a[0], "rows_per_row").await;
        }
        let per_row = 2.0 / t.elapsed().as_secs_f64();
        let (p50, p99, max) = latency(&a[0], 10_000).await;
        let (i50, i99, imax) = in_database(&a[0], 10_000).await;
        println!(
            "| {edition:?} | {owned:.1} | {featured:.1} | {:.3} | {:.2} | {:.4} | {i50:.0} / {i99:.0} / {imax:.0} | {p50:.0} / {p99:.0} / {max:.0} |",
            featured / owned,
            per_row,
            per_row / owned,
        );
    }
}
