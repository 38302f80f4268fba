//! Seat changes through the queue (issue 23, item 2; docs/teams.md, "Seats"), the SQL half: a
//! team's owner or admin asks `billing.request_seat_change`, which queues one `seats` request
//! naming the subscription item Stripe reported (both API shapes) and the operator's proration
//! behaviour; what cannot be done is refused with its own code and queues nothing; a pending
//! decrease already holds new members to it; a team buys its first seats at Checkout. The worker
//! and Stripe's side: worker_seats.rs.
mod common;
mod subscription_support;

use serde_json::{json, Value};
use stripe_billing_tests::events::{unix_now, Shape};
use stripe_billing_tests::pg::{assert_error, Api, Caller, TestDb};
use subscription_support::*;
use tokio_postgres::Client;
use uuid::Uuid;

/// A team Alice owns with Bob as a member, subscribed to Basic with `seats` seats on item
/// `si_…` (as Stripe reports it in `shape`); returns the item id too.
async fn subscribed_team(
    shape: Shape,
    seats: i64,
) -> (TestDb, Client, Api, Subscriber, Uuid, Uuid, String) {
    let (db, owner) = setup().await;
    let mut api = db.api().await;
    let alice = Uuid::new_v4();
    let team = api.create_team(alice, "Acme").await;
    let bob = Uuid::new_v4();
    api.set_member(alice, team, bob, "member").await.unwrap();
    let mut s = Subscriber::new(shape);
    s.user = team;
    let item = format!("si_{}", &Uuid::new_v4().simple().to_string()[..14]);
    let t0 = unix_now() - 5 * DAY;
    let mut ev = s.subscription_event(
        "customer.subscription.created",
        t0,
        "active",
        "price_basic",
        period(t0, 30),
    );
    ev["data"]["object"]["items"]["data"][0]["quantity"] = json!(seats);
    ev["data"]["object"]["items"]["data"][0]["id"] = json!(item);
    deliver(&owner, &ev).await;
    (db, owner, api, s, alice, bob, item)
}

async fn change(
    api: &mut Api,
    by: &Caller,
    team: Option<Uuid>,
    seats: Option<i32>,
) -> Result<Uuid, tokio_postgres::Error> {
    api.call(
        by,
        "SELECT billing.request_seat_change($1, $2)",
        &[&team, &seats],
    )
    .await
    .map(|rows| rows[0].get(0))
}

async fn seat_requests(owner: &Client) -> Vec<Value> {
    owner
        .query(
            "SELECT params FROM billing.stripe_requests WHERE kind = 'seats' ORDER BY created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_seat_change_names_the_reported_item_and_the_operators_proration() {
    for shape in [Shape::V2023, Shape::Basil] {
        let (_db, owner, mut api, s, alice, _bob, item) = subscribed_team(shape, 2).await;
        let recorded: (Option<i64>, Option<String>) = owner
            .query_one(
                "SELECT quantity, stripe_item_id FROM billing.subscriptions WHERE stripe_subscription_id = $1",
                &[&s.sub],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(recorded, (Some(2), Some(item.clone())), "{shape:?}");
        let id = change(&mut api, &Caller::User(alice), Some(s.user), Some(5))
            .await
            .unwrap();
        let row = owner
            .query_one(
                "SELECT user_id, kind, status, params FROM billing.stripe_requests WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(
            (
                row.get::<_, Uuid>(0),
                row.get::<_, &str>(1),
                row.get::<_, &str>(2)
            ),
            (s.user, "seats", "pending")
        );
        assert_eq!(
            row.get::<_, Value>(3),
            json!({"subscription_id": s.sub, "item_id": item, "quantity": 5, "from_quantity": 2,
                   "proration_behavior": "create_prorations"}),
            "{shape:?}: Stripe's default when the operator chose none"
        );
        // The operator's choice, for the next change.
        owner
            .batch_execute(&format!(
                "UPDATE billing.config SET seat_proration_behavior = 'always_invoice';
                 UPDATE billing.stripe_requests SET status = 'failed', error = 'declined', finished_at = now()
                 WHERE id = '{id}';"
            ))
            .await
            .unwrap();
        change(&mut api, &Caller::User(alice), Some(s.user), Some(3))
            .await
            .unwrap();
        let last = seat_requests(&owner).await.pop().unwrap();
        assert_eq!(
            (last["quantity"].clone(), last["proration_behavior"].clone()),
            (json!(3), json!("always_invoice"))
        );
        assert_error(
            owner
                .execute(
                    "UPDATE billing.config SET seat_proration_behavior = 'later'",
                    &[],
                )
                .await,
            "23514",
            "seat_proration_behavior",
        );
    }
}

#[tokio::test]
async fn what_cannot_be_changed_is_refused_and_queues_nothing() {
    let (_db, owner, mut api, s, alice, bob, _item) = subscribed_team(Shape::Basil, 3).await;
    let team = s.user;
    let owner_of = Caller::User(alice);
    assert_error(
        change(&mut api, &owner_of, None, Some(4)).await,
        "22004",
        "account_id",
    );
    assert_error(
        change(&mut api, &owner_of, Some(team), None).await,
        "22004",
        "quantity",
    );
    assert_error(
        change(&mut api, &owner_of, Some(team), Some(0)).await,
        "22023",
        "1 to 10000",
    );
    assert_error(
        change(&mut api, &owner_of, Some(team), Some(10_001)).await,
        "22023",
        "1 to 10000",
    );
    assert_error(
        change(&mut api, &owner_of, Some(team), Some(3)).await,
        "22023",
        "has 3 seats already",
    );
    // Alice and Bob are two: one seat is too few.
    assert_error(
        change(&mut api, &owner_of, Some(team), Some(1)).await,
        "BL023",
        "2 members, 1 seats asked",
    );
    // Members, outsiders, anonymous callers, a personal account.
    assert_error(
        change(&mut api, &Caller::User(bob), Some(team), Some(4)).await,
        "42501",
        "owner or admin",
    );
    assert_error(
        change(&mut api, &Caller::User(Uuid::new_v4()), Some(team), Some(4)).await,
        "42501",
        "permission denied",
    );
    assert_error(
        change(&mut api, &Caller::Anon, Some(team), Some(4)).await,
        "42501",
        "permission denied",
    );
    assert_error(
        change(&mut api, &owner_of, Some(alice), Some(4)).await,
        "42501",
        "not a team",
    );
    // A team that has not bought, and one whose item Stripe has not reported.
    let other = api.create_team(alice, "Beta").await;
    assert_error(
        change(&mut api, &owner_of, Some(other), Some(2)).await,
        "55000",
        "no active, trialing or past_due subscription",
    );
    owner
        .execute(
            "UPDATE billing.subscriptions SET stripe_item_id = NULL WHERE user_id = $1",
            &[&team],
        )
        .await
        .unwrap();
    assert_error(
        change(&mut api, &owner_of, Some(team), Some(4)).await,
        "55000",
        "not known yet",
    );
    assert!(seat_requests(&owner).await.is_empty(), "nothing was queued");
    owner
        .execute(
            "UPDATE billing.subscriptions SET stripe_item_id = 'si_back' WHERE user_id = $1",
            &[&team],
        )
        .await
        .unwrap();
    // One change at a time; an admin may ask too.
    api.set_member(alice, team, bob, "admin").await.unwrap();
    change(&mut api, &Caller::User(bob), Some(team), Some(4))
        .await
        .unwrap();
    assert_error(
        change(&mut api, &owner_of, Some(team), Some(5)).await,
        "BL024",
        "in progress",
    );
    assert_eq!(seat_requests(&owner).await.len(), 1);
}

#[tokio::test]
async fn a_pending_decrease_holds_new_members_to_it() {
    let (_db, owner, mut api, s, alice, _bob, _item) = subscribed_team(Shape::V2023, 4).await;
    let team = s.user;
    let id = change(&mut api, &Caller::User(alice), Some(team), Some(2))
        .await
        .unwrap();
    // Four seats in Stripe, two once the change is made: Alice and Bob fill them.
    assert_error(
        api.set_member(alice, team, Uuid::new_v4(), "member").await,
        "BL022",
        "has 2 seats and 2 members",
    );
    // An increase pending does not add seats before Stripe has them.
    owner
        .execute("UPDATE billing.stripe_requests SET status = 'failed', error = 'x', finished_at = now() WHERE id = $1", &[&id])
        .await
        .unwrap();
    api.set_member(alice, team, Uuid::new_v4(), "member")
        .await
        .unwrap();
    change(&mut api, &Caller::User(alice), Some(team), Some(9))
        .await
        .unwrap();
    api.set_member(alice, team, Uuid::new_v4(), "member")
        .await
        .unwrap();
    assert_error(
        api.set_member(alice, team, Uuid::new_v4(), "member").await,
        "BL022",
        "has 4 seats and 4 members",
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_change_it_made() {
    let (_db, owner, mut api, s, alice, _bob, _item) = subscribed_team(Shape::Basil, 2).await;
    let key = r#"{"idempotency-key": "seats-order-7"}"#;
    async fn ask(
        api: &mut Api,
        alice: Uuid,
        team: Uuid,
        key: &str,
        seats: i32,
    ) -> Result<Uuid, tokio_postgres::Error> {
        let sql = "SELECT billing.request_seat_change($1, $2)";
        api.call_with_headers(&Caller::User(alice), key, sql, &[&team, &seats])
            .await
            .map(|rows| rows[0].get(0))
    }
    let team = s.user;
    let first = ask(&mut api, alice, team, key, 6).await.unwrap();
    assert_eq!(ask(&mut api, alice, team, key, 6).await.unwrap(), first);
    assert_error(
        ask(&mut api, alice, team, key, 7).await,
        "BL004",
        "was used for a different request",
    );
    // The change is made and its answer lost: the retry finds it, though the seats it found
    // (from_quantity) are now the ones it asked for.
    owner
        .batch_execute(&format!(
            "UPDATE billing.stripe_requests SET status = 'succeeded', result = '{{}}', finished_at = now()
             WHERE id = '{first}';
             UPDATE billing.subscriptions SET quantity = 6 WHERE user_id = '{}';",
            s.user
        ))
        .await
        .unwrap();
    assert_eq!(ask(&mut api, alice, team, key, 6).await.unwrap(), first);
    assert_eq!(seat_requests(&owner).await.len(), 1);
}

#[tokio::test]
async fn a_team_buys_its_first_seats_at_checkout() {
    let (db, owner) = setup().await;
    let _ = &db;
    let mut api = db.api().await;
    let alice = Uuid::new_v4();
    let team = api.create_team(alice, "Acme").await;
    api.set_member(alice, team, Uuid::new_v4(), "member")
        .await
        .unwrap();
    let checkout = |quantity: i32, account: Option<Uuid>| {
        format!(
            "SELECT billing.request_checkout('price_basic', quantity => {quantity}{})",
            account
                .map(|a| format!(", account_id => '{a}'"))
                .unwrap_or_default()
        )
    };
    let id: Uuid = api
        .call(&Caller::User(alice), &checkout(3, Some(team)), &[])
        .await
        .unwrap()[0]
        .get(0);
    let params: Value = owner
        .query_one(
            "SELECT params FROM billing.stripe_requests WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(params["quantity"], 3);
    let other = api.create_team(alice, "Beta").await;
    api.set_member(alice, other, Uuid::new_v4(), "member")
        .await
        .unwrap();
    assert_error(
        api.call(&Caller::User(alice), &checkout(1, Some(other)), &[])
            .await,
        "BL023",
        "2 members, 1 seats",
    );
    assert_error(
        api.call(&Caller::User(alice), &checkout(10_001, Some(other)), &[])
            .await,
        "22023",
        "1 to 10000",
    );
    // A person's subscription stays one.
    assert_error(
        api.call(&Caller::User(alice), &checkout(2, None), &[])
            .await,
        "22023",
        "1 for a personal subscription",
    );
}

/// Two of Stripe's answers in one second (an increase and the decrease right after it, as the
/// worker applies them with `billing.ingest_retrieved` at their `Date`): the later one wins,
/// as one account's requests run one at a time; events of that second rank below both.
#[tokio::test]
async fn the_later_of_two_answers_in_one_second_wins() {
    for shape in [Shape::V2023, Shape::Basil] {
        let (_db, owner, _api, s, _alice, _bob, item) = subscribed_team(shape, 2).await;
        let at = unix_now();
        let answer = |seats: i64| {
            let mut ev = s.subscription_event(
                "customer.subscription.updated",
                at,
                "active",
                "price_basic",
                period(at - DAY, 30),
            );
            ev["data"]["object"]["items"]["data"][0]["quantity"] = json!(seats);
            ev["data"]["object"]["items"]["data"][0]["id"] = json!(item);
            ev["data"]["object"].clone()
        };
        for seats in [4, 3] {
            owner
                .execute(
                    "SELECT billing.ingest_retrieved($1, $2, to_timestamp($3::bigint))",
                    &[&Uuid::new_v4(), &answer(seats), &at],
                )
                .await
                .unwrap();
        }
        let row = owner
            .query_one(
                "SELECT quantity, (SELECT count(*) FROM billing.stripe_requests WHERE kind = 'refresh')
                 FROM billing.subscriptions WHERE stripe_subscription_id = $1",
                &[&s.sub],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, Option<i64>>(0), row.get::<_, i64>(1)),
            (Some(3), 0),
            "{shape:?}"
        );
        // The webhook of that second (quantity 4) is older than both answers.
        let mut ev = s.subscription_event(
            "customer.subscription.updated",
            at,
            "active",
            "price_basic",
            period(at - DAY, 30),
        );
        ev["data"]["object"]["items"]["data"][0]["quantity"] = json!(4);
        deliver(&owner, &ev).await;
        let q: Option<i64> = owner
            .query_one(
                "SELECT quantity FROM billing.subscriptions WHERE stripe_subscription_id = $1",
                &[&s.sub],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(q, Some(3), "{shape:?}");
    }
}
