//! What the HTTP API relies on in SQL: `billing.claim_request` claims one given request under
//! the rules of `claim_requests`, and an `Idempotency-Key` in `request.headers` (PostgREST's
//! headers, or the API's) names one request per user.
mod common;

use common::{add_customer, seed_plans};
use stripe_billing_tests::pg::{assert_error, Api, Caller, TestDb};
use tokio_postgres::Client;
use uuid::Uuid;

const URLS: &str =
    "success_url => 'https://app.example.test/ok', cancel_url => 'https://app.example.test/no'";

async fn setup() -> (TestDb, Client, Api) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed_plans(&owner).await;
    let api = db.api().await;
    (db, owner, api)
}

/// A token-pack checkout for `user` with the given request headers.
async fn checkout(
    api: &mut Api,
    user: Uuid,
    headers: &str,
    extra: &str,
) -> Result<Uuid, tokio_postgres::Error> {
    let sql = format!("SELECT billing.request_checkout('pack', {URLS}{extra})");
    api.call_with_headers(&Caller::User(user), headers, &sql, &[])
        .await
        .map(|rows| rows[0].get(0))
}

async fn claim(owner: &Client, id: Uuid, worker: &str) -> Vec<(Uuid, i32)> {
    owner
        .query(
            "SELECT id, attempts FROM billing.claim_request($1, $2, 60)",
            &[&id, &worker],
        )
        .await
        .expect("claim_request")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn claim_request_takes_one_ready_row_and_only_once() {
    let (_db, owner, mut api) = setup().await;
    let user = Uuid::new_v4();
    add_customer(&owner, user, "cus_Q1aZ2bY3cX4dW5").await;
    let id = checkout(&mut api, user, "{}", "").await.unwrap();

    let row = owner
        .query_one(
            "SELECT to_jsonb(c) FROM billing.claim_request($1, 'api-1', 60) c",
            &[&id],
        )
        .await
        .unwrap();
    let claimed: serde_json::Value = row.get(0);
    assert_eq!(claimed["id"], id.to_string().as_str());
    assert_eq!(claimed["kind"], "checkout");
    assert_eq!(claimed["attempts"], 1);
    assert_eq!(claimed["stripe_customer_id"], "cus_Q1aZ2bY3cX4dW5");
    // Held: neither another claim_request nor the queue's claim_requests take it.
    assert!(claim(&owner, id, "api-2").await.is_empty());
    let queue = owner
        .query(
            "SELECT id FROM billing.claim_requests('queue', 10, 60)",
            &[],
        )
        .await
        .unwrap();
    assert!(queue.is_empty());
    let (by, status): (String, String) = {
        let r = owner
            .query_one(
                "SELECT locked_by, status FROM billing.stripe_requests WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((by.as_str(), status.as_str()), ("api-1", "running"));

    // Finished rows are not claimed again.
    owner
        .query(
            "SELECT billing.finish_request($1, 'api-1', '{\"url\": \"u\"}', 1)",
            &[&id],
        )
        .await
        .unwrap();
    assert!(claim(&owner, id, "api-1").await.is_empty());
    // Nor unknown ones.
    assert!(claim(&owner, Uuid::new_v4(), "api-1").await.is_empty());
}

#[tokio::test]
async fn claim_request_keeps_the_queue_rules() {
    let (db, owner, mut api) = setup().await;
    let user = Uuid::new_v4();
    let first = checkout(&mut api, user, "{}", "").await.unwrap();
    let second = checkout(&mut api, user, "{}", "").await.unwrap();
    // One request of a user at a time: while the first runs, the second waits.
    assert_eq!(claim(&owner, first, "w").await.len(), 1);
    assert!(claim(&owner, second, "w").await.is_empty());
    owner
        .query(
            "SELECT billing.fail_request($1, 'w', 'HTTP 502', 1, retryable => true)",
            &[&first],
        )
        .await
        .unwrap();
    // A row waiting out its retry delay is not ready.
    assert!(claim(&owner, first, "w").await.is_empty());
    assert_eq!(claim(&owner, second, "w").await.len(), 1);

    // A row locked by a claim in progress elsewhere is skipped, not waited for.
    let other = Uuid::new_v4();
    let third = checkout(&mut api, other, "{}", "").await.unwrap();
    let locker = stripe_billing_tests::pg::connect(&db.dsn).await;
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT FROM billing.stripe_requests WHERE id = '{third}' FOR UPDATE"
        ))
        .await
        .unwrap();
    assert!(claim(&owner, third, "w").await.is_empty());
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(claim(&owner, third, "w").await, [(third, 1)]);
}

#[tokio::test]
async fn claim_request_is_for_workers_only_and_checks_its_input() {
    let (_db, owner, mut api) = setup().await;
    let user = Uuid::new_v4();
    let id = checkout(&mut api, user, "{}", "").await.unwrap();
    let sql = "SELECT * FROM billing.claim_request($1, 'w', 60)";
    assert_error(
        api.call(&Caller::User(user), sql, &[&id]).await,
        "42501",
        "permission denied",
    );
    assert_error(
        api.call(&Caller::Anon, sql, &[&id]).await,
        "42501",
        "permission denied",
    );
    assert_eq!(
        api.call(&Caller::Service, sql, &[&id]).await.unwrap().len(),
        1
    );
    let null_id: Option<Uuid> = None;
    assert_error(
        owner.query(sql, &[&null_id]).await,
        "22004",
        "request_id must not be NULL",
    );
    assert_error(
        owner
            .query("SELECT * FROM billing.claim_request($1, NULL, 60)", &[&id])
            .await,
        "22004",
        "worker must not be NULL",
    );
    assert_error(
        owner
            .query("SELECT * FROM billing.claim_request($1, 'w', 0)", &[&id])
            .await,
        "22023",
        "lease_seconds must be positive",
    );
}

#[tokio::test]
async fn an_idempotency_key_names_one_request_per_user() {
    let (_db, owner, mut api) = setup().await;
    let user = Uuid::new_v4();
    let key = r#"{"idempotency-key": "order-1"}"#;
    let first = checkout(&mut api, user, key, "").await.unwrap();
    assert_eq!(checkout(&mut api, user, key, "").await.unwrap(), first);
    // Also once it is finished (or failed): a replay, as Stripe replays a key.
    owner
        .query("SELECT billing.claim_request($1, 'w', 60)", &[&first])
        .await
        .unwrap();
    owner
        .query(
            "SELECT billing.fail_request($1, 'w', 'No such price', 1)",
            &[&first],
        )
        .await
        .unwrap();
    assert_eq!(checkout(&mut api, user, key, "").await.unwrap(), first);
    // Other parameters with the key: BL004. Another user's key is their own.
    assert_error(
        checkout(&mut api, user, key, ", quantity => 2").await,
        "BL004",
        "Idempotency-Key 'order-1' was used for a different request",
    );
    assert_error(
        api.call_with_headers(
            &Caller::User(user),
            key,
            "SELECT billing.request_portal('https://app.example.test/a')",
            &[],
        )
        .await,
        "BL002",
        "no billing account yet",
    );
    add_customer(&owner, user, "cus_K9pL8oM7nN6").await;
    assert_error(
        api.call_with_headers(
            &Caller::User(user),
            key,
            "SELECT billing.request_portal('https://app.example.test/a')",
            &[],
        )
        .await,
        "BL004",
        "used for a different request",
    );
    let other = checkout(&mut api, Uuid::new_v4(), key, "").await.unwrap();
    assert_ne!(other, first);
    // Without a key every call is a new request.
    let a = checkout(&mut api, user, "{}", "").await.unwrap();
    let b = checkout(&mut api, user, "{}", "").await.unwrap();
    assert_ne!(a, b);
    let keyed: i64 = owner
        .query_one(
            "SELECT count(*) FROM billing.stripe_requests WHERE idempotency_key = 'order-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keyed, 2, "one per user");
}

#[tokio::test]
async fn a_replay_does_not_count_against_the_cap_and_bad_keys_are_refused() {
    let (_db, owner, mut api) = setup().await;
    owner
        .batch_execute("UPDATE billing.config SET max_pending_requests = 1")
        .await
        .unwrap();
    let user = Uuid::new_v4();
    let key = r#"{"idempotency-key": "k-1"}"#;
    let first = checkout(&mut api, user, key, "").await.unwrap();
    // At the cap, a retry of the same call still gets its request back.
    assert_eq!(checkout(&mut api, user, key, "").await.unwrap(), first);
    assert_error(
        checkout(&mut api, user, "{}", "").await,
        "BL011",
        "too many requests in progress",
    );

    let long = format!(r#"{{"idempotency-key": "{}"}}"#, "k".repeat(256));
    assert_error(
        checkout(&mut api, Uuid::new_v4(), &long, "").await,
        "22023",
        "the Idempotency-Key header must be 1 to 255 characters",
    );
    assert_error(
        checkout(&mut api, Uuid::new_v4(), r#"{"idempotency-key": ""}"#, "").await,
        "22023",
        "must be 1 to 255 characters",
    );
    assert_error(
        checkout(&mut api, Uuid::new_v4(), "not json", "").await,
        "22P02",
        "request.headers is not valid JSON",
    );
}
