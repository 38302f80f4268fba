//! Meter events through the worker: N subscribers each spend into their plan's metered
//! overage in one transaction, which queues N `meter_event` requests at once; the worker
//! (already running, LISTENing) serves them until the queue is drained, each a
//! `POST /v1/billing/meter_events` to the emulator. Beside it, in the same run, the same
//! number of `refresh` retrievals (a `GET /v1/prices/{id}` each, of a price the emulator has, stored by `billing.store_price`) through the
//! same queue and worker: the cost of a queued Stripe call without the meter event's own.
use super::rate;
use super::worker::{binary, queue_worker, start};
use std::time::{Duration, Instant};
use stripe_billing_tests::pg::TestDb;
use tokio::process::Command;
use tokio_postgres::Client;

const REQUESTS: i64 = 400;

/// N users with an active subscription to a plan allowing overage, and no tokens.
const SUBSCRIBERS: &str = "
INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens, overage_limit, meter_event_name)
VALUES ('bench', 'price_bench', 'Bench', 'subscription', 100, 1000, 'bench_tokens');
INSERT INTO billing.subscriptions (stripe_subscription_id, user_id, stripe_customer_id, plan_id, stripe_price_id,
                                   status, current_period_start, current_period_end)
SELECT 'sub_bench' || i, gen_random_uuid(), 'cus_bench' || i, 'bench', 'price_bench', 'active',
       now() - interval '1 day', now() + interval '29 days'
FROM generate_series(1, $N) i;";

async fn drained(owner: &Client) {
    loop {
        let open: i64 = owner
            .query_one(
                "SELECT count(*) FROM billing.stripe_requests WHERE status IN ('pending', 'running')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Requests served per second: `queue` inserts them in one statement, with the worker running.
async fn measure(stripe: &str, queue: &str) -> f64 {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(&SUBSCRIBERS.replace("$N", &REQUESTS.to_string()))
        .await
        .unwrap();
    let cmd = queue_worker(&db.dsn, stripe);
    let (_worker, _base) = start(cmd).await;
    let start = Instant::now();
    owner.batch_execute(queue).await.unwrap();
    drained(&owner).await;
    let elapsed = start.elapsed().as_secs_f64();
    let served: i64 = owner
        .query_one(
            "SELECT count(*) FROM billing.stripe_requests WHERE finished_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(served, REQUESTS, "every request served");
    REQUESTS as f64 / elapsed
}

pub async fn run() {
    let (_emulator, stripe) = start({
        let mut c = Command::new(binary("stripe-emulator"));
        c.args([
            "--listen",
            "127.0.0.1:0",
            "--price",
            "price_bench:recurring:1000",
        ]);
        // One price per baseline request: one retrieval of an object is in flight at a time.
        for i in 1..=REQUESTS {
            c.args(["--price", &format!("price_b{i}:recurring:1000")]);
        }
        c
    })
    .await;
    println!(
        "\n## Meter events through the worker ({REQUESTS} queued at once, until the queue is drained)\n"
    );
    println!("| requests | per second | ratio |");
    println!("|---|---|---|");
    let meter = measure(
        &stripe,
        "SELECT billing.spend_tokens(s.user_id, 10) FROM billing.subscriptions s;",
    )
    .await;
    let retrieval = measure(
        &stripe,
        "INSERT INTO billing.stripe_requests (user_id, kind, params)
         SELECT s.user_id, 'refresh', jsonb_build_object('object_id', 'price_b' || substr(s.stripe_subscription_id, 10))
         FROM billing.subscriptions s;",
    )
    .await;
    println!(
        "| meter_event: a spend's overage, POST /v1/billing/meter_events | {} | {:.2}x |",
        rate(meter),
        meter / retrieval
    );
    println!(
        "| baseline: refresh, GET /v1/prices/{{id}} through the same queue | {} |  |",
        rate(retrieval)
    );
}
