//! The token ledger called the way the app's back end calls it (the owner's connection), for
//! tests about what a grant or a spend sets off: alerts, auto top-ups, the worker's grants.
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::pg::one;

/// Grants `tokens` to `user`'s own balance (no expiry, no key).
pub async fn grant(owner: &Client, user: Uuid, tokens: i64) -> Value {
    one(
        owner,
        "SELECT billing.grant_tokens($1, $2)",
        &[&user, &tokens],
    )
    .await
}

/// Spends `amount` of `user`'s own balance; the spend's answer.
pub async fn spend(owner: &Client, user: Uuid, amount: i64) -> Value {
    one(
        owner,
        "SELECT billing.spend_tokens($1, $2)",
        &[&user, &amount],
    )
    .await
}

/// `user`'s own balance.
pub async fn balance(owner: &Client, user: Uuid) -> i64 {
    one(owner, "SELECT billing.token_balance($1)", &[&user]).await
}
