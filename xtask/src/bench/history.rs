//! A long history beside an empty database: webhook ingestion, the ledger and the operator's
//! figures with 1,000,000 stored events and 10,000,000 grants, each measured against the same
//! workload on an empty database in alternating slices of the same run.
//!
//! The history is made with set-based SQL (`generate_series`). Stored events are small (a few
//! hundred bytes): what a new event meets is the indexes, not the old payloads' bytes. The
//! grants are 1,000 per user for 10,000 users, all expired unspent: the part of a history that
//! stays in the live-grant index (spent-out grants leave it), so the hardest case for balances
//! and spends.
use std::time::Instant;

use super::{clients, paired_on, rate};
use stripe_billing_tests::events;
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

const USERS: i64 = 10_000;
const GRANTS_PER_USER: i64 = 1_000;
const EVENTS: i64 = 1_000_000;

/// The webhook benchmark's invoice.paid customer and user.
const CUSTOMER_USER: &str = "20000000-0000-0000-0000-000000000001";

fn user(i: i64) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x3000_0000_0000_0000_0000_0000_0000_0000 + i as u128)
}

/// What both databases have: a signing secret, the benchmark plan and its customer, and one
/// live grant per user.
async fn base(db: &TestDb) -> Client {
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ('{secret}');
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens)
                 VALUES ('bench', 'price_bench', 'Bench', 'subscription', 1000);
             INSERT INTO billing.customers (user_id, stripe_customer_id) VALUES ('{CUSTOMER_USER}', 'cus_bench');
             INSERT INTO billing.token_grants (user_id, source, tokens)
             SELECT ('30000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid, 'manual', 100000000000
             FROM generate_series(0, {USERS} - 1) u;",
            secret = events::TEST_SECRET
        ))
        .await
        .unwrap();
    owner
}

/// The history: expired grants for every user and a million applied events (a thousand of
/// them held, as a live system has), spread over the retention window.
async fn load_history(owner: &Client) {
    // The insert trigger only sets remaining = tokens, which the rows below already have; off,
    // the load takes a fraction of the time.
    owner
        .batch_execute(&format!(
            "SET session_replication_role = replica;
             INSERT INTO billing.token_grants (user_id, source, tokens, remaining, expires_at, created_at)
             SELECT ('30000000-0000-0000-0000-' || lpad(to_hex(u), 12, '0'))::uuid, 'plan', 1000, 1000,
                    now() - make_interval(days => 1 + (h % 700)), now() - make_interval(days => 31 + (h % 700))
             FROM generate_series(0, {USERS} - 1) u, generate_series(1, {GRANTS_PER_USER}) h;
             RESET session_replication_role;"
        ))
        .await
        .unwrap();
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.stripe_events (id, type, api_version, livemode, created, payload,
                                                stripe_customer_id, object_id, source, received_at,
                                                processed_at, attempts, error, error_code)
             SELECT 'evt_1Hist' || lpad(i::text, 9, '0'), t.type, '2025-03-31.basil', false, at,
                    json_build_object('id', 'evt_1Hist' || lpad(i::text, 9, '0'), 'object', 'event',
                        'type', t.type, 'api_version', '2025-03-31.basil', 'livemode', false,
                        'created', extract(epoch FROM at)::bigint,
                        'data', json_build_object('object', json_build_object(
                            'id', t.prefix || i, 'object', t.object, 'customer', 'cus_hist' || (i % 100000)))),
                    'cus_hist' || (i % 100000), t.prefix || i, 'webhook', at,
                    CASE WHEN i % 1000 = 0 THEN NULL ELSE at END, 1,
                    CASE WHEN i % 1000 = 0 THEN 'cannot tell which user' END,
                    CASE WHEN i % 1000 = 0 THEN 'BL007' END
             FROM generate_series(1, {EVENTS}) i
             CROSS JOIN LATERAL (SELECT now() - make_interval(secs => ({EVENTS} - i) * 7.5) AS at) a
             CROSS JOIN LATERAL (SELECT (ARRAY['invoice.paid', 'customer.subscription.updated',
                                               'checkout.session.completed', 'invoice.finalized'])[1 + i % 4] AS type,
                                        (ARRAY['in_', 'sub_', 'cs_', 'in_'])[1 + i % 4] AS prefix,
                                        (ARRAY['invoice', 'subscription', 'checkout.session', 'invoice'])[1 + i % 4] AS object) t;"
        ))
        .await
        .unwrap();
}

async fn analyze(owner: &Client) {
    // A multi-statement batch runs as one transaction, which VACUUM refuses.
    owner.batch_execute("VACUUM ANALYZE").await.unwrap();
}

/// Rows a table and its indexes take on disk, for the heading.
async fn size(owner: &Client, table: &str) -> String {
    owner
        .query_one(
            "SELECT pg_size_pretty(pg_total_relation_size($1::text::regclass))",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

struct Row {
    name: String,
    empty: f64,
    history: f64,
}

pub async fn run() {
    let started = Instant::now();
    let empty_db = TestDb::new().await;
    let empty_owner = base(&empty_db).await;
    analyze(&empty_owner).await;
    let history_db = TestDb::new().await;
    let history_owner = base(&history_db).await;
    load_history(&history_owner).await;
    analyze(&history_owner).await;
    let loaded = started.elapsed();
    let (events_size, grants_size) = (
        size(&history_owner, "billing.stripe_events").await,
        size(&history_owner, "billing.token_grants").await,
    );

    let template = super::webhook::template();
    let body = |i: usize, n: u64, run: &str| template.replace("BENCHID", &format!("{run}{i}x{n}"));
    let deliver = async |c: &Client, body: String| {
        let h = stripe_billing_core::signature::signature_header(
            body.as_bytes(),
            events::TEST_SECRET,
            events::unix_now(),
        );
        let r: serde_json::Value = c
            .query_one("SELECT billing.handle_stripe_webhook($1, $2)", &[&body, &h])
            .await
            .unwrap()
            .get(0);
        assert_eq!(r["processed"], true, "{r}");
    };
    let pick = |i: usize, n: u64| user(((n as i64) * 7919 + i as i64 * 4999) % USERS);
    // One unrecorded round first: the first seconds after a load measure caches and the
    // plan cache filling, not the history.
    {
        let (empty, history) = (
            clients(&empty_db.dsn, 1).await,
            clients(&history_db.dsn, 1).await,
        );
        paired_on(
            &empty,
            async |c: &Client, i, n| deliver(c, body(i, n, "ew")).await,
            &history,
            async |c: &Client, i, n| deliver(c, body(i, n, "hw")).await,
        )
        .await;
    }
    let mut rows = Vec::new();
    for conns in [1usize, 2] {
        let empty = clients(&empty_db.dsn, conns).await;
        let history = clients(&history_db.dsn, conns).await;
        let (e, h) = paired_on(
            &empty,
            async |c: &Client, i, n| deliver(c, body(i, n, &format!("e{conns}p"))).await,
            &history,
            async |c: &Client, i, n| deliver(c, body(i, n, &format!("h{conns}p"))).await,
        )
        .await;
        rows.push(Row {
            name: format!("webhook invoice.paid (stores, grants), {conns} conn"),
            empty: e,
            history: h,
        });
        let stored_only =
            |i, n, run: &str| body(i, n, run).replace("\"invoice.paid\"", "\"invoice.finalized\"");
        let (e, h) = paired_on(
            &empty,
            async |c: &Client, i, n| deliver(c, stored_only(i, n, &format!("e{conns}f"))).await,
            &history,
            async |c: &Client, i, n| deliver(c, stored_only(i, n, &format!("h{conns}f"))).await,
        )
        .await;
        rows.push(Row {
            name: format!("webhook invoice.finalized (stored only), {conns} conn"),
            empty: e,
            history: h,
        });
        for (name, sql) in [
            ("token_balance", "SELECT billing.token_balance($1)"),
            ("spend_tokens", "SELECT billing.spend_tokens($1, 1)"),
        ] {
            let op = async |c: &Client, i, n| {
                c.query_one(sql, &[&pick(i, n)]).await.unwrap();
            };
            let (e, h) = paired_on(&empty, op, &history, op).await;
            rows.push(Row {
                name: format!("{name}, 10k users, {conns} conn"),
                empty: e,
                history: h,
            });
        }
    }
    let one = clients(&empty_db.dsn, 1).await;
    let one_history = clients(&history_db.dsn, 1).await;
    let health = async |c: &Client, _: usize, _: u64| {
        c.query_one("SELECT * FROM billing.health()", &[])
            .await
            .unwrap();
    };
    let (e, h) = paired_on(&one, health, &one_history, health).await;
    rows.push(Row {
        name: "billing.health() (a /metrics scrape), 1 conn".into(),
        empty: e,
        history: h,
    });
    let prune = async |c: &Client, _: usize, _: u64| {
        c.query_one("SELECT billing.prune()", &[]).await.unwrap();
    };
    let (e, h) = paired_on(&one, prune, &one_history, prune).await;
    rows.push(Row {
        name: "billing.prune() with nothing to delete, 1 conn".into(),
        empty: e,
        history: h,
    });
    // The expiry sweep the worker runs with prune(): the history's grants are expired unspent,
    // so they stay in its index, before now(). Warnings are off by default (the sweep would
    // return at once): both databases get the window an operator would set.
    for c in [&one[0], &one_history[0]] {
        c.batch_execute(
            "INSERT INTO billing.config (expiry_warning_days) VALUES (3)
             ON CONFLICT (id) DO UPDATE SET expiry_warning_days = 3",
        )
        .await
        .unwrap();
    }
    let sweep = async |c: &Client, _: usize, _: u64| {
        c.query_one("SELECT billing.warn_expiring_grants()", &[])
            .await
            .unwrap();
    };
    let (e, h) = paired_on(&one, sweep, &one_history, sweep).await;
    rows.push(Row {
        name: "billing.warn_expiring_grants() with nothing to warn, 1 conn".into(),
        empty: e,
        history: h,
    });

    println!(
        "\n## A long history (calls/s; history = {EVENTS} stored events, {} grants; loaded in {:.0} s: events {events_size}, grants {grants_size})\n",
        rate((USERS * GRANTS_PER_USER + USERS) as f64),
        loaded.as_secs_f64()
    );
    println!("| workload | empty database | long history | history/empty |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2} |",
            r.name,
            rate(r.empty),
            rate(r.history),
            r.history / r.empty
        );
    }
    println!(
        "\n(this benchmark took {:.0} s including the load)",
        started.elapsed().as_secs_f64()
    );
}
