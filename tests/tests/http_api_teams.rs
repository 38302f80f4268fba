//! The HTTP API buys for a team (DESIGN.md, "Accounts"): `accountId` in the checkout and portal
//! bodies, with the caller's role in the team checked by SQL. A real worker process, the local
//! Stripe emulator and a real database, as in http_api.rs.
mod http_api_support;
mod worker_support;

use http_api_support::*;
use serde_json::json;
use stripe_billing_tests::pg::Caller;
use uuid::Uuid;
use worker_support::*;

#[tokio::test]
async fn owners_buy_and_open_the_portal_for_their_team_and_members_may_not() {
    let s = setup(&QUEUE_IDLE).await;
    let (owner, member) = (Uuid::new_v4(), Uuid::new_v4());
    let mut api = s.db.api().await;
    let team: Uuid = api
        .call(
            &Caller::User(owner),
            "SELECT billing.create_team('Acme')",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    api.call(
        &Caller::User(owner),
        "SELECT billing.set_team_member($1, $2)",
        &[&team, &member],
    )
    .await
    .unwrap();
    let body = json!({"priceId": "price_pack", "successUrl": OK_URL, "cancelUrl": CANCEL_URL,
                      "accountId": team.to_string()})
    .to_string();

    // A member: 403 with SQL's message, and nothing queued.
    let refused = s
        .post(
            "/api/stripe/checkout",
            Some(&user_token(member)),
            &body,
            &[],
        )
        .await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        refused.body,
        json!({"error": format!("permission denied: you are not owner or admin of account {team}")})
    );
    assert_eq!(s.requests().await, 0);

    // The owner: the session is the team's (client reference and customer), not the owner's.
    let bought = s
        .post("/api/stripe/checkout", Some(&user_token(owner)), &body, &[])
        .await;
    assert_eq!(bought.status, 200, "{bought:?}\n{}", s.worker.logs());
    let session = bought.body["sessionId"].as_str().unwrap();
    let id = s.request_of(session).await;
    let calls = s.emulator.checkout_calls(id).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0]["params"]["client_reference_id"],
        team.to_string().as_str()
    );
    let linked: i64 = s
        .owner
        .query_one(
            "SELECT count(*) FROM billing.customers WHERE user_id = $1",
            &[&team],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(linked, 1, "the team has the Stripe customer");

    // The team's portal: its owner yes, its member no, and a malformed id is the caller's error.
    let portal = |who: Uuid, account: String| {
        let s = &s;
        async move {
            let body =
                json!({"returnUrl": "https://app.example.test/account", "accountId": account});
            s.post(
                "/api/stripe/portal",
                Some(&user_token(who)),
                &body.to_string(),
                &[],
            )
            .await
        }
    };
    let opened = portal(owner, team.to_string()).await;
    assert_eq!(opened.status, 200, "{opened:?}");
    assert_eq!(portal(member, team.to_string()).await.status, 403);
    assert_eq!(portal(owner, "acme".into()).await.status, 400);
}
