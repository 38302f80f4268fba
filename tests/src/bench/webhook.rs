//! Events/s through `billing.handle_stripe_webhook` with realistic ~4 KB `invoice.paid`
//! payloads (new event and invoice ids each time, so every event grants), beside a bare
//! `INSERT` of the same payload into a plain jsonb table, with 1 and 2 connections.
use super::{clients, paired, rate};
use crate::events::{self, Invoice, Line, Period, Shape};
use crate::pg::TestDb;
use tokio_postgres::Client;

const USER: &str = "20000000-0000-0000-0000-000000000001";

/// A realistic ~4 KB `invoice.paid` event whose ids contain `BENCHID` (replace it to make each
/// event new); the long-history benchmark uses it too.
pub(super) fn template() -> String {
    let now = crate::events::unix_now();
    let period = Period {
        start: now,
        end: now + 30 * 86_400,
    };
    let invoice = events::invoice(
        Shape::Basil,
        &Invoice {
            id: "in_BENCHID",
            subscription: "sub_bench",
            customer: "cus_bench",
            billing_reason: "subscription_cycle",
            paid: true,
            lines: vec![Line {
                price_id: "price_bench",
                amount: 2000,
                proration: false,
                period,
            }],
            user_id: Some(USER),
        },
    );
    let mut invoice = invoice;
    // Trim rarely used sub-objects until the event is about 4 KB, like a typical invoice.paid.
    for key in [
        "automatic_tax",
        "customer_address",
        "customer_shipping",
        "customer_tax_ids",
        "default_tax_rates",
        "from_invoice",
        "issuer",
        "last_finalization_error",
        "payment_settings",
        "rendering",
        "shipping_cost",
        "shipping_details",
        "status_transitions",
        "total_discount_amounts",
        "total_pretax_credit_amounts",
        "total_taxes",
        "custom_fields",
    ] {
        if let Some(o) = invoice.as_object_mut() {
            o.remove(key);
        }
    }
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
    println!(
        "\n## Webhook ingestion (events/s, {} byte invoice.paid payloads)\n",
        template.len()
    );
    println!("| connections | event | handle_stripe_webhook | bare INSERT jsonb | ratio |");
    println!("|---|---|---|---|---|");
    let deliver = async |c: &Client, body: String| {
        let t = crate::events::unix_now();
        let h = stripe_billing_core::signature::signature_header(
            body.as_bytes(),
            events::TEST_SECRET,
            t,
        );
        let r: serde_json::Value = c
            .query_one("SELECT billing.handle_stripe_webhook($1, $2)", &[&body, &h])
            .await
            .unwrap()
            .get(0);
        assert_eq!(r["processed"], true, "{r}");
    };
    let insert = async |c: &Client, id: String, body: String| {
        c.execute(
            "INSERT INTO plain_events (id, payload) VALUES ($1, $2::text::jsonb)",
            &[&id, &body],
        )
        .await
        .unwrap();
    };
    for conns in [1usize, 2] {
        let cs = clients(&db.dsn, conns).await;
        let (ours, plain) = paired(
            &cs,
            async |c: &Client, i, n| deliver(c, body(i, n, &format!("c{conns}r"))).await,
            async |c: &Client, i, n| {
                insert(
                    c,
                    format!("evt_c{conns}p{i}_{n}"),
                    body(i, n, &format!("c{conns}p")),
                )
                .await
            },
        )
        .await;
        println!(
            "| {conns} | invoice.paid (grants tokens) | {} | {} | {:.2} |",
            rate(ours),
            rate(plain),
            ours / plain
        );
        // The floor: verification, normalisation and storage, for an event with no effects.
        let (ours, plain) = paired(
            &cs,
            async |c: &Client, i, n| {
                deliver(
                    c,
                    body(i, n, &format!("c{conns}u"))
                        .replace("\"invoice.paid\"", "\"invoice.finalized\""),
                )
                .await
            },
            async |c: &Client, i, n| {
                insert(
                    c,
                    format!("evt_c{conns}q{i}_{n}"),
                    body(i, n, &format!("c{conns}q")),
                )
                .await
            },
        )
        .await;
        println!(
            "| {conns} | invoice.finalized (stored only) | {} | {} | {:.2} |",
            rate(ours),
            rate(plain),
            ours / plain
        );
    }
    let grants: i64 = owner
        .query_one("SELECT count(*) FROM billing.token_grants", &[])
        .await
        .unwrap()
        .get(0);
    println!("\n(every benchmarked event was applied: {grants} grants made)");
}
