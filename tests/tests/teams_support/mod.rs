//! The team fixture shared by teams.rs and teams_access.rs.
#![allow(dead_code)]

use crate::common::seed_plans;
use serde_json::Value;
use stripe_billing_tests::pg::{Api, Caller, TestDb};
use tokio_postgres::Client;
use uuid::Uuid;

pub struct Team {
    pub db: TestDb,
    pub owner: Client,
    pub api: Api,
    pub team: Uuid,
    /// The team's owner, a member and someone outside the team.
    pub alice: Uuid,
    pub bob: Uuid,
    pub carol: Uuid,
}

/// Alice creates a team and adds Bob as a member; the team's wallet holds `tokens`.
pub async fn team(tokens: i64) -> Team {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed_plans(&owner).await;
    owner
        .batch_execute(
            "UPDATE billing.config SET checkout_success_url = 'https://app.example.test/ok',
                    checkout_cancel_url = 'https://app.example.test/no',
                    portal_return_url = 'https://app.example.test/account'",
        )
        .await
        .unwrap();
    let mut api = db.api().await;
    let (alice, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let team: Uuid = api
        .call(
            &Caller::User(alice),
            "SELECT billing.create_team('Acme')",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    let member: Value = api
        .call(
            &Caller::User(alice),
            "SELECT billing.set_team_member($1, $2)",
            &[&team, &bob],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(member["role"], "member", "{member}");
    if tokens > 0 {
        owner
            .execute("SELECT billing.grant_tokens($1, $2)", &[&team, &tokens])
            .await
            .unwrap();
    }
    Team {
        db,
        owner,
        api,
        team,
        alice,
        bob,
        carol,
    }
}

/// [`Api::one`] as the user `who`.
pub async fn one<T: tokio_postgres::types::FromSqlOwned>(
    api: &mut Api,
    who: Uuid,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<T, tokio_postgres::Error> {
    api.one(&Caller::User(who), sql, params).await
}

/// What a refused call must leave as it was.
pub async fn before(c: &Client) -> (i64, i64, i64, i64) {
    (
        count(c, "SELECT count(*) FROM billing.accounts").await,
        count(c, "SELECT count(*) FROM billing.account_members").await,
        count(c, "SELECT count(*) FROM billing.token_spends").await,
        count(c, "SELECT count(*) FROM billing.stripe_requests").await,
    )
}

pub async fn count(client: &Client, sql: &str) -> i64 {
    stripe_billing_tests::pg::one(client, sql, &[]).await
}
