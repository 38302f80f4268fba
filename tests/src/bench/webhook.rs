//! Events/s through `billing.handle_stripe_webhook` with realistic ~4 KB `invoice.paid`
//! payloads (new event and invoice ids each time, so every event grants), beside a bare
//! `INSERT` of the same payload into a plain jsonb table, with 1 and 2 connections.
use super::{clients, rate, throughput};
use crate::events::{self, Invoice, Line, Period, Shape};
use crate::pg::TestDb;
use tokio_postgres::Client;

const USER: &str = "20000000-0000-0000-0000-000000000001";

fn template() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let period = Period { start: now, end: now + 30 * 86_400 };
    let invoice = events::invoice(Shape::Basil, &Invoice {
        id: "in_BENCHID", subscription: "sub_bench", customer: "cus_bench", billing_reason: "subscription_cycle",
        paid: true, lines: vec![Line { price_id: "price_bench", amount: 2000, proration: false, period }],
        user_id: Some(USER),
    });
    let event = events::envelope(Shape::Basil, "evt_BENCHID", "invoice.paid", now, invoice);
    serde_json::to_string_pretty(&event).unwrap()
}

pub async fn run() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ('{}');
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES ('bench', 'price_bench', 'Bench', 'subscription', 1000);
             INSERT INTO billing.customers (user_id, stripe_customer_id) VALUES ('{USER}', 'cus_bench');
             CREATE TABLE plain_events (id text PRIMARY KEY, payload jsonb NOT NULL);",
            events::TEST_SECRET
        ))
        .await
        .unwrap();
    let template = template();
    let body = |i: usize, n: u64, run: &str| template.replace("BENCHID", &format!("{run}{i}x{n}"));
    println!("\n## Webhook ingestion (events/s, {} byte invoice.paid payloads)\n", template.len());
    println!("| connections | handle_stripe_webhook | bare INSERT jsonb | ratio |");
    println!("|---|---|---|---|");
    for conns in [1usize, 2] {
        let cs = clients(&db.dsn, conns).await;
        let tag = format!("c{conns}r");
        let ours = throughput(&cs, async |c: &Client, i, n| {
            let b = body(i, n, &tag);
            {
                let (b, h) = {
                    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
                    let h = stripe_billing_core::signature::signature_header(b.as_bytes(), events::TEST_SECRET, t);
                    (b, h)
                };
                let r: serde_json::Value = c.query_one("SELECT billing.handle_stripe_webhook($1, $2)", &[&b, &h]).await.unwrap().get(0);
                assert_eq!(r["processed"], true, "{r}");
            }
        })
        .await;
        let tag = format!("c{conns}p");
        let plain = throughput(&cs, async |c: &Client, i, n| {
            let b = body(i, n, &tag);
            {
                let id = format!("evt_{i}_{n}");
                c.execute("INSERT INTO plain_events (id, payload) VALUES ($1, $2::text::jsonb)", &[&id, &b]).await.unwrap();
            }
        })
        .await;
        println!("| {conns} | {} | {} | {:.2} |", rate(ours), rate(plain), ours / plain);
    }
    let grants: i64 = owner.query_one("SELECT count(*) FROM billing.token_grants", &[]).await.unwrap().get(0);
    println!("\n(every benchmarked event was applied: {grants} grants made)");
}
