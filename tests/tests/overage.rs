//! Tier 3: metered overage (issue 22, item 4; DESIGN.md, "Metered overage"). A subscription
//! plan with `overage_limit` lets a spend go on beyond the balance up to that many tokens per
//! billing period; the uncovered part is a `token_overages` row and one queued `meter_event`
//! request per spend. Beyond the limit the spend fails with BL001 and changes nothing, a new
//! period starts from zero, and no grant ever repays overage (Stripe bills it). The worker's
//! side, reporting each spend once to Stripe, is worker_overage.rs.

use serde_json::Value;
use stripe_billing_tests::pg::{assert_error, Caller, TestDb};
use tokio_postgres::types::{FromSqlOwned, ToSql};
use tokio_postgres::Client;
use uuid::Uuid;

const SPEND: &str =
    "SELECT billing.spend_tokens($1::uuid, $2::bigint, idempotency_key => $3::text)";

async fn one<T: FromSqlOwned>(c: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T {
    let r = c.query_one(sql, params).await;
    r.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// The catalog: `metered` allows 500 tokens of overage a period on the meter `tokens_over`;
/// `flat` allows none.
async fn seed(owner: &Client) {
    owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens,
                                        overage_limit, meter_event_name) VALUES
                ('metered', 'price_metered', 'Metered', 'subscription', 1000, 500, 'tokens_over'),
                ('flat', 'price_flat', 'Flat', 'subscription', 1000, NULL, NULL);",
        )
        .await
        .expect("seed plans");
}

/// A user with an active subscription to `plan` in a period that started a day ago, and
/// `tokens` granted; returns (user, subscription, customer).
async fn subscriber(owner: &Client, plan: &str, tokens: i64) -> (Uuid, String, String) {
    let user = Uuid::new_v4();
    let sub = format!("sub_{}", Uuid::new_v4().simple());
    let customer = format!("cus_{}", Uuid::new_v4().simple());
    owner
        .execute(
            "INSERT INTO billing.subscriptions (stripe_subscription_id, user_id, stripe_customer_id,
                 plan_id, stripe_price_id, status, current_period_start, current_period_end)
             VALUES ($1, $2, $3, $4, 'price_' || $4, 'active', now() - interval '1 day',
                     now() + interval '29 days')",
            &[&sub, &user, &customer, &plan],
        )
        .await
        .unwrap();
    if tokens > 0 {
        owner
            .execute("SELECT billing.grant_tokens($1, $2)", &[&user, &tokens])
            .await
            .unwrap();
    }
    (user, sub, customer)
}

async fn balance(owner: &Client, user: Uuid) -> i64 {
    one(owner, "SELECT billing.token_balance($1)", &[&user]).await
}

/// What a refused spend must leave untouched: the user's spends, allocations, overage rows,
/// queued requests and balance.
async fn footprint(owner: &Client, user: Uuid) -> Vec<i64> {
    let row = owner
        .query_one(
            "SELECT (SELECT count(*) FROM billing.token_spends WHERE user_id = $1),
                    (SELECT count(*) FROM billing.token_spend_allocations WHERE user_id = $1),
                    (SELECT count(*) FROM billing.token_overages WHERE user_id = $1),
                    (SELECT count(*) FROM billing.stripe_requests WHERE user_id = $1),
                    billing.token_balance($1)",
            &[&user],
        )
        .await
        .unwrap();
    (0..5).map(|i| row.get(i)).collect()
}

#[tokio::test]
async fn a_spend_beyond_the_balance_goes_into_overage_within_the_limit() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner).await;
    let (user, sub, customer) = subscriber(&owner, "metered", 100).await;

    let spent: Value = one(&owner, SPEND, &[&user, &300i64, &"job-1"]).await;
    assert_eq!(spent["amount"], 300);
    assert_eq!(spent["balance"], 0, "the balance never goes below zero");
    assert_eq!(balance(&owner, user).await, 0);
    let row = owner
        .query_one(
            "SELECT o.tokens, o.stripe_subscription_id, o.status, o.identifier, o.spend_id,
                    r.kind, r.params, r.status
             FROM billing.token_overages o JOIN billing.stripe_requests r ON r.id = o.request_id
             WHERE o.user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 200, "the uncovered part");
    assert_eq!(row.get::<_, String>(1), sub);
    assert_eq!(row.get::<_, String>(2), "pending");
    let identifier: String = row.get(3);
    assert_eq!(row.get::<_, i64>(4), spent["spend_id"].as_i64().unwrap());
    assert_eq!(row.get::<_, String>(5), "meter_event");
    let params: Value = row.get(6);
    assert_eq!(params["event_name"], "tokens_over");
    assert_eq!(params["stripe_customer_id"], customer.as_str());
    assert_eq!(params["value"], 200);
    assert_eq!(params["identifier"], identifier.as_str());
    let now: f64 = one(&owner, "SELECT extract(epoch FROM now())::float8", &[]).await;
    assert!((params["timestamp"].as_f64().unwrap() - now).abs() < 5.0);
    // The allocations cover the balance, the overage the rest.
    let allocated: i64 = one(
        &owner,
        "SELECT sum(tokens)::bigint FROM billing.token_spend_allocations WHERE spend_id = $1",
        &[&spent["spend_id"].as_i64().unwrap()],
    )
    .await;
    assert_eq!(allocated, 100);

    // The same spend again is the first one: no second overage, no second meter event.
    let again: Value = one(&owner, SPEND, &[&user, &300i64, &"job-1"]).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(footprint(&owner, user).await[2..4], [1, 1]);

    // The user reads their own overage; a spend with nothing left takes only from it.
    let mut api = db.api().await;
    let me = Caller::User(user);
    let mine = api
        .call(&me, "SELECT billing.token_overage()", &[])
        .await
        .unwrap();
    let mine: Value = mine[0].get(0);
    assert_eq!(
        (
            &mine["allowed"],
            &mine["limit"],
            &mine["used"],
            &mine["left"]
        ),
        (
            &Value::from(true),
            &Value::from(500),
            &Value::from(200),
            &Value::from(300)
        )
    );
    let rows = api
        .call(&me, "SELECT billing.spend_my_tokens(300)", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, Value>(0)["balance"], 0);
    let seen: i64 = api
        .call(
            &me,
            "SELECT sum(tokens)::bigint FROM billing.token_overages",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(seen, 500, "users read their own overage rows");
    let other = Caller::User(Uuid::new_v4());
    let none: i64 = api
        .call(&other, "SELECT count(*) FROM billing.token_overages", &[])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(none, 0, "and nobody else's");
    assert_error(
        api.call(&other, "SELECT billing.token_overage($1)", &[&user])
            .await,
        "42501",
        "only read your own overage",
    );
}

#[tokio::test]
async fn beyond_the_limit_or_without_an_overage_plan_the_spend_fails_and_changes_nothing() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner).await;
    let (user, sub, _) = subscriber(&owner, "metered", 100).await;
    one::<Value>(&owner, SPEND, &[&user, &500i64, &"a"]).await; // 400 of 500 used
    let before = footprint(&owner, user).await;
    assert_error(
        owner.query_one(SPEND, &[&user, &101i64, &"b"]).await,
        "BL001",
        "insufficient tokens: balance 0, requested 101",
    );
    assert_eq!(footprint(&owner, user).await, before, "nothing changed");
    // Exactly up to the limit is fine.
    one::<Value>(&owner, SPEND, &[&user, &100i64, &"c"]).await;
    let used: i64 = one(
        &owner,
        "SELECT sum(tokens)::bigint FROM billing.token_overages WHERE stripe_subscription_id = $1",
        &[&sub],
    )
    .await;
    assert_eq!(used, 500);

    // A plan without overage, a subscription that is not active, a project's balance: BL001.
    let (flat, _, _) = subscriber(&owner, "flat", 100).await;
    let before = footprint(&owner, flat).await;
    assert_error(
        owner.query_one(SPEND, &[&flat, &101i64, &"x"]).await,
        "BL001",
        "insufficient tokens: balance 100, requested 101",
    );
    assert_eq!(footprint(&owner, flat).await, before);
    let (late, late_sub, _) = subscriber(&owner, "metered", 0).await;
    owner
        .execute(
            "UPDATE billing.subscriptions SET status = 'past_due' WHERE stripe_subscription_id = $1",
            &[&late_sub],
        )
        .await
        .unwrap();
    assert_error(
        owner.query_one(SPEND, &[&late, &1i64, &"y"]).await,
        "BL001",
        "insufficient tokens",
    );
    let project = Uuid::new_v4();
    owner
        .execute(
            "INSERT INTO billing.projects (id, user_id) VALUES ($1, $2)",
            &[&project, &user],
        )
        .await
        .unwrap();
    assert_error(
        owner
            .query_one(
                "SELECT billing.spend_tokens($1, 1, project_id => $2)",
                &[&user, &project],
            )
            .await,
        "BL001",
        "insufficient tokens",
    );
    assert_eq!(
        footprint(&owner, late).await[2..4],
        [0, 0],
        "no overage, no meter event"
    );
}

#[tokio::test]
async fn a_new_period_starts_the_limit_again() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner).await;
    let (user, sub, _) = subscriber(&owner, "metered", 0).await;
    one::<Value>(&owner, SPEND, &[&user, &500i64, &"p1"]).await;
    assert_error(
        owner.query_one(SPEND, &[&user, &1i64, &"p1-more"]).await,
        "BL001",
        "insufficient tokens",
    );
    // The renewal moves the period on (as a subscription event would).
    owner
        .execute(
            "UPDATE billing.subscriptions SET current_period_start = now() - interval '1 minute',
                    current_period_end = now() + interval '30 days'
             WHERE stripe_subscription_id = $1",
            &[&sub],
        )
        .await
        .unwrap();
    one::<Value>(&owner, SPEND, &[&user, &500i64, &"p2"]).await;
    let periods: i64 = one(
        &owner,
        "SELECT count(DISTINCT period_start) FROM billing.token_overages WHERE user_id = $1",
        &[&user],
    )
    .await;
    assert_eq!(periods, 2);
    // A period that has ended (the renewal not reported yet) allows nothing.
    owner
        .execute(
            "UPDATE billing.subscriptions SET current_period_end = now() - interval '1 second'
             WHERE stripe_subscription_id = $1",
            &[&sub],
        )
        .await
        .unwrap();
    let allowed: Value = one(&owner, "SELECT billing.token_overage($1)", &[&user]).await;
    assert_eq!(allowed["allowed"], false);
}

#[tokio::test]
async fn the_next_grant_does_not_repay_overage() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner).await;
    let (user, _, _) = subscriber(&owner, "metered", 100).await;
    one::<Value>(&owner, SPEND, &[&user, &400i64, &"over"]).await;
    assert_eq!(balance(&owner, user).await, 0);
    // Stripe bills the 300: the next period's grant is the user's in full, and nothing is owed.
    owner
        .execute("SELECT billing.grant_tokens($1, 1000)", &[&user])
        .await
        .unwrap();
    assert_eq!(balance(&owner, user).await, 1000);
    let debt: i64 = one(&owner, "SELECT billing.token_debt($1)", &[&user]).await;
    assert_eq!(debt, 0);
    let repaid: i64 = one(
        &owner,
        "SELECT count(*) FROM billing.token_spends WHERE user_id = $1",
        &[&user],
    )
    .await;
    assert_eq!(repaid, 1, "no repayment spend");
}

#[tokio::test]
async fn concurrent_spends_never_take_more_overage_than_the_limit() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner).await;
    let (user, _, _) = subscriber(&owner, "metered", 100).await;
    // 8 sessions, 5 spends of 60 each: 100 of balance and 500 of overage fit 10 of them.
    let mut sessions = Vec::new();
    for s in 0..8 {
        let c = db.owner().await;
        sessions.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..5 {
                let key = format!("s{s}-{i}");
                match c.query_one(SPEND, &[&user, &60i64, &key]).await {
                    Ok(_) => ok += 1,
                    Err(e) => assert_eq!(e.as_db_error().unwrap().code().code(), "BL001", "{e}"),
                }
            }
            ok
        }));
    }
    let mut succeeded = 0;
    for s in sessions {
        succeeded += s.await.unwrap();
    }
    assert_eq!(succeeded, 10, "600 tokens are 10 spends of 60");
    let row = owner
        .query_one(
            "SELECT (SELECT sum(tokens)::bigint FROM billing.token_overages WHERE user_id = $1),
                    (SELECT count(*) FROM billing.stripe_requests WHERE user_id = $1 AND kind = 'meter_event'),
                    (SELECT sum(amount)::bigint FROM billing.token_spends WHERE user_id = $1)",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 500);
    assert_eq!(
        row.get::<_, i64>(1),
        9,
        "one meter event per spend that went into overage"
    );
    assert_eq!(row.get::<_, i64>(2), 600);
    assert_eq!(balance(&owner, user).await, 0);
}

/// Claims every ready request as worker `w` and fails the meter events among them for good,
/// as the worker does when Stripe stayed down for all their attempts.
/// (A claim takes one request of each user, so it claims until nothing is left.)
async fn fail_meter_events(owner: &Client) {
    loop {
        let claimed = owner
            .query(
                "SELECT id, attempts, kind FROM billing.claim_requests('w', 1000, 60)",
                &[],
            )
            .await
            .unwrap();
        if claimed.is_empty() {
            return;
        }
        for r in claimed {
            let (id, attempt, kind): (Uuid, i32, String) = (r.get(0), r.get(1), r.get(2));
            assert_eq!(kind, "meter_event");
            let status: String = one(
                owner,
                "SELECT billing.fail_request($1, 'w', 'Stripe answered 503', $2)",
                &[&id, &attempt],
            )
            .await;
            assert_eq!(status, "failed");
        }
    }
}

/// (status, request id, request params) of a user's overage rows, in the order of their spends.
async fn overages(owner: &Client, user: Uuid) -> Vec<(String, Uuid, Value)> {
    owner
        .query(
            "SELECT o.status, o.request_id, r.params FROM billing.token_overages o
             LEFT JOIN billing.stripe_requests r ON r.id = o.request_id
             WHERE o.user_id = $1 ORDER BY o.id",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get::<_, Option<Value>>(2).unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[tokio::test]
async fn failed_meter_events_within_stripes_window_are_sent_again_once() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner).await;
    let (user, _, customer) = subscriber(&owner, "metered", 0).await;
    for key in ["job-1", "job-2", "job-3"] {
        one::<Value>(&owner, SPEND, &[&user, &40i64, &key]).await;
    }
    let first = overages(&owner, user).await;
    fail_meter_events(&owner).await;
    assert!(overages(&owner, user).await.iter().all(|o| o.0 == "failed"));
    // The second's spend is older than Stripe takes (35 days; 34 with a day in hand), and the
    // third's request was pruned: it is made again from the overage and its subscription.
    owner
        .execute(
            "UPDATE billing.token_overages SET created_at = now() - interval '34 days 1 hour' WHERE request_id = $1",
            &[&first[1].1],
        )
        .await
        .unwrap();
    owner
        .execute(
            "DELETE FROM billing.stripe_requests WHERE id = $1",
            &[&first[2].1],
        )
        .await
        .unwrap();

    let out: Value = one(&owner, "SELECT billing.retry_failed_meter_events()", &[]).await;
    assert_eq!(
        out,
        serde_json::json!({"requeued": 2, "still_failed": 1, "too_old": 1, "too_old_tokens": 40})
    );
    let now = overages(&owner, user).await;
    for i in [0, 2] {
        assert_eq!(now[i].0, "pending");
        assert_ne!(now[i].1, first[i].1, "a new request");
        // The very event first sent: same identifier (Stripe keeps one per identifier), same
        // timestamp (the usage lands in the period it was spent in).
        assert_eq!(now[i].2, first[i].2, "overage {i}");
    }
    assert_eq!(now[2].2["stripe_customer_id"], customer.as_str());
    assert_eq!(now[1].0, "failed");
    let again: Value = one(&owner, "SELECT billing.retry_failed_meter_events()", &[]).await;
    assert_eq!(
        again["requeued"], 0,
        "each failed event is queued again once"
    );

    // The new requests' outcome is the overage's, as before.
    let claimed = owner
        .query(
            "SELECT id, attempts FROM billing.claim_requests('w', 1000, 60)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "one request of a user at a time");
    let (id, attempt): (Uuid, i32) = (claimed[0].get(0), claimed[0].get(1));
    let finished: bool = one(
        &owner,
        "SELECT billing.finish_request($1, 'w', '{\"duplicate\": false}', $2)",
        &[&id, &attempt],
    )
    .await;
    assert!(finished);
    let reported: i64 = one(
        &owner,
        "SELECT count(*) FROM billing.token_overages WHERE user_id = $1 AND status = 'reported'",
        &[&user],
    )
    .await;
    assert_eq!(reported, 1);
}

#[tokio::test]
async fn retrying_meter_events_is_privileged_bounded_and_concurrent_safe() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner).await;
    for bad in [0, 100_001] {
        assert_error(
            owner
                .query_one("SELECT billing.retry_failed_meter_events($1)", &[&bad])
                .await,
            "22023",
            "max_events must be between 1 and 100000",
        );
    }
    assert_error(
        owner
            .query_one("SELECT billing.retry_failed_meter_events(NULL)", &[])
            .await,
        "22004",
        "max_events must not be NULL",
    );
    let mut api = db.api().await;
    for caller in [Caller::Anon, Caller::User(Uuid::new_v4())] {
        assert_error(
            api.call(&caller, "SELECT billing.retry_failed_meter_events()", &[])
                .await,
            "42501",
            "permission denied",
        );
    }

    // Two operators at once: the first holds its rows, the second skips them.
    let mut users = Vec::new();
    for _ in 0..4 {
        let (user, _, _) = subscriber(&owner, "metered", 0).await;
        one::<Value>(&owner, SPEND, &[&user, &10i64, &"job"]).await;
        users.push(user);
    }
    fail_meter_events(&owner).await;
    let a = db.owner().await;
    let b = db.owner().await;
    a.batch_execute("BEGIN").await.unwrap();
    let by_a: Value = one(&a, "SELECT billing.retry_failed_meter_events(3)", &[]).await;
    let by_b: Value = one(&b, "SELECT billing.retry_failed_meter_events()", &[]).await;
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(by_a["requeued"], 3);
    assert_eq!(by_b["requeued"], 1);
    let requests: i64 = one(
        &owner,
        "SELECT count(*) FROM billing.stripe_requests WHERE kind = 'meter_event' AND status = 'pending'",
        &[],
    )
    .await;
    assert_eq!(requests, 4, "one new request per failed event");
}
