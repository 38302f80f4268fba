//! Workers and the request queue (sql/requests/): claims are exclusive and fair across users,
//! only the claiming worker finishes, failures retry up to the limit, leases expire, and
//! prune() expires and deletes old requests.
mod common;
mod queue_support;

use common::set_config;
use queue_support::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;
use stripe_billing_tests::pg::{assert_error, Caller};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_share_a_request() {
    let q = Queue::new().await;
    let mut all = q.queue(50).await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let mut claimers = Vec::new();
    for worker in ["w1", "w2"] {
        let mut api = q.db.api().await;
        let start = start.clone();
        claimers.push(tokio::spawn(async move {
            start.wait().await;
            let mut mine = Vec::new();
            loop {
                let got = claim(&mut api, worker, 3, 60).await;
                assert!(
                    got.len() <= 3,
                    "{worker} claimed {} rows with max_count 3",
                    got.len()
                );
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        }));
    }
    let mut claimed = Vec::new();
    for (worker, claimer) in ["w1", "w2"].into_iter().zip(claimers) {
        let mine = claimer.await.unwrap();
        // Each row records the worker that claimed it, and one attempt.
        for id in &mine {
            let row = pick(&q.row(*id).await, "locked_by attempts status");
            assert_eq!(
                row,
                json!({"locked_by": worker, "attempts": 1, "status": "running"})
            );
        }
        claimed.extend(mine);
    }
    let distinct: HashSet<Uuid> = claimed.iter().copied().collect();
    assert_eq!(distinct.len(), claimed.len(), "a request was claimed twice");
    claimed.sort();
    all.sort();
    assert_eq!(claimed, all);
}

#[tokio::test]
async fn claims_skip_rows_another_worker_is_claiming() {
    let mut q = Queue::new().await;
    let mut all = q.queue(3).await;
    // Worker 1's claim is not committed yet: its rows stay locked.
    let mut w1 = q.db.owner().await;
    let tx = w1.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE service_role")
        .await
        .unwrap();
    let first = tx
        .query("SELECT id FROM billing.claim_requests('w1', 2, 60)", &[])
        .await
        .unwrap();
    let first: Vec<Uuid> = first.iter().map(|r| r.get(0)).collect();
    assert_eq!(first.len(), 2);
    let second = tokio::time::timeout(Duration::from_secs(5), q.claim("w2", 10, 60))
        .await
        .expect("claim_requests waited for another worker's locks");
    assert_eq!(second.len(), 1);
    assert!(!first.contains(&second[0]));
    tx.commit().await.unwrap();
    assert_eq!(q.claim("w3", 10, 60).await, NONE);
    let mut claimed = [first, second].concat();
    claimed.sort();
    all.sort();
    assert_eq!(claimed, all);
}

#[tokio::test]
async fn only_the_claiming_worker_finishes_a_request() {
    let mut q = Queue::new().await;
    let id = q.queue(1).await[0];
    assert!(
        !q.finish(id, "w1").await,
        "finished a request nobody claimed"
    );
    assert_eq!(q.claim("w1", 1, 60).await, [id]);
    assert!(!q.finish(id, "w2").await, "w2 finished w1's request");
    assert_eq!(
        q.fail(id, "w2", "boom", false).await,
        "NULL",
        "w2 failed w1's request"
    );
    let row = pick(&q.row(id).await, "status locked_by result error");
    assert_eq!(
        row,
        json!({"status": "running", "locked_by": "w1", "result": null, "error": null})
    );
    let sql = "SELECT billing.finish_request($1, 'w1', '[1]')";
    let not_object = q.api.call(&Caller::Service, sql, &[&id]).await;
    assert_error(not_object, "22023", "result must be a JSON object");
    assert!(q.finish(id, "w1").await);
    assert!(!q.finish(id, "w1").await, "finished twice");
    let row = q.row(id).await;
    let expected = json!({"status": "succeeded", "locked_by": null, "result": {"url": "https://x", "session_id": "cs_1"}});
    assert_eq!(pick(&row, "status locked_by result"), expected);
    assert!(row["finished_at"].is_string(), "finished_at not set: {row}");
}

#[tokio::test]
async fn failed_attempts_retry_until_max_attempts() {
    let mut q = Queue::new().await;
    set_config(&q.owner, "request_max_attempts = 2").await;
    let id = q.queue(1).await[0];
    assert_eq!(q.claim("w1", 10, 60).await, [id]);
    assert_eq!(q.fail(id, "w1", "rate limited", true).await, "pending");
    let row = q.row(id).await;
    let keys = "status attempts waits locked_by error finished_at";
    let expected = json!({"status": "pending", "attempts": 1, "waits": true, "locked_by": null,
                          "error": "rate limited", "finished_at": null});
    assert_eq!(
        pick(&row, keys),
        expected,
        "back to pending, attempts kept, run_after ahead"
    );
    assert_eq!(
        q.claim("w1", 10, 60).await,
        NONE,
        "claimed before run_after"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let sql = "SELECT id, attempts FROM billing.claim_requests('w2', 10, 60)";
    let again = q.api.call(&Caller::Service, sql, &[]).await.unwrap();
    let again: Vec<(Uuid, i32)> = again.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(again, [(id, 2)]);
    // The second attempt was the last: no more retries.
    assert_eq!(q.fail(id, "w2", "rate limited again", true).await, "failed");
    let row = q.row(id).await;
    let expected = json!({"status": "failed", "attempts": 2, "error": "rate limited again"});
    assert_eq!(pick(&row, "status attempts error"), expected);
    assert!(row["finished_at"].is_string(), "finished_at not set: {row}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(q.claim("w1", 10, 60).await, NONE);

    // A failure that is not transient is final at once.
    let other = q.queue(1).await[0];
    assert_eq!(q.claim("w1", 10, 60).await, [other]);
    assert_eq!(q.fail(other, "w1", "No such price", false).await, "failed");
    assert_eq!(q.row(other).await["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_are_claimed_again_then_given_up() {
    let mut q = Queue::new().await;
    set_config(&q.owner, "request_max_attempts = 2").await;
    let id = q.checkout(PACK).await;
    assert_eq!(q.claim("w1", 10, 1).await, [id]);
    assert_eq!(
        q.claim("w2", 10, 1).await,
        NONE,
        "claimed while the lease holds"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // w1 stopped responding; w2 takes over.
    let sql = "SELECT id, attempts FROM billing.claim_requests('w2', 10, 1)";
    let again = q.api.call(&Caller::Service, sql, &[]).await.unwrap();
    let again: Vec<(Uuid, i32)> = again.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(again, [(id, 2)]);
    assert!(
        !q.finish(id, "w1").await,
        "w1 finished after losing its lease"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // w2 died too, after the last attempt: the next claim gives up on the request.
    assert_eq!(q.claim("w3", 10, 60).await, NONE);
    let user = q.user.clone();
    let result = q.await_as(&user, id, Some(0)).await.0.unwrap();
    assert_eq!(result["status"], "failed");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("gave up after 2 attempts"),
        "error {error:?}"
    );
    let row = q.row(id).await;
    assert_eq!(row["locked_by"], Value::Null);
    assert!(row["finished_at"].is_string(), "finished_at not set: {row}");
}

#[tokio::test]
async fn claims_are_fair_across_users() {
    let mut q = Queue::new().await;
    // One user queued many requests long ago; two others one each, later.
    let noisy = Uuid::new_v4();
    let (b, c) = (Uuid::new_v4(), Uuid::new_v4());
    for (user, n, ago) in [(noisy, 5, 60), (b, 1, 10), (c, 1, 5)] {
        q.owner
            .execute(
                "INSERT INTO billing.stripe_requests (user_id, kind, created_at, run_after)
                 SELECT $1, 'checkout', now() - make_interval(secs => $3), now() - make_interval(secs => $3)
                 FROM generate_series(1, $2)",
                &[&user, &n, &(ago as f64)],
            )
            .await
            .unwrap();
    }
    // One request per user per claim, oldest users first.
    let first = q.claim("w1", 3, 60).await;
    let rows = q
        .owner
        .query(
            "SELECT user_id FROM billing.stripe_requests WHERE id = ANY($1) ORDER BY created_at",
            &[&first],
        )
        .await
        .unwrap();
    let owners: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(owners, [noisy, b, c]);
    // The noisy user's next request waits while one of theirs is running.
    assert_eq!(q.claim("w2", 3, 60).await, NONE);
}

#[tokio::test]
async fn prune_expires_stale_requests_and_deletes_old_ones() {
    let mut q = Queue::new().await;
    let [old, recent]: [Uuid; 2] = q.queue(2).await.try_into().unwrap();
    assert_eq!(q.claim("w1", 10, 60).await.len(), 2);
    for id in [old, recent] {
        assert!(q.finish(id, "w1").await);
    }
    q.owner
        .execute(
            "UPDATE billing.stripe_requests SET finished_at = now() - interval '31 days' WHERE id = $1",
            &[&old],
        )
        .await
        .unwrap();
    // A checkout nobody served for two days is no use to its user any more.
    let stale: Uuid = q
        .owner
        .query_one(
            "INSERT INTO billing.stripe_requests (user_id, kind, created_at) VALUES ($1, 'checkout', now() - interval '2 days')
             RETURNING id",
            &[&q.a],
        )
        .await
        .unwrap()
        .get(0);
    let pruned: Value = q
        .owner
        .query_one("SELECT billing.prune()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        pruned,
        json!({"requests_expired": 1, "requests_deleted": 1, "events_deleted": 0, "expiry_warnings_deleted": 0})
    );
    assert_eq!(
        pick(&q.row(stale).await, "status error"),
        json!({"status": "failed", "error": "expired: not served within a day"})
    );
    assert_eq!(q.row(recent).await["status"], "succeeded");
    let gone = q
        .owner
        .query(
            "SELECT 1 FROM billing.stripe_requests WHERE id = $1",
            &[&old],
        )
        .await
        .unwrap();
    assert!(gone.is_empty());

    // The retention periods are settings: with 40 days for requests a 31-day-old finished row
    // stays and a 41-day-old one goes; with 60 days for applied events a 45-day-old one stays
    // and a 61-day-old one goes (a waiting one stays whatever its age).
    set_config(
        &q.owner,
        "request_retention_days = 40, event_retention_days = 60",
    )
    .await;
    let [kept, dropped]: [Uuid; 2] = q.queue(2).await.try_into().unwrap();
    assert_eq!(q.claim("w1", 10, 60).await.len(), 2);
    for (id, days) in [(kept, 31), (dropped, 41)] {
        assert!(q.finish(id, "w1").await);
        q.owner
            .execute(
                "UPDATE billing.stripe_requests SET finished_at = now() - make_interval(days => $2) WHERE id = $1",
                &[&id, &days],
            )
            .await
            .unwrap();
    }
    q.owner
        .batch_execute(
            "INSERT INTO billing.stripe_events (id, type, livemode, created, payload, received_at, processed_at) VALUES
                 ('evt_kept45', 'customer.updated', false, now() - interval '45 days', '{}', now() - interval '45 days', now() - interval '45 days'),
                 ('evt_gone61', 'customer.updated', false, now() - interval '61 days', '{}', now() - interval '61 days', now() - interval '61 days'),
                 ('evt_waits99', 'customer.updated', false, now() - interval '99 days', '{}', now() - interval '99 days', NULL)",
        )
        .await
        .unwrap();
    let pruned: Value = q
        .owner
        .query_one("SELECT billing.prune()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        pruned,
        json!({"requests_expired": 0, "requests_deleted": 1, "events_deleted": 1, "expiry_warnings_deleted": 0})
    );
    let left: Vec<Uuid> = q
        .owner
        .query(
            "SELECT id FROM billing.stripe_requests WHERE id = ANY($1)",
            &[&vec![kept, dropped]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [kept], "request_retention_days = 40");
    let events: Vec<String> = q
        .owner
        .query("SELECT id FROM billing.stripe_events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        events,
        ["evt_kept45", "evt_waits99"],
        "event_retention_days = 60"
    );
}
