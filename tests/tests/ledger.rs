//! Tier 3: the token ledger (DESIGN.md, "The ledger") through a real client against a real server:
//! grants, spend order, insufficient balance, idempotency, expiry and project scopes. What it
//! refuses and who may call it (bad arguments, the signed-in user's functions, the owner held to
//! the books): ledger_guards.rs. Concurrency lives in ledger_concurrency.rs.
mod ledger_support;

use ledger_support::*;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use stripe_billing_tests::pg::{assert_error, TestDb};
use uuid::Uuid;

#[tokio::test]
async fn grant_tokens_is_idempotent_on_grant_key() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let (u, v) = (Uuid::new_v4(), Uuid::new_v4());

    let first = try_grant(&c, u, 100, None, Some("in_1")).await.unwrap();
    let sql = "SELECT id FROM billing.token_grants WHERE grant_key = 'in_1'";
    let g: i64 = one(&c, sql, &[]).await;
    assert_eq!(num(&first, "grant_id"), g);
    assert_eq!(first["user_id"], json!(u.to_string()));
    assert_eq!(first["tokens"], json!(100));
    assert_eq!(first["remaining"], json!(100));
    assert_eq!(first["source"], json!("manual"));
    assert_eq!(first["grant_key"], json!("in_1"));
    assert_eq!(first["duplicate"], json!(false));
    assert_eq!(balance(&c, u, None).await, 100);

    spend(&c, u, 30, None).await;
    let before = snapshot(&c).await;
    let again = try_grant(&c, u, 100, None, Some("in_1")).await.unwrap();
    assert_eq!(num(&again, "grant_id"), g);
    assert_eq!(again["duplicate"], json!(true));
    assert_eq!(again["tokens"], json!(100));
    assert_eq!(
        again["remaining"],
        json!(70),
        "a duplicate reports the grant as it is now"
    );
    assert_eq!(balance(&c, u, None).await, 70);
    assert_eq!(snapshot(&c).await, before);

    let reused = "grant_key in_1 was already used for a different grant";
    let more = try_grant(&c, u, 200, None, Some("in_1")).await;
    assert_error(more, "BL004", reused);
    let someone_else = try_grant(&c, v, 100, None, Some("in_1")).await;
    assert_error(someone_else, "BL004", reused);
    assert_eq!(snapshot(&c).await, before);
    assert_eq!(balance(&c, v, None).await, 0);

    // Without a key every call is a new grant.
    grant(&c, u, 5, None).await;
    grant(&c, u, 5, None).await;
    assert_eq!(balance(&c, u, None).await, 80);
}

#[tokio::test]
async fn spend_takes_soonest_expiring_first_then_never_expiring_oldest_first() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let u = Uuid::new_v4();
    let tomorrow = in_days(1);
    // Created in this order; the spend order must be g3, g5, g2, g1, g4.
    let g1 = grant(&c, u, 10, None).await;
    let g2 = grant(&c, u, 10, Some(in_days(30))).await;
    let g3 = grant(&c, u, 10, Some(tomorrow)).await;
    let g4 = grant(&c, u, 10, None).await;
    let g5 = grant(&c, u, 10, Some(tomorrow)).await;
    // Another user's grant expiring sooner must never be touched.
    let other = Uuid::new_v4();
    let go = grant(
        &c,
        other,
        10,
        Some(SystemTime::now() + Duration::from_secs(3600)),
    )
    .await;

    let s1 = spend(&c, u, 4, None).await;
    let mut keys: Vec<_> = s1.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["amount", "balance", "duplicate", "spend_id"]);
    assert_eq!(s1["amount"], json!(4));
    assert_eq!(s1["balance"], json!(46));
    assert_eq!(s1["duplicate"], json!(false));
    let s2 = spend(&c, u, 10, None).await;
    assert_eq!(s2["balance"], json!(36));
    let s3 = spend(&c, u, 20, None).await;
    assert_eq!(s3["balance"], json!(16));
    let s4 = spend(&c, u, 9, None).await;
    assert_eq!(s4["balance"], json!(7));
    let [s1, s2, s3, s4] = [s1, s2, s3, s4].map(|s| num(&s, "spend_id"));

    let mut expected = vec![(s1, g3, 4), (s2, g3, 6), (s2, g5, 4), (s3, g5, 6)];
    expected.extend([(s3, g2, 10), (s3, g1, 4), (s4, g1, 6), (s4, g4, 3)]);
    expected.sort();
    assert_eq!(allocations(&c, u).await, expected);

    let sql = "SELECT string_agg(format('%s:%s:%s', grant_id, spent, state), ' ' ORDER BY grant_id)
               FROM billing.token_grant_balances WHERE user_id = $1";
    let per_grant: String = one(&c, sql, &[&u]).await;
    let expected = format!("{g1}:10:spent {g2}:10:spent {g3}:10:spent {g4}:3:active {g5}:10:spent");
    assert_eq!(per_grant, expected);
    let sql = "SELECT array_agg(amount ORDER BY id) FROM billing.token_spends WHERE user_id = $1";
    assert_eq!(one::<Vec<i64>>(&c, sql, &[&u]).await, [4, 10, 20, 9]);
    assert_eq!(balance(&c, u, None).await, 7);
    let sql = "SELECT remaining FROM billing.token_grants WHERE id = $1";
    assert_eq!(one::<i64>(&c, sql, &[&go]).await, 10);
}

#[tokio::test]
async fn insufficient_balance_fails_with_bl001_and_changes_nothing() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let u = Uuid::new_v4();
    grant(&c, u, 30, Some(in_days(3))).await;
    grant(&c, u, 20, None).await;
    spend(&c, u, 5, None).await;
    assert_eq!(balance(&c, u, None).await, 45);

    let before = snapshot(&c).await;
    let short = "insufficient tokens: balance 45, requested 60";
    assert_error(try_spend(&c, u, 60, None).await, "BL001", short);
    let short = "insufficient tokens: balance 45, requested 46";
    assert_error(try_spend(&c, u, 46, Some("job-7")).await, "BL001", short);
    assert_eq!(snapshot(&c).await, before);
    assert_eq!(balance(&c, u, None).await, 45);

    // The failed attempt did not burn its idempotency key.
    let ok = spend(&c, u, 45, Some("job-7")).await;
    assert_eq!(ok["duplicate"], json!(false));
    assert_eq!(ok["balance"], json!(0));
    let empty = "insufficient tokens: balance 0, requested 1";
    assert_error(try_spend(&c, u, 1, None).await, "BL001", empty);
    let stranger = try_spend(&c, Uuid::new_v4(), 3, None).await;
    assert_error(
        stranger,
        "BL001",
        "insufficient tokens: balance 0, requested 3",
    );
}

#[tokio::test]
async fn repeated_idempotency_key_returns_the_first_spend() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
    grant(&c, u, 100, None).await;
    grant(&c, v, 50, None).await;

    let first = spend(&c, u, 10, Some("op-1")).await;
    assert_eq!(first["duplicate"], json!(false));
    assert_eq!(first["balance"], json!(90));
    let sid = num(&first, "spend_id");

    let before = snapshot(&c).await;
    let again = spend(&c, u, 10, Some("op-1")).await;
    assert_eq!(num(&again, "spend_id"), sid);
    assert_eq!(again["amount"], json!(10));
    assert_eq!(again["duplicate"], json!(true));
    assert_eq!(again["balance"], json!(90));
    assert_eq!(snapshot(&c).await, before);

    let reused = "idempotency_key op-1 was already used for a different spend";
    assert_error(try_spend(&c, u, 11, Some("op-1")).await, "BL004", reused);
    assert_eq!(snapshot(&c).await, before);
    assert_eq!(balance(&c, u, None).await, 90);

    // Keys are per user: v's op-1 is a new spend.
    let theirs = spend(&c, v, 10, Some("op-1")).await;
    assert_eq!(theirs["duplicate"], json!(false));
    assert_ne!(num(&theirs, "spend_id"), sid);
    assert_eq!(theirs["balance"], json!(40));
    assert_eq!(balance(&c, v, None).await, 40);
    assert_eq!(balance(&c, u, None).await, 90);

    // Spends without a key are never deduplicated.
    let a = spend(&c, u, 1, None).await;
    let b = spend(&c, u, 1, None).await;
    assert_ne!(num(&a, "spend_id"), num(&b, "spend_id"));
    assert_eq!(balance(&c, u, None).await, 88);
}

#[tokio::test]
async fn expired_grants_stop_counting_without_a_job() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let u = Uuid::new_v4();
    let sql = "SELECT billing.grant_tokens($1, 100, expires_at => now() + interval '1.5 seconds')";
    let short = num(&one(&c, sql, &[&u]).await, "grant_id");
    let forever = grant(&c, u, 10, None).await;
    assert_eq!(balance(&c, u, None).await, 110);
    // Soonest-expiring first: this comes out of the short grant.
    spend(&c, u, 30, None).await;
    assert_eq!(balance(&c, u, None).await, 80);
    let view =
        "SELECT format('%s spent=%s spendable=%s expired=%s', state, spent, spendable, expired)
                FROM billing.token_grant_balances WHERE grant_id = $1";
    let now: String = one(&c, view, &[&short]).await;
    assert_eq!(now, "active spent=30 spendable=70 expired=0");

    let sql = "SELECT extract(epoch FROM expires_at - clock_timestamp())::float8
               FROM billing.token_grants WHERE id = $1";
    let wait: f64 = one(&c, sql, &[&short]).await;
    assert!(wait > 0.0, "the grant expired before the test could use it");
    tokio::time::sleep(Duration::from_secs_f64(wait + 0.3)).await;

    assert_eq!(balance(&c, u, None).await, 10);
    let short_now = "insufficient tokens: balance 10, requested 20";
    assert_error(try_spend(&c, u, 20, None).await, "BL001", short_now);
    let s = spend(&c, u, 4, None).await;
    assert_eq!(s["balance"], json!(6));
    let sid = num(&s, "spend_id");
    let mine: Vec<_> = allocations(&c, u)
        .await
        .into_iter()
        .filter(|a| a.0 == sid)
        .collect();
    assert_eq!(mine, [(sid, forever, 4)]);
    let later: String = one(&c, view, &[&short]).await;
    assert_eq!(later, "expired spent=30 spendable=0 expired=70");
}

#[tokio::test]
async fn project_tokens_have_their_own_balance() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
    let p = new_project(&c, u).await;
    let theirs = new_project(&c, v).await;

    let g: Value = one(&c, PGRANT, &[&u, &100i64, &p]).await;
    assert_eq!(g["project_id"], json!(p.to_string()));
    grant(&c, u, 25, None).await;
    assert_eq!(balance(&c, u, Some(p)).await, 100);
    assert_eq!(balance(&c, u, None).await, 25);

    let s: Value = one(&c, PSPEND, &[&u, &60i64, &p]).await;
    assert_eq!(s["balance"], json!(40));
    assert_eq!(balance(&c, u, Some(p)).await, 40);
    assert_eq!(balance(&c, u, None).await, 25);
    let sql = "SELECT format('%s/%s/%s', s.project_id, a.grant_id, a.tokens)
               FROM billing.token_spends s
               JOIN billing.token_spend_allocations a ON a.spend_id = s.id WHERE s.id = $1";
    let row: String = one(&c, sql, &[&num(&s, "spend_id")]).await;
    assert_eq!(row, format!("{p}/{}/60", num(&g, "grant_id")));

    // Neither balance can pay from the other.
    let own = "insufficient tokens: balance 25, requested 30";
    assert_error(try_spend(&c, u, 30, None).await, "BL001", own);
    let project = "insufficient tokens: balance 40, requested 41";
    assert_error(
        try_one::<Value>(&c, PSPEND, &[&u, &41i64, &p]).await,
        "BL001",
        project,
    );

    let before = snapshot(&c).await;
    for bad in [Uuid::new_v4(), theirs] {
        let unknown = format!("unknown project {bad} for user {u}");
        let r = try_one::<Value>(&c, PGRANT, &[&u, &5i64, &bad]).await;
        assert_error(r, "P0002", &unknown);
        let r = try_one::<Value>(&c, PSPEND, &[&u, &5i64, &bad]).await;
        assert_error(r, "P0002", &unknown);
    }
    assert_eq!(snapshot(&c).await, before);
    // The owner of the other project can use it.
    one::<Value>(&c, PGRANT, &[&v, &5i64, &theirs]).await;
    assert_eq!(balance(&c, v, Some(theirs)).await, 5);
}
