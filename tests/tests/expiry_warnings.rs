//! Expiry warnings (issue 22, item 3; docs/tokens.md, "Low-balance alerts and expiry
//! warnings"): billing.warn_expiring_grants() writes one `tokens_expiring` notification per
//! unspent grant expiring within the operator's window, once however many sweeps run, at once
//! or one after the other; spent, expired, later and never-expiring grants are never warned.
//! (The worker running it on its interval: operations.rs.)
use std::time::{Duration, SystemTime};

use serde_json::Value;
use stripe_billing_tests::pg::{assert_error, connect, Caller, TestDb};
use tokio_postgres::Client;
use uuid::Uuid;

const DAY: u64 = 86_400;

async fn grant(c: &Client, user: Uuid, tokens: i64, expires_in: Option<u64>) -> i64 {
    let expires = expires_in.map(|s| SystemTime::now() + Duration::from_secs(s));
    let g: Value = c
        .query_one(
            "SELECT billing.grant_tokens($1, $2, expires_at => $3)",
            &[&user, &tokens, &expires],
        )
        .await
        .expect("grant_tokens")
        .get(0);
    g["grant_id"].as_i64().unwrap()
}

async fn sweep(c: &Client) -> i32 {
    c.query_one("SELECT billing.warn_expiring_grants()", &[])
        .await
        .expect("warn_expiring_grants")
        .get(0)
}

/// (grant_id, remaining) of each tokens_expiring notification, by grant.
async fn warned(c: &Client) -> Vec<(i64, i64)> {
    c.query(
        "SELECT (payload ->> 'grant_id')::bigint, (payload ->> 'remaining')::bigint
         FROM billing.notifications WHERE kind = 'tokens_expiring' ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test]
async fn each_grant_expiring_within_the_window_is_warned_once() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let user = Uuid::new_v4();
    let soon = grant(&c, user, 100, Some(DAY)).await;
    let spent_part = grant(&c, user, 50, Some(2 * DAY)).await;
    let later = grant(&c, user, 100, Some(10 * DAY)).await;
    let never = grant(&c, user, 100, None).await;
    // Spent out: never warned. Spends take the soonest-expiring first, so take `soon` and part
    // of `spent_part`, then spend one fully spent grant of another user.
    c.query_one("SELECT billing.spend_tokens($1, 120)", &[&user])
        .await
        .unwrap();
    let spender = Uuid::new_v4();
    let spent = grant(&c, spender, 10, Some(DAY)).await;
    c.query_one("SELECT billing.spend_tokens($1, 10)", &[&spender])
        .await
        .unwrap();
    // Already expired (written as history would hold it).
    c.execute(
        "INSERT INTO billing.token_grants (user_id, source, tokens, expires_at, created_at)
         VALUES ($1, 'manual', 10, now() - interval '1 hour', now() - interval '2 days')",
        &[&user],
    )
    .await
    .unwrap();

    assert_eq!(sweep(&c).await, 1);
    assert_eq!(warned(&c).await, vec![(spent_part, 30)]);
    let payload: Value = c
        .query_one(
            "SELECT payload FROM billing.notifications WHERE kind = 'tokens_expiring'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(payload["expires_at"].is_string(), "{payload}");
    assert_eq!(sweep(&c).await, 0, "a second sweep warns nothing again");
    assert_eq!(warned(&c).await.len(), 1);
    let _ = (soon, spent, never);

    // A longer window reaches the later grant, once.
    c.batch_execute("INSERT INTO billing.config (expiry_warning_days) VALUES (30)")
        .await
        .unwrap();
    assert_eq!(sweep(&c).await, 1);
    assert_eq!(sweep(&c).await, 0);
    assert_eq!(warned(&c).await, vec![(spent_part, 30), (later, 100)]);
    // 0 turns warnings off.
    grant(&c, user, 5, Some(DAY)).await;
    c.batch_execute("UPDATE billing.config SET expiry_warning_days = 0")
        .await
        .unwrap();
    assert_eq!(sweep(&c).await, 0);
}

#[tokio::test]
async fn concurrent_sweeps_warn_each_grant_once() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    for _ in 0..50 {
        grant(&c, Uuid::new_v4(), 10, Some(DAY)).await;
    }
    // Hold the first sweep's transaction open while the second runs into its rows.
    let a = connect(&db.dsn).await;
    let b = connect(&db.dsn).await;
    a.batch_execute("BEGIN").await.unwrap();
    let first: i32 = a
        .query_one("SELECT billing.warn_expiring_grants()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(first, 50);
    let second = tokio::spawn(async move {
        b.query_one("SELECT billing.warn_expiring_grants()", &[])
            .await
            .unwrap()
            .get::<_, i32>(0)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(second.await.unwrap(), 0);
    assert_eq!(warned(&c).await.len(), 50);

    // And many at once, each in its own transaction, over new grants.
    for _ in 0..50 {
        grant(&c, Uuid::new_v4(), 10, Some(DAY)).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let dsn = db.dsn.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(&dsn).await;
            c.query_one("SELECT billing.warn_expiring_grants(7)", &[])
                .await
                .unwrap()
                .get::<_, i32>(0)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    while sweep(&c).await > 0 {}
    let all = warned(&c).await;
    assert_eq!(all.len(), 100);
    assert!(total <= 50, "{total}");
    let mut ids: Vec<i64> = all.iter().map(|w| w.0).collect();
    ids.dedup();
    assert_eq!(ids.len(), 100, "one warning per grant");
}

#[tokio::test]
async fn sweeps_are_privileged_and_bounded() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let mut api = db.api().await;
    for bad in [0, 100_001] {
        assert_error(
            c.query_one("SELECT billing.warn_expiring_grants($1)", &[&bad])
                .await,
            "22023",
            "max_warnings must be between 1 and 100000",
        );
    }
    assert_error(
        c.query_one("SELECT billing.warn_expiring_grants(NULL)", &[])
            .await,
        "22004",
        "max_warnings must not be NULL",
    );
    assert_error(
        c.execute(
            "INSERT INTO billing.config (expiry_warning_days) VALUES (366)",
            &[],
        )
        .await,
        "23514",
        "expiry_warning_days",
    );
    for caller in [Caller::Anon, Caller::User(Uuid::new_v4())] {
        assert_error(
            api.call(&caller, "SELECT billing.warn_expiring_grants()", &[])
                .await,
            "42501",
            "permission denied",
        );
    }
    let user = Uuid::new_v4();
    grant(&c, user, 10, Some(DAY)).await;
    let n: i32 = api
        .call(
            &Caller::Service,
            "SELECT billing.warn_expiring_grants(1)",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(n, 1);
    // The user reads their warning and its record, and nobody else's.
    let mine: i64 = api
        .call(
            &Caller::User(user),
            "SELECT count(*) FROM billing.expiry_warnings",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(mine, 1);
    let theirs: i64 = api
        .call(
            &Caller::User(Uuid::new_v4()),
            "SELECT count(*) FROM billing.expiry_warnings",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(theirs, 0);
}
