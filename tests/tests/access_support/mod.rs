//! Fixtures and helpers shared by access*.rs tests.
#![allow(dead_code)]

use crate::common::{add_customer, add_project, add_request, add_subscription, seed_plans};
use stripe_billing_tests::pg::{Api, Caller, TestDb};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Tables and views a signed-in user may read, with row-level security on user_id.
pub const USER_TABLES: [&str; 8] = [
    "projects",
    "customers",
    "subscriptions",
    "token_grants",
    "token_spends",
    "token_spend_allocations",
    "token_grant_balances",
    "stripe_requests",
];
/// Rows of each USER_TABLES entry that seed() gives user A and user B (more, so counts tell
/// the users apart).
pub const ROWS_A: [i64; 8] = [1, 1, 1, 2, 1, 1, 2, 1];
pub const ROWS_B: [i64; 8] = [2, 1, 2, 3, 2, 3, 3, 2];

pub struct Seeded {
    pub db: TestDb,
    pub owner: Client,
    pub a: Uuid,
    pub b: Uuid,
    pub project_a: Uuid,
    pub project_b: Uuid,
}

/// Rows in every user table for users A and B, plus an event, a webhook secret and config.
pub async fn seed() -> Seeded {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed_plans(&owner).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let project_a = add_project(&owner, a).await;
    let project_b = add_project(&owner, b).await;
    add_project(&owner, b).await;
    add_customer(&owner, a, "cus_a").await;
    add_customer(&owner, b, "cus_b").await;
    add_subscription(&owner, a, "sub_a", "active").await;
    add_subscription(&owner, b, "sub_b1", "canceled").await;
    add_subscription(&owner, b, "sub_b2", "active").await;
    let ledger: [(&str, Params); 8] = [
        ("SELECT billing.grant_tokens($1, 100)", &[&a]),
        (
            "SELECT billing.grant_tokens($1, 50, project_id => $2)",
            &[&a, &project_a],
        ),
        ("SELECT billing.spend_tokens($1, 30)", &[&a]),
        ("SELECT billing.grant_tokens($1, 200)", &[&b]),
        (
            "SELECT billing.grant_tokens($1, 20, expires_at => now() + interval '1 day')",
            &[&b],
        ),
        (
            "SELECT billing.grant_tokens($1, 10, project_id => $2)",
            &[&b, &project_b],
        ),
        // Takes the 20 expiring tokens first, then 10 of the 200: two allocations.
        ("SELECT billing.spend_tokens($1, 30)", &[&b]),
        (
            "SELECT billing.spend_tokens($1, 5, project_id => $2)",
            &[&b, &project_b],
        ),
    ];
    for (sql, params) in ledger {
        owner.execute(sql, params).await.expect(sql);
    }
    add_request(&owner, a, "checkout").await;
    add_request(&owner, b, "checkout").await;
    add_request(&owner, b, "portal").await;
    owner
        .batch_execute(
            "INSERT INTO billing.stripe_events (id, type, livemode, created, payload)
                 VALUES ('evt_test_1', 'invoice.paid', false, now(), '{}');
             INSERT INTO billing.webhook_secrets (secret) VALUES ('whsec_test123');
             UPDATE billing.config SET checkout_success_url = 'https://app.example.test/ok';",
        )
        .await
        .expect("seed privileged tables");
    Seeded {
        db,
        owner,
        a,
        b,
        project_a,
        project_b,
    }
}

/// (rows visible, of which owned by `user`) in `table` as `caller`.
pub async fn visible(api: &mut Api, caller: &Caller, table: &str, user: Uuid) -> (i64, i64) {
    let sql = format!("SELECT count(*), count(*) FILTER (WHERE user_id = $1) FROM billing.{table}");
    let rows = api
        .call(caller, &sql, &[&user])
        .await
        .unwrap_or_else(|e| panic!("{caller:?} reading {table}: {e}"));
    (rows[0].get(0), rows[0].get(1))
}

pub fn balances(row: &Row) -> Vec<i64> {
    (0..row.len()).map(|i| row.get(i)).collect()
}
