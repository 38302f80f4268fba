//! Teams (issue 23, item 1; DESIGN.md, "Accounts"): a team account owns a wallet, a customer and
//! subscriptions; its owners and admins buy and manage members, its members spend within their
//! monthly limits, and a member removed mid-spend can do nothing more. Every call connects as the
//! client roles the way PostgREST does. Reading, features and bad input: teams_access.rs.
mod common;
mod teams_support;

use common::add_customer;
use serde_json::Value;
use stripe_billing_tests::pg::{assert_error, Caller};
use teams_support::*;
use uuid::Uuid;

#[tokio::test]
async fn owners_and_admins_buy_and_manage_members_and_members_do_not() {
    let mut t = team(0).await;
    let (team, alice, bob, carol) = (t.team, t.alice, t.bob, t.carol);
    let api = &mut t.api;

    // Alice buys for the team, a seat for each member and more: the request is the team's,
    // so its customer will be too.
    let request: Uuid = one(
        api,
        alice,
        "SELECT billing.request_checkout('price_pro', quantity => 5, account_id => $1)",
        &[&team],
    )
    .await
    .unwrap();
    let for_account: Uuid = t
        .owner
        .query_one(
            "SELECT user_id FROM billing.stripe_requests WHERE id = $1",
            &[&request],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(for_account, team);
    let awaited: Value = one(
        api,
        alice,
        "SELECT billing.await_request($1, 0)",
        &[&request],
    )
    .await
    .unwrap();
    assert_eq!(awaited["status"], "pending", "{awaited}");
    // A member may not buy, open the portal or wait on the owner's request; an outsider neither.
    for who in [Caller::User(bob), Caller::User(carol)] {
        api.assert_refused(
            &[&team],
            &[
                (
                    &who,
                    "SELECT billing.request_checkout('price_pack', account_id => $1)",
                    "42501",
                    "not owner or admin of account",
                ),
                (
                    &who,
                    "SELECT billing.request_portal(account_id => $1)",
                    "42501",
                    "not owner or admin",
                ),
            ],
        )
        .await;
        api.assert_refused(
            &[&request],
            &[(
                &who,
                "SELECT billing.await_request($1, 0)",
                "P0002",
                "not found",
            )],
        )
        .await;
    }
    // The team's customer opens the team's portal for its admins.
    add_customer(&t.owner, team, "cus_team").await;
    one::<Uuid>(
        api,
        alice,
        "SELECT billing.request_portal(account_id => $1)",
        &[&team],
    )
    .await
    .unwrap();

    // Members manage nobody; admins manage members and admins, not owners.
    assert_error(
        one::<Value>(
            api,
            bob,
            "SELECT billing.set_team_member($1, $2)",
            &[&team, &carol],
        )
        .await,
        "42501",
        "not owner or admin",
    );
    one::<Value>(
        api,
        alice,
        "SELECT billing.set_team_member($1, $2, 'admin')",
        &[&team, &carol],
    )
    .await
    .unwrap();
    let dave = Uuid::new_v4();
    one::<Value>(
        api,
        carol,
        "SELECT billing.set_team_member($1, $2, 'member', 50)",
        &[&team, &dave],
    )
    .await
    .unwrap();
    assert_error(
        one::<Value>(
            api,
            carol,
            "SELECT billing.set_team_member($1, $2, 'owner')",
            &[&team, &dave],
        )
        .await,
        "42501",
        "only an owner may make or change an owner",
    );
    assert_error(
        one::<bool>(
            api,
            carol,
            "SELECT billing.remove_team_member($1, $2)",
            &[&team, &alice],
        )
        .await,
        "42501",
        "only an owner may remove an owner",
    );
    // The last owner stays: neither removed nor demoted.
    let as_alice = Caller::User(alice);
    api.assert_refused(
        &[&team, &alice],
        &[
            (
                &as_alice,
                "SELECT billing.remove_team_member($1, $2)",
                "BL021",
                "without an owner",
            ),
            (
                &as_alice,
                "SELECT billing.set_team_member($1, $2, 'admin')",
                "BL021",
                "without an owner",
            ),
        ],
    )
    .await;
    // With a second owner, the first may step down.
    one::<Value>(
        api,
        alice,
        "SELECT billing.set_team_member($1, $2, 'owner')",
        &[&team, &carol],
    )
    .await
    .unwrap();
    assert!(one::<bool>(
        api,
        alice,
        "SELECT billing.remove_team_member($1, $2)",
        &[&team, &alice]
    )
    .await
    .unwrap());
    // Anyone may leave; leaving twice is a no-op.
    assert!(one::<bool>(
        api,
        bob,
        "SELECT billing.remove_team_member($1, $2)",
        &[&team, &bob]
    )
    .await
    .unwrap());
    let roles: Vec<(Uuid, String)> = t
        .owner
        .query(
            "SELECT user_id, role FROM billing.account_members WHERE account_id = $1 ORDER BY role",
            &[&team],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        roles,
        vec![(dave, "member".to_string()), (carol, "owner".to_string())]
    );
}

#[tokio::test]
async fn members_spend_concurrently_within_their_monthly_limits() {
    let mut t = team(100_000).await;
    let (team, alice) = (t.team, t.alice);
    let (carol, dave) = (t.carol, Uuid::new_v4());
    for (who, limit) in [(t.bob, Some(100_i64)), (carol, Some(100)), (dave, None)] {
        one::<Value>(
            &mut t.api,
            alice,
            "SELECT billing.set_team_member($1, $2, 'member', $3)",
            &[&team, &who, &limit],
        )
        .await
        .unwrap();
    }
    // Bob, Carol and Dave each try 15 spends of 10 tokens at once, on their own connections.
    let mut tasks = Vec::new();
    for who in [t.bob, carol, dave] {
        for _ in 0..15 {
            let mut api = t.db.api().await;
            tasks.push(tokio::spawn(async move {
                let r = api
                    .call(
                        &Caller::User(who),
                        "SELECT billing.spend_account_tokens($1, 10)",
                        &[&team],
                    )
                    .await;
                (
                    who,
                    r.map(|_| ()).map_err(|e| {
                        e.as_db_error()
                            .map(|d| d.code().code().to_string())
                            .unwrap_or_default()
                    }),
                )
            }));
        }
    }
    let mut ok = std::collections::HashMap::<Uuid, i64>::new();
    for task in tasks {
        let (who, r) = task.await.unwrap();
        match r {
            Ok(()) => *ok.entry(who).or_default() += 1,
            Err(code) => assert_eq!(code, "BL020", "only the limit refuses"),
        }
    }
    assert_eq!(ok[&t.bob], 10, "Bob's 100 tokens a month, exactly");
    assert_eq!(ok[&carol], 10, "Carol's 100 tokens a month, exactly");
    assert_eq!(ok[&dave], 15, "Dave has no limit");
    let balance: i64 = one(
        &mut t.api,
        t.bob,
        "SELECT billing.token_balance($1)",
        &[&team],
    )
    .await
    .unwrap();
    assert_eq!(balance, 100_000 - 350);
    // Each spend records who spent; the team's wallet paid for all of them.
    let by: Vec<(Uuid, i64)> = t
        .owner
        .query(
            "SELECT spent_by, sum(amount)::bigint FROM billing.token_spends WHERE user_id = $1
             GROUP BY spent_by ORDER BY 2, 1",
            &[&team],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut expected = vec![(t.bob, 100), (carol, 100), (dave, 150)];
    expected.sort_by_key(|(u, n)| (*n, *u));
    assert_eq!(by, expected);
    // At the limit, a replay of a spend made earlier still answers with that spend, and the
    // keys are each member's own: Dave's "k" is not Bob's.
    one::<Value>(
        &mut t.api,
        alice,
        "SELECT billing.set_team_member($1, $2, 'member', 110)",
        &[&team, &t.bob],
    )
    .await
    .unwrap();
    let keyed = "SELECT billing.spend_account_tokens($1, 10, idempotency_key => 'k')";
    let first: Value = one(&mut t.api, t.bob, keyed, &[&team]).await.unwrap();
    let again: Value = one(&mut t.api, t.bob, keyed, &[&team]).await.unwrap();
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["spend_id"], first["spend_id"]);
    let daves: Value = one(&mut t.api, dave, keyed, &[&team]).await.unwrap();
    assert_eq!(daves["duplicate"], false, "{daves}");
    assert_error(
        one::<Value>(
            &mut t.api,
            t.bob,
            "SELECT billing.spend_account_tokens($1, 1)",
            &[&team],
        )
        .await,
        "BL020",
        "spend limit reached",
    );
    // A personal spend through the same function is the user's own, without a limit.
    t.owner
        .execute("SELECT billing.grant_tokens($1, 5)", &[&t.bob])
        .await
        .unwrap();
    let mine: Value = one(
        &mut t.api,
        t.bob,
        "SELECT billing.spend_account_tokens($1, 5)",
        &[&t.bob],
    )
    .await
    .unwrap();
    assert_eq!(mine["balance"], 0, "{mine}");
}

#[tokio::test]
async fn a_member_removed_mid_spend_can_no_longer_spend_or_read() {
    let mut t = team(1000).await;
    let (team, alice, bob) = (t.team, t.alice, t.bob);
    // Bob's spend is in flight (not committed) when Alice removes him: the removal waits for it.
    let mut bob_conn = t.db.owner().await;
    let tx = bob_conn.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL role authenticated; \
         SELECT set_config('request.jwt.claims', '{{\"sub\":\"{bob}\",\"role\":\"authenticated\"}}', true); \
         SELECT billing.spend_account_tokens('{team}', 40)"
    ))
    .await
    .unwrap();
    let mut alice_api = t.db.api().await;
    let removal = tokio::spawn(async move {
        alice_api
            .call(
                &Caller::User(alice),
                "SELECT billing.remove_team_member($1, $2)",
                &[&team, &bob],
            )
            .await
            .map(|rows| rows[0].get::<_, bool>(0))
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !removal.is_finished(),
        "the removal waits for the spend in flight"
    );
    tx.commit().await.unwrap();
    assert!(removal.await.unwrap().unwrap(), "Bob was a member");

    // The spend that was in flight stands; Bob can do nothing more with the team.
    assert_eq!(
        count(
            &t.owner,
            "SELECT count(*) FROM billing.token_spends WHERE spent_by IS NOT NULL"
        )
        .await,
        1
    );
    let api = &mut t.api;
    let as_bob = Caller::User(bob);
    api.assert_refused(
        &[&team],
        &[
            (
                &as_bob,
                "SELECT billing.spend_account_tokens($1, 1)",
                "42501",
                "not a member of account",
            ),
            (
                &as_bob,
                "SELECT billing.token_balance($1)",
                "42501",
                "you can only read your own balance or that of a team",
            ),
        ],
    )
    .await;
    for table in [
        "token_grants",
        "token_spends",
        "accounts",
        "account_members",
    ] {
        let seen: i64 = one(
            api,
            bob,
            &format!("SELECT count(*) FROM billing.{table}"),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(
            seen, 0,
            "Bob reads no {table} of the team after his removal"
        );
    }
    let balance: i64 = one(api, alice, "SELECT billing.token_balance($1)", &[&team])
        .await
        .unwrap();
    assert_eq!(balance, 960);
}
