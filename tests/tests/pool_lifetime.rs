//! Pooled connections age out (`--db-max-lifetime-seconds`): after the lifetime, the
//! connection that serves a query is a new one, so what the server changed meanwhile (a role's
//! settings) reaches the worker without a restart. Needs `cargo build -p
//! stripe-billing-worker` first and the cluster of scripts/integration-test.sh.
mod worker_support;

use std::time::Duration;

use stripe_billing_tests::pg::TestDb;
use worker_support::*;

/// How long ago the worker connection that last ran `billing.health()` (a metrics scrape)
/// was opened.
async fn age_of_scrape_connection(owner: &tokio_postgres::Client) -> Duration {
    let seconds: f64 = owner
        .query_one(
            "SELECT extract(epoch FROM now() - backend_start)::float8 FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'stripe-billing-worker'
               AND query LIKE '%billing.health()%' AND state = 'idle'
             ORDER BY state_change DESC LIMIT 1",
            &[],
        )
        .await
        .expect("the scrape's connection")
        .get(0);
    Duration::from_secs_f64(seconds)
}

#[tokio::test]
async fn connections_older_than_their_lifetime_are_replaced() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, false).await;
    let lifetime = Duration::from_secs(1);
    let short = Worker::start(&db.dsn, None, &["--db-max-lifetime-seconds", "1"]).await;
    let default = Worker::start(&db.dsn, None, &[]).await;
    // Both pools have connections older than a second by now.
    tokio::time::sleep(Duration::from_secs(4)).await;

    default.metrics().await;
    let kept = age_of_scrape_connection(&owner).await;
    assert!(kept >= Duration::from_secs(3), "reused: {kept:?}");

    short.metrics().await;
    let fresh = age_of_scrape_connection(&owner).await;
    // At most the lifetime, plus the time between the scrape and this query (generous, for a
    // loaded machine, and still well short of the four seconds the worker has run).
    assert!(fresh < lifetime + Duration::from_secs(1), "{fresh:?}");
}
