//! The ledger helpers shared by ledger.rs and ledger_guards.rs: grants, spends and balances
//! through the owner's connection, and a snapshot of everything the ledger stores.
#![allow(dead_code)]

use serde_json::Value;
use std::time::{Duration, SystemTime};
use stripe_billing_tests::pg::{Api, Caller};
use tokio_postgres::types::{FromSqlOwned, ToSql};
use tokio_postgres::{Client, Error};
use uuid::Uuid;

pub const GRANT: &str = "SELECT billing.grant_tokens($1::uuid, $2::bigint, \
                     expires_at => $3::timestamptz, grant_key => $4::text)";
pub const SPEND: &str =
    "SELECT billing.spend_tokens($1::uuid, $2::bigint, idempotency_key => $3::text)";
pub const PGRANT: &str = "SELECT billing.grant_tokens($1, $2, project_id => $3)";
pub const PSPEND: &str = "SELECT billing.spend_tokens($1, $2, project_id => $3)";

pub fn in_days(days: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(days * 86_400)
}

pub fn num(v: &Value, field: &str) -> i64 {
    let n = v[field].as_i64();
    n.unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

/// The first column of the one row `sql` returns.
pub async fn try_one<T: FromSqlOwned>(
    c: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<T, Error> {
    c.query_one(sql, params).await.map(|r| r.get(0))
}

pub async fn one<T: FromSqlOwned>(c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T {
    let r = try_one(c, sql, params).await;
    r.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The first column of the one row `sql` returns when run PostgREST-style as `caller`.
pub async fn call<T: FromSqlOwned>(
    api: &mut Api,
    caller: &Caller,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<T, Error> {
    api.call(caller, sql, params)
        .await
        .map(|rows| rows[0].get(0))
}

pub async fn try_grant(
    c: &Client,
    user: Uuid,
    tokens: i64,
    expires: Option<SystemTime>,
    key: Option<&str>,
) -> Result<Value, Error> {
    try_one(c, GRANT, &[&user, &tokens, &expires, &key]).await
}

/// Grants `tokens` to `user` and returns the grant id.
pub async fn grant(c: &Client, user: Uuid, tokens: i64, expires: Option<SystemTime>) -> i64 {
    num(
        &one(c, GRANT, &[&user, &tokens, &expires, &None::<&str>]).await,
        "grant_id",
    )
}

pub async fn try_spend(
    c: &Client,
    user: Uuid,
    amount: i64,
    key: Option<&str>,
) -> Result<Value, Error> {
    try_one(c, SPEND, &[&user, &amount, &key]).await
}

pub async fn spend(c: &Client, user: Uuid, amount: i64, key: Option<&str>) -> Value {
    one(c, SPEND, &[&user, &amount, &key]).await
}

pub async fn balance(c: &Client, user: Uuid, project: Option<Uuid>) -> i64 {
    one(
        c,
        "SELECT billing.token_balance($1, $2)",
        &[&user, &project],
    )
    .await
}

/// Everything the ledger stores, so a failed call can be shown to have written nothing.
pub async fn snapshot(c: &Client) -> String {
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
pub async fn allocations(c: &Client, user: Uuid) -> Vec<(i64, i64, i64)> {
    let sql = "SELECT spend_id, grant_id, tokens FROM billing.token_spend_allocations
               WHERE user_id = $1 ORDER BY spend_id, grant_id";
    let rows = c.query(sql, &[&user]).await.expect("allocations");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

pub async fn new_project(c: &Client, owner: Uuid) -> Uuid {
    let sql = "INSERT INTO billing.projects (user_id, name) VALUES ($1, 'p') RETURNING id";
    one(c, sql, &[&owner]).await
}
