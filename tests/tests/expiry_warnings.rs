//! Expiry warnings (issue 22, item 3; docs/tokens.md, "Low-balance alerts and expiry
//! warnings"): billing.warn_expiring_grants() writes one `tokens_expiring` notification per
//! unspent grant expiring within the operator's window, once however many sweeps run, at once
//! or one after the other; spent, expired, later and never-expiring grants are never warned.
//! Warnings are off until the operator sets a window, on a fresh install and on one upgraded
//! from 0.2.0 alike; billing.prune() deletes the records of grants no sweep can warn again.
//! (The worker running it on its interval: operations.rs.)
use std::time::{Duration, SystemTime};

use serde_json::Value;
use shipped_sql::{pure_sql, upgrade};
use stripe_billing_tests::edition::Edition;
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

/// The operator's window: `days` of warning before a grant expires (warnings are off without).
async fn set_window(c: &Client, days: i32) {
    c.execute(
        "INSERT INTO billing.config (expiry_warning_days) VALUES ($1)
         ON CONFLICT (id) DO UPDATE SET expiry_warning_days = EXCLUDED.expiry_warning_days",
        &[&days],
    )
    .await
    .expect("set expiry_warning_days");
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
    set_window(&c, 3).await;
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
    set_window(&c, 30).await;
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
    set_window(&c, 3).await;
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
    set_window(&c, 3).await;
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

/// Whether a sweep warns anyone on an install whose operator has not set a window, and what
/// billing.my_credit_settings() tells a user of it.
async fn warns_by_default(db: &TestDb, c: &Client, user: Uuid) -> (i32, i32) {
    grant(c, user, 25, Some(2 * DAY)).await;
    let written = sweep(c).await;
    let mut api = db.api().await;
    let days: i32 = api
        .call(
            &Caller::User(user),
            "SELECT expiry_warning_days FROM billing.my_credit_settings()",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    (written, days)
}

#[tokio::test]
async fn warnings_are_off_until_the_operator_sets_a_window() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let user = Uuid::new_v4();
    assert_eq!(
        warns_by_default(&db, &c, user).await,
        (0, 0),
        "a fresh install warns nobody by itself"
    );
    assert!(warned(&c).await.is_empty());
    set_window(&c, 3).await;
    assert_eq!(sweep(&c).await, 1, "the operator turned them on");
}

/// An install of 0.2.0 (which had no expiry warnings) with a grant expiring in two days,
/// upgraded in this run's edition: the upgrade does not start notifying its users either.
#[tokio::test]
async fn an_upgraded_install_warns_nobody_until_the_operator_sets_a_window() {
    let root = upgrade::repo_root();
    let current = upgrade::current_version();
    let user = Uuid::new_v4();
    let before = "SELECT billing.grant_tokens($1, 40, expires_at => now() + interval '2 days')";
    let db = match Edition::current() {
        Edition::Extension => {
            let db = TestDb::with_version(Some("0.2.0")).await;
            let c = db.owner().await;
            c.execute(before, &[&user]).await.expect(before);
            c.batch_execute("ALTER EXTENSION stripe_billing UPDATE")
                .await
                .expect("upgrade");
            db
        }
        Edition::Pure => {
            let db = TestDb::empty_for(Edition::Pure).await;
            let mut c = db.owner().await;
            let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
            let tx = c.transaction().await.unwrap();
            tx.batch_execute(&read(pure_sql::install_path(&root, "0.2.0")))
                .await
                .expect("install 0.2.0");
            tx.commit().await.unwrap();
            c.execute(before, &[&user]).await.expect(before);
            let tx = c.transaction().await.unwrap();
            tx.batch_execute(&read(pure_sql::upgrade_path(&root, "0.2.0", current)))
                .await
                .expect("upgrade");
            tx.commit().await.unwrap();
            db
        }
    };
    let c = db.owner().await;
    assert_eq!(sweep(&c).await, 0, "the 0.2.0 grant is not warned of");
    assert_eq!(warns_by_default(&db, &c, user).await, (0, 0));
    set_window(&c, 3).await;
    assert_eq!(sweep(&c).await, 2, "both grants, once the operator opts in");
}

/// billing.prune()'s count of deleted expiry warnings.
async fn prune(c: &Client) -> i64 {
    let out: Value = c
        .query_one("SELECT billing.prune()", &[])
        .await
        .unwrap()
        .get(0);
    out["expiry_warnings_deleted"]
        .as_i64()
        .unwrap_or_else(|| panic!("no expiry_warnings_deleted in {out}"))
}

/// A grant as history holds it: `tokens` left of `tokens`, expired (or expiring) `expired_ago`
/// seconds ago, and warned of while it was live.
async fn warned_grant(c: &Client, user: Uuid, tokens: i64, expired_ago: i64) -> i64 {
    let id: i64 = c
        .query_one(
            "INSERT INTO billing.token_grants (user_id, source, tokens, expires_at, created_at)
             VALUES ($1, 'manual', $2, now() - make_interval(secs => $3), now() - interval '10 days')
             RETURNING id",
            &[&user, &tokens, &(expired_ago as f64)],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "INSERT INTO billing.expiry_warnings (grant_id, user_id, warned_at)
         VALUES ($1, $2, now() - interval '5 days')",
        &[&id, &user],
    )
    .await
    .unwrap();
    id
}

async fn warning_rows(c: &Client) -> Vec<i64> {
    c.query(
        "SELECT grant_id FROM billing.expiry_warnings ORDER BY grant_id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn prune_deletes_the_warnings_no_sweep_can_repeat() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    set_window(&c, 3).await;
    let user = Uuid::new_v4();
    // Live and warned: its row is what keeps the next sweep from warning it again.
    let live = grant(&c, user, 100, Some(DAY)).await;
    // Warned, then spent out: remaining never grows again, so no sweep picks it.
    let spender = Uuid::new_v4();
    let spent = grant(&c, spender, 10, Some(2 * DAY)).await;
    assert_eq!(sweep(&c).await, 2);
    c.query_one("SELECT billing.spend_tokens($1, 10)", &[&spender])
        .await
        .unwrap();
    // Expired two days ago: gone. Expired an hour ago: kept a day more, for a sweep whose
    // transaction began before the expiry.
    let long_expired = warned_grant(&c, user, 10, 2 * DAY as i64).await;
    let just_expired = warned_grant(&c, user, 10, 3600).await;
    assert_eq!(
        warning_rows(&c).await,
        vec![live, spent, long_expired, just_expired]
    );

    assert_eq!(prune(&c).await, 2);
    assert_eq!(warning_rows(&c).await, vec![live, just_expired]);
    assert_eq!(prune(&c).await, 0, "a second run finds nothing more");
    // Nothing is warned twice: the live grant's row stays, the others are never swept.
    assert_eq!(sweep(&c).await, 0);
    assert_eq!(warned(&c).await.len(), 2);
    // The user's view of their rows follows.
    let mut api = db.api().await;
    let mine: i64 = api
        .call(
            &Caller::User(user),
            "SELECT count(*) FROM billing.expiry_warnings",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(mine, 2);
}
