//! Seats (issue 23, item 2; docs/teams.md, "Seats"): a team's subscription's quantity, as
//! Stripe's reports say it in both API shapes, is how many members the team may have. Adding a
//! member beyond it is refused (BL022) and changes nothing, also when owners and admins add at
//! once; a seat increase billed with prorations grants the seats' share of the period's tokens.
mod common;
mod subscription_support;

use serde_json::{json, Value};
use stripe_billing_tests::events::{self, unix_now, Period, Shape};
use stripe_billing_tests::pg::{assert_error, Api, Caller, TestDb};
use subscription_support::*;
use tokio_postgres::Client;
use uuid::Uuid;

/// A team Alice owns with Bob as a member, and its subscriber (the team's account id stands
/// where a user's does).
async fn team(shape: Shape) -> (TestDb, Client, Api, Subscriber, Uuid) {
    let (db, owner) = setup().await;
    let mut api = db.api().await;
    let alice = Uuid::new_v4();
    let team: Uuid = api
        .call(
            &Caller::User(alice),
            "SELECT billing.create_team('Acme')",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    add(&mut api, alice, team, Uuid::new_v4()).await.unwrap();
    let mut s = Subscriber::new(shape);
    s.user = team;
    (db, owner, api, s, alice)
}

/// A report of the team's subscription with `quantity` seats of Basic.
fn report(s: &Subscriber, ty: &str, at: i64, status: &str, quantity: i64, p: Period) -> Value {
    let mut ev = s.subscription_event(ty, at, status, "price_basic", p);
    ev["data"]["object"]["items"]["data"][0]["quantity"] = json!(quantity);
    ev
}

async fn add(
    api: &mut Api,
    by: Uuid,
    team: Uuid,
    who: Uuid,
) -> Result<Value, tokio_postgres::Error> {
    api.call(
        &Caller::User(by),
        "SELECT billing.set_team_member($1, $2)",
        &[&team, &who],
    )
    .await
    .map(|rows| rows[0].get(0))
}

async fn quantity(owner: &Client, s: &Subscriber) -> Option<i64> {
    owner
        .query_one(
            "SELECT quantity FROM billing.subscriptions WHERE stripe_subscription_id = $1",
            &[&s.sub],
        )
        .await
        .unwrap()
        .get(0)
}

async fn members(owner: &Client, team: Uuid) -> i64 {
    owner
        .query_one(
            "SELECT count(*) FROM billing.account_members WHERE account_id = $1",
            &[&team],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_quantity_follows_the_newest_report_in_both_shapes() {
    for shape in [Shape::V2023, Shape::Basil] {
        let (_db, owner, _api, s, _) = team(shape).await;
        let t0 = unix_now() - 10 * DAY;
        let p = period(t0, 30);
        deliver(
            &owner,
            &report(&s, "customer.subscription.created", t0, "active", 3, p),
        )
        .await;
        assert_eq!(quantity(&owner, &s).await, Some(3), "{shape:?}");
        deliver(
            &owner,
            &report(&s, "customer.subscription.updated", t0 + 60, "active", 5, p),
        )
        .await;
        assert_eq!(quantity(&owner, &s).await, Some(5), "{shape:?}");
        // A late report of the old quantity changes nothing.
        deliver(
            &owner,
            &report(&s, "customer.subscription.updated", t0 + 30, "active", 2, p),
        )
        .await;
        assert_eq!(
            quantity(&owner, &s).await,
            Some(5),
            "{shape:?}: older report"
        );
        // Same second, same status, another quantity: Stripe is asked (a refresh request),
        // and the row keeps what it had until the answer comes.
        deliver(
            &owner,
            &report(&s, "customer.subscription.updated", t0 + 60, "active", 7, p),
        )
        .await;
        assert_eq!(
            quantity(&owner, &s).await,
            Some(5),
            "{shape:?}: same second"
        );
        let refresh: i64 = owner
            .query_one(
                "SELECT count(*) FROM billing.stripe_requests WHERE kind = 'refresh' AND user_id = $1",
                &[&s.user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            refresh, 1,
            "{shape:?}: the disagreement is settled by Stripe"
        );
    }
}

#[tokio::test]
async fn members_beyond_the_seats_are_refused_and_change_nothing() {
    for shape in [Shape::V2023, Shape::Basil] {
        let (_db, owner, mut api, s, alice) = team(shape).await;
        let team = s.user;
        let t0 = unix_now() - 10 * DAY;
        let p = period(t0, 30);
        // Before the team buys, members are not limited: Carol makes three.
        let carol = Uuid::new_v4();
        add(&mut api, alice, team, carol).await.unwrap();
        deliver(
            &owner,
            &report(&s, "customer.subscription.created", t0, "active", 3, p),
        )
        .await;
        let dave = Uuid::new_v4();
        assert_error(
            add(&mut api, alice, team, dave).await,
            "BL022",
            "has 3 seats and 3 members",
        );
        assert_eq!(members(&owner, team).await, 3, "{shape:?}: nothing added");
        // A member already in a seat may still change role.
        let admin: Value = api
            .call(
                &Caller::User(alice),
                "SELECT billing.set_team_member($1, $2, 'admin')",
                &[&team, &carol],
            )
            .await
            .unwrap()[0]
            .get(0);
        assert_eq!(admin["role"], "admin");
        // Carol, now an admin, is refused too; a removal frees a seat.
        assert_error(
            add(&mut api, carol, team, dave).await,
            "BL022",
            "no free seat",
        );
        api.call(
            &Caller::User(alice),
            "SELECT billing.remove_team_member($1, $2)",
            &[&team, &carol],
        )
        .await
        .unwrap();
        add(&mut api, alice, team, dave).await.unwrap();
        // More seats (Stripe reports the new quantity) let more members in.
        deliver(
            &owner,
            &report(&s, "customer.subscription.updated", t0 + 60, "active", 4, p),
        )
        .await;
        add(&mut api, alice, team, carol).await.unwrap();
        assert_error(
            add(&mut api, alice, team, Uuid::new_v4()).await,
            "BL022",
            "4 seats and 4 members",
        );
        assert_eq!(members(&owner, team).await, 4, "{shape:?}");
        // Once the subscription ends, the seats no longer limit (nothing bills them).
        deliver(
            &owner,
            &report(
                &s,
                "customer.subscription.deleted",
                t0 + 120,
                "canceled",
                4,
                p,
            ),
        )
        .await;
        add(&mut api, alice, team, Uuid::new_v4()).await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_adds_cannot_exceed_the_seats() {
    let (db, owner, _api, s, alice) = team(Shape::Basil).await;
    let team = s.user;
    let t0 = unix_now() - 10 * DAY;
    deliver(
        &owner,
        &report(
            &s,
            "customer.subscription.created",
            t0,
            "active",
            4,
            period(t0, 30),
        ),
    )
    .await;
    // Two seats free; eight adds at once on their own connections.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut api = db.api().await;
        tasks.push(tokio::spawn(async move {
            add(&mut api, alice, team, Uuid::new_v4())
                .await
                .map(|_| ())
                .map_err(|e| {
                    e.as_db_error()
                        .map(|d| d.code().code().to_string())
                        .unwrap_or_default()
                })
        }));
    }
    let mut added = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => added += 1,
            Err(code) => assert_eq!(code, "BL022", "only the seats refuse"),
        }
    }
    assert_eq!(added, 2, "exactly the free seats");
    assert_eq!(members(&owner, team).await, 4);
}

#[tokio::test]
async fn a_seat_increase_with_prorations_grants_the_new_seats_share() {
    for shape in [Shape::V2023, Shape::Basil] {
        let (_db, owner, _api, s, _) = team(shape).await;
        let p = period(unix_now() - 21 * DAY, 30);
        deliver(
            &owner,
            &report(&s, "customer.subscription.created", p.start, "active", 3, p),
        )
        .await;
        // 3 -> 5 seats of Basic ($10.00, 1000 tokens) with 9 of 30 days left: Stripe credits
        // the unused time of 3 and charges the remaining time of 5 (unit x quantity x share).
        let at = p.end - 9 * DAY;
        let rest = Period {
            start: at,
            end: p.end,
        };
        let (_, mut ev) = s.invoice(
            "invoice.paid",
            at,
            "subscription_update",
            600,
            vec![
                line("price_basic", -900, true, rest),
                line("price_basic", 1500, true, rest),
            ],
        );
        for (i, q) in [(0, 3), (1, 5)] {
            let l = &mut ev["data"]["object"]["lines"]["data"][i];
            l["quantity"] = json!(q);
            events::set_unit_amount(shape, l, Some(1000));
        }
        deliver(&owner, &ev).await;
        // 1000 x 5 x 0.3 - 1000 x 3 x 0.3: two seats' share of the period.
        let upgrade: Vec<i64> = grants(&owner, &s)
            .await
            .iter()
            .filter(|g| g.0 == "plan_upgrade")
            .map(|g| g.1)
            .collect();
        assert_eq!(upgrade, vec![600], "{shape:?}");
    }
}

#[tokio::test]
async fn outsiders_are_refused_before_the_seats_are_counted() {
    let (_db, owner, mut api, s, alice) = team(Shape::V2023).await;
    let team = s.user;
    let t0 = unix_now() - 10 * DAY;
    deliver(
        &owner,
        &report(
            &s,
            "customer.subscription.created",
            t0,
            "active",
            2,
            period(t0, 30),
        ),
    )
    .await;
    // The seat check comes after the caller's role: an outsider (and a plain member) learns
    // nothing of the seats, whatever they pass.
    let outsider = Uuid::new_v4();
    assert_error(
        add(&mut api, outsider, team, Uuid::new_v4()).await,
        "42501",
        "not owner or admin",
    );
    let member: Uuid = owner
        .query_one(
            "SELECT user_id FROM billing.account_members WHERE account_id = $1 AND role = 'member'",
            &[&team],
        )
        .await
        .unwrap()
        .get(0);
    assert_error(
        add(&mut api, member, team, Uuid::new_v4()).await,
        "42501",
        "not owner or admin",
    );
    // The team is full (2 seats, 2 members): even so, NULLs are 22004 before anything else.
    assert_error(
        api.call(
            &Caller::User(alice),
            "SELECT billing.set_team_member($1, NULL)",
            &[&team],
        )
        .await,
        "22004",
        "user_id",
    );
    assert_error(
        add(&mut api, alice, team, Uuid::new_v4()).await,
        "BL022",
        "2 seats and 2 members",
    );
    assert_eq!(quantity(&owner, &s).await, Some(2));
    assert_eq!(members(&owner, team).await, 2);
}
