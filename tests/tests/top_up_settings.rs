//! Auto top-up in SQL (issue 22, item 2): the settings as each role sets them (bounded values,
//! deliberate SQLSTATEs, nothing changed by bad input, users only their own row), the spend
//! that crosses the threshold queueing exactly one top_up request even when many cross at once,
//! and the monthly limits. The worker's charge and the webhook's grant: worker_top_up.rs.
use stripe_billing_tests::pg::{assert_error, one, Api, Caller, TestDb};
use stripe_billing_tests::tokens::{grant, spend};
use tokio_postgres::Client;
use uuid::Uuid;

/// A catalog with a pack whose price is known (900 usd for 500 tokens), a subscription plan and
/// a pack whose price is not known.
async fn setup() -> (TestDb, Client, Api) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens, tokens) VALUES
                ('pack', 'price_pack', 'Pack', 'token_pack', NULL, 500),
                ('pro', 'price_pro', 'Pro', 'subscription', 1000, NULL),
                ('mystery', 'price_mystery', 'Mystery', 'token_pack', NULL, 10);
             INSERT INTO billing.prices (stripe_price_id, unit_amount, currency, synced_at)
             VALUES ('price_pack', 900, 'usd', now()), ('price_pro', 2000, 'usd', now());",
        )
        .await
        .unwrap();
    let api = db.api().await;
    (db, owner, api)
}

async fn set_mine(
    api: &mut Api,
    user: Uuid,
    args: &str,
) -> Result<serde_json::Value, tokio_postgres::Error> {
    api.one(
        &Caller::User(user),
        &format!("SELECT billing.set_my_auto_top_up({args})"),
        &[],
    )
    .await
}

async fn top_ups(owner: &Client, user: Uuid) -> i64 {
    one(
        owner,
        "SELECT count(*) FROM billing.stripe_requests WHERE user_id = $1 AND kind = 'top_up'",
        &[&user],
    )
    .await
}

#[tokio::test]
async fn users_set_their_own_settings_within_bounds() {
    let (_db, owner, mut api) = setup().await;
    let user = Uuid::new_v4();
    let bad = [
        ("NULL, 100, 3, 5000", "22004", "plan_id must not be NULL"),
        (
            "'pack', NULL, 3, 5000",
            "22004",
            "threshold must not be NULL",
        ),
        ("'nope', 100, 3, 5000", "P0002", "unknown plan 'nope'"),
        (
            "'pro', 100, 3, 5000",
            "22023",
            "plan pro is not a token pack for sale",
        ),
        (
            "'mystery', 100, 3, 5000",
            "55000",
            "the price of pack mystery is not known yet",
        ),
        (
            "'pack', -1, 3, 5000",
            "22023",
            "threshold must be between 0 and 1000000000000",
        ),
        (
            "'pack', 100, 0, 5000",
            "22023",
            "monthly_count_limit must be between 1 and 100",
        ),
        (
            "'pack', 100, 101, 5000",
            "22023",
            "monthly_count_limit must be between 1 and 100",
        ),
        (
            "'pack', 100, 3, 899",
            "22023",
            "monthly_amount_limit must be between one pack (900 usd)",
        ),
        (
            "'pack', 100, 3, 100000001",
            "22023",
            "monthly_amount_limit must be between",
        ),
    ];
    for (args, code, needle) in bad {
        assert_error(set_mine(&mut api, user, args).await, code, needle);
    }
    assert_eq!(
        one::<i64>(&owner, "SELECT count(*) FROM billing.auto_top_ups", &[]).await,
        0,
        "bad input changes nothing"
    );
    let (mine, denied) = (Caller::User(user), "permission denied");
    api.assert_refused(
        &[],
        &[(
            &Caller::Anon,
            "SELECT billing.set_my_auto_top_up('pack', 100, 3, 5000)",
            "42501",
            denied,
        )],
    )
    .await;

    let set = set_mine(&mut api, user, "'pack', 100, 3, 5000")
        .await
        .unwrap();
    assert_eq!(set["enabled"], true);
    assert_eq!(set["threshold"], 100);
    assert_eq!(set["count_this_month"], 0);
    // Users read their own row, not others'; they cannot write it directly.
    let other = Uuid::new_v4();
    owner
        .execute(
            "SELECT billing.set_auto_top_up($1, 'pack', 10, 1, 900)",
            &[&other],
        )
        .await
        .unwrap();
    let seen: i64 = api
        .one(&mine, "SELECT count(*) FROM billing.auto_top_ups", &[])
        .await
        .unwrap();
    assert_eq!(seen, 1, "only their own row");
    api.assert_refused(
        &[],
        &[(
            &mine,
            "UPDATE billing.auto_top_ups SET threshold = 0",
            "42501",
            denied,
        )],
    )
    .await;
    api.assert_refused(
        &[&user],
        &[(
            &mine,
            "SELECT billing.set_auto_top_up($1, 'pack', 1, 1, 900)",
            "42501",
            denied,
        )],
    )
    .await;
    let off: serde_json::Value = api
        .one(&mine, "SELECT billing.disable_my_auto_top_up()", &[])
        .await
        .unwrap();
    assert_eq!(off["enabled"], false);
    assert_eq!(off["disabled_reason"], "turned off by the user");
    api.assert_refused(
        &[],
        &[(
            &Caller::User(Uuid::new_v4()),
            "SELECT billing.disable_my_auto_top_up()",
            "P0002",
            "auto top-up is not set up",
        )],
    )
    .await;
}

#[tokio::test]
async fn the_spend_that_crosses_the_threshold_queues_one_top_up() {
    let (_db, owner, mut api) = setup().await;
    let user = Uuid::new_v4();
    set_mine(&mut api, user, "'pack', 100, 3, 5000")
        .await
        .unwrap();
    grant(&owner, user, 300).await;
    spend(&owner, user, 150).await; // 150: above
    assert_eq!(top_ups(&owner, user).await, 0);
    spend(&owner, user, 50).await; // 100: crosses
    assert_eq!(top_ups(&owner, user).await, 1);
    spend(&owner, user, 50).await; // 50: below already, no second
    assert_eq!(top_ups(&owner, user).await, 1);
    let params: serde_json::Value = owner
        .query_one(
            "SELECT params FROM billing.stripe_requests WHERE kind = 'top_up'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        params,
        serde_json::json!({"plan_id": "pack", "price_id": "price_pack", "tokens": 500, "amount": 900, "currency": "usd"})
    );
    // A project's balance is not the user's: no top-up for it.
    let project = Uuid::new_v4();
    owner
        .execute(
            "INSERT INTO billing.projects (id, user_id, name) VALUES ($1, $2, 'p')",
            &[&project, &user],
        )
        .await
        .unwrap();
    owner
        .execute(
            "SELECT billing.grant_tokens($1, 500, project_id => $2)",
            &[&user, &project],
        )
        .await
        .unwrap();
    owner
        .execute(
            "SELECT billing.spend_tokens($1, 450, $2)",
            &[&user, &project],
        )
        .await
        .unwrap();
    assert_eq!(top_ups(&owner, user).await, 1);
}

#[tokio::test]
async fn concurrent_spends_crossing_at_once_queue_exactly_one() {
    let (db, owner, mut api) = setup().await;
    for round in 0..5 {
        let user = Uuid::new_v4();
        set_mine(&mut api, user, "'pack', 300, 3, 5000")
            .await
            .unwrap();
        // Grants of several sizes, so spends take from different grants.
        for tokens in [100, 150, 250] {
            grant(&owner, user, tokens).await;
        }
        let mut tasks = Vec::new();
        for i in 0..8 {
            let dsn = db.dsn.clone();
            tasks.push(tokio::spawn(async move {
                let c = stripe_billing_tests::pg::connect(&dsn).await;
                c.query_one(
                    "SELECT billing.spend_tokens($1, 50, reason => $2)",
                    &[&user, &format!("s{i}")],
                )
                .await
                .map(|_| ())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            top_ups(&owner, user).await,
            1,
            "round {round}: one top-up for one crossing"
        );
    }
}

#[tokio::test]
async fn the_monthly_limit_queues_nothing_and_tells_the_user_once() {
    let (_db, owner, mut api) = setup().await;
    let user = Uuid::new_v4();
    // One top-up a month; the amount limit allows two.
    set_mine(&mut api, user, "'pack', 100, 1, 1800")
        .await
        .unwrap();
    grant(&owner, user, 200).await;
    spend(&owner, user, 150).await;
    assert_eq!(top_ups(&owner, user).await, 1);
    // The first is over (the webhook granted it, say); the balance rises and crosses again.
    owner
        .execute("UPDATE billing.stripe_requests SET status = 'failed', error = 'x', finished_at = now() WHERE kind = 'top_up'", &[])
        .await
        .unwrap();
    for _ in 0..3 {
        grant(&owner, user, 500).await;
        let balance = spend(&owner, user, 500).await["balance"].as_i64().unwrap();
        assert!(balance <= 100);
    }
    assert_eq!(
        top_ups(&owner, user).await,
        1,
        "past the count limit: nothing queued"
    );
    let notified: i64 = one(
        &owner,
        "SELECT count(*) FROM billing.notifications WHERE kind = 'top_up_limit_reached'",
        &[],
    )
    .await;
    assert_eq!(notified, 1, "told once a month");
    let payload: serde_json::Value = one(
        &owner,
        "SELECT payload FROM billing.notifications WHERE kind = 'top_up_limit_reached'",
        &[],
    )
    .await;
    assert_eq!(payload["count"], 1);
    assert_eq!(payload["monthly_count_limit"], 1);

    // The amount limit: two packs allowed by count, one by amount.
    let frugal = Uuid::new_v4();
    set_mine(&mut api, frugal, "'pack', 100, 5, 1000")
        .await
        .unwrap();
    grant(&owner, frugal, 200).await;
    spend(&owner, frugal, 150).await;
    owner
        .execute("UPDATE billing.stripe_requests SET status = 'failed', error = 'x', finished_at = now() WHERE user_id = $1", &[&frugal])
        .await
        .unwrap();
    grant(&owner, frugal, 500).await;
    spend(&owner, frugal, 500).await;
    assert_eq!(
        top_ups(&owner, frugal).await,
        1,
        "a second pack would pass the amount limit"
    );
}

#[tokio::test]
async fn a_turned_off_top_up_queues_nothing() {
    let (_db, owner, mut api) = setup().await;
    let user = Uuid::new_v4();
    set_mine(&mut api, user, "'pack', 100, 3, 5000")
        .await
        .unwrap();
    api.call(
        &Caller::User(user),
        "SELECT billing.disable_my_auto_top_up()",
        &[],
    )
    .await
    .unwrap();
    grant(&owner, user, 200).await;
    spend(&owner, user, 150).await;
    assert_eq!(top_ups(&owner, user).await, 0);
}
