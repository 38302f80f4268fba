//! Plan changes are worth what they cost (issue 20, item 1): a proration line's tokens are the
//! share of its plan its money is, an upgrade grants the net, a downgrade takes the net back
//! (a debt for what was spent), so changing plans back and forth late in a period gains nothing.
//! And a renewal the customer's credit balance paid is paid, not free (item 10). Invoices are
//! built as Stripe computes them: unit amount x quantity x the period left, rounded to cents.
mod common;
mod plan_change_support;
mod subscription_support;

use common::set_config;
use plan_change_support::*;
use serde_json::{json, Value};
use stripe_billing_tests::events::{self, unix_now, Shape};
use stripe_billing_tests::pg::Caller;
use subscription_support::*;

#[tokio::test]
async fn switching_plans_back_and_forth_late_in_a_period_gains_nothing() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    for shape in [Shape::V2023, Shape::Basil] {
        // A tenth of a 30-day period left, less a little, so the cents round: Big's share is
        // $9.73, Small's $0.97.
        let left = 3 * DAY - 7_000;
        let p = period(unix_now() + left - 30 * DAY, 30);
        let s = on_small(&owner, shape, p).await;
        let (big, small) = (share(BIG.1, left, 30 * DAY), share(SMALL.1, left, 30 * DAY));
        assert_eq!((big, small), (973, 97));
        // Tokens: 1000 x 973/10000 - 100 x 97/1000 = 97.3 - 9.7 = 87.6, granted as 87 and
        // taken back as 88.
        let mut paid = 0;
        for _ in 0..5 {
            let (_, u) = up(&s, p, left);
            paid += u["data"]["object"]["amount_paid"].as_i64().unwrap();
            deliver(&owner, &u).await;
            let (_, d) = down(&s, p, left);
            assert_eq!(d["data"]["object"]["amount_paid"], 0);
            assert_eq!(d["data"]["object"]["total"], -876);
            deliver(&owner, &d).await;
        }
        // The money: each cycle charged $8.76 and credited it back to the customer's balance,
        // so nothing was bought beyond the first period; the tokens gained are not more.
        assert_eq!(paid, 5 * 876);
        assert_eq!(
            balance(&owner, &s).await,
            100 - 5,
            "{shape:?}: five up-and-down cycles lose the rounding, gain nothing"
        );
        assert_eq!(take_backs(&owner, &s).await, vec![(88, 88, 0, 0); 5]);
        let upgrades: Vec<i64> = grants(&owner, &s)
            .await
            .iter()
            .filter(|g| g.0 == "plan_upgrade")
            .map(|g| g.1)
            .collect();
        assert_eq!(upgrades, vec![87; 5]);
    }
}

#[tokio::test]
async fn an_upgrade_grants_the_share_of_the_plan_its_money_bought() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    for shape in [Shape::V2023, Shape::Basil] {
        // The README's example: 9 of 30 days left, $30.00 charged for Big, $3.00 credited for
        // Small: 300 - 30 = 270 tokens.
        let p = period(unix_now() - 21 * DAY, 30);
        let s = on_small(&owner, shape, p).await;
        let (id, u) = up(&s, p, 9 * DAY);
        let lines = &u["data"]["object"]["lines"]["data"];
        assert_eq!(
            (lines[0]["amount"].clone(), lines[1]["amount"].clone()),
            (json!(-300), json!(3000))
        );
        deliver(&owner, &u).await;
        let key: String = owner
            .query_one(
                "SELECT grant_key FROM billing.token_grants WHERE user_id = $1 AND source = 'plan_upgrade'",
                &[&s.user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(key, format!("{id}:upgrade"));
        assert_eq!(balance(&owner, &s).await, 370, "{shape:?}");
        // A plan without a unit amount (a tiered price, as the catalog's synced price says)
        // on an always_invoice invoice: no period line on it tells how long its period is, so
        // its line is worth nothing.
        let t = Subscriber::new(shape);
        let (_, first) = invoice(
            &t,
            p.start,
            "subscription_create",
            None,
            &[(SMALL, Some(SMALL.1), 1000, false, p)],
        );
        deliver(&owner, &first).await;
        let rest = events::Period {
            start: p.end - 9 * DAY,
            end: p.end,
        };
        let (_, u) = invoice(
            &t,
            rest.start,
            "subscription_update",
            None,
            &[
                (SMALL, Some(SMALL.1), -300, true, rest),
                (TIERED, None, 3000, true, rest),
            ],
        );
        deliver(&owner, &u).await;
        assert_eq!(
            balance(&owner, &t).await,
            70,
            "{shape:?}: only the credit counts"
        );
    }
}

#[tokio::test]
async fn a_downgrade_takes_back_what_it_credits_and_owes_what_was_spent() {
    let (db, owner) = setup().await;
    let mut api = db.api().await;
    catalog(&owner).await;
    for shape in [Shape::V2023, Shape::Basil] {
        let p = period(unix_now() - 21 * DAY, 30);
        let s = on_small(&owner, shape, p).await;
        let (_, u) = up(&s, p, 9 * DAY);
        deliver(&owner, &u).await;
        owner
            .execute("SELECT billing.spend_tokens($1, 350)", &[&s.user])
            .await
            .unwrap();
        // Free as far as money goes (amount_paid 0), and free invoices granting nothing does
        // not stop a take-back.
        set_config(&owner, "free_invoice_tokens = 'none'").await;
        let (id, d) = down(&s, p, 9 * DAY);
        deliver(&owner, &d).await;
        set_config(&owner, "free_invoice_tokens = NULL").await;
        assert_eq!(
            take_backs(&owner, &s).await,
            vec![(270, 20, 250, 0)],
            "{shape:?}"
        );
        assert_eq!(balance(&owner, &s).await, 0);
        assert_eq!(debt(&owner, &s).await, 250);
        let key: String = owner
            .query_one(
                "SELECT take_key FROM billing.token_reversals WHERE user_id = $1 AND kind = 'downgrade'",
                &[&s.user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(key, format!("{id}:downgrade"));
        let notes: Vec<(String, Value)> = owner
            .query(
                "SELECT kind, payload FROM billing.notifications WHERE user_id = $1 ORDER BY id",
                &[&s.user],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            notes
                .iter()
                .map(|n| (n.0.as_str(), n.1["tokens"].as_i64()))
                .collect::<Vec<_>>(),
            [("tokens_revoked", Some(270)), ("debt_created", Some(250))]
        );
        // The user sees it under row-level security, as PostgREST would show it.
        let mine = api
            .call(
                &Caller::User(s.user),
                "SELECT kind, tokens, taken, debt, billing.token_debt() FROM billing.token_reversals",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            mine.iter()
                .map(|r| (
                    r.get::<_, String>(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4)
                ))
                .collect::<Vec<(String, i64, i64, i64, i64)>>(),
            [("downgrade".to_string(), 270, 20, 250, 250)]
        );
        // The next renewal (Small, 100 tokens) pays the debt off first.
        let p2 = period(p.end, 30);
        let (_, renewal) = invoice(
            &s,
            p.end,
            "subscription_cycle",
            None,
            &[(SMALL, Some(SMALL.1), 1000, false, p2)],
        );
        deliver(&owner, &renewal).await;
        assert_eq!(
            (balance(&owner, &s).await, debt(&owner, &s).await),
            (0, 150)
        );
    }
}

#[tokio::test]
async fn proration_invoices_apply_once_in_any_order() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    for shape in [Shape::V2023, Shape::Basil] {
        let p = period(unix_now() - 21 * DAY, 30);
        let s = on_small(&owner, shape, p).await;
        let (_, u) = up(&s, p, 9 * DAY);
        let (_, d) = down(&s, p, 9 * DAY);
        // The downgrade first, twice, then the upgrade twice, then a redelivery of the
        // downgrade under a new event id (Stripe's events API and a webhook).
        deliver(&owner, &d).await;
        deliver(&owner, &d).await;
        assert_eq!(
            take_backs(&owner, &s).await,
            vec![(270, 100, 170, 0)],
            "{shape:?}"
        );
        deliver(&owner, &u).await;
        deliver(&owner, &u).await;
        let mut again = d.clone();
        again["id"] = json!(events::event_id());
        deliver(&owner, &again).await;
        assert_eq!(take_backs(&owner, &s).await.len(), 1);
        // The upgrade's 270 paid the 170 owed: where the other order ends.
        assert_eq!(
            (balance(&owner, &s).await, debt(&owner, &s).await),
            (100, 0),
            "{shape:?}"
        );
        // On Big, the same day's downgrade and then upgrade nets nothing either.
        let t = Subscriber::new(shape);
        let (_, first) = invoice(
            &t,
            p.start,
            "subscription_create",
            None,
            &[(BIG, Some(BIG.1), BIG.1, false, p)],
        );
        deliver(&owner, &first).await;
        deliver(&owner, &down(&t, p, 9 * DAY).1).await;
        deliver(&owner, &up(&t, p, 9 * DAY).1).await;
        assert_eq!(
            (balance(&owner, &t).await, debt(&owner, &t).await),
            (1000, 0)
        );
    }
}

#[tokio::test]
async fn create_prorations_net_on_the_renewal_beside_the_new_period() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    for shape in [Shape::V2023, Shape::Basil] {
        let p = period(unix_now() - 30 * DAY + 3600, 30);
        let changed = events::Period {
            start: p.end - 9 * DAY,
            end: p.end,
        };
        let p2 = period(p.end, 30);
        // Upgraded with 9 days left; the renewal bills Big's new period and the prorations.
        let s = on_small(&owner, shape, p).await;
        let (_, renewal) = invoice(
            &s,
            p.end,
            "subscription_cycle",
            None,
            &[
                (SMALL, Some(SMALL.1), -300, true, changed),
                (BIG, Some(BIG.1), 3000, true, changed),
                (BIG, Some(BIG.1), BIG.1, false, p2),
            ],
        );
        deliver(&owner, &renewal).await;
        let got: Vec<(String, i64)> = grants(&owner, &s)
            .await
            .into_iter()
            .map(|g| (g.0, g.1))
            .collect();
        assert_eq!(
            got,
            [
                ("subscription_start".into(), 100),
                ("plan".into(), 1000),
                ("plan_upgrade".into(), 270)
            ],
            "{shape:?}"
        );
        // Downgraded with 9 days left: Small's new period, and the prorations take 270 back.
        let t = Subscriber::new(shape);
        let (_, first) = invoice(
            &t,
            p.start,
            "subscription_create",
            None,
            &[(BIG, Some(BIG.1), BIG.1, false, p)],
        );
        deliver(&owner, &first).await;
        let (_, renewal) = invoice(
            &t,
            p.end,
            "subscription_cycle",
            None,
            &[
                (BIG, Some(BIG.1), -3000, true, changed),
                (SMALL, Some(SMALL.1), 300, true, changed),
                (SMALL, Some(SMALL.1), SMALL.1, false, p2),
            ],
        );
        deliver(&owner, &renewal).await;
        assert_eq!(balance(&owner, &t).await, 1000 + 100 - 270, "{shape:?}");
        assert_eq!(take_backs(&owner, &t).await, vec![(270, 270, 0, 0)]);
        // A price without a unit amount (tiered, as its synced Price says): a proration line
        // of a price the invoice also bills a period of is worth its share of that period (9
        // of 30 days of 1000 tokens); Small's credit is valued by its amount (30 tokens).
        let u = on_small(&owner, shape, p).await;
        let (_, renewal) = invoice(
            &u,
            p.end,
            "subscription_cycle",
            None,
            &[
                (SMALL, Some(SMALL.1), -300, true, changed),
                (TIERED, None, 3000, true, changed),
                (TIERED, None, 10000, false, p2),
            ],
        );
        deliver(&owner, &renewal).await;
        assert_eq!(
            balance(&owner, &u).await,
            100 + 1000 + 300 - 30,
            "{shape:?}"
        );
    }
}

#[tokio::test]
async fn a_renewal_paid_from_the_customer_balance_is_paid_not_free() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    set_config(&owner, "free_invoice_tokens = 'none'").await;
    for shape in [Shape::V2023, Shape::Basil] {
        let p = period(unix_now() - 30 * DAY + 3600, 30);
        let s = on_small(&owner, shape, p).await;
        // The credit a downgrade left on the customer's balance pays the renewal: total $10,
        // amount_paid 0.
        let (renewal_id, renewal) = invoice(
            &s,
            p.end,
            "subscription_cycle",
            Some(0),
            &[(SMALL, Some(SMALL.1), SMALL.1, false, period(p.end, 30))],
        );
        assert_eq!(renewal["data"]["object"]["total"], 1000);
        deliver(&owner, &renewal).await;
        assert_eq!(balance(&owner, &s).await, 200, "{shape:?}");
        // Its purchase paid nothing, so nothing could ever be refunded of it.
        let paid: i64 = owner
            .query_one(
                "SELECT amount_paid FROM billing.purchases WHERE id = $1",
                &[&renewal_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(paid, 0);
        // A free invoice (total 0, a 100%-off coupon) still grants nothing under 'none'.
        let (_, free) = invoice(
            &s,
            p.end + 30 * DAY,
            "subscription_cycle",
            Some(0),
            &[(SMALL, Some(SMALL.1), 0, false, period(p.end + 30 * DAY, 30))],
        );
        deliver(&owner, &free).await;
        assert_eq!(grants(&owner, &s).await.len(), 2);
    }
}

#[tokio::test]
async fn with_revocation_scope_grant_a_downgrade_takes_only_from_the_subscription() {
    let (_db, owner) = setup().await;
    catalog(&owner).await;
    set_config(&owner, "revocation_scope = 'grant'").await;
    let p = period(unix_now() - 21 * DAY, 30);
    let s = on_small(&owner, Shape::Basil, p).await;
    owner
        .execute("SELECT billing.grant_tokens($1, 1000)", &[&s.user])
        .await
        .unwrap();
    let (_, d) = down(&s, p, 9 * DAY);
    deliver(&owner, &d).await;
    // Small's 100 tokens are taken; the manual 1000 stay, and nothing is owed.
    assert_eq!(take_backs(&owner, &s).await, vec![(270, 100, 0, 170)]);
    assert_eq!(
        (balance(&owner, &s).await, debt(&owner, &s).await),
        (1000, 0)
    );
}
