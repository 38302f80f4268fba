//! Entitlements from token packs (issue 23, item 3: "packs, for a time"): a pack's features
//! (billing.plan_features rows with days) are the buyer's account's for that many days after each
//! paid purchase, from Stripe's time of the event that granted it, in any delivery order; a team's
//! purchase entitles its members through X-Billing-Account; a refund or lost dispute of the whole
//! purchase ends them, a partial one does not. Subscription features: entitlements.rs.
mod webhook_support;

use serde_json::{json, Value};
use stripe_billing_tests::events::{self, unix_now, Session, Shape};
use stripe_billing_tests::pg::{Api, Caller, TestDb};
use stripe_emulator::store::ids;
use tokio_postgres::Client;
use uuid::Uuid;
use webhook_support::{request_pack, setup, CUSTOMER, USER};

const DAY: i64 = 86_400;

/// webhook_support's catalog, with the pack's `export` (limit 5) for 30 days after each purchase
/// and the subscription plan's `api`.
async fn setup_with_pack_features() -> (TestDb, Client) {
    let (db, owner) = setup().await;
    owner
        .batch_execute(
            "INSERT INTO billing.plan_features (plan_id, feature, limit_value, days) VALUES
                 ('pack', 'export', 5, 30);
             INSERT INTO billing.plan_features (plan_id, feature) VALUES ('basic', 'api');",
        )
        .await
        .unwrap();
    (db, owner)
}

/// A paid (or, with `status` unpaid, delayed) payment-mode session of price_pack for `account`,
/// made for our checkout request `request`, reported by an event Stripe created at `created`.
fn pack_session(
    shape: Shape,
    event_type: &str,
    session: &str,
    status: &str,
    account: &str,
    request: &str,
    created: i64,
) -> Value {
    let object = events::checkout_session(
        shape,
        &Session {
            id: session,
            mode: "payment",
            payment_status: status,
            customer: CUSTOMER,
            user_id: Some(account),
            price_id: "price_pack",
            subscription: None,
            invoice: None,
            amount_total: 900,
            request_id: Some(request),
        },
    );
    events::event(shape, event_type, created, object)
}

async fn applied(owner: &Client, event: &Value) {
    let answer = events::deliver(owner, event).await.unwrap();
    assert_eq!(answer["processed"], true, "{answer}");
}

/// (has export, its limit, my_features) as `caller` sees them, with request `headers`.
async fn export(api: &mut Api, caller: &Caller, headers: &str) -> (bool, Option<i64>, Vec<String>) {
    let rows = api
        .call_with_headers(
            caller,
            headers,
            "SELECT billing.has_feature('export'), billing.feature_limit('export'),
                    (SELECT coalesce(array_agg(feature), '{}') FROM billing.my_features())",
            &[],
        )
        .await
        .unwrap();
    (rows[0].get(0), rows[0].get(1), rows[0].get(2))
}

async fn passes(owner: &Client) -> Vec<(String, i64, bool)> {
    owner
        .query(
            "SELECT purchase_id, extract(epoch FROM bought_at)::bigint, ended_at IS NOT NULL
             FROM billing.pack_passes ORDER BY bought_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_packs_features_last_their_days_after_each_paid_purchase() {
    for shape in [Shape::V2023, Shape::Basil] {
        let (db, owner) = setup_with_pack_features().await;
        let mut api = db.api().await;
        let me = Caller::User(USER.parse().unwrap());
        let now = unix_now();
        let old = ids::checkout_session();
        let request = request_pack(&db, 1).await;
        applied(
            &owner,
            &pack_session(
                shape,
                "checkout.session.completed",
                &old,
                "paid",
                USER,
                &request,
                now - 31 * DAY,
            ),
        )
        .await;
        // Paid 31 days ago, for 30 days: over, though the tokens stay.
        assert_eq!(
            export(&mut api, &me, "{}").await,
            (false, None, vec![]),
            "{shape:?}"
        );
        assert_eq!(
            passes(&owner).await,
            vec![(old.clone(), now - 31 * DAY, false)]
        );

        // Another purchase 29 days ago (quantity 3 does not make it last longer): a day left.
        let recent = ids::checkout_session();
        let request = request_pack(&db, 3).await;
        applied(
            &owner,
            &pack_session(
                shape,
                "checkout.session.completed",
                &recent,
                "paid",
                USER,
                &request,
                now - 29 * DAY,
            ),
        )
        .await;
        assert_eq!(
            export(&mut api, &me, "{}").await,
            (true, Some(5), vec!["export".to_string()]),
            "{shape:?}"
        );
        let tokens: i64 = owner
            .query_one(&format!("SELECT billing.token_balance('{USER}')"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(tokens, 2000, "the packs' tokens are granted as before");
        let anon: bool = api
            .one(&Caller::Anon, "SELECT billing.has_feature('export')", &[])
            .await
            .unwrap();
        assert!(!anon);
        // Users read their own passes, nobody else's.
        let stranger = Caller::User(Uuid::new_v4());
        for (caller, expected) in [(&me, 2i64), (&stranger, 0)] {
            let seen: i64 = api
                .one(caller, "SELECT count(*) FROM billing.pack_passes", &[])
                .await
                .unwrap();
            assert_eq!(seen, expected);
        }
    }
}

#[tokio::test]
async fn duplicate_and_shuffled_reports_of_a_purchase_give_one_pass_from_the_earliest() {
    for shape in [Shape::V2023, Shape::Basil] {
        let (db, owner) = setup_with_pack_features().await;
        let mut api = db.api().await;
        let me = Caller::User(USER.parse().unwrap());
        let now = unix_now();
        // A delayed payment: completed unpaid, then async_payment_succeeded, delivered in
        // reverse, the success twice; and a paid session reported again under another event id.
        let delayed = ids::checkout_session();
        let request = request_pack(&db, 1).await;
        let completed = pack_session(
            shape,
            "checkout.session.completed",
            &delayed,
            "unpaid",
            USER,
            &request,
            now - 10 * DAY,
        );
        let succeeded = pack_session(
            shape,
            "checkout.session.async_payment_succeeded",
            &delayed,
            "paid",
            USER,
            &request,
            now - 9 * DAY,
        );
        for event in [&succeeded, &completed, &succeeded] {
            events::deliver(&owner, event).await.unwrap();
        }
        let paid = ids::checkout_session();
        let request = request_pack(&db, 1).await;
        let late = pack_session(
            shape,
            "checkout.session.completed",
            &paid,
            "paid",
            USER,
            &request,
            now - 2 * DAY,
        );
        let mut early = late.clone();
        early["id"] = json!(events::event_id());
        early["created"] = json!(now - 3 * DAY);
        for event in [&late, &early, &late] {
            applied(&owner, event).await;
        }
        assert_eq!(
            passes(&owner).await,
            vec![
                (delayed, now - 9 * DAY, false),
                (paid.clone(), now - 3 * DAY, false)
            ],
            "{shape:?}: one pass per purchase, from the earliest report that granted it"
        );
        let grants: i64 = owner
            .query_one("SELECT count(*) FROM billing.token_grants", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(grants, 2);
        assert!(export(&mut api, &me, "{}").await.0);
    }
}

#[tokio::test]
async fn a_teams_pack_entitles_its_members_through_the_active_account() {
    let (db, owner) = setup_with_pack_features().await;
    let mut api = db.api().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let team = api.create_team(alice, "Acme").await;
    api.set_member(alice, team, bob, "member").await.unwrap();
    let request: String = api
        .one(
            &Caller::User(alice),
            "SELECT billing.request_checkout('pack', account_id => $1)::text",
            &[&team],
        )
        .await
        .unwrap();
    let session = ids::checkout_session();
    applied(
        &owner,
        &pack_session(
            Shape::Basil,
            "checkout.session.completed",
            &session,
            "paid",
            &team.to_string(),
            &request,
            unix_now() - DAY,
        ),
    )
    .await;
    let acme = format!(r#"{{"x-billing-account":"{team}"}}"#);
    for who in [alice, bob] {
        let me = Caller::User(who);
        assert_eq!(
            export(&mut api, &me, &acme).await,
            (true, Some(5), vec!["export".to_string()])
        );
        // Their personal accounts bought nothing.
        assert!(!export(&mut api, &me, "{}").await.0);
    }
    let outsider = Caller::User(Uuid::new_v4());
    let named: bool = api
        .one(
            &outsider,
            "SELECT billing.has_feature('export', $1)",
            &[&team],
        )
        .await
        .unwrap();
    assert!(!named, "not a member: not the team's features");
    let bobs: i64 = api
        .one(
            &Caller::User(bob),
            "SELECT count(*) FROM billing.pack_passes",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(bobs, 1, "members read their team's passes");
}

#[tokio::test]
async fn days_must_fit_the_plans_kind() {
    let (_db, owner) = setup().await;
    for (sql, needle) in [
        (
            "INSERT INTO billing.plan_features (plan_id, feature) VALUES ('pack', 'export')",
            "feature export of token pack pack needs days",
        ),
        (
            "INSERT INTO billing.plan_features (plan_id, feature, days) VALUES ('basic', 'api', 30)",
            "feature api of subscription plan basic takes no days",
        ),
    ] {
        let e = owner.batch_execute(sql).await.expect_err(sql);
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "22023", "{sql}");
        assert!(db.message().contains(needle), "{}", db.message());
    }
    owner
        .batch_execute(
            "INSERT INTO billing.plan_features (plan_id, feature, days) VALUES ('pack', 'export', 30)",
        )
        .await
        .unwrap();
    let e = owner
        .batch_execute("UPDATE billing.plan_features SET days = NULL")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "22023");
    let e = owner
        .batch_execute("UPDATE billing.plan_features SET days = 0")
        .await
        .unwrap_err();
    assert_eq!(
        e.as_db_error().unwrap().code().code(),
        "23514",
        "1 to 3650 days"
    );
    let days: i32 = owner
        .query_one("SELECT days FROM billing.plan_features", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(days, 30, "refusals changed nothing");
}

/// charge.refunded for `charge`, of `session`'s PaymentIntent, `refunded` of its 900.
fn refunded(shape: Shape, session: &Value, charge: &str, refunded: i64) -> Value {
    let intent = session["data"]["object"]["payment_intent"]
        .as_str()
        .unwrap();
    let charge = events::object(
        shape,
        "charge",
        json!({"id": charge, "payment_intent": intent, "amount": 900, "amount_captured": 900,
               "amount_refunded": refunded, "refunded": refunded == 900, "currency": "usd",
               "customer": CUSTOMER, "status": "succeeded", "created": unix_now()}),
    );
    events::event(shape, "charge.refunded", unix_now(), charge)
}

#[tokio::test]
async fn refunding_the_whole_purchase_ends_its_features_in_any_order() {
    for shape in [Shape::V2023, Shape::Basil] {
        for refund_first in [false, true] {
            let (db, owner) = setup_with_pack_features().await;
            let mut api = db.api().await;
            let me = Caller::User(USER.parse().unwrap());
            let buy = |request: String| {
                let session = ids::checkout_session();
                pack_session(
                    shape,
                    "checkout.session.completed",
                    &session,
                    "paid",
                    USER,
                    &request,
                    unix_now() - DAY,
                )
            };
            let whole = buy(request_pack(&db, 1).await);
            let part = buy(request_pack(&db, 1).await);
            let mut story = vec![whole.clone(), part.clone()];
            let (whole_charge, part_charge) = (ids::long("ch"), ids::long("ch"));
            let refunds = [
                refunded(shape, &whole, &whole_charge, 900),
                refunded(shape, &part, &part_charge, 300),
            ];
            if refund_first {
                story.splice(0..0, refunds);
            } else {
                story.extend(refunds);
            }
            for event in &story {
                applied(&owner, event).await;
            }
            let mut expected = vec![
                (
                    whole["data"]["object"]["id"].as_str().unwrap().to_string(),
                    true,
                ),
                (
                    part["data"]["object"]["id"].as_str().unwrap().to_string(),
                    false,
                ),
            ];
            expected.sort();
            let mut seen: Vec<(String, bool)> = passes(&owner)
                .await
                .into_iter()
                .map(|p| (p.0, p.2))
                .collect();
            seen.sort();
            assert_eq!(seen, expected, "{shape:?}, refund first {refund_first}");
            // The partly refunded purchase still gives the feature; refunded in full, it goes.
            assert!(export(&mut api, &me, "{}").await.0);
            applied(&owner, &refunded(shape, &part, &part_charge, 900)).await;
            assert!(!export(&mut api, &me, "{}").await.0, "{shape:?}");
        }
    }
}

/// payment_intent.succeeded of an auto top-up of `pack`, as the worker creates it, created at `created`.
fn top_up(shape: Shape, created: i64) -> Value {
    let intent = events::object(
        shape,
        "payment_intent",
        json!({"id": ids::long("pi"), "amount": 900, "amount_received": 900, "currency": "usd",
               "customer": CUSTOMER, "status": "succeeded", "latest_charge": ids::long("ch"),
               "created": created, "payment_method": ids::long("pm"),
               "metadata": {"user_id": USER, "plan_id": "pack", "top_up_tokens": "500"}}),
    );
    events::event(shape, "payment_intent.succeeded", created, intent)
}

#[tokio::test]
async fn an_auto_top_up_gives_the_packs_features_too() {
    for shape in [Shape::V2023, Shape::Basil] {
        let (db, owner) = setup_with_pack_features().await;
        let mut api = db.api().await;
        let me = Caller::User(USER.parse().unwrap());
        let now = unix_now();
        let old = top_up(shape, now - 40 * DAY);
        applied(&owner, &old).await;
        assert!(
            !export(&mut api, &me, "{}").await.0,
            "{shape:?}: 40 days ago"
        );
        let recent = top_up(shape, now - DAY);
        for event in [&recent, &recent] {
            applied(&owner, event).await;
        }
        assert_eq!(
            export(&mut api, &me, "{}").await,
            (true, Some(5), vec!["export".to_string()])
        );
        let intent = recent["data"]["object"]["id"].as_str().unwrap().to_string();
        assert!(
            passes(&owner).await.contains(&(intent, now - DAY, false)),
            "{shape:?}"
        );
        assert_eq!(passes(&owner).await.len(), 2);
    }
}
