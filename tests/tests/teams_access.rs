//! Teams (DESIGN.md, "Accounts"): members read their team's rows and nobody else does, as each
//! client role; has_feature answers for a member's active team; every team function refuses
//! bad input and changes nothing.
mod common;
mod teams_support;

use common::{add_customer, add_subscription};
use serde_json::Value;
use stripe_billing_tests::pg::{assert_error, Caller};
use teams_support::*;
use uuid::Uuid;

#[tokio::test]
async fn members_read_their_teams_rows_and_nobody_else_does() {
    let mut t = team(500).await;
    let (team, alice, bob, carol) = (t.team, t.alice, t.bob, t.carol);
    add_customer(&t.owner, team, "cus_team").await;
    add_subscription(&t.owner, team, "sub_team", "active").await;
    t.owner
        .execute(
            "INSERT INTO billing.notifications (user_id, kind) VALUES ($1, 'payment_failed')",
            &[&team],
        )
        .await
        .unwrap();
    one::<Value>(
        &mut t.api,
        bob,
        "SELECT billing.spend_account_tokens($1, 10)",
        &[&team],
    )
    .await
    .unwrap();
    // Carol has rows of her own, which only she reads.
    t.owner
        .execute("SELECT billing.grant_tokens($1, 7)", &[&carol])
        .await
        .unwrap();
    let tables = [
        ("accounts", 1),
        ("account_members", 2),
        ("customers", 1),
        ("subscriptions", 1),
        ("token_grants", 1),
        ("token_spends", 1),
        ("token_spend_allocations", 1),
        ("notifications", 1),
    ];
    for (table, team_rows) in tables {
        let sql = format!("SELECT count(*) FROM billing.{table}");
        for who in [alice, bob] {
            let seen: i64 = one(&mut t.api, who, &sql, &[]).await.unwrap();
            assert_eq!(seen, team_rows, "a member reads the team's {table}");
        }
        let carols = i64::from(table == "token_grants");
        let seen: i64 = one(&mut t.api, carol, &sql, &[]).await.unwrap();
        assert_eq!(seen, carols, "an outsider reads none of the team's {table}");
        let all: i64 = t.api.call(&Caller::Service, &sql, &[]).await.unwrap()[0].get(0);
        assert_eq!(all, team_rows + carols, "service_role reads all {table}");
        assert_error(
            t.api.call(&Caller::Anon, &sql, &[]).await,
            "42501",
            "permission denied",
        );
    }
    assert_error(
        one::<i64>(
            &mut t.api,
            carol,
            "SELECT billing.token_balance($1)",
            &[&team],
        )
        .await,
        "42501",
        "you can only read your own balance or that of a team",
    );
    assert_error(
        t.api
            .call(&Caller::Anon, "SELECT billing.create_team('x')", &[])
            .await,
        "42501",
        "permission denied",
    );
    assert_eq!(
        count(&t.owner, "SELECT count(*) FROM billing.accounts").await,
        1
    );
}

#[tokio::test]
async fn has_feature_answers_for_the_active_team_of_its_members() {
    let mut t = team(0).await;
    let (team, alice, bob, carol) = (t.team, t.alice, t.bob, t.carol);
    t.owner
        .batch_execute("INSERT INTO billing.plan_features (plan_id, feature, limit_value) VALUES ('pro', 'export', 5)")
        .await
        .unwrap();
    add_subscription(&t.owner, team, "sub_team", "active").await;
    let header = format!(r#"{{"x-billing-account":"{team}"}}"#);
    let ask = |who: Caller, headers: String, sql: &'static str| {
        let db = &t.db;
        async move {
            let mut api = db.api().await;
            api.call_with_headers(&who, &headers, sql, &[&team])
                .await
                .map(|rows| {
                    let v: Option<bool> = rows[0].get(0);
                    let l: Option<i64> = rows[0].get(1);
                    (v, l)
                })
        }
    };
    let personal = "SELECT billing.has_feature('export'), billing.feature_limit('export') WHERE $1::uuid IS NOT NULL";
    let named = "SELECT billing.has_feature('export', $1), billing.feature_limit('export', $1)";
    for who in [alice, bob] {
        // The personal account has no subscription; the team, named or active, has.
        assert_eq!(
            ask(Caller::User(who), "{}".into(), personal).await.unwrap(),
            (Some(false), None)
        );
        assert_eq!(
            ask(Caller::User(who), "{}".into(), named).await.unwrap(),
            (Some(true), Some(5))
        );
        assert_eq!(
            ask(Caller::User(who), header.clone(), personal)
                .await
                .unwrap(),
            (Some(true), Some(5))
        );
    }
    // my_features lists the active account's features: the team's with the header only.
    let features = |who: Uuid, headers: String| {
        let db = &t.db;
        async move {
            let mut api = db.api().await;
            api.call_with_headers(
                &Caller::User(who),
                &headers,
                "SELECT feature || ':' || coalesce(limit_value::text, '-') FROM billing.my_features()",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(features(bob, header.clone()).await, ["export:5"]);
    assert!(features(bob, "{}".into()).await.is_empty());
    assert!(features(carol, header.clone()).await.is_empty());
    // Not Carol's team, however she asks; anon gets nothing either.
    for sql in [personal, named] {
        assert_eq!(
            ask(Caller::User(carol), header.clone(), sql).await.unwrap(),
            (Some(false), None)
        );
    }
    assert_eq!(
        ask(Caller::Anon, header.clone(), personal).await.unwrap(),
        (Some(false), None)
    );
    assert_error(
        ask(
            Caller::User(bob),
            r#"{"x-billing-account":"acme"}"#.into(),
            personal,
        )
        .await,
        "22P02",
        "not an account id",
    );
    // Bob removed: the team's features are no longer his.
    one::<bool>(
        &mut t.api,
        alice,
        "SELECT billing.remove_team_member($1, $2)",
        &[&team, &bob],
    )
    .await
    .unwrap();
    assert_eq!(
        ask(Caller::User(bob), header.clone(), personal)
            .await
            .unwrap(),
        (Some(false), None)
    );
}

#[tokio::test]
async fn every_team_function_refuses_bad_input_and_changes_nothing() {
    let mut t = team(100).await;
    let (team, alice, bob, carol) = (t.team, t.alice, t.bob, t.carol);
    let long = "x".repeat(201);
    let nil: Option<Uuid> = None;
    let start = before(&t.owner).await;
    type P<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;
    let cases: Vec<(Uuid, &str, P, &str, &str)> = vec![
        (
            alice,
            "SELECT billing.create_team(NULL)::text",
            vec![],
            "22004",
            "name must not be NULL",
        ),
        (
            alice,
            "SELECT billing.create_team('   ')::text",
            vec![],
            "22023",
            "1 to 200 characters",
        ),
        (
            alice,
            "SELECT billing.create_team($1)::text",
            vec![&long],
            "22023",
            "1 to 200 characters",
        ),
        (
            alice,
            "SELECT billing.set_team_member($1, $2)::text",
            vec![&nil, &carol],
            "22004",
            "account_id must not be NULL",
        ),
        (
            alice,
            "SELECT billing.set_team_member($1, $2)::text",
            vec![&team, &nil],
            "22004",
            "user_id must not be NULL",
        ),
        (
            alice,
            "SELECT billing.set_team_member($1, $2, NULL)::text",
            vec![&team, &carol],
            "22004",
            "role must not be NULL",
        ),
        (
            alice,
            "SELECT billing.set_team_member($1, $2, 'boss')::text",
            vec![&team, &carol],
            "22023",
            "role must be owner, admin or member",
        ),
        (
            alice,
            "SELECT billing.set_team_member($1, $2, 'member', -1)::text",
            vec![&team, &carol],
            "22023",
            "spend_limit must be between",
        ),
        (
            alice,
            "SELECT billing.set_team_member($1, $2, 'member', 1000000000001)::text",
            vec![&team, &carol],
            "22023",
            "spend_limit must be between",
        ),
        (
            alice,
            "SELECT billing.set_team_member($1, $1)::text",
            vec![&team],
            "22023",
            "cannot be a member of itself",
        ),
        (
            alice,
            "SELECT billing.set_team_member($1, $2)::text",
            vec![&carol, &bob],
            "42501",
            "not owner or admin",
        ),
        (
            alice,
            "SELECT billing.set_team_member($1, $2)::text",
            vec![&alice, &bob],
            "42501",
            "not a team of yours",
        ),
        (
            alice,
            "SELECT billing.remove_team_member($1, $2)::text",
            vec![&nil, &bob],
            "22004",
            "account_id must not be NULL",
        ),
        (
            alice,
            "SELECT billing.remove_team_member($1, $2)::text",
            vec![&team, &nil],
            "22004",
            "user_id must not be NULL",
        ),
        (
            carol,
            "SELECT billing.remove_team_member($1, $2)::text",
            vec![&team, &bob],
            "42501",
            "not owner or admin",
        ),
        (
            bob,
            "SELECT billing.spend_account_tokens($1, 10)::text",
            vec![&nil],
            "22004",
            "account_id must not be NULL",
        ),
        (
            bob,
            "SELECT billing.spend_account_tokens($1, NULL)::text",
            vec![&team],
            "22004",
            "amount must not be NULL",
        ),
        (
            bob,
            "SELECT billing.spend_account_tokens($1, 0)::text",
            vec![&team],
            "22023",
            "amount must be between",
        ),
        (
            bob,
            "SELECT billing.spend_account_tokens($1, 10, idempotency_key => $2)::text",
            vec![&team, &long],
            "22023",
            "idempotency_key must be 1 to 200",
        ),
        (
            bob,
            "SELECT billing.spend_account_tokens($1, 10, reason => repeat('r', 501))::text",
            vec![&team],
            "22023",
            "reason must be at most 500",
        ),
        (
            bob,
            "SELECT billing.spend_account_tokens($1, 101)::text",
            vec![&team],
            "BL001",
            "insufficient tokens",
        ),
        (
            carol,
            "SELECT billing.spend_account_tokens($1, 10)::text",
            vec![&team],
            "42501",
            "not a member of account",
        ),
        (
            bob,
            "SELECT billing.request_checkout('price_pack', account_id => $1)::text",
            vec![&carol],
            "42501",
            "not owner or admin",
        ),
        (
            bob,
            "SELECT billing.request_portal(account_id => $1)::text",
            vec![&team],
            "42501",
            "not owner or admin",
        ),
    ];
    for (who, sql, params, code, needle) in cases {
        let r = t.api.call(&Caller::User(who), sql, &params).await;
        assert_error(r, code, needle);
    }
    assert_eq!(
        before(&t.owner).await,
        start,
        "a refused call changes nothing"
    );
    // Not signed in: 28000 from every function a user calls.
    let no_user = [
        "SELECT billing.create_team('x')::text",
        "SELECT billing.remove_team_member(gen_random_uuid(), gen_random_uuid())::text",
        "SELECT billing.spend_account_tokens(gen_random_uuid(), 1)::text",
    ];
    for sql in no_user {
        let r = t
            .api
            .call_as("authenticated", r#"{"role":"authenticated"}"#, sql, &[])
            .await;
        assert_error(r, "28000", "not authenticated");
    }
}
