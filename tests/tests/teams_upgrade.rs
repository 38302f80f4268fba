//! Accounts arrive in place (DESIGN.md, "Accounts"): a personal 0.2.0 install, upgraded, keeps
//! every balance and every row of its history, each user still reads exactly their own rows as
//! their personal account, and can then create a team and spend from its wallet. In both
//! editions: ALTER EXTENSION UPDATE, or the committed pure-SQL migrations in order.
use serde_json::Value;
use shipped_sql::{pure_sql, upgrade};
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::pg::{Caller, TestDb};
use tokio_postgres::Client;
use uuid::Uuid;

/// 0.2.0 with personal ledgers for users a and b, upgraded to the current version in this run's
/// edition; with the ledger as it was before the upgrade.
async fn upgraded_from_0_2_0(a: Uuid, b: Uuid) -> (TestDb, Vec<String>) {
    let root = upgrade::repo_root();
    let current = upgrade::current_version();
    match Edition::current() {
        Edition::Extension => {
            let db = TestDb::with_version(Some("0.2.0")).await;
            let owner = db.owner().await;
            let before = fill(&owner, a, b).await;
            owner
                .batch_execute("ALTER EXTENSION stripe_billing UPDATE")
                .await
                .expect("upgrade");
            (db, before)
        }
        Edition::Pure => {
            let db = TestDb::empty_for(Edition::Pure).await;
            let mut owner = db.owner().await;
            let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
            let tx = owner.transaction().await.unwrap();
            tx.batch_execute(&read(pure_sql::install_path(&root, "0.2.0")))
                .await
                .expect("install 0.2.0");
            tx.commit().await.unwrap();
            let before = fill(&owner, a, b).await;
            let tx = owner.transaction().await.unwrap();
            tx.batch_execute(&read(pure_sql::upgrade_path(&root, "0.2.0", current)))
                .await
                .expect("upgrade");
            tx.commit().await.unwrap();
            (db, before)
        }
    }
}

async fn fill(owner: &Client, a: Uuid, b: Uuid) -> Vec<String> {
    for sql in [
        "SELECT billing.grant_tokens($1, 100)",
        "SELECT billing.grant_tokens($1, 40, expires_at => now() + interval '1 day')",
        "SELECT billing.spend_tokens($1, 60)",
    ] {
        owner.execute(sql, &[&a]).await.expect(sql);
    }
    owner
        .execute("SELECT billing.grant_tokens($1, 70)", &[&b])
        .await
        .unwrap();
    ledger(owner).await
}

/// Every spend and grant with its user, amount and what is left, in order.
async fn ledger(owner: &Client) -> Vec<String> {
    owner
        .query(
            "SELECT format('grant %s %s %s/%s', id, user_id, tokens, remaining) FROM billing.token_grants
             UNION ALL
             SELECT format('spend %s %s %s', id, user_id, amount) FROM billing.token_spends
             UNION ALL
             SELECT format('alloc %s %s %s %s', spend_id, grant_id, user_id, tokens) FROM billing.token_spend_allocations
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_personal_0_2_0_install_upgrades_in_place_with_its_ledger_and_gains_teams() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (db, before) = upgraded_from_0_2_0(a, b).await;
    let owner = db.owner().await;
    assert_eq!(ledger(&owner).await, before, "the ledger is kept as it was");
    assert_eq!(
        owner
            .query_one("SELECT count(*) FROM billing.accounts", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0,
        "personal accounts need no rows"
    );

    // Each user is their personal account: their balance, their rows, nobody else's.
    let mut api = db.api().await;
    let me = Caller::User(a);
    let balance: i64 = api
        .call(&me, "SELECT billing.token_balance()", &[])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(balance, 80);
    let grants: i64 = api
        .call(&me, "SELECT count(*) FROM billing.token_grants", &[])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(grants, 2, "A reads her two grants, not B's");

    // And a team works on the upgraded install.
    let team: Uuid = api
        .call(&me, "SELECT billing.create_team('Upgraded')", &[])
        .await
        .unwrap()[0]
        .get(0);
    api.call(
        &me,
        "SELECT billing.set_team_member($1, $2, 'member', 25)",
        &[&team, &b],
    )
    .await
    .unwrap();
    owner
        .execute("SELECT billing.grant_tokens($1, 300)", &[&team])
        .await
        .unwrap();
    let spent: Value = api
        .call(
            &Caller::User(b),
            "SELECT billing.spend_account_tokens($1, 20)",
            &[&team],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(spent["balance"], 280, "{spent}");
    let by: Option<Uuid> = owner
        .query_one(
            "SELECT spent_by FROM billing.token_spends WHERE user_id = $1",
            &[&team],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(by, Some(b));
    let own: i64 = api
        .call(&Caller::User(b), "SELECT billing.token_balance()", &[])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(own, 70, "B's personal wallet is untouched");
}
