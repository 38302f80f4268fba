//! The request queue as the end-to-end tests see it: a request row's state, waits until it is
//! finished, requests queued through the SQL API the way the app queues them, and the balance
//! a worker's work leaves.

use std::time::{Duration, Instant};

use serde_json::Value;
use stripe_billing_tests::pg::{Api, Caller};
pub use stripe_billing_tests::tokens::balance;
use tokio_postgres::Client;
use uuid::Uuid;

use super::{Emulator, Worker, CANCEL_URL, OK_URL, RETURN_URL};

/// A request row's state.
#[derive(Debug, Clone)]
pub struct Row {
    pub status: String,
    pub attempts: i32,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub locked_by: Option<String>,
}

pub async fn row(owner: &Client, id: Uuid) -> Row {
    let r = owner
        .query_one(
            "SELECT status, attempts, result, error, locked_by FROM billing.stripe_requests WHERE id = $1",
            &[&id],
        )
        .await
        .expect("request row");
    Row {
        status: r.get(0),
        attempts: r.get(1),
        result: r.get(2),
        error: r.get(3),
        locked_by: r.get(4),
    }
}

/// Waits until the request is succeeded or failed.
pub async fn finished(owner: &Client, id: Uuid, within: Duration) -> Row {
    let deadline = Instant::now() + within;
    loop {
        let r = row(owner, id).await;
        if r.status == "succeeded" || r.status == "failed" {
            return r;
        }
        assert!(Instant::now() < deadline, "request {id} still {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `check` holds for the request row.
pub async fn wait_row(
    owner: &Client,
    id: Uuid,
    within: Duration,
    check: impl Fn(&Row) -> bool,
) -> Row {
    let deadline = Instant::now() + within;
    loop {
        let r = row(owner, id).await;
        if check(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "request {id}: condition not met, {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A user's checkout of `price` through the worker (the RPC path), served: the id of the
/// Checkout Session it made.
pub async fn checkout_session(
    api: &mut Api,
    owner: &Client,
    user: Uuid,
    price: &str,
    worker: &Worker,
) -> String {
    let request = request_checkout(api, user, price, "").await;
    let done = finished(owner, request, Duration::from_secs(30)).await;
    assert_eq!(done.status, "succeeded", "{done:?}\n{}", worker.logs());
    done.result.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Queues a checkout for `user` through the SQL API, as the app would.
pub async fn request_checkout(api: &mut Api, user: Uuid, price: &str, extra: &str) -> Uuid {
    let sql = format!(
        "SELECT billing.request_checkout('{price}', success_url => '{OK_URL}', cancel_url => '{CANCEL_URL}'{extra})"
    );
    api.call(&Caller::User(user), &sql, &[])
        .await
        .unwrap_or_else(|e| panic!("request_checkout: {e:?}"))[0]
        .get(0)
}

/// Queues a portal session for `user`.
pub async fn request_portal(api: &mut Api, user: Uuid) -> Result<Uuid, tokio_postgres::Error> {
    let sql = format!("SELECT billing.request_portal('{RETURN_URL}')");
    api.call(&Caller::User(user), &sql, &[])
        .await
        .map(|rows| rows[0].get(0))
}

/// Waits until every request in `ids` is finished; returns their rows.
pub async fn all_finished(owner: &Client, ids: &[Uuid], within: Duration) -> Vec<Row> {
    let deadline = Instant::now() + within;
    loop {
        let done: i64 = owner
            .query_one(
                "SELECT count(*) FROM billing.stripe_requests WHERE id = ANY($1) AND status IN ('succeeded', 'failed')",
                &[&ids],
            )
            .await
            .unwrap()
            .get(0);
        if done as usize == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} finished",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rows = Vec::new();
    for id in ids {
        rows.push(row(owner, *id).await);
    }
    rows
}

/// Checkout sessions the emulator holds for request `id` (by the metadata the worker sets).
pub async fn sessions_for(emulator: &Emulator, id: Uuid) -> Vec<String> {
    let state: Value = reqwest::get(format!("{}/_emulator/state", emulator.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    state["checkout_sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["metadata"]["request_id"] == id.to_string().as_str())
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect()
}

/// Waits until `user`'s balance is `want` (the worker applies what it is sent and asked).
pub async fn wait_balance(
    owner: &Client,
    user: Uuid,
    want: i64,
    worker: &Worker,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = balance(owner, user).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "balance {got}, want {want}\n{}",
            worker.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
