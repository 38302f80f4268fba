//! What auto top-up costs a spend (issue 22, item 2; goal: within 5%). `billing._spend` asks
//! `billing._after_spend_top_up` after every spend; the check is one primary-key lookup of the
//! user's settings. Three fresh databases loaded like the ledger benchmark's small table:
//! the check replaced by a no-op (what a spend cost before auto top-up), the check with no user
//! having set auto top-up, and every user having set it (a threshold the spends never cross,
//! so the cost measured is the check's, not a charge's).
use super::ledger::{load, user, USERS};
use super::{clients, paired_on, rate};
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

/// The hook as a no-op: the baseline, a spend without auto top-up.
const NO_HOOK: &str =
    "CREATE OR REPLACE FUNCTION billing._after_spend_top_up(user_id uuid, project_id uuid,
                           balance_before bigint, balance_after bigint) RETURNS void
                       LANGUAGE plpgsql AS $$ BEGIN RETURN; END $$";

/// Every user has auto top-up at a threshold far below their balance.
const CONFIGURED: &str = "
    INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens)
    VALUES ('pack', 'price_pack', 'Pack', 'token_pack', 500);
    INSERT INTO billing.prices (stripe_price_id, unit_amount, currency, synced_at)
    VALUES ('price_pack', 900, 'usd', now());
    INSERT INTO billing.auto_top_ups (user_id, plan_id, threshold, monthly_count_limit, monthly_amount_limit)
    SELECT DISTINCT user_id, 'pack', 100, 3, 2700 FROM billing.token_grants;
    ANALYZE billing.auto_top_ups";

async fn fresh(setup: &str) -> TestDb {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    load(&owner, 0).await;
    if !setup.is_empty() {
        owner.batch_execute(setup).await.unwrap();
    }
    db
}

/// Buffers one spend touches (shared hits and reads, nested statements included): the work the
/// check adds, free of a shared machine's noise. Warmed up first, so catalog loads do not count.
async fn buffers_per_spend(dsn: &str) -> i64 {
    let c = stripe_billing_tests::pg::connect(dsn).await;
    let who = user(42);
    c.query_one("SELECT billing.spend_tokens($1, 1)", &[&who])
        .await
        .unwrap();
    let plan: serde_json::Value = c
        .query_one(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT billing.spend_tokens($1, 1)",
            &[&who],
        )
        .await
        .unwrap()
        .get(0);
    let top = &plan[0]["Plan"];
    top["Shared Hit Blocks"].as_i64().unwrap_or(0) + top["Shared Read Blocks"].as_i64().unwrap_or(0)
}

/// Median of `ROUNDS` rounds' ratios of `b` to `a`, after one unrecorded round, the order of the
/// two databases swapped each round: each database does the same number of spends, so neither
/// gathers more dead row versions of the hot grant than the other (a first version of this bench
/// compared both cases with one shared baseline, which then ran twice as many spends and slowed).
async fn median_ratio<F>(a: &[Client], b: &[Client], op: F) -> (f64, f64, f64)
where
    F: AsyncFn(&Client, usize, u64) + Copy,
{
    const ROUNDS: usize = 6;
    paired_on(a, op, b, op).await;
    let (mut sum_a, mut sum_b, mut ratios) = (0.0, 0.0, Vec::new());
    for round in 0..ROUNDS {
        let (ra, rb) = if round % 2 == 0 {
            paired_on(a, op, b, op).await
        } else {
            let (rb, ra) = paired_on(b, op, a, op).await;
            (ra, rb)
        };
        sum_a += ra;
        sum_b += rb;
        ratios.push(rb / ra);
    }
    ratios.sort_by(f64::total_cmp);
    let median = (ratios[ROUNDS / 2 - 1] + ratios[ROUNDS / 2]) / 2.0;
    (sum_a / ROUNDS as f64, sum_b / ROUNDS as f64, median)
}

pub async fn run() {
    // One baseline per comparison, so every database in a pair does the same work.
    let (baseline, baseline2) = (fresh(NO_HOOK).await, fresh(NO_HOOK).await);
    let unset = fresh("").await;
    let configured = fresh(CONFIGURED).await;
    println!("\n## Auto top-up (spend_tokens/s, 1 conn, small table: 10,000 users; median of 6 alternating rounds)\n");
    println!("| workload | no check (before) | check, nobody set it | ratio | check, everyone set it | ratio |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| buffers per spend | {} | {} | | {} | |",
        buffers_per_spend(&baseline.dsn).await,
        buffers_per_spend(&unset.dsn).await,
        buffers_per_spend(&configured.dsn).await
    );
    for (label, hot) in [("hot user", true), ("10k users", false)] {
        let pick = move |i: usize, n: u64| {
            if hot {
                user(0)
            } else {
                user(((n as i64) * 7919 + i as i64 * 4999) % USERS)
            }
        };
        let op = async |c: &Client, i, n| {
            c.query_one("SELECT billing.spend_tokens($1, 1)", &[&pick(i, n)])
                .await
                .unwrap();
        };
        let (base, base2) = (
            clients(&baseline.dsn, 1).await,
            clients(&baseline2.dsn, 1).await,
        );
        let (off, on) = (
            clients(&unset.dsn, 1).await,
            clients(&configured.dsn, 1).await,
        );
        let (b1, unset_rate, unset_ratio) = median_ratio(&base, &off, op).await;
        let (b2, set_rate, set_ratio) = median_ratio(&base2, &on, op).await;
        println!(
            "| spend_tokens, {label} | {} | {} | {unset_ratio:.3} | {} | {set_ratio:.3} |",
            rate((b1 + b2) / 2.0),
            rate(unset_rate),
            rate(set_rate),
        );
    }
}
