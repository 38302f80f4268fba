//! Low-balance alerts and expiry warnings (issue 22): what an alert costs a spend, and what an
//! expiry sweep costs beside a long history (the sweep over 10,000,000 grants is in
//! history.rs).
//!
//! Spends with alerts on and off, in alternating slices on two databases that differ only in
//! their alerts: "on" has the operator's default threshold and an armed alert row for every
//! user (half of them with a threshold of their own), which every spend reads and none
//! crosses, the common case; "off" has neither.
use super::{clients, paired_on, rate};
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

const USERS: i64 = 10_000;

fn user(i: i64) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x4000_0000_0000_0000_0000_0000_0000_0000 + i as u128)
}

/// Each user has one live grant far above any threshold.
async fn base(db: &TestDb) -> Client {
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.token_grants (user_id, source, tokens)
             SELECT ('40000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid, 'manual', 100000000000
             FROM generate_series(0, {USERS} - 1) u;"
        ))
        .await
        .unwrap();
    owner
}

pub async fn run() {
    let off_db = TestDb::new().await;
    let off = base(&off_db).await;
    let on_db = TestDb::new().await;
    let on = base(&on_db).await;
    on.batch_execute(&format!(
        "INSERT INTO billing.config (low_balance_threshold) VALUES (1000);
         INSERT INTO billing.balance_alerts (user_id, threshold)
         SELECT ('40000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid,
                CASE WHEN u % 2 = 0 THEN 5000 END
         FROM generate_series(0, {USERS} - 1) u;"
    ))
    .await
    .unwrap();
    for c in [&off, &on] {
        c.batch_execute("VACUUM ANALYZE").await.unwrap();
    }
    let pick = |i: usize, n: u64| user(((n as i64) * 7919 + i as i64 * 4999) % USERS);
    let spend = async |c: &Client, i, n| {
        c.query_one("SELECT billing.spend_tokens($1, 1)", &[&pick(i, n)])
            .await
            .unwrap();
    };
    // One unrecorded round: caches and plan caches first.
    {
        let (a, b) = (clients(&off_db.dsn, 1).await, clients(&on_db.dsn, 1).await);
        paired_on(&a, spend, &b, spend).await;
    }
    // Rounds of paired slices, the databases' order swapped each round so that neither always
    // runs first; on a shared VM one round's ratio moves by a fifth, so the median of the
    // rounds' ratios is the figure.
    const ROUNDS: usize = 6;
    let mut rows = Vec::new();
    for conns in [1usize, 2] {
        let (a, b) = (
            clients(&off_db.dsn, conns).await,
            clients(&on_db.dsn, conns).await,
        );
        let (mut offs, mut ons, mut ratios) = (0.0, 0.0, Vec::new());
        for round in 0..ROUNDS {
            let (off, on) = if round % 2 == 0 {
                paired_on(&a, spend, &b, spend).await
            } else {
                let (on, off) = paired_on(&b, spend, &a, spend).await;
                (off, on)
            };
            offs += off;
            ons += on;
            ratios.push(on / off);
        }
        ratios.sort_by(f64::total_cmp);
        let median = (ratios[ROUNDS / 2 - 1] + ratios[ROUNDS / 2]) / 2.0;
        rows.push((
            format!("spend_tokens, 10k users, {conns} conn"),
            offs / ROUNDS as f64,
            ons / ROUNDS as f64,
            median,
            ratios,
        ));
    }
    println!("\n## Low-balance alerts (spends/s; 10,000 users, alerts armed and not crossed)\n");
    println!("| workload | alerts off | alerts on | on/off (median of {ROUNDS} rounds) | rounds' on/off |");
    println!("|---|---|---|---|---|");
    for (name, off, on, median, ratios) in &rows {
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {name} | {} | {} | {median:.2} | {} |",
            rate(*off),
            rate(*on),
            each.join(" ")
        );
    }
}
