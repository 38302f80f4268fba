//! Tier 3: what the token ledger (DESIGN.md, "The ledger") refuses and who may call it: bad
//! arguments to grant_tokens and spend_tokens change nothing, token_balance and spend_my_tokens
//! act for the signed-in caller, the database keeps the books even against its owner, and a user
//! cannot take a back-end job's idempotency key. The ledger's rules themselves: ledger.rs.
mod ledger_support;

use ledger_support::*;
use serde_json::{json, Value};
use stripe_billing_tests::pg::{assert_error, Caller, TestDb};
use tokio_postgres::Client;
use uuid::Uuid;

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
