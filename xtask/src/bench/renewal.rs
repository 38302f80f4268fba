//! Renewals through the worker: N basil `invoice.paid` webhooks (each a renewal of its own
//! subscription, the 1st of the month) POSTed signed to the worker's webhook endpoint, 4 at a
//! time, until every one is stored and the request queue is drained; renewals/s and the Stripe
//! calls the worker made. Beside it, in the same run, 0.2.0's behaviour re-created: a trigger
//! queues the retrieval of each paid invoice that 0.2.0's `_apply_invoice` queued (`refresh` of
//! the `in_` id, `GET /v1/invoices/{id}?expand[]=payments`), which the worker serves. The
//! emulator answers those at once (404: the invoices are not its own), so the baseline's real
//! cost, Stripe's latency and read rate limit, is larger than shown.
use super::rate;
use super::worker::{binary, queue_worker, start};
use serde_json::Value;
use std::time::{Duration, Instant};
use stripe_billing_tests::events::{self, Shape};
use stripe_billing_tests::pg::TestDb;
use tokio::process::Command;
use uuid::Uuid;

const RENEWALS: usize = 400;
const IN_FLIGHT: usize = 4;

/// 0.2.0's retrieval per paid basil invoice, as a trigger beside today's effects.
const OLD_BEHAVIOUR: &str = "
CREATE FUNCTION public.bench_refresh_per_renewal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type = 'invoice.paid' AND NEW.processed_at IS NOT NULL THEN
        PERFORM billing._request_retrieval('refresh',
            (NEW.payload::jsonb #>> '{data,object,parent,subscription_details,metadata,user_id}')::uuid,
            NEW.object_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_refresh_per_renewal AFTER INSERT ON billing.stripe_events
    FOR EACH ROW EXECUTE FUNCTION public.bench_refresh_per_renewal();";

fn renewal(now: i64) -> Value {
    let (id, sub, user) = (
        stripe_emulator_ids("in"),
        stripe_emulator_ids("sub"),
        Uuid::new_v4().to_string(),
    );
    let invoice = events::invoice(
        Shape::Basil,
        &events::Invoice {
            id: &id,
            subscription: &sub,
            customer: &stripe_emulator_ids("cus"),
            billing_reason: "subscription_cycle",
            paid: true,
            lines: vec![events::Line {
                price_id: "price_bench",
                amount: 2000,
                proration: false,
                period: events::Period {
                    start: now,
                    end: now + 2_592_000,
                },
            }],
            user_id: Some(&user),
        },
    );
    events::event(Shape::Basil, "invoice.paid", now, invoice)
}

fn stripe_emulator_ids(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::new_v4().simple())
}

struct Outcome {
    per_second: f64,
    calls: usize,
}

async fn measure(stripe: &str, old: bool) -> Outcome {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES ('bench', 'price_bench', 'Bench', 'subscription', 100);
             INSERT INTO billing.webhook_secrets (secret) VALUES ('{}');",
            events::TEST_SECRET
        ))
        .await
        .unwrap();
    if old {
        owner.batch_execute(OLD_BEHAVIOUR).await.unwrap();
    }
    let cmd = queue_worker(&db.dsn, stripe);
    let (_worker, base) = start(cmd).await;
    let http = reqwest::Client::new();
    let calls_before = stripe_calls(&http, stripe).await;
    let now = events::unix_now();
    let bodies: Vec<Value> = (0..RENEWALS).map(|_| renewal(now)).collect();
    let url = format!("{base}/api/stripe/webhook");
    let start = Instant::now();
    let lanes = (0..IN_FLIGHT).map(|lane| {
        let (http, url, bodies) = (&http, &url, &bodies);
        async move {
            for e in bodies.iter().skip(lane).step_by(IN_FLIGHT) {
                let (body, header) = events::signed(e, events::TEST_SECRET);
                let answer = http
                    .post(url)
                    .header("Stripe-Signature", header)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(answer.status().is_success(), "{}", answer.status());
            }
        }
    });
    futures_util::future::join_all(lanes).await;
    // Drained: nothing pending or running.
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
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let granted: i64 = owner
        .query_one("SELECT count(*) FROM billing.token_grants", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(granted as usize, RENEWALS, "every renewal granted");
    Outcome {
        per_second: RENEWALS as f64 / elapsed,
        calls: stripe_calls(&http, stripe).await - calls_before,
    }
}

/// The Stripe API calls the emulator has answered so far.
async fn stripe_calls(http: &reqwest::Client, stripe: &str) -> usize {
    let log: Value = http
        .get(format!("{stripe}/_emulator/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log.as_array().map_or(0, Vec::len)
}

pub async fn run() {
    let (_emulator, stripe) = start({
        let mut c = Command::new(binary("stripe-emulator"));
        c.args([
            "--listen",
            "127.0.0.1:0",
            "--api-version",
            "2025-03-31.basil",
        ]);
        c
    })
    .await;
    println!(
        "\n## Renewals through the worker ({RENEWALS} basil invoice.paid webhooks, {IN_FLIGHT} at a time, until the queue is drained)\n"
    );
    println!("| behaviour | renewals/s | Stripe calls | ratio |");
    println!("|---|---|---|---|");
    let new = measure(&stripe, false).await;
    let old = measure(&stripe, true).await;
    println!(
        "| 0.3.0: payment learned from invoice_payment.paid, or looked up for a refund | {} | {} | {:.2}x |",
        rate(new.per_second),
        new.calls,
        new.per_second / old.per_second
    );
    println!(
        "| baseline: 0.2.0's retrieval of each paid invoice (re-created by a trigger) | {} | {} |  |",
        rate(old.per_second),
        old.calls
    );
}
