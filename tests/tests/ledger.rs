//! Tier 3: the token ledger (DESIGN.md, "The ledger") through a real client against a real server:
//! grants, spend order, insufficient balance, idempotency, expiry, project scopes, argument
//! validation and the signed-in user's functions. Concurrency lives in ledger_concurrency.rs.

use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use stripe_billing_tests::pg::{assert_error, Api, Caller, TestDb};
use tokio_postgres::types::{FromSqlOwned, ToSql};
use tokio_postgres::{Client, Error};
use uuid::Uuid;

const GRANT: &str = "SELECT billing.grant_tokens($1::uuid, $2::bigint, \
                     expires_at => $3::timestamptz, grant_key => $4::text)";
const SPEND: &str =
    "SELECT billing.spend_tokens($1::uuid, $2::bigint, idempotency_key => $3::text)";
const PGRANT: &str = "SELECT billing.grant_tokens($1, $2, project_id => $3)";
const PSPEND: &str = "SELECT billing.spend_tokens($1, $2, project_id => $3)";

fn in_days(days: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(days * 86_400)
}

fn num(v: &Value, field: &str) -> i64 {
    let n = v[field].as_i64();
    n.unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

/// The first column of the one row `sql` returns.
async fn try_one<T: FromSqlOwned>(
    c: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<T, Error> {
    c.query_one(sql, params).await.map(|r| r.get(0))
}

async fn one<T: FromSqlOwned>(c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T {
    let r = try_one(c, sql, params).await;
    r.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The first column of the one row `sql` returns when run PostgREST-style as `caller`.
async fn call<T: FromSqlOwned>(
    api: &mut Api,
    caller: &Caller,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<T, Error> {
    api.call(caller, sql, params)
        .await
        .map(|rows| rows[0].get(0))
}

async fn try_grant(
    c: &Client,
    user: Uuid,
    tokens: i64,
    expires: Option<SystemTime>,
    key: Option<&str>,
) -> Result<Value, Error> {
    try_one(c, GRANT, &[&user, &tokens, &expires, &key]).await
}

/// Grants `tokens` to `user` and returns the grant id.
async fn grant(c: &Client, user: Uuid, tokens: i64, expires: Option<SystemTime>) -> i64 {
    num(
        &one(c, GRANT, &[&user, &tokens, &expires, &None::<&str>]).await,
        "grant_id",
    )
}

async fn try_spend(c: &Client, user: Uuid, amount: i64, key: Option<&str>) -> Result<Value, Error> {
    try_one(c, SPEND, &[&user, &amount, &key]).await
}

async fn spend(c: &Client, user: Uuid, amount: i64, key: Option<&str>) -> Value {
    one(c, SPEND, &[&user, &amount, &key]).await
}

async fn balance(c: &Client, user: Uuid, project: Option<Uuid>) -> i64 {
    one(
        c,
        "SELECT billing.token_balance($1, $2)",
        &[&user, &project],
    )
    .await
}

/// Everything the ledger stores, so a failed call can be shown to have written nothing.
async fn snapshot(c: &Client) -> String {
    let sql = "SELECT format('grants=%s spends=%s allocations=%s remaining=[%s] spends=[%s]',
        (SELECT count(*) FROM billing.token_grants),
        (SELECT count(*) FROM billing.token_spends),
        (SELECT count(*) FROM billing.token_spend_allocations),
        (SELECT string_agg(id || ':' || remaining, ',' ORDER BY id) FROM billing.token_grants),
        (SELECT string_agg(id || ':' || amount || ':' || coalesce(idempotency_key, '-'), ','
                           ORDER BY id) FROM billing.token_spends))";
    one(c, sql, &[]).await
}

/// (spend_id, grant_id, tokens) of every allocation of `user`, in order.
async fn allocations(c: &Client, user: Uuid) -> Vec<(i64, i64, i64)> {
    let sql = "SELECT spend_id, grant_id, tokens FROM billing.token_spend_allocations
               WHERE user_id = $1 ORDER BY spend_id, grant_id";
    let rows = c.query(sql, &[&user]).await.expect("allocations");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn new_project(c: &Client, owner: Uuid) -> Uuid {
    let sql = "INSERT INTO billing.projects (user_id, name) VALUES ($1, 'p') RETURNING id";
    one(c, sql, &[&owner]).await
}

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

/// Runs each `SELECT billing.<func>($1::uuid, <tail>)` and checks its error and that nothing
/// was written.
async fn check_rejections(c: &Client, func: &str, cases: &[(Option<Uuid>, &str, &str, &str)]) {
    for (user, tail, code, needle) in cases {
        let before = snapshot(c).await;
        let sql = format!("SELECT billing.{func}($1::uuid, {tail})");
        let result = try_one::<Value>(c, &sql, &[user]).await;
        if let Err(e) = &result {
            eprintln!("{sql}: {e}");
        }
        assert_error(result, code, needle);
        assert_eq!(snapshot(c).await, before, "{sql} wrote something");
    }
}

#[tokio::test]
async fn grant_tokens_rejects_bad_arguments() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let user = Uuid::new_v4();
    let u = Some(user);
    let range = "tokens must be between 1 and 1000000000000";
    let expiry = "expires_at must be a finite time in the future";
    let key = "grant_key must be 1 to 255 characters";
    let object = "metadata must be a JSON object";
    #[rustfmt::skip]
    let cases = [
        (None, "10", "22004", "user_id must not be NULL"),
        (u, "NULL", "22004", "tokens must not be NULL"),
        (u, "0", "22023", "tokens must be between 1 and 1000000000000, got 0"),
        (u, "-5", "22023", "got -5"),
        (u, "1000000000001", "22023", range),
        (u, "10, source => 'Bad Source!'", "22023", "source must be a short lower-case identifier"),
        (u, "10, source => NULL", "22004", "source must not be NULL"),
        (u, "10, expires_at => now() - interval '1 minute'", "22023", expiry),
        (u, "10, expires_at => now()", "22023", expiry),
        (u, "10, expires_at => 'infinity'", "22023", expiry),
        (u, "10, metadata => '[1, 2]'", "22023", object),
        (u, "10, metadata => '\"text\"'", "22023", object),
        (u, "10, grant_key => ''", "22023", key),
        (u, "10, grant_key => repeat('k', 256)", "22023", key),
    ];
    check_rejections(&c, "grant_tokens", &cases).await;
    assert_eq!(snapshot(&c).await.split(' ').next(), Some("grants=0"));

    // The boundaries themselves are accepted.
    let ok = "1000000000000, source => 'promo_2', metadata => NULL, grant_key => repeat('k', 255)";
    one::<Value>(
        &c,
        &format!("SELECT billing.grant_tokens($1::uuid, {ok})"),
        &[&u],
    )
    .await;
    assert_eq!(balance(&c, user, None).await, 1_000_000_000_000);
}

#[tokio::test]
async fn spend_tokens_rejects_bad_arguments() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let user = Uuid::new_v4();
    let u = Some(user);
    grant(&c, user, 100, None).await;
    let range = "amount must be between 1 and 1000000000000";
    let key = "idempotency_key must be 1 to 255 characters";
    #[rustfmt::skip]
    let cases = [
        (None, "10", "22004", "user_id must not be NULL"),
        (u, "NULL", "22004", "amount must not be NULL"),
        (u, "0", "22023", "amount must be between 1 and 1000000000000, got 0"),
        (u, "-1", "22023", "got -1"),
        (u, "1000000000001", "22023", range),
        (u, "10, reason => repeat('r', 501)", "22023", "reason must be at most 500 characters"),
        (u, "10, idempotency_key => ''", "22023", key),
        (u, "10, idempotency_key => repeat('k', 256)", "22023", key),
    ];
    check_rejections(&c, "spend_tokens", &cases).await;
    assert_eq!(balance(&c, user, None).await, 100);

    let ok = "10, reason => repeat('r', 500), idempotency_key => repeat('k', 255)";
    one::<Value>(
        &c,
        &format!("SELECT billing.spend_tokens($1::uuid, {ok})"),
        &[&u],
    )
    .await;
    assert_eq!(balance(&c, user, None).await, 90);
}

#[tokio::test]
async fn token_balance_defaults_to_the_signed_in_caller() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let mut api = db.api().await;
    let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
    grant(&c, u, 70, None).await;
    grant(&c, v, 30, None).await;

    let mine = "SELECT billing.token_balance()";
    assert_eq!(
        call::<i64>(&mut api, &Caller::User(u), mine, &[])
            .await
            .unwrap(),
        70
    );
    assert_eq!(
        call::<i64>(&mut api, &Caller::User(v), mine, &[])
            .await
            .unwrap(),
        30
    );
    // A user may name themself but not someone else.
    let named = "SELECT billing.token_balance($1)";
    assert_eq!(
        call::<i64>(&mut api, &Caller::User(u), named, &[&u])
            .await
            .unwrap(),
        70
    );
    let r = call::<i64>(&mut api, &Caller::User(u), named, &[&v]).await;
    assert_error(r, "42501", "you can only read your own balance");

    let no_user = "user_id must not be NULL when the caller is not signed in";
    assert_error(try_one::<i64>(&c, mine, &[]).await, "22004", no_user);
    let r = call::<i64>(
        &mut api,
        &Caller::Service,
        "SELECT billing.token_balance(NULL)",
        &[],
    )
    .await;
    assert_error(r, "22004", no_user);
    assert_eq!(
        call::<i64>(&mut api, &Caller::Service, named, &[&v])
            .await
            .unwrap(),
        30
    );
}

#[tokio::test]
async fn spend_my_tokens_spends_the_callers_tokens() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let mut api = db.api().await;
    let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
    grant(&c, u, 50, None).await;
    grant(&c, v, 50, None).await;

    let me = Caller::User(u);
    let sql = "SELECT billing.spend_my_tokens(20, reason => 'chat')";
    let s: Value = call(&mut api, &me, sql, &[]).await.unwrap();
    assert_eq!(s["amount"], json!(20));
    assert_eq!(s["balance"], json!(30));
    assert_eq!(s["duplicate"], json!(false));
    let sql = "SELECT format('%s/%s/%s', user_id, amount, reason) FROM billing.token_spends
               WHERE id = $1";
    let row: String = one(&c, sql, &[&num(&s, "spend_id")]).await;
    assert_eq!(row, format!("{u}/20/chat"));
    assert_eq!(balance(&c, u, None).await, 30);
    assert_eq!(balance(&c, v, None).await, 50);

    // Idempotent like spend_tokens, and limited to the caller's balance.
    let sql = "SELECT billing.spend_my_tokens(5, idempotency_key => 'req-1')";
    let a: Value = call(&mut api, &me, sql, &[]).await.unwrap();
    let b: Value = call(&mut api, &me, sql, &[]).await.unwrap();
    assert_eq!(a["spend_id"], b["spend_id"]);
    assert_eq!(b["duplicate"], json!(true));
    let r = call::<Value>(&mut api, &me, "SELECT billing.spend_my_tokens(26)", &[]).await;
    assert_error(r, "BL001", "insufficient tokens: balance 25, requested 26");
    let r = call::<Value>(
        &mut api,
        &Caller::Service,
        "SELECT billing.spend_my_tokens(1)",
        &[],
    );
    assert_error(r.await, "28000", "not authenticated");
    assert_eq!(balance(&c, u, None).await, 25);
    assert_eq!(balance(&c, v, None).await, 50);
}

#[tokio::test]
async fn the_books_are_kept_by_the_database_even_against_its_owner() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let user = Uuid::new_v4();
    let first = grant(&c, user, 100, None).await;
    spend(&c, user, 30, Some("job-1")).await;
    let before = snapshot(&c).await;
    // Even a superuser cannot make a grant's numbers disagree with its allocations.
    for sql in [
        format!("UPDATE billing.token_grants SET remaining = 100 WHERE id = {first}"),
        format!("UPDATE billing.token_grants SET tokens = 500 WHERE id = {first}"),
        format!("UPDATE billing.token_grants SET user_id = gen_random_uuid() WHERE id = {first}"),
        "UPDATE billing.token_spends SET amount = 1".to_string(),
        "UPDATE billing.token_spend_allocations SET tokens = 1".to_string(),
        "DELETE FROM billing.token_spend_allocations".to_string(),
    ] {
        assert_error(c.batch_execute(&sql).await, "23001", "append-only");
    }
    // A grant inserted by hand starts full, whatever it claims.
    let inserted: i64 = one(
        &c,
        "INSERT INTO billing.token_grants (user_id, source, tokens, remaining) VALUES ($1, 'manual', 50, 0)
         RETURNING remaining",
        &[&user],
    )
    .await;
    assert_eq!(inserted, 50);
    // An allocation beyond what a grant has left is refused by the grant's CHECK.
    let spend_id: i64 = one(
        &c,
        "INSERT INTO billing.token_spends (user_id, amount) VALUES ($1, 71) RETURNING id",
        &[&user],
    )
    .await;
    assert_error(
        c.execute(
            "INSERT INTO billing.token_spend_allocations (spend_id, grant_id, user_id, tokens) VALUES ($1, $2, $3, 71)",
            &[&spend_id, &first, &user],
        )
        .await,
        "23514",
        "token_grants_remaining_check",
    );
    // What may change, does: a grant's expiry and metadata.
    c.batch_execute(&format!(
        "UPDATE billing.token_grants SET expires_at = now() + interval '1 day', metadata = '{{\"note\": \"extended\"}}' WHERE id = {first}"
    ))
    .await
    .unwrap();
    let remaining: i64 = one(
        &c,
        "SELECT remaining FROM billing.token_grants WHERE id = $1",
        &[&first],
    )
    .await;
    assert_eq!(remaining, 70, "still tokens less what its allocations took");
    let changed: String = one(
        &c,
        "SELECT format('%s %s', expires_at BETWEEN now() + interval '23 hours' AND now() + interval '1 day', metadata)
         FROM billing.token_grants WHERE id = $1",
        &[&first],
    )
    .await;
    assert_eq!(
        changed, r#"t {"note": "extended"}"#,
        "the new expiry (in a day) and metadata are kept"
    );
    assert!(before.contains(&format!("{first}:70")), "{before}");
    assert_eq!(balance(&c, user, None).await, 120);
}

#[tokio::test]
async fn a_user_cannot_claim_the_idempotency_key_of_a_back_end_job() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let mut api = db.api().await;
    let user = Uuid::new_v4();
    grant(&c, user, 100, None).await;
    // The user guesses the key the back end will use for its next job.
    let mine: Value = call(
        &mut api,
        &Caller::User(user),
        "SELECT billing.spend_my_tokens(1, idempotency_key => 'job-7')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(mine["duplicate"], false);
    let job = spend(&c, user, 40, Some("job-7")).await;
    assert_eq!(
        job["duplicate"], false,
        "the back end's key is its own: {job}"
    );
    assert_eq!(job["balance"], 59);
    assert_eq!(spend(&c, user, 40, Some("job-7")).await["duplicate"], true);
}
