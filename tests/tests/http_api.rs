//! The brief's HTTP API end to end: a real `stripe-billing-worker` process serving
//! `POST /api/stripe/checkout` and `/api/stripe/portal`, the local Stripe emulator, a real
//! database, and the calls a front end makes (`fetch` with the user's access token, as plain
//! HTTP), signed with an HS256 secret or with ES256/RS256 keys published as a JWKS.
//!
//! Unless a test says otherwise the worker's queue loop is idle (no LISTEN, an hourly poll): a
//! request answered with a session was served by the worker that accepted the call, at once.
//! Needs `cargo build -p stripe-billing-worker` first and the cluster of
//! scripts/integration-test.sh.
mod worker_support;

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use stripe_billing_tests::jwt::{hs256, user_claims, JwksServer, SigningKey, TEST_JWT_SECRET};
use stripe_billing_tests::pg::{Caller, TestDb};
use uuid::Uuid;
use worker_support::*;

const ORIGIN: &str = "https://app.example.test";

/// Flags that leave the queue loop idle once started: only the API serves requests.
const QUEUE_IDLE: [&str; 3] = ["--no-listen-notify", "--poll-interval-ms", "3600000"];

struct Setup {
    db: TestDb,
    owner: tokio_postgres::Client,
    emulator: Emulator,
    worker: Worker,
    jwks: JwksServer,
    ec: SigningKey,
    rsa: SigningKey,
    http: reqwest::Client,
}

/// A seeded database, the emulator, a JWKS with an ES256 and an RS256 key, and a worker that
/// accepts HS256 tokens and the JWKS's, with `extra` flags.
async fn setup(extra: &[&str]) -> Setup {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed(&owner, false).await;
    let emulator = Emulator::start(None).await;
    let ec = SigningKey::es256("ec-2025");
    let rsa = SigningKey::rs256("rsa-2025");
    let jwks = JwksServer::start(vec![ec.jwk(), rsa.jwk()]).await;
    let mut flags = vec![
        "--jwt-secret",
        TEST_JWT_SECRET,
        "--jwks-url",
        &jwks.url,
        "--jwt-audience",
        "authenticated",
        "--cors-origin",
        ORIGIN,
    ];
    flags.extend_from_slice(extra);
    let worker = Worker::start(&db.dsn, Some(&emulator.url), &flags).await;
    Setup {
        db,
        owner,
        emulator,
        worker,
        jwks,
        ec,
        rsa,
        http: reqwest::Client::new(),
    }
}

/// What the API answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Setup {
    /// POSTs `body` to `path` with `token` (as `Authorization: Bearer`) and extra headers.
    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .http
            .post(format!("{}{path}", self.worker.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.expect("POST");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// The brief's checkout call for a token pack.
    async fn buy_pack(&self, token: &str, headers: &[(&str, &str)]) -> Answer {
        let body = json!({"priceId": "price_pack", "mode": "payment", "successUrl": OK_URL, "cancelUrl": CANCEL_URL});
        self.post(
            "/api/stripe/checkout",
            Some(token),
            &body.to_string(),
            headers,
        )
        .await
    }

    async fn requests(&self) -> i64 {
        self.owner
            .query_one("SELECT count(*) FROM billing.stripe_requests", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The request row whose session is `session_id`.
    async fn request_of(&self, session_id: &str) -> Uuid {
        self.owner
            .query_one(
                "SELECT id FROM billing.stripe_requests WHERE result ->> 'session_id' = $1",
                &[&session_id],
            )
            .await
            .expect("a request made the session")
            .get(0)
    }
}

fn user_token(user: Uuid) -> String {
    hs256(TEST_JWT_SECRET, &user_claims(user))
}

fn keys(body: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

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
    let calls = s
        .emulator
        .calls("/v1/checkout/sessions", &format!("checkout-{id}"))
        .await;
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
async fn tokens_valid_expired_wrongly_signed_missing_and_anon() {
    let s = setup(&QUEUE_IDLE).await;
    let user = Uuid::new_v4();
    let mut expired = user_claims(user);
    expired["exp"] = json!(stripe_billing_tests::jwt::unix_now() - 3600);
    let mut anon = user_claims(user);
    anon["role"] = json!("anon");
    anon.as_object_mut().unwrap().remove("sub");
    let mut other_audience = user_claims(user);
    other_audience["aud"] = json!("somebody-else");
    let mut not_a_uuid = user_claims(user);
    not_a_uuid["sub"] = json!("user-42");
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        (
            "missing",
            None,
            401,
            "not signed in: send Authorization: Bearer <the user's access token>",
        ),
        (
            "expired",
            Some(hs256(TEST_JWT_SECRET, &expired)),
            401,
            "JWT expired",
        ),
        (
            "wrong secret",
            Some(hs256(
                "another-secret-that-is-at-least-32-chars",
                &user_claims(user),
            )),
            401,
            "JWT signature does not match",
        ),
        (
            "anon",
            Some(hs256(TEST_JWT_SECRET, &anon)),
            401,
            "only signed-in users may call this (the token's role is \"anon\", not authenticated)",
        ),
        (
            "audience",
            Some(hs256(TEST_JWT_SECRET, &other_audience)),
            401,
            "JWT audience is not accepted",
        ),
        (
            "garbage",
            Some("not-a-token".into()),
            401,
            "JWT is malformed: InvalidToken",
        ),
        // Verified, but SQL refuses the sub (22P02 → 400 with SQL's message).
        (
            "sub",
            Some(hs256(TEST_JWT_SECRET, &not_a_uuid)),
            400,
            "the JWT sub claim is not a user id (uuid)",
        ),
    ];
    for (name, token, status, message) in cases {
        let a = match &token {
            Some(token) => s.buy_pack(token, &[]).await,
            None => {
                s.post(
                    "/api/stripe/checkout",
                    None,
                    r#"{"priceId": "price_pack"}"#,
                    &[],
                )
                .await
            }
        };
        assert_eq!(a.status, status, "{name}: {a:?}");
        assert_eq!(a.body, json!({"error": message}), "{name}");
        if status == 401 {
            assert_eq!(a.headers["www-authenticate"], "Bearer", "{name}");
        }
    }
    assert_eq!(
        s.requests().await,
        0,
        "nothing was queued for refused callers"
    );
    // The valid token of the same user works.
    assert_eq!(s.buy_pack(&user_token(user), &[]).await.status, 200);
}

#[tokio::test]
async fn jwks_keys_es256_and_rs256_and_a_rotation() {
    let s = setup(&QUEUE_IDLE).await;
    let portal = |token: String| {
        let s = &s;
        async move { s.post("/api/stripe/portal", Some(&token), "", &[]).await }
    };
    let user = Uuid::new_v4();
    // Accepted: SQL ran as the user and answered BL002 (no purchase yet), not 401.
    for token in [
        s.ec.sign(&user_claims(user)),
        s.rsa.sign(&user_claims(user)),
    ] {
        let a = portal(token).await;
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(
            a.body["error"],
            "no billing account yet, make a purchase first"
        );
    }
    // A key that claims a published key id but is not that key.
    let impostor = SigningKey::es256("ec-2025");
    let a = portal(impostor.sign(&user_claims(user))).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (401, Some("JWT signature does not match"))
    );
    // An HS256 token naming a published key id is checked against the secret, not the key.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("ec-2025".into());
    let confused = jsonwebtoken::encode(
        &header,
        &user_claims(user),
        &jsonwebtoken::EncodingKey::from_secret(s.ec.jwk()["x"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    assert_eq!(portal(confused).await.status, 401);

    // Rotation: a new key signs tokens once it is published; until then it is unknown.
    let next = SigningKey::es256("ec-2026");
    let a = portal(next.sign(&user_claims(user))).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(
        a.body["error"],
        "JWT key id \"ec-2026\" is not among the published signing keys"
    );
    let fetched = s.jwks.fetches();
    s.jwks.publish(vec![s.ec.jwk(), next.jwk()]);
    // (Refreshes on an unknown key id are at most one a second.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = portal(next.sign(&user_claims(user))).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(
        s.jwks.fetches(),
        fetched + 1,
        "one refresh for the new key id"
    );
    // Known keys need no fetch.
    portal(s.ec.sign(&user_claims(user))).await;
    assert_eq!(s.jwks.fetches(), fetched + 1);
}

#[tokio::test]
async fn cors_preflight_for_allowed_and_refused_origins() {
    let s = setup(&QUEUE_IDLE).await;
    let preflight = |origin: &'static str| {
        let s = &s;
        async move {
            s.http
                .request(
                    reqwest::Method::OPTIONS,
                    format!("{}/api/stripe/checkout", s.worker.base),
                )
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type,idempotency-key",
                )
                .send()
                .await
                .unwrap()
        }
    };
    let allowed = preflight(ORIGIN).await;
    assert_eq!(allowed.status(), 200);
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-methods"], "POST");
    let allowed_headers = h["access-control-allow-headers"].to_str().unwrap();
    for name in ["authorization", "content-type", "idempotency-key"] {
        assert!(allowed_headers.contains(name), "{allowed_headers}");
    }
    let refused = preflight("https://evil.example").await;
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{:?}",
        refused.headers()
    );

    // The actual call from the allowed origin carries the header; one from elsewhere does not
    // (the browser withholds the answer from that page).
    let user = Uuid::new_v4();
    let a = s
        .post(
            "/api/stripe/portal",
            Some(&user_token(user)),
            "",
            &[("origin", ORIGIN)],
        )
        .await;
    assert_eq!(a.headers["access-control-allow-origin"], ORIGIN);
    let a = s
        .post(
            "/api/stripe/portal",
            Some(&user_token(user)),
            "",
            &[("origin", "https://evil.example")],
        )
        .await;
    assert!(a.headers.get("access-control-allow-origin").is_none());
    // The webhook endpoint is for Stripe, not browsers: no CORS there.
    let hook = s
        .http
        .request(reqwest::Method::OPTIONS, s.worker.webhook_url())
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(hook.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn body_size_and_per_user_rate_limits() {
    let s = setup(&[
        "--no-listen-notify",
        "--api-max-body-bytes",
        "1024",
        "--api-burst",
        "3",
        "--api-rate-limit",
        "2",
    ])
    .await;
    let user = Uuid::new_v4();
    let token = user_token(user);
    let big = json!({"priceId": "price_pack", "successUrl": format!("{OK_URL}?pad={}", "x".repeat(2000))});
    let a = s
        .post("/api/stripe/checkout", Some(&token), &big.to_string(), &[])
        .await;
    assert_eq!(a.status, 413, "{a:?}");
    assert!(
        a.body["error"].as_str().unwrap().contains("length limit"),
        "{a:?}"
    );

    // A burst of 3 (the 413 above was refused before counting), then 429 with Retry-After.
    for _ in 0..3 {
        assert_eq!(
            s.post("/api/stripe/portal", Some(&token), "", &[])
                .await
                .status,
            400
        );
    }
    let limited = s.post("/api/stripe/portal", Some(&token), "", &[]).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(
        limited.body,
        json!({"error": "too many calls; wait before trying again"})
    );
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // Another user is not held up.
    let other = user_token(Uuid::new_v4());
    assert_eq!(
        s.post("/api/stripe/portal", Some(&other), "", &[])
            .await
            .status,
        400
    );
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
