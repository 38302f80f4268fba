//! Fixtures shared by entitlements*.rs: features on subscription_support's plans, and what a
//! caller sees of them.
#![allow(dead_code)]

use crate::subscription_support::setup;
use stripe_billing_tests::pg::{Api, Caller, TestDb};
use tokio_postgres::Client;

pub const HOUR: i64 = 3600;

/// Features of setup()'s plans: basic exports up to 10 a month; pro exports up to 100 and has
/// the API without a limit; pro_yearly exports without a limit.
pub async fn features(owner: &Client) {
    owner
        .batch_execute(
            "INSERT INTO billing.plan_features (plan_id, feature, limit_value) VALUES
                 ('basic', 'export', 10),
                 ('pro', 'export', 100), ('pro', 'api', NULL),
                 ('pro_yearly', 'export', NULL);",
        )
        .await
        .unwrap();
}

/// subscription_support's set-up with [`features`] on its plans, and a PostgREST-like connection.
pub async fn setup_with_features() -> (TestDb, Client, Api) {
    let (db, owner) = setup().await;
    features(&owner).await;
    let api = db.api().await;
    (db, owner, api)
}

/// (has export, export limit, has api, api limit) as `caller` sees them.
pub type Seen = (bool, Option<i64>, bool, Option<i64>);

pub async fn seen(api: &mut Api, caller: &Caller) -> Seen {
    let rows = api
        .call(
            caller,
            "SELECT billing.has_feature('export'), billing.feature_limit('export'),
                    billing.has_feature('api'), billing.feature_limit('api')",
            &[],
        )
        .await
        .unwrap();
    let r = &rows[0];
    let seen: Seen = (r.get(0), r.get(1), r.get(2), r.get(3));
    // A signed-in user's billing.my_features() lists the same, by the same rule.
    if let Caller::User(_) = caller {
        let listed: Vec<(String, Option<i64>)> = api
            .call(
                caller,
                "SELECT feature, limit_value FROM billing.my_features()",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut expected = Vec::new();
        if seen.2 {
            expected.push(("api".to_string(), seen.3));
        }
        if seen.0 {
            expected.push(("export".to_string(), seen.1));
        }
        assert_eq!(listed, expected, "my_features agrees with has_feature");
    }
    seen
}

pub const NOTHING: Seen = (false, None, false, None);
pub const BASIC: Seen = (true, Some(10), false, None);
pub const PRO: Seen = (true, Some(100), true, None);
