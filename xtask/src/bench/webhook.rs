//! Events/s through `billing.handle_stripe_webhook` with realistic ~4 KB `invoice.paid`
//! payloads (new event and invoice ids each time, so every event grants), in the extension and
//! in the pure-SQL edition (whose signature check and normalisation are PL/pgSQL), beside a bare
//! `INSERT` of the same payload into a plain jsonb table, with 1 and 2 connections.
use super::{clients, paired_on, rate, throughput};
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::events::{self, Invoice, Line, Period, Shape};
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

const USER: &str = "20000000-0000-0000-0000-000000000001";

/// A realistic ~4 KB `invoice.paid` event whose ids contain `BENCHID` (replace it to make each
/// event new); the long-history benchmark uses it too.
pub(super) fn template() -> String {
    let now = stripe_billing_tests::events::unix_now();
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

async fn setup(db: &TestDb) -> Client {
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
    owner
}

async fn deliver(c: &Client, body: String) {
    let t = stripe_billing_tests::events::unix_now();
    let h =
        stripe_billing_core::signature::signature_header(body.as_bytes(), events::TEST_SECRET, t);
    let r: serde_json::Value = c
        .query_one("SELECT billing.handle_stripe_webhook($1, $2)", &[&body, &h])
        .await
        .unwrap()
        .get(0);
    assert_eq!(r["processed"], true, "{r}");
}

pub async fn run() {
    let (db, pure_db) = (
        TestDb::new().await,
        TestDb::with_edition(Edition::Pure).await,
    );
    let (owner, pure_owner) = (setup(&db).await, setup(&pure_db).await);
    let template = template();
    let body = |i: usize, n: u64, run: &str| template.replace("BENCHID", &format!("{run}{i}x{n}"));
    println!(
        "\n## Webhook ingestion (events/s, {} byte invoice.paid payloads)\n",
        template.len()
    );
    println!("| connections | event | extension | pure-SQL edition | extension/pure | bare INSERT jsonb | extension/bare |");
    println!("|---|---|---|---|---|---|---|");
    for conns in [1usize, 2] {
        let (cs, pure_cs) = (
            clients(&db.dsn, conns).await,
            clients(&pure_db.dsn, conns).await,
        );
        let plain = throughput(&cs, async |c: &Client, i, n| {
            let id = format!("evt_c{conns}p{i}_{n}");
            c.execute(
                "INSERT INTO plain_events (id, payload) VALUES ($1, $2::text::jsonb)",
                &[&id, &body(i, n, &format!("c{conns}p"))],
            )
            .await
            .unwrap();
        })
        .await;
        // invoice.paid grants tokens; invoice.finalized is the floor: verification,
        // normalisation and storage of an event with no effects.
        for (event, label, replace) in [
            ("paid", "invoice.paid (grants tokens)", None),
            (
                "fin",
                "invoice.finalized (stored only)",
                Some(("\"invoice.paid\"", "\"invoice.finalized\"")),
            ),
        ] {
            let make = |i: usize, n: u64, edition: &str| {
                let b = body(i, n, &format!("c{conns}{event}{edition}"));
                match replace {
                    Some((from, to)) => b.replace(from, to),
                    None => b,
                }
            };
            let (ours, twin) = paired_on(
                &cs,
                async |c: &Client, i, n| deliver(c, make(i, n, "e")).await,
                &pure_cs,
                async |c: &Client, i, n| deliver(c, make(i, n, "p")).await,
            )
            .await;
            println!(
                "| {conns} | {label} | {} | {} | {:.1}x | {} | {:.2} |",
                rate(ours),
                rate(twin),
                ours / twin,
                rate(plain),
                ours / plain
            );
        }
    }
    let grants = |c: Client| async move {
        let n: i64 = c
            .query_one("SELECT count(*) FROM billing.token_grants", &[])
            .await
            .unwrap()
            .get(0);
        n
    };
    println!(
        "\n(every benchmarked event was applied: {} grants made by the extension, {} by the pure-SQL edition)",
        grants(owner).await,
        grants(pure_owner).await
    );
}
