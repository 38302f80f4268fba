//! Seats arrive in place: a 0.2.0 install's subscriptions get their quantity from the newest
//! stored report of each (both API shapes), and a subscription without one stays NULL (unknown:
//! no seat limit) until its next report. In both editions: ALTER EXTENSION UPDATE, or the
//! committed pure-SQL migrations in order.
use serde_json::json;
use shipped_sql::{pure_sql, upgrade};
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::events::{self, unix_now, Period, Shape, Sub};
use stripe_billing_tests::pg::TestDb;
use stripe_emulator::store::ids;
use tokio_postgres::Client;
use uuid::Uuid;

const DAY: i64 = 86_400;

/// A 0.2.0 install (this run's edition) with `fill` run on it, then upgraded.
async fn upgraded(fill: impl AsyncFnOnce(&Client)) -> TestDb {
    let root = upgrade::repo_root();
    let current = upgrade::current_version();
    match Edition::current() {
        Edition::Extension => {
            let db = TestDb::with_version(Some("0.2.0")).await;
            let owner = db.owner().await;
            fill(&owner).await;
            owner
                .batch_execute("ALTER EXTENSION stripe_billing UPDATE")
                .await
                .expect("upgrade");
            db
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
            fill(&owner).await;
            let tx = owner.transaction().await.unwrap();
            tx.batch_execute(&read(pure_sql::upgrade_path(&root, "0.2.0", current)))
                .await
                .expect("upgrade");
            tx.commit().await.unwrap();
            db
        }
    }
}

/// A subscription event of `user` with `quantity` of price_pro.
fn report(
    shape: Shape,
    sub: &str,
    user: Uuid,
    ty: &str,
    at: i64,
    quantity: i64,
) -> serde_json::Value {
    let user = user.to_string();
    let mut object = events::subscription(
        shape,
        &Sub {
            id: sub,
            customer: &ids::customer(),
            status: "active",
            price_id: "price_pro",
            period: Period {
                start: at,
                end: at + 30 * DAY,
            },
            cancel_at_period_end: false,
            ended_at: None,
            user_id: Some(&user),
        },
    );
    object["items"]["data"][0]["quantity"] = json!(quantity);
    events::event(shape, ty, at, object)
}

#[tokio::test]
async fn a_0_2_0_subscription_gets_its_quantity_from_its_newest_stored_report() {
    let subs: Vec<(Shape, String)> = [Shape::V2023, Shape::Basil]
        .into_iter()
        .map(|s| (s, ids::long("sub")))
        .collect();
    let bare = ids::long("sub");
    let (subs2, bare2) = (subs.clone(), bare.clone());
    let db = upgraded(async move |owner: &Client| {
        // What 0.2.0 stored of each subscription's reports (written as its webhook handler
        // did: with this run's 0.3.0 library, the extension's 0.2.0 schema cannot ingest).
        let t0 = unix_now() - 10 * DAY;
        for (shape, sub) in &subs2 {
            let user = Uuid::new_v4();
            owner
                .execute(
                    "INSERT INTO billing.subscriptions (stripe_subscription_id, user_id, stripe_price_id, status)
                     VALUES ($1, $2, 'price_pro', 'active')",
                    &[sub, &user],
                )
                .await
                .unwrap();
            // The newest report says 4 seats, whatever order they arrived in; an object
            // retrieved from Stripe outranks an event of its second.
            for (ty, at, q, source) in [
                ("customer.subscription.updated", t0 + 60, 4, "retrieved"),
                ("customer.subscription.updated", t0 + 60, 3, "webhook"),
                ("customer.subscription.created", t0, 2, "webhook"),
            ] {
                let ev = report(*shape, sub, user, ty, at, q);
                owner
                    .execute(
                        "INSERT INTO billing.stripe_events (id, type, api_version, livemode, created, payload,
                                                            object_id, processed_at, source)
                         VALUES ($1::text::json ->> 'id', $2, $1::text::json ->> 'api_version', false, to_timestamp($3),
                                 $1::text::json, $4, now(), $5)",
                        &[&ev.to_string(), &ty, &(at as f64), sub, &source],
                    )
                    .await
                    .unwrap();
            }
        }
        // A subscription whose reports were pruned (or never stored).
        owner
            .execute(
                "INSERT INTO billing.subscriptions (stripe_subscription_id, user_id, stripe_price_id, status)
                 VALUES ($1, $2, 'price_pro', 'active')",
                &[&bare2, &Uuid::new_v4()],
            )
            .await
            .unwrap();
    })
    .await;
    let owner = db.owner().await;
    for (shape, sub) in &subs {
        let q: Option<i64> = owner
            .query_one(
                "SELECT quantity FROM billing.subscriptions WHERE stripe_subscription_id = $1",
                &[sub],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(q, Some(4), "{shape:?}");
    }
    let q: Option<i64> = owner
        .query_one(
            "SELECT quantity FROM billing.subscriptions WHERE stripe_subscription_id = $1",
            &[&bare],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(q, None, "unknown: no report to read it from");
}
