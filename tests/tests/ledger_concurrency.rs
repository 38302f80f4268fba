//! Tier 3: the token ledger under concurrency (DESIGN.md, "The ledger"). Many connections grant and
//! spend at once; afterwards the books must balance exactly and nothing may be overspent.

use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use stripe_billing_tests::pg::{db_error, Caller, TestDb};
use tokio::sync::Barrier;
use tokio_postgres::Client;
use uuid::Uuid;

const SPEND: &str =
    "SELECT billing.spend_tokens($1::uuid, $2::bigint, idempotency_key => $3::text)";
const GRANT: &str =
    "SELECT billing.grant_tokens($1::uuid, $2::bigint, expires_at => $3::timestamptz)";

fn num(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

fn after(seconds: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(seconds)
}

async fn grant(c: &Client, user: Uuid, tokens: i64, expires: Option<SystemTime>) {
    c.query_one(GRANT, &[&user, &tokens, &expires])
        .await
        .expect("grant_tokens");
}

async fn balance(c: &Client, user: Uuid) -> i64 {
    c.query_one("SELECT billing.token_balance($1)", &[&user])
        .await
        .expect("token_balance")
        .get(0)
}

/// Checks that the ledger of `user` balances to the token: the spends, the grants' spent parts
/// and the allocations all agree, per spend and per grant. Returns (spend_id, amount) sorted.
async fn check_books(c: &Client, user: Uuid, granted: i64) -> Vec<(i64, i64)> {
    let spends: Vec<(i64, i64)> = c
        .query(
            "SELECT id, amount FROM billing.token_spends WHERE user_id = $1 ORDER BY id",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let spent: i64 = spends.iter().map(|s| s.1).sum();
    let row = c
        .query_one(
            "SELECT coalesce(sum(tokens), 0)::bigint, coalesce(sum(tokens - remaining), 0)::bigint,
                    min(remaining)
             FROM billing.token_grants WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), granted, "granted tokens changed");
    assert_eq!(
        row.get::<_, i64>(1),
        spent,
        "sum(tokens - remaining) <> sum(spends)"
    );
    assert!(row.get::<_, i64>(2) >= 0, "a grant went negative");
    let allocated: i64 = c
        .query_one(
            "SELECT coalesce(sum(tokens), 0)::bigint FROM billing.token_spend_allocations
             WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(allocated, spent, "sum(allocations) <> sum(spends)");
    let bad_spends: Vec<(i64, i64, i64)> = c
        .query(
            "SELECT s.id, s.amount, coalesce(sum(a.tokens), 0)::bigint
             FROM billing.token_spends s
             LEFT JOIN billing.token_spend_allocations a ON a.spend_id = s.id
             WHERE s.user_id = $1 GROUP BY s.id HAVING s.amount <> coalesce(sum(a.tokens), 0)",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        bad_spends.is_empty(),
        "spends whose allocations differ from their amount: {bad_spends:?}"
    );
    let bad_grants: Vec<i64> = c
        .query(
            "SELECT g.id FROM billing.token_grants g
             LEFT JOIN billing.token_spend_allocations a ON a.grant_id = g.id
             WHERE g.user_id = $1 GROUP BY g.id
             HAVING g.tokens - g.remaining <> coalesce(sum(a.tokens), 0)",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        bad_grants.is_empty(),
        "grants whose allocations differ from their spent part: {bad_grants:?}"
    );
    assert_eq!(balance(c, user).await, granted - spent);
    spends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_grants_with_one_key_make_one_grant() {
    let db = Arc::new(TestDb::new().await);
    let u = Uuid::new_v4();
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (db, barrier) = (db.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = db.owner().await;
            barrier.wait().await;
            // Keep the transaction open a moment so the others meet the uncommitted grant.
            let tx = client.transaction().await.unwrap();
            tx.batch_execute("SET LOCAL ROLE service_role").await.unwrap();
            let v: Value = tx
                .query_one(
                    "SELECT billing.grant_tokens($1, 500, source => 'invoice', grant_key => 'in_race')",
                    &[&u],
                )
                .await
                .expect("grant_tokens")
                .get(0);
            tx.batch_execute("SELECT pg_sleep(0.2)").await.unwrap();
            tx.commit().await.unwrap();
            v
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let c = db.owner().await;
    let ids: HashSet<i64> = results.iter().map(|v| num(v, "grant_id")).collect();
    assert_eq!(ids.len(), 1, "different grant ids: {results:?}");
    let fresh = results
        .iter()
        .filter(|v| v["duplicate"] == json!(false))
        .count();
    assert_eq!(
        fresh, 1,
        "exactly one call must create the grant: {results:?}"
    );
    let rows = c
        .query(
            "SELECT id, tokens FROM billing.token_grants WHERE user_id = $1",
            &[&u],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(ids.contains(&rows[0].get::<_, i64>(0)));
    assert_eq!(rows[0].get::<_, i64>(1), 500);
    assert_eq!(balance(&c, u).await, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_spends_never_overspend() {
    const TASKS: usize = 16;
    let db = Arc::new(TestDb::new().await);
    let c = db.owner().await;
    let (u, bystander) = (Uuid::new_v4(), Uuid::new_v4());
    let grants = [
        (300, Some(after(86_400))),
        (200, Some(after(7 * 86_400))),
        (250, None),
        (150, Some(after(7_200))),
        (100, None),
    ];
    let granted: i64 = grants.iter().map(|g| g.0).sum();
    for (tokens, expires) in grants {
        grant(&c, u, tokens, expires).await;
    }
    grant(&c, bystander, 77, None).await;

    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (db, barrier) = (db.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
            let mut api = db.api().await;
            let mut ok = Vec::new();
            let mut max = 15;
            barrier.wait().await;
            loop {
                let amount: i64 = rng.random_range(1..=max);
                match api
                    .call(&Caller::Service, SPEND, &[&u, &amount, &None::<&str>])
                    .await
                {
                    Ok(rows) => {
                        let v: Value = rows[0].get(0);
                        assert_eq!(v["amount"], json!(amount));
                        assert_eq!(v["duplicate"], json!(false));
                        let left = num(&v, "balance");
                        assert!(
                            (0..=granted - amount).contains(&left),
                            "balance {left} after spending {amount}"
                        );
                        ok.push((num(&v, "spend_id"), amount));
                    }
                    Err(e) => {
                        let (code, message) = db_error(&e);
                        assert_eq!(code, "BL001", "unexpected error: {message}");
                        assert!(message.starts_with("insufficient tokens: balance "));
                        if max == 1 {
                            break;
                        }
                        // Drain the rest one token at a time.
                        max = 1;
                    }
                }
            }
            ok
        }));
    }
    let mut reported = Vec::new();
    for t in tasks {
        reported.extend(t.await.expect("task"));
    }
    reported.sort();
    let spent: i64 = reported.iter().map(|s| s.1).sum();
    assert!(spent <= granted, "spent {spent} of {granted}");
    assert_eq!(
        spent, granted,
        "every task stopped at balance 0, so all must be spent"
    );
    let ids: HashSet<i64> = reported.iter().map(|s| s.0).collect();
    assert_eq!(ids.len(), reported.len(), "a spend id was reported twice");

    let stored = check_books(&c, u, granted).await;
    assert_eq!(
        stored, reported,
        "stored spends differ from the successful calls"
    );
    assert_eq!(balance(&c, u).await, granted - spent);
    assert_eq!(balance(&c, bystander).await, 77);
    let spent_rows: i64 = c
        .query_one(
            "SELECT count(*) FROM billing.token_spends WHERE user_id <> $1",
            &[&u],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(spent_rows, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_spends_with_shared_keys_spend_each_key_once() {
    const TASKS: usize = 16;
    const KEYS: i64 = 30;
    let db = Arc::new(TestDb::new().await);
    let c = db.owner().await;
    let u = Uuid::new_v4();
    grant(&c, u, 60, Some(after(86_400))).await;
    grant(&c, u, 50, None).await;
    let granted = 110;
    let amount_of = |k: i64| k % 5 + 1;
    let expected: i64 = (0..KEYS).map(amount_of).sum();
    assert!(expected < granted);

    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (db, barrier) = (db.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
            let mut keys: Vec<i64> = (0..KEYS).collect();
            keys.shuffle(&mut rng);
            let mut api = db.api().await;
            let mut results = Vec::new();
            barrier.wait().await;
            for k in keys {
                let key = format!("job-{k}");
                let amount = amount_of(k);
                let rows = api
                    .call(&Caller::Service, SPEND, &[&u, &amount, &key])
                    .await
                    .unwrap_or_else(|e| panic!("spend {key}: {:?}", db_error(&e)));
                let v: Value = rows[0].get(0);
                assert_eq!(v["amount"], json!(amount));
                results.push((k, num(&v, "spend_id"), v["duplicate"] == json!(true)));
            }
            results
        }));
    }
    // key -> (spend ids reported, calls that were not duplicates)
    let mut per_key: BTreeMap<i64, (HashSet<i64>, usize)> = BTreeMap::new();
    for t in tasks {
        for (k, id, duplicate) in t.await.expect("task") {
            let e = per_key.entry(k).or_default();
            e.0.insert(id);
            e.1 += usize::from(!duplicate);
        }
    }
    assert_eq!(per_key.len(), KEYS as usize);
    for (k, (ids, fresh)) in &per_key {
        assert_eq!(ids.len(), 1, "job-{k} got different spend ids {ids:?}");
        assert_eq!(*fresh, 1, "job-{k} was spent {fresh} times");
    }

    let stored = c
        .query(
            "SELECT idempotency_key, count(*), min(id), min(amount) FROM billing.token_spends
             WHERE user_id = $1 GROUP BY 1 ORDER BY 1",
            &[&u],
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), KEYS as usize);
    for row in &stored {
        let key: Option<String> = row.get(0);
        let k: i64 = key
            .as_deref()
            .and_then(|s| s.strip_prefix("job-"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected key {key:?}"));
        assert_eq!(row.get::<_, i64>(1), 1, "job-{k} stored more than once");
        assert!(per_key[&k].0.contains(&row.get::<_, i64>(2)));
        assert_eq!(row.get::<_, i64>(3), amount_of(k));
    }
    let books = check_books(&c, u, granted).await;
    assert_eq!(books.iter().map(|s| s.1).sum::<i64>(), expected);
    assert_eq!(balance(&c, u).await, granted - expected);
}
