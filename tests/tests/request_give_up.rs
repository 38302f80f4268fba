//! A request that fails for good sets off the same follow-up whichever way it failed: the
//! worker reporting its last failed attempt (`billing.fail_request`), or the worker stopping
//! while it held the last attempt, so that the next claim gives up on it once its lease has run
//! out (`billing._give_up_abandoned_requests`). For an auto top-up that follow-up is auto top-up
//! turned off and one `top_up_failed` notification (docs/auto-top-up.md); before, a top-up whose
//! lease ran out left auto top-up on and its user untold.
use serde_json::Value;
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

/// A pack of 500 tokens for 900 usd, one attempt per request, and `user` with auto top-up at
/// a threshold of 100 whose spend has just crossed it: returns the queued top_up request.
async fn crossed(owner: &Client, user: Uuid) -> Uuid {
    owner
        .execute(
            "SELECT billing.set_auto_top_up($1, 'pack', 100, 3, 5000)",
            &[&user],
        )
        .await
        .unwrap();
    owner
        .execute("SELECT billing.grant_tokens($1, 150)", &[&user])
        .await
        .unwrap();
    owner
        .execute("SELECT billing.spend_tokens($1, 60)", &[&user])
        .await
        .unwrap();
    owner
        .query_one(
            "SELECT id FROM billing.stripe_requests WHERE user_id = $1 AND kind = 'top_up'",
            &[&user],
        )
        .await
        .expect("the crossing spend queued a top-up")
        .get(0)
}

async fn setup() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens, tokens)
             VALUES ('pack', 'price_pack', 'Pack', 'token_pack', NULL, 500);
             INSERT INTO billing.prices (stripe_price_id, unit_amount, currency, synced_at)
             VALUES ('price_pack', 900, 'usd', now());
             INSERT INTO billing.config (request_max_attempts) VALUES (1);",
        )
        .await
        .unwrap();
    (db, owner)
}

/// Claims `id` as worker `w1`, as a worker that then stops: its lease runs out at once.
async fn claim_and_stop(owner: &Client, id: Uuid) {
    let claimed = owner
        .query("SELECT id FROM billing.claim_request($1, 'w1', 60)", &[&id])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "claimed");
    owner
        .execute(
            "UPDATE billing.stripe_requests SET locked_until = clock_timestamp() - interval '1 second'
             WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
}

/// Another worker's claim of `id`: finds its lease over on the last attempt and gives up.
async fn next_claim(owner: &Client, id: Uuid) {
    let rows = owner
        .query("SELECT id FROM billing.claim_request($1, 'w2', 60)", &[&id])
        .await
        .unwrap();
    assert!(rows.is_empty(), "not claimed again");
}

/// (auto top-up enabled, its disabled_reason, the user's top_up_failed notifications).
async fn outcome(owner: &Client, user: Uuid) -> (bool, Option<String>, Vec<Value>) {
    let row = owner
        .query_one(
            "SELECT enabled, disabled_reason FROM billing.auto_top_ups WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    let notes = owner
        .query(
            "SELECT payload FROM billing.notifications WHERE user_id = $1 AND kind = 'top_up_failed'",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (row.get(0), row.get(1), notes)
}

async fn status_and_error(owner: &Client, id: Uuid) -> (String, String) {
    let r = owner
        .query_one(
            "SELECT status, error FROM billing.stripe_requests WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn a_top_up_whose_lease_runs_out_on_its_last_attempt_fails_like_a_reported_failure() {
    let (_db, owner) = setup().await;

    // The worker reports its last attempt failed (Stripe answered 503 once more).
    let reported = Uuid::new_v4();
    let id = crossed(&owner, reported).await;
    let claimed = owner
        .query_one(
            "SELECT attempts FROM billing.claim_request($1, 'w1', 60)",
            &[&id],
        )
        .await
        .unwrap();
    let attempt: i32 = claimed.get(0);
    let status: String = owner
        .query_one(
            "SELECT billing.fail_request($1, 'w1', 'Stripe answered 503', $2, retryable => true)",
            &[&id, &attempt],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "failed");
    let (enabled, reason, notes) = outcome(&owner, reported).await;
    assert!(!enabled);
    assert!(reason.unwrap().contains("Stripe answered 503"));
    assert_eq!(notes.len(), 1);

    // The worker stops while it holds the last attempt: the same follow-up.
    let abandoned = Uuid::new_v4();
    let id = crossed(&owner, abandoned).await;
    claim_and_stop(&owner, id).await;
    next_claim(&owner, id).await;
    let (status, error) = status_and_error(&owner, id).await;
    assert_eq!(status, "failed");
    assert!(error.starts_with("gave up after 1 attempts"), "{error}");
    let (enabled, reason, notes) = outcome(&owner, abandoned).await;
    assert!(!enabled, "auto top-up is off");
    assert!(
        reason
            .as_deref()
            .unwrap_or_default()
            .contains("gave up after 1 attempts"),
        "{reason:?}"
    );
    assert_eq!(notes.len(), 1, "the user is told once: {notes:?}");
    assert_eq!(notes[0]["request_id"], id.to_string());
    assert_eq!(notes[0]["code"], Value::Null);
    assert_eq!(notes[0]["checkout_url"], Value::Null);
    // Further claims change nothing more.
    next_claim(&owner, id).await;
    assert_eq!(outcome(&owner, abandoned).await.2.len(), 1);
}

#[tokio::test]
async fn the_checkout_link_of_a_failed_top_up_tells_the_user_even_when_its_lease_runs_out() {
    let (_db, owner) = setup().await;
    owner
        .batch_execute(
            "UPDATE billing.config SET checkout_success_url = 'https://app.example.test/ok'",
        )
        .await
        .unwrap();
    let user = Uuid::new_v4();
    let top_up = crossed(&owner, user).await;
    claim_and_stop(&owner, top_up).await;
    next_claim(&owner, top_up).await;
    // The top-up gave up: auto top-up is off and a Checkout link for the same pack is asked for.
    let link: Uuid = owner
        .query_one(
            "SELECT id FROM billing.stripe_requests
             WHERE user_id = $1 AND kind = 'checkout' AND params ->> 'top_up_request' = $2",
            &[&user, &top_up.to_string()],
        )
        .await
        .expect("a checkout request for the failed top-up")
        .get(0);
    let (enabled, _, notes) = outcome(&owner, user).await;
    assert!(!enabled);
    assert!(notes.is_empty(), "told once the link exists: {notes:?}");
    // The worker making the link stops on its last attempt too: the user is told without one.
    claim_and_stop(&owner, link).await;
    next_claim(&owner, link).await;
    assert_eq!(status_and_error(&owner, link).await.0, "failed");
    let notes = outcome(&owner, user).await.2;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["request_id"], top_up.to_string());
    assert_eq!(notes[0]["checkout_url"], Value::Null);
}
