//! The brief's HTTP API end to end: a real `stripe-billing-worker` process serving
//! `POST /api/stripe/checkout` and `/api/stripe/portal`, the local Stripe emulator, a real
//! database, and the calls a front end makes (`fetch` with the user's access token, as plain
//! HTTP), signed with an HS256 secret or with ES256/RS256 keys published as a JWKS.
//!
//! Unless a test says otherwise the worker's queue loop is idle (no LISTEN, an hourly poll): a
//! request answered with a session was served by the worker that accepted the call, at once.
//! Tokens, keys, CORS and limits are in http_api_auth.rs. Needs `cargo build -p
//! stripe-billing-worker` first and the cluster of scripts/integration-test.sh.
mod http_api_support;
mod worker_support;

use std::time::Duration;

use http_api_support::*;
use serde_json::{json, Value};
use stripe_billing_tests::jwt::TEST_JWT_SECRET;
use stripe_billing_tests::pg::Caller;
use uuid::Uuid;
use worker_support::*;

#[tokio::test]
async fn the_brief_calls_are_served_at_once_by_the_accepting_worker() {
    let s = setup(&QUEUE_IDLE).await;
    let user = Uuid::new_v4();
    let token = user_token(user);

    // Before any purchase there is no billing account (SQL's BL002, 400).
    let portal = s.post("/api/stripe/portal", Some(&token), "", &[]).await;
    assert_eq!(portal.status, 400, "{portal:?}");
    assert_eq!(
        portal.body,
        json!({"error": "no billing account yet, make a purchase first"})
    );

    // fetch('/api/stripe/checkout', {method: 'POST', headers: {Authorization: `Bearer ${token}`},
    //   body: JSON.stringify({priceId, mode, successUrl, cancelUrl})}) → {url, sessionId}
    let checkout = s.buy_pack(&token, &[]).await;
    assert_eq!(checkout.status, 200, "{checkout:?}\n{}", s.worker.logs());
    assert_eq!(keys(&checkout.body), ["sessionId", "url"]);
    let session = checkout.body["sessionId"].as_str().unwrap();
    assert!(session.starts_with("cs_test_"), "{session}");
    assert!(checkout.body["url"].as_str().unwrap().ends_with(session));

    // The emulator saw the session created once, under the request's idempotency key, and the
    // row was claimed once: by the API's worker, whose queue loop never polled meanwhile.
    let id = s.request_of(session).await;
    let calls = s.emulator.checkout_calls(id).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0]["params"]["client_reference_id"],
        user.to_string().as_str()
    );
    let r = row(&s.owner, id).await;
    assert_eq!((r.status.as_str(), r.attempts), ("succeeded", 1), "{r:?}");

    // The portal now that the user has a Stripe customer: {url} only.
    let portal = s
        .post(
            "/api/stripe/portal",
            Some(&token),
            r#"{"returnUrl": "https://app.example.test/account"}"#,
            &[],
        )
        .await;
    assert_eq!(portal.status, 200, "{portal:?}");
    assert_eq!(keys(&portal.body), ["url"]);
    let portal_calls = s.emulator.created("/v1/billing_portal/sessions").await;
    assert_eq!(portal_calls.len(), 1);
    assert_eq!(
        portal_calls[0]["params"]["return_url"],
        "https://app.example.test/account"
    );

    // The queue loop really is idle: a request queued through the RPC path stays pending.
    let mut api = s.db.api().await;
    let queued = request_checkout(&mut api, Uuid::new_v4(), "price_pack", "").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(row(&s.owner, queued).await.status, "pending");
}

#[tokio::test]
async fn sql_refusals_keep_their_message_and_status() {
    let mut flags = QUEUE_IDLE.to_vec();
    flags.extend(["--api-burst", "20"]);
    let s = setup(&flags).await;
    let token = user_token(Uuid::new_v4());
    let checkout = |body: Value| {
        let (s, token) = (&s, token.clone());
        async move {
            s.post("/api/stripe/checkout", Some(&token), &body.to_string(), &[])
                .await
        }
    };
    let cases = [
        (
            json!({"priceId": "price_pack", "mode": "subscription"}),
            400,
            "mode subscription does not fit plan pack, which is a token pack",
        ),
        (
            json!({"priceId": "price_pack", "successUrl": "https://evil.example/thanks"}),
            400,
            "success_url must point to one of this app's sites; https://evil.example is not one",
        ),
        (
            json!({"priceId": "price_pack", "coupon": "STAFF100"}),
            400,
            "coupon 'STAFF100' is not offered",
        ),
        (json!({"mode": "payment"}), 400, "price_id must not be NULL"),
        (
            json!({"priceId": "price_nope"}),
            404,
            "unknown price 'price_nope'",
        ),
        (
            json!({"priceId": "price_pack", "projectId": "not-a-uuid"}),
            400,
            "invalid input syntax for type uuid: \"not-a-uuid\"",
        ),
    ];
    for (body, status, message) in cases {
        let a = checkout(body.clone()).await;
        assert_eq!(
            (a.status, &a.body),
            (status, &json!({"error": message})),
            "{body}"
        );
    }
    let a = checkout(json!({"priceID": "price_pack"})).await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid request body: unknown field `priceID`"),
        "{a:?}"
    );
    assert_eq!(s.requests().await, 0);

    // Stripe's refusal (a price the catalog sells but Stripe does not know) is 502 with its message.
    let a =
        checkout(json!({"priceId": "price_ghost", "successUrl": OK_URL, "cancelUrl": CANCEL_URL}))
            .await;
    assert_eq!(a.status, 502, "{a:?}");
    assert!(
        a.body["error"].as_str().unwrap().contains("price_ghost"),
        "{a:?}"
    );
}

#[tokio::test]
async fn one_idempotency_key_one_request_and_one_session() {
    let s = setup(&QUEUE_IDLE).await;
    let user = Uuid::new_v4();
    let token = user_token(user);
    let key = [("idempotency-key", "order-7f3a")];
    // Twice at the same time: the second call waits for the first's request instead of
    // queuing another, and both get the same session.
    let (a, b) = tokio::join!(s.buy_pack(&token, &key), s.buy_pack(&token, &key));
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{a:?} {b:?}\n{}",
        s.worker.logs()
    );
    assert_eq!(a.body, b.body);
    // And once more later (a retry after a lost answer).
    let c = s.buy_pack(&token, &key).await;
    assert_eq!(c.body, a.body);
    let session = a.body["sessionId"].as_str().unwrap();
    let id = s.request_of(session).await;
    assert_eq!(s.requests().await, 1);
    assert_eq!(s.emulator.created("/v1/checkout/sessions").await.len(), 1);
    assert_eq!(row(&s.owner, id).await.attempts, 1);

    // The same key for something else is refused (BL004, 409); another user's key is theirs.
    let body = json!({"priceId": "price_pack", "quantity": 2, "successUrl": OK_URL, "cancelUrl": CANCEL_URL});
    let d = s
        .post(
            "/api/stripe/checkout",
            Some(&token),
            &body.to_string(),
            &key,
        )
        .await;
    assert_eq!(d.status, 409, "{d:?}");
    assert_eq!(
        d.body,
        json!({"error": "Idempotency-Key 'order-7f3a' was used for a different request"})
    );
    let e = s.buy_pack(&user_token(Uuid::new_v4()), &key).await;
    assert_eq!(e.status, 200);
    assert_ne!(e.body["sessionId"], a.body["sessionId"]);
    // Without a key, a second token pack is a second purchase.
    let f = s.buy_pack(&token, &[]).await;
    assert_ne!(f.body["sessionId"], a.body["sessionId"]);
}

#[tokio::test]
async fn a_request_another_worker_holds_is_awaited() {
    let s = setup(&QUEUE_IDLE).await;
    let user = Uuid::new_v4();
    // The user's request queued through the RPC path with a key, and held by another worker.
    let mut api = s.db.api().await;
    let headers = r#"{"idempotency-key": "held-1"}"#;
    let sql = format!("SELECT billing.request_checkout('price_pack', success_url => '{OK_URL}', cancel_url => '{CANCEL_URL}')");
    let id: Uuid = api
        .call_with_headers(&Caller::User(user), headers, &sql, &[])
        .await
        .unwrap()[0]
        .get(0);
    let claimed = s
        .owner
        .query(
            "SELECT id FROM billing.claim_request($1, 'other-worker', 60)",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // The API call with that key waits for it: pending past --api-wait-ms is a 503 to retry.
    let slow = Worker::start(
        &s.db.dsn,
        Some(&s.emulator.url),
        &[
            "--jwt-secret",
            TEST_JWT_SECRET,
            "--api-wait-ms",
            "300",
            "--no-listen-notify",
            "--poll-interval-ms",
            "3600000",
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let body =
        json!({"priceId": "price_pack", "successUrl": OK_URL, "cancelUrl": CANCEL_URL}).to_string();
    let call = || {
        http.post(format!("{}/api/stripe/checkout", slow.base))
            .bearer_auth(user_token(user))
            .header("idempotency-key", "held-1")
            .body(body.clone())
            .send()
    };
    let resp = call().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    // The other worker finishes it; the same call now gets its session.
    s.owner
        .query(
            "SELECT billing.finish_request($1, 'other-worker', '{\"url\": \"https://pay.example/cs_test_held\", \"session_id\": \"cs_test_held\"}')",
            &[&id],
        )
        .await
        .unwrap();
    let resp = call().await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"url": "https://pay.example/cs_test_held", "sessionId": "cs_test_held"})
    );
    assert!(
        s.emulator.created("/v1/checkout/sessions").await.is_empty(),
        "nobody called Stripe twice"
    );
}

#[tokio::test]
async fn a_request_held_back_by_the_users_other_one_is_served_when_that_one_ends() {
    // Two packs bought at once: the queue serves one request of a user at a time, so the
    // second call's request waits for the first; with the queue loop idle, only the second
    // call's worker claiming it again can serve it within the wait.
    let s = setup(&QUEUE_IDLE).await;
    let token = user_token(Uuid::new_v4());
    let (a, b) = tokio::join!(s.buy_pack(&token, &[]), s.buy_pack(&token, &[]));
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{a:?} {b:?}\n{}",
        s.worker.logs()
    );
    assert_ne!(a.body["sessionId"], b.body["sessionId"]);
    assert_eq!(s.emulator.created("/v1/checkout/sessions").await.len(), 2);
    let attempts: Vec<i32> = s
        .owner
        .query("SELECT attempts FROM billing.stripe_requests", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(attempts, [1, 1]);
}
