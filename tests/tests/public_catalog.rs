//! The pricing page's catalog (README, "The catalog"): `billing.public_catalog` shows every plan
//! with its price's amount as synced from Stripe to anyone, anon included, without the plans'
//! metadata; the tables behind it stay private to anon. Connected as each role the way
//! PostgREST does.
mod common;

use stripe_billing_tests::events;
use stripe_billing_tests::pg::{assert_error, Caller, TestDb};
use uuid::Uuid;

const COLUMNS: &str =
    "plan_id, name, kind, monthly_tokens, tokens, price_id, amount::text, currency, \
                       recurring_interval, interval_count, active";

type Row = (
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
    bool,
);

fn read(rows: Vec<tokio_postgres::Row>) -> Vec<Row> {
    rows.iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                r.get(8),
                r.get(9),
                r.get(10),
            )
        })
        .collect()
}

#[tokio::test]
async fn anyone_reads_the_catalog_with_synced_amounts_and_no_metadata() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    common::seed_plans(&owner).await;
    owner
        .batch_execute(
            "UPDATE billing.plans SET metadata = '{\"internal\": \"margin 80%\"}';
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens, active)
             VALUES ('old', 'price_old', 'Old', 'subscription', 10, false);",
        )
        .await
        .unwrap();
    // Pro's price as the worker retrieves it; the pack's is not synced yet.
    let applied: i32 = owner
        .query_one(
            "SELECT billing.store_price($1, now())",
            &[&events::price("price_pro", Some(1999), 1_700_000_000)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 0);
    let want: Vec<Row> = vec![
        (
            "old".into(),
            "Old".into(),
            "subscription".into(),
            Some(10),
            None,
            "price_old".into(),
            None,
            None,
            None,
            None,
            false,
        ),
        (
            "pack".into(),
            "Pack".into(),
            "token_pack".into(),
            None,
            Some(500),
            "price_pack".into(),
            None,
            None,
            None,
            None,
            true,
        ),
        (
            "pro".into(),
            "Pro".into(),
            "subscription".into(),
            Some(1000),
            None,
            "price_pro".into(),
            Some("1999".into()),
            Some("usd".into()),
            Some("month".into()),
            Some(1),
            true,
        ),
    ];
    let mut api = db.api().await;
    let sql = format!("SELECT {COLUMNS} FROM billing.public_catalog ORDER BY plan_id");
    for caller in [Caller::Anon, Caller::User(Uuid::new_v4())] {
        let rows = api.call(&caller, &sql, &[]).await.unwrap();
        assert_eq!(read(rows), want, "{caller:?}");
    }
    // The view's columns are exactly these: no metadata, nothing else.
    let columns: Vec<String> = owner
        .query(
            "SELECT attname::text FROM pg_attribute
             WHERE attrelid = 'billing.public_catalog'::regclass AND attnum > 0 ORDER BY attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        [
            "plan_id",
            "name",
            "kind",
            "monthly_tokens",
            "tokens",
            "price_id",
            "amount",
            "currency",
            "recurring_interval",
            "interval_count",
            "active"
        ]
    );
    // Stripe archiving the price makes the plan unbuyable on the page.
    let mut archived = events::price("price_pro", Some(1999), 1_700_000_000);
    archived["active"] = serde_json::json!(false);
    owner
        .query_one(
            "SELECT billing.store_price($1, now() + interval '1 second')",
            &[&archived],
        )
        .await
        .unwrap();
    let rows = api
        .call(
            &Caller::Anon,
            "SELECT active FROM billing.public_catalog WHERE plan_id = 'pro'",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows[0].get::<_, bool>(0));
    // The tables behind it stay private to anon, and nothing more is open: the report is clean.
    for sql in [
        "SELECT count(*) FROM billing.prices",
        "SELECT count(*) FROM billing.plans",
        "SELECT billing.store_price('{}', now())",
    ] {
        assert_error(
            api.call(&Caller::Anon, sql, &[]).await,
            "42501",
            "permission denied",
        );
    }
    let report = owner
        .query("SELECT * FROM billing.security_report()", &[])
        .await
        .unwrap();
    assert!(report.is_empty(), "{} problems", report.len());
}
