//! The request queue's test fixture: a database with the common catalog, an API connection
//! and user A, with one method per SQL call the queue tests make.
#![allow(dead_code)]

use crate::common::seed_plans;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use stripe_billing_tests::pg::{Api, Caller, TestDb};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error};
use uuid::Uuid;

pub const OK_URL: &str = "https://app.example.test/ok";
pub const CANCEL_URL: &str = "https://app.example.test/cancel";
pub const URLS: &str =
    "success_url => 'https://app.example.test/ok', cancel_url => 'https://app.example.test/cancel'";
pub const PACK: &str = "'price_pack', success_url => 'https://app.example.test/ok', \
                    cancel_url => 'https://app.example.test/cancel'";
pub const RESULT: &str = r#"{"url":"https://x","session_id":"cs_1"}"#;

/// A database with plans `pro` and `pack`, the owner's and an API connection, and user A.
pub struct Queue {
    pub db: TestDb,
    pub owner: Client,
    pub api: Api,
    pub a: Uuid,
    pub user: Caller,
}

impl Queue {
    pub async fn new() -> Queue {
        let db = TestDb::new().await;
        let owner = db.owner().await;
        seed_plans(&owner).await;
        let api = db.api().await;
        let a = Uuid::new_v4();
        let user = Caller::User(a);
        Queue {
            db,
            owner,
            api,
            a,
            user,
        }
    }

    /// `billing.request_checkout(<args>)` as `caller`.
    pub async fn checkout_as(&mut self, caller: &Caller, args: &str) -> Result<Uuid, Error> {
        let sql = format!("SELECT billing.request_checkout({args})");
        Ok(self.api.call(caller, &sql, &[]).await?[0].get(0))
    }

    /// A checkout by user A that must succeed.
    pub async fn checkout(&mut self, args: &str) -> Uuid {
        let user = self.user.clone();
        self.checkout_as(&user, args)
            .await
            .expect("request_checkout")
    }

    /// The whole request row as JSON (read by the owner), plus `waits`: run_after is ahead.
    pub async fn row(&self, id: Uuid) -> Value {
        self.owner
            .query_one(
                "SELECT to_jsonb(r) || jsonb_build_object('waits', r.run_after > clock_timestamp())
                 FROM billing.stripe_requests r WHERE id = $1",
                &[&id],
            )
            .await
            .expect("request row")
            .get(0)
    }

    pub async fn count(&self) -> i64 {
        let sql = "SELECT count(*) FROM billing.stripe_requests";
        self.owner.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Inserts `n` pending requests directly, each for a new user, and returns their ids.
    pub async fn queue(&self, n: i32) -> Vec<Uuid> {
        let sql = "INSERT INTO billing.stripe_requests (user_id, kind)
                   SELECT gen_random_uuid(), 'checkout' FROM generate_series(1, $1::int) RETURNING id";
        let rows = self.owner.query(sql, &[&n]).await.unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    pub async fn claim(&mut self, worker: &str, max_count: i32, lease_seconds: i32) -> Vec<Uuid> {
        claim(&mut self.api, worker, max_count, lease_seconds).await
    }

    pub async fn finish(&mut self, id: Uuid, worker: &str) -> bool {
        finish(&mut self.api, id, worker).await
    }

    /// `billing.fail_request` for the row's current attempt: the new status, or "NULL" when the
    /// claim was lost.
    pub async fn fail(&mut self, id: Uuid, worker: &str, error: &str, retryable: bool) -> String {
        let attempt: i32 = self.row(id).await["attempts"].as_i64().unwrap() as i32;
        let sql = "SELECT coalesce(billing.fail_request($1, $2, $3, $4, $5), 'NULL')";
        let params: [&(dyn ToSql + Sync); 5] = [&id, &worker, &error, &attempt, &retryable];
        let rows = self.api.call(&Caller::Service, sql, &params).await;
        rows.expect("fail_request")[0].get(0)
    }

    /// `billing.await_request(id, timeout_ms)` as `caller`, and how long it took.
    pub async fn await_as(
        &mut self,
        caller: &Caller,
        id: Uuid,
        timeout_ms: Option<i32>,
    ) -> (Result<Value, Error>, Duration) {
        let start = Instant::now();
        let sql = "SELECT billing.await_request($1, $2)";
        let result = self.api.call(caller, sql, &[&id, &timeout_ms]).await;
        (result.map(|rows| rows[0].get(0)), start.elapsed())
    }
}

/// Ids `worker` claims with `billing.claim_requests(worker, max_count, lease_seconds)`.
pub async fn claim(api: &mut Api, worker: &str, max_count: i32, lease_seconds: i32) -> Vec<Uuid> {
    let sql = "SELECT id FROM billing.claim_requests($1, $2, $3)";
    let params: [&(dyn ToSql + Sync); 3] = [&worker, &max_count, &lease_seconds];
    let rows = api
        .call(&Caller::Service, sql, &params)
        .await
        .expect("claim_requests");
    rows.iter().map(|r| r.get(0)).collect()
}

/// `billing.finish_request` with the result {url: https://x, session_id: cs_1}.
pub async fn finish(api: &mut Api, id: Uuid, worker: &str) -> bool {
    let sql = format!("SELECT billing.finish_request($1, $2, '{RESULT}')");
    api.call(&Caller::Service, &sql, &[&id, &worker])
        .await
        .expect("finish_request")[0]
        .get(0)
}

/// The fields of a JSON object named in `keys` (separated by spaces), for compact comparisons.
pub fn pick(v: &Value, keys: &str) -> Value {
    keys.split_whitespace()
        .map(|k| (k.to_string(), v[k].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// What await_request returns for a checkout in `status`, with `url`/`session_id` {url:
/// https://x, session_id: cs_1} once succeeded, and `error`.
pub fn awaited(id: Uuid, status: &str, error: Option<&str>) -> Value {
    let done = status == "succeeded";
    json!({"id": id.to_string(), "kind": "checkout", "status": status,
           "url": if done { Some("https://x") } else { None },
           "session_id": if done { Some("cs_1") } else { None }, "error": error})
}

/// Asserts that `took` is at least `min_ms` and less than `max_ms` milliseconds. The upper
/// bounds are generous (a loaded CI machine) but below the waits they must tell apart.
#[track_caller]
pub fn took_between(took: Duration, min_ms: u64, max_ms: u64, what: &str) {
    let range = Duration::from_millis(min_ms)..Duration::from_millis(max_ms);
    assert!(
        range.contains(&took),
        "{what} took {took:?}, expected {range:?}"
    );
}

/// What claim_requests returns when there is nothing to claim.
pub const NONE: [Uuid; 0] = [];
