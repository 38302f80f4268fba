//! Team wallets with the issue 22 features (docs/teams.md, "The team's wallet"): a team's owners
//! and admins set its low-balance alert and auto top-up, its members spend and read the
//! notifications, the overage and the settings, and nobody else does; a member may change none of
//! it (42501, nothing written). `my_subscription()` answers for the active account, as
//! `has_feature` does. Every call connects as the client roles the way PostgREST does; the team's
//! subscription comes from Stripe-shaped webhook events in both API shapes. The worker charging
//! a team's saved card: worker_team_top_up.rs.
mod subscription_support;

use serde_json::Value;
use stripe_billing_tests::events::{unix_now, Shape};
use stripe_billing_tests::pg::{assert_error, Api, Caller, TestDb};
use subscription_support::*;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

/// A team Alice owns, with Dave as its admin and Bob as a member; Carol is in no team.
struct Team {
    db: TestDb,
    owner: Client,
    api: Api,
    team: Uuid,
    alice: Uuid,
    dave: Uuid,
    bob: Uuid,
    carol: Uuid,
}

/// subscription_support's catalog and webhook secret, plus the pack `pack` (500 tokens for 900
/// cents, its price known) and the plan `metered` (overage up to 500 tokens a period).
async fn team(tokens: i64) -> Team {
    let (db, owner) = setup().await;
    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens, tokens,
                                        overage_limit, meter_event_name) VALUES
                 ('pack', 'price_pack', 'Pack', 'token_pack', NULL, 500, NULL, NULL),
                 ('metered', 'price_metered', 'Metered', 'subscription', 1000, NULL, 500, 'tokens_over');
             INSERT INTO billing.prices (stripe_price_id, unit_amount, currency, synced_at)
                 VALUES ('price_pack', 900, 'usd', now());",
        )
        .await
        .unwrap();
    let mut api = db.api().await;
    let (alice, dave, bob, carol) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let team: Uuid = call(&mut api, alice, "SELECT billing.create_team('Acme')", &[])
        .await
        .unwrap()[0]
        .get(0);
    for (who, role) in [(dave, "admin"), (bob, "member")] {
        call(
            &mut api,
            alice,
            "SELECT billing.set_team_member($1, $2, $3)",
            &[&team, &who, &role],
        )
        .await
        .unwrap();
    }
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
        dave,
        bob,
        carol,
    }
}

async fn call(
    api: &mut Api,
    who: Uuid,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    api.call(&Caller::User(who), sql, params).await
}

async fn json(api: &mut Api, who: Uuid, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Value {
    call(api, who, sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))[0]
        .get(0)
}

async fn count(owner: &Client, sql: &str, team: Uuid) -> i64 {
    owner.query_one(sql, &[&team]).await.unwrap().get(0)
}

/// A member's spend from the team's wallet.
async fn spend(api: &mut Api, who: Uuid, team: Uuid, amount: i64) -> Value {
    json(
        api,
        who,
        "SELECT billing.spend_account_tokens($1, $2)",
        &[&team, &amount],
    )
    .await
}

/// The low_balance notifications `who` can read: (account, balance).
async fn low_balance_seen(api: &mut Api, who: Uuid) -> Vec<(Uuid, i64)> {
    call(
        api,
        who,
        "SELECT user_id, (payload ->> 'balance')::bigint FROM billing.notifications
         WHERE kind = 'low_balance' ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test]
async fn a_members_spend_across_the_teams_alert_notifies_the_team_once() {
    let mut t = team(1000).await;
    let (team, api) = (t.team, &mut t.api);
    let set = json(
        api,
        t.alice,
        "SELECT billing.set_my_low_balance_alert(300, account_id => $1)",
        &[&team],
    )
    .await;
    assert_eq!(set["user_id"], team.to_string().as_str(), "{set}");
    assert_eq!(set["effective_threshold"], 300, "{set}");
    // The admin changes it too; every member reads it, nobody else.
    json(
        api,
        t.dave,
        "SELECT billing.set_my_low_balance_alert(400, account_id => $1)",
        &[&team],
    )
    .await;
    for who in [t.alice, t.dave, t.bob] {
        let rows = call(
            api,
            who,
            "SELECT project_id, low_balance_threshold, threshold_from, armed
             FROM billing.my_credit_settings($1)",
            &[&team],
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 1);
        let seen: (Option<Uuid>, Option<i64>, String, bool) = (
            rows[0].get(0),
            rows[0].get(1),
            rows[0].get(2),
            rows[0].get(3),
        );
        assert_eq!(seen, (None, Some(400), "user".into(), true));
    }
    assert_error(
        call(
            api,
            t.carol,
            "SELECT * FROM billing.my_credit_settings($1)",
            &[&team],
        )
        .await,
        "42501",
        "permission denied",
    );
    // Each personal account keeps its own settings: Bob's follows the (unset) default.
    let own = call(
        api,
        t.bob,
        "SELECT threshold_from FROM billing.my_credit_settings()",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(own[0].get::<_, String>(0), "off");

    // Bob takes the team from 1000 to 500 (above), then to 350 (across), then to 200.
    for (amount, balance) in [(500, 500), (150, 350), (150, 200)] {
        assert_eq!(spend(api, t.bob, team, amount).await["balance"], balance);
    }
    assert_eq!(
        count(
            &t.owner,
            "SELECT count(*) FROM billing.notifications WHERE user_id = $1",
            team
        )
        .await,
        1,
        "one crossing, one notification, the team's"
    );
    for who in [t.alice, t.dave, t.bob] {
        assert_eq!(low_balance_seen(api, who).await, vec![(team, 350)]);
    }
    assert!(low_balance_seen(api, t.carol).await.is_empty());
    // A member removed reads the team's notifications no more.
    call(
        api,
        t.alice,
        "SELECT billing.remove_team_member($1, $2)",
        &[&team, &t.bob],
    )
    .await
    .unwrap();
    assert!(low_balance_seen(api, t.bob).await.is_empty());
}

#[tokio::test]
async fn members_may_not_change_the_teams_alert_or_auto_top_up() {
    let mut t = team(1000).await;
    let (team, api) = (t.team, &mut t.api);
    json(
        api,
        t.alice,
        "SELECT billing.set_my_auto_top_up('pack', 100, 2, 1800, account_id => $1)",
        &[&team],
    )
    .await;
    let settings = "SELECT (SELECT count(*) FROM billing.balance_alerts)
                           + (SELECT count(*) FROM billing.auto_top_ups WHERE enabled)
                           + (SELECT count(*) FROM billing.auto_top_ups WHERE threshold <> 100)
                    WHERE $1::uuid IS NOT NULL";
    let before = count(&t.owner, settings, team).await;
    // A member, an outsider, and the owner naming an account that does not exist: the same
    // answer, which tells nobody which team ids exist.
    let nowhere = Uuid::new_v4();
    for (who, account) in [(t.bob, team), (t.carol, team), (t.alice, nowhere)] {
        for sql in [
            "SELECT billing.set_my_low_balance_alert(5, account_id => $1)",
            "SELECT billing.set_my_low_balance_alert(NULL, enabled => false, account_id => $1)",
            "SELECT billing.set_my_auto_top_up('pack', 900, 2, 1800, account_id => $1)",
            "SELECT billing.disable_my_auto_top_up($1)",
        ] {
            assert_error(
                call(api, who, sql, &[&account]).await,
                "42501",
                "not owner or admin of account",
            );
        }
    }
    assert_error(
        call(
            api,
            t.alice,
            "SELECT * FROM billing.my_credit_settings($1)",
            &[&nowhere],
        )
        .await,
        "42501",
        "permission denied",
    );
    assert_eq!(
        count(&t.owner, settings, team).await,
        before,
        "nothing changed"
    );
    // The member's own account is theirs to set, and stays apart from the team's.
    let own = json(
        api,
        t.bob,
        "SELECT billing.set_my_low_balance_alert(5)",
        &[],
    )
    .await;
    assert_eq!(own["user_id"], t.bob.to_string().as_str());
    // The admin turns the team's auto top-up off, and a member sees why.
    let off = json(
        api,
        t.dave,
        "SELECT billing.disable_my_auto_top_up($1)",
        &[&team],
    )
    .await;
    assert_eq!(off["enabled"], false, "{off}");
    let seen = call(
        api,
        t.bob,
        "SELECT user_id, disabled_reason FROM billing.auto_top_ups",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].get::<_, Uuid>(0), team);
    assert_eq!(
        seen[0].get::<_, Option<String>>(1).as_deref(),
        Some("turned off by the user")
    );
}

#[tokio::test]
async fn a_teams_auto_top_up_queues_one_top_up_for_the_team() {
    let mut t = team(500).await;
    let team = t.team;
    let set = json(
        &mut t.api,
        t.alice,
        "SELECT billing.set_my_auto_top_up('pack', 100, 1, 10000, account_id => $1)",
        &[&team],
    )
    .await;
    assert_eq!(set["user_id"], team.to_string().as_str(), "{set}");
    // Bob and Dave spend 50 eight times at once: 500 down to 100, one spend crosses.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let who = if i % 2 == 0 { t.bob } else { t.dave };
        let mut api = t.db.api().await;
        tasks.push(tokio::spawn(async move {
            spend(&mut api, who, team, 50).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let requests = t
        .owner
        .query(
            "SELECT user_id, params ->> 'plan_id', (params ->> 'amount')::bigint
             FROM billing.stripe_requests WHERE kind = 'top_up'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(requests.len(), 1, "one top-up");
    let r = &requests[0];
    let queued: (Uuid, String, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(queued, (team, "pack".to_string(), 900));
    assert_eq!(
        count(
            &t.owner,
            "SELECT period_count::bigint FROM billing.auto_top_ups WHERE user_id = $1",
            team
        )
        .await,
        1
    );
    // Past the month's limit of one, the next crossing queues nothing and tells the team once:
    // every member reads it, with the one request; an outsider neither.
    t.owner
        .execute("SELECT billing.grant_tokens($1, 400)", &[&team])
        .await
        .unwrap();
    spend(&mut t.api, t.bob, team, 450).await;
    let seen = "SELECT jsonb_build_object(
                    'requests', (SELECT count(*) FROM billing.stripe_requests WHERE kind = 'top_up' AND user_id = $1),
                    'told', (SELECT count(*) FROM billing.notifications
                             WHERE kind = 'top_up_limit_reached' AND user_id = $1))";
    for (who, want) in [(t.alice, 1), (t.dave, 1), (t.bob, 1), (t.carol, 0)] {
        let got = json(&mut t.api, who, seen, &[&team]).await;
        assert_eq!(
            (got["requests"].clone(), got["told"].clone()),
            (want.into(), want.into()),
            "{got}"
        );
    }
}

/// The team's subscription to `price`, reported by Stripe's customer.subscription.created.
async fn subscribe(owner: &Client, team: Uuid, shape: Shape, price: &str) -> Subscriber {
    let mut s = Subscriber::new(shape);
    s.user = team;
    let now = unix_now();
    deliver(
        owner,
        &s.subscription_event(
            "customer.subscription.created",
            now,
            "active",
            price,
            period(now - DAY, 30),
        ),
    )
    .await;
    s
}

async fn overage_on_a_team_plan(shape: Shape) {
    let mut t = team(100).await;
    let team = t.team;
    let s = subscribe(&t.owner, team, shape, "price_metered").await;
    let spent = spend(&mut t.api, t.bob, team, 300).await;
    assert_eq!(
        (spent["amount"].clone(), spent["balance"].clone()),
        (300.into(), 0.into())
    );
    let row = t
        .owner
        .query_one(
            "SELECT o.user_id, o.tokens, o.stripe_subscription_id, r.user_id, r.params
             FROM billing.token_overages o JOIN billing.stripe_requests r ON r.id = o.request_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), team);
    assert_eq!(
        row.get::<_, i64>(1),
        200,
        "the part the wallet did not cover"
    );
    assert_eq!(row.get::<_, String>(2), s.sub);
    assert_eq!(row.get::<_, Uuid>(3), team);
    let params: Value = row.get(4);
    assert_eq!(
        params["stripe_customer_id"],
        s.customer.as_str(),
        "the team's customer is billed"
    );
    // Every member reads the team's overage; an outsider may not.
    for who in [t.alice, t.bob] {
        let o = json(
            &mut t.api,
            who,
            "SELECT billing.token_overage($1)",
            &[&team],
        )
        .await;
        assert_eq!(
            (o["allowed"].clone(), o["used"].clone(), o["left"].clone()),
            (true.into(), 200.into(), 300.into()),
            "{o}"
        );
        assert_eq!(o["subscription"], s.sub.as_str());
    }
    assert_error(
        call(
            &mut t.api,
            t.carol,
            "SELECT billing.token_overage($1)",
            &[&team],
        )
        .await,
        "42501",
        "permission denied",
    );
    // Past the period's room the member's spend fails and changes nothing.
    assert_error(
        call(
            &mut t.api,
            t.bob,
            "SELECT billing.spend_account_tokens($1, 301)",
            &[&team],
        )
        .await,
        "BL001",
        "",
    );
    assert_eq!(
        count(
            &t.owner,
            "SELECT count(*) FROM billing.token_overages WHERE user_id = $1",
            team
        )
        .await,
        1
    );
}

#[tokio::test]
async fn overage_on_a_team_plan_2023() {
    overage_on_a_team_plan(Shape::V2023).await;
}

#[tokio::test]
async fn overage_on_a_team_plan_basil() {
    overage_on_a_team_plan(Shape::Basil).await;
}

/// (active, plan) of `sql` as `who` with `headers`.
async fn subscribed(
    db: &TestDb,
    who: Uuid,
    headers: &str,
    sql: &str,
    team: Uuid,
) -> Result<(bool, Option<String>), tokio_postgres::Error> {
    let mut api = db.api().await;
    api.call_with_headers(&Caller::User(who), headers, sql, &[&team])
        .await
        .map(|rows| (rows[0].get(0), rows[0].get(1)))
}

async fn my_subscription_follows_the_active_account(shape: Shape) {
    let t = team(0).await;
    let team = t.team;
    subscribe(&t.owner, team, shape, "price_pro").await;
    // Bob also pays for Basic himself.
    let mut own = Subscriber::new(shape);
    own.user = t.bob;
    let now = unix_now();
    deliver(
        &t.owner,
        &own.subscription_event(
            "customer.subscription.created",
            now,
            "active",
            "price_basic",
            period(now - DAY, 30),
        ),
    )
    .await;
    t.owner
        .batch_execute(
            "INSERT INTO billing.plan_features (plan_id, feature) VALUES ('pro', 'export')",
        )
        .await
        .unwrap();
    let mine = "SELECT active, plan_id FROM billing.my_subscription() WHERE $1::uuid IS NOT NULL";
    let status =
        "SELECT active, plan_id FROM billing.subscription_status() WHERE $1::uuid IS NOT NULL";
    let named = "SELECT active, plan_id FROM billing.subscription_status($1)";
    let feature = "SELECT billing.has_feature('export'), NULL::text WHERE $1::uuid IS NOT NULL";
    let acme = format!(r#"{{"x-billing-account":"{team}"}}"#);
    let pro = (true, Some("pro".to_string()));
    let none = (false, None);
    // Without the header each answers for the personal account, as before.
    assert_eq!(
        subscribed(&t.db, t.bob, "{}", mine, team).await.unwrap(),
        (true, Some("basic".into()))
    );
    assert_eq!(
        subscribed(&t.db, t.alice, "{}", mine, team).await.unwrap(),
        none
    );
    // With it, for the team, like has_feature; also when the account is named.
    for who in [t.alice, t.dave, t.bob] {
        for sql in [mine, status] {
            assert_eq!(
                subscribed(&t.db, who, &acme, sql, team).await.unwrap(),
                pro,
                "{sql}"
            );
        }
        assert_eq!(
            subscribed(&t.db, who, "{}", named, team).await.unwrap(),
            pro
        );
        assert_eq!(
            subscribed(&t.db, who, &acme, feature, team).await.unwrap(),
            (true, None)
        );
    }
    // Someone not in the team gets what has_feature says: nothing, and may not name it.
    assert_eq!(
        subscribed(&t.db, t.carol, &acme, mine, team).await.unwrap(),
        none
    );
    assert_eq!(
        subscribed(&t.db, t.carol, &acme, feature, team)
            .await
            .unwrap(),
        (false, None)
    );
    assert_error(
        subscribed(&t.db, t.carol, "{}", named, team).await,
        "42501",
        "permission denied",
    );
    // The server still passes any account.
    let server = t
        .owner
        .query_one(
            "SELECT active, plan_id FROM billing.subscription_status($1)",
            &[&team],
        )
        .await
        .unwrap();
    assert_eq!((server.get(0), server.get(1)), pro);
}

#[tokio::test]
async fn my_subscription_follows_the_active_account_2023() {
    my_subscription_follows_the_active_account(Shape::V2023).await;
}

#[tokio::test]
async fn my_subscription_follows_the_active_account_basil() {
    my_subscription_follows_the_active_account(Shape::Basil).await;
}
