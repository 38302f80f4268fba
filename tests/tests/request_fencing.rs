//! A worker whose lease ran out cannot finish or fail a newer claim of the same row: the
//! claim's `attempts` is a fencing token (even when both claims carry the same worker name,
//! as replicas sharing a WORKER_ID would).
use stripe_billing_tests::pg::TestDb;
use uuid::Uuid;

#[tokio::test]
async fn a_stale_claim_cannot_finish_or_fail_a_newer_one() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let user = Uuid::new_v4();
    let id: Uuid = c
        .query_one(
            "INSERT INTO billing.stripe_requests (user_id, kind) VALUES ($1, 'portal') RETURNING id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let first: i32 = c
        .query_one(
            "SELECT attempts FROM billing.claim_requests('w', 1, 1)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let second: i32 = c
        .query_one(
            "SELECT attempts FROM billing.claim_requests('w', 1, 60)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (first, second),
        (1, 2),
        "the expired lease was claimed again"
    );

    let stale_finish: bool = c
        .query_one(
            "SELECT billing.finish_request($1, 'w', '{\"url\":\"https://old\"}', $2)",
            &[&id, &first],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!stale_finish);
    let stale_fail: Option<String> = c
        .query_one(
            "SELECT billing.fail_request($1, 'w', 'late', $2)",
            &[&id, &first],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stale_fail, None);
    let status: String = c
        .query_one(
            "SELECT status FROM billing.stripe_requests WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "running", "the stale worker changed nothing");

    let current: bool = c
        .query_one(
            "SELECT billing.finish_request($1, 'w', '{\"url\":\"https://new\"}', $2)",
            &[&id, &second],
        )
        .await
        .unwrap()
        .get(0);
    assert!(current);
    let url: String = c
        .query_one(
            "SELECT result ->> 'url' FROM billing.stripe_requests WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(url, "https://new");
}
