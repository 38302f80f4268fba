//! Low-balance alerts (issue 22, item 1; docs/tokens.md, "Low-balance alerts and expiry
//! warnings"): the spend that takes a balance from above its threshold to at or below it writes
//! one `low_balance` notification, concurrent spends included, and the alert fires again only
//! after the balance rose above the threshold. Users set their own thresholds under RLS;
//! operators set the default in billing.config.
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use stripe_billing_tests::pg::{assert_error, column, listen, one, Caller, TestDb};
use stripe_billing_tests::tokens::{grant, spend};
use tokio::sync::Barrier;
use tokio_postgres::Client;
use uuid::Uuid;

async fn set_alert(c: &Client, user: Uuid, threshold: Option<i64>) {
    c.query_one(
        "SELECT billing.set_low_balance_alert($1, $2)",
        &[&user, &threshold],
    )
    .await
    .expect("set_low_balance_alert");
}

/// The payloads of the user's low_balance notifications, oldest first.
async fn alerts(c: &Client, user: Uuid) -> Vec<Value> {
    column(
        c,
        "SELECT payload FROM billing.notifications WHERE user_id = $1 AND kind = 'low_balance' ORDER BY id",
        &[&user],
    )
    .await
}

#[tokio::test]
async fn the_spend_that_crosses_the_threshold_notifies_once_with_the_row_id() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let (_listener, mut notes) = listen(&db.dsn, "billing_notifications").await;
    let user = Uuid::new_v4();
    grant(&c, user, 100).await;
    set_alert(&c, user, Some(50)).await;

    spend(&c, user, 30).await; // 100 -> 70: above
    spend(&c, user, 20).await; // 70 -> 50: at the threshold, crosses
    assert_eq!(
        alerts(&c, user).await,
        vec![serde_json::json!({"threshold": 50, "balance": 50, "project_id": null})]
    );
    let id: i64 = c
        .query_one(
            "SELECT id FROM billing.notifications WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("a NOTIFY")
        .unwrap();
    assert_eq!(note.payload(), id.to_string(), "only the row id is sent");

    // Further spends below the threshold, and a duplicate of the crossing spend, stay quiet.
    spend(&c, user, 10).await;
    c.query_one(
        "SELECT billing.spend_tokens($1, 1, idempotency_key => 'k1')",
        &[&user],
    )
    .await
    .unwrap();
    c.query_one(
        "SELECT billing.spend_tokens($1, 1, idempotency_key => 'k1')",
        &[&user],
    )
    .await
    .unwrap();
    assert_eq!(alerts(&c, user).await.len(), 1);
}

#[tokio::test]
async fn spends_that_stay_above_or_start_below_do_not_notify() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let user = Uuid::new_v4();
    set_alert(&c, user, Some(50)).await;
    grant(&c, user, 40).await;
    spend(&c, user, 10).await; // 40 -> 30: was already below
    let other = Uuid::new_v4();
    set_alert(&c, other, Some(50)).await;
    grant(&c, other, 1000).await;
    spend(&c, other, 949).await; // 1000 -> 51: stays above
    assert!(alerts(&c, user).await.is_empty());
    assert!(alerts(&c, other).await.is_empty());
    // A spend refused for want of tokens notifies nothing either.
    assert!(c
        .query_one("SELECT billing.spend_tokens($1, 52)", &[&other])
        .await
        .is_err());
    assert!(alerts(&c, other).await.is_empty());
}

#[tokio::test]
async fn concurrent_spends_that_cross_write_one_alert() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    // Rounds: each starts at 1000 above a threshold of 500 with 16 spends of 100 at once, on
    // several grants (so spends lock different rows), once with the user's own threshold and
    // once with the operator's default (the alert row is created by the crossing itself).
    for own_threshold in [true, false] {
        let user = Uuid::new_v4();
        if own_threshold {
            set_alert(&owner, user, Some(500)).await;
        } else {
            owner
                .batch_execute("INSERT INTO billing.config (low_balance_threshold) VALUES (500) ON CONFLICT (id) DO UPDATE SET low_balance_threshold = 500")
                .await
                .unwrap();
        }
        for _ in 0..10 {
            grant(&owner, user, 100).await;
        }
        let barrier = Arc::new(Barrier::new(16));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let dsn = db.dsn.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let c = stripe_billing_tests::pg::connect(&dsn).await;
                barrier.wait().await;
                c.query_one("SELECT billing.spend_tokens($1, 100)", &[&user])
                    .await
                    .is_ok()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap() as i32;
        }
        assert_eq!(ok, 10, "ten spends of 100 fit in 1000");
        let fired = alerts(&owner, user).await;
        assert_eq!(fired.len(), 1, "own threshold {own_threshold}: {fired:?}");
        assert_eq!(fired[0]["threshold"], 500);
        assert_eq!(fired[0]["balance"], 500);
    }
}

#[tokio::test]
async fn an_alert_rearms_only_when_a_grant_lifts_the_balance_above_the_threshold() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    let user = Uuid::new_v4();
    set_alert(&c, user, Some(50)).await;
    grant(&c, user, 100).await;
    spend(&c, user, 60).await; // 100 -> 40: alert 1
    let is_armed = async |c: &Client| -> bool {
        c.query_one(
            "SELECT armed FROM billing.balance_alerts WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
    };
    assert!(!is_armed(&c).await);
    grant(&c, user, 5).await; // 45: still at or below, stays disarmed
    assert!(!is_armed(&c).await);
    spend(&c, user, 5).await;
    assert_eq!(alerts(&c, user).await.len(), 1);
    grant(&c, user, 60).await; // 100: above, re-armed
    assert!(is_armed(&c).await);
    spend(&c, user, 30).await; // 70
    spend(&c, user, 30).await; // 40: alert 2
    let fired = alerts(&c, user).await;
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_eq!(fired[1]["balance"], 40);
    // Each alert has its own key: low_balance:<row>:<generation>.
    let keys: Vec<String> = c
        .query(
            "SELECT event_id FROM billing.notifications WHERE user_id = $1 ORDER BY id",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        keys[0].starts_with("low_balance:") && keys[0].ends_with(":1"),
        "{keys:?}"
    );
    assert!(keys[1].ends_with(":2"), "{keys:?}");
}

#[tokio::test]
async fn the_operator_default_applies_unless_a_user_sets_or_turns_off_their_own() {
    let db = TestDb::new().await;
    let c = db.owner().await;
    c.batch_execute("INSERT INTO billing.config (low_balance_threshold) VALUES (100)")
        .await
        .unwrap();
    let (by_default, own, off) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for u in [by_default, own, off] {
        grant(&c, u, 200).await;
    }
    set_alert(&c, own, Some(20)).await;
    c.query_one(
        "SELECT billing.set_low_balance_alert($1, NULL, enabled => false)",
        &[&off],
    )
    .await
    .unwrap();
    for u in [by_default, own, off] {
        spend(&c, u, 150).await; // 200 -> 50: crosses 100, not 20
    }
    assert_eq!(alerts(&c, by_default).await[0]["threshold"], 100);
    assert!(alerts(&c, own).await.is_empty());
    assert!(alerts(&c, off).await.is_empty());
    spend(&c, own, 30).await; // 50 -> 20: crosses the user's 20
    assert_eq!(alerts(&c, own).await[0]["threshold"], 20);
    // A project's balance has its own alert.
    let project = Uuid::new_v4();
    c.execute(
        "INSERT INTO billing.projects (id, user_id) VALUES ($1, $2)",
        &[&project, &own],
    )
    .await
    .unwrap();
    for sql in [
        "SELECT billing.grant_tokens($1, 10, project_id => $2)",
        "SELECT billing.set_low_balance_alert($1, 5, project_id => $2)",
        "SELECT billing.spend_tokens($1, 6, project_id => $2)",
    ] {
        one::<Value>(&c, sql, &[&own, &project]).await;
    }
    let fired = alerts(&c, own).await;
    assert_eq!(fired.len(), 2);
    assert_eq!(fired[1]["project_id"], project.to_string());
    assert_eq!(fired[1]["balance"], 4);
}

#[tokio::test]
async fn users_set_and_read_their_own_alerts_under_rls() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    let mut api = db.api().await;
    let (me, other) = (Uuid::new_v4(), Uuid::new_v4());
    owner
        .batch_execute("INSERT INTO billing.config (low_balance_threshold, expiry_warning_days) VALUES (100, 7)")
        .await
        .unwrap();
    let settings = "SELECT project_id, low_balance_threshold, threshold_from, armed, expiry_warning_days FROM billing.my_credit_settings()";
    let row = &api.call(&Caller::User(me), settings, &[]).await.unwrap()[0];
    assert_eq!(row.get::<_, Option<Uuid>>(0), None);
    assert_eq!(row.get::<_, Option<i64>>(1), Some(100));
    assert_eq!(row.get::<_, &str>(2), "default");
    assert_eq!(row.get::<_, i32>(4), 7);

    let (mine, anon) = (Caller::User(me), Caller::Anon);
    let set: Value = api
        .one(&mine, "SELECT billing.set_my_low_balance_alert(25)", &[])
        .await
        .unwrap();
    assert_eq!(set["effective_threshold"], 25);
    let row = &api.call(&mine, settings, &[]).await.unwrap()[0];
    assert_eq!(row.get::<_, Option<i64>>(1), Some(25));
    assert_eq!(row.get::<_, &str>(2), "user");
    // Their own row only.
    api.call(
        &Caller::Service,
        "SELECT billing.set_low_balance_alert($1, 9)",
        &[&other],
    )
    .await
    .unwrap();
    let seen: i64 = api
        .one(&mine, "SELECT count(*) FROM billing.balance_alerts", &[])
        .await
        .unwrap();
    assert_eq!(seen, 1);
    let denied = "permission denied";
    api.assert_refused(
        &[&other],
        &[
            (
                &mine,
                "SELECT * FROM billing.credit_settings($1)",
                "42501",
                "only read your own",
            ),
            (
                &mine,
                "SELECT billing.set_low_balance_alert($1, 1)",
                "42501",
                denied,
            ),
        ],
    )
    .await;
    api.assert_refused(
        &[],
        &[
            (
                &mine,
                "UPDATE billing.balance_alerts SET threshold = 1",
                "42501",
                denied,
            ),
            (
                &anon,
                "SELECT billing.set_my_low_balance_alert(1)",
                "42501",
                denied,
            ),
            (
                &anon,
                "SELECT * FROM billing.my_credit_settings()",
                "42501",
                denied,
            ),
        ],
    )
    .await;
    // Bounded values, clear errors, nothing changed.
    for threshold in [-1_i64, 1_000_000_000_001] {
        api.assert_refused(
            &[&threshold],
            &[(
                &mine,
                "SELECT billing.set_my_low_balance_alert($1)",
                "22023",
                "between 0 and",
            )],
        )
        .await;
    }
    api.assert_refused(
        &[&Uuid::new_v4()],
        &[(
            &mine,
            "SELECT billing.set_my_low_balance_alert(5, project_id => $1)",
            "P0002",
            "unknown project",
        )],
    )
    .await;
    api.assert_refused(
        &[],
        &[(
            &mine,
            "SELECT billing.set_my_low_balance_alert(5, enabled => NULL)",
            "22004",
            "enabled must not be NULL",
        )],
    )
    .await;
    let threshold: Option<i64> = owner
        .query_one(
            "SELECT threshold FROM billing.balance_alerts WHERE user_id = $1",
            &[&me],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(threshold, Some(25));
    // Operators' defaults are bounded by the table.
    assert_error(
        owner
            .execute("UPDATE billing.config SET low_balance_threshold = -1", &[])
            .await,
        "23514",
        "low_balance_threshold",
    );
}

/// Spends of one balance already serialise on the grant rows they lock, so the test above
/// passes without the alert's own guard; this one calls the spend's hook as two spends that
/// both saw a crossing would (a balance of zero locks no grant row): the second waits on the
/// alert row's lock and, finding it disarmed, writes nothing.
#[tokio::test]
async fn two_crossings_seen_at_once_meet_on_the_alert_row_and_notify_once() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    let user = Uuid::new_v4();
    set_alert(&owner, user, Some(50)).await;
    let hook = "SELECT billing._after_spend_alerts($1, NULL, 100, 40)";
    let first = stripe_billing_tests::pg::connect(&db.dsn).await;
    first.batch_execute("BEGIN").await.unwrap();
    first.execute(hook, &[&user]).await.unwrap();
    let dsn = db.dsn.clone();
    let second = tokio::spawn(async move {
        let c = stripe_billing_tests::pg::connect(&dsn).await;
        c.execute(hook, &[&user]).await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second waits on the alert row");
    first.batch_execute("COMMIT").await.unwrap();
    second.await.unwrap();
    assert_eq!(alerts(&owner, user).await.len(), 1);
}
