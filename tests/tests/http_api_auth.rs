//! The HTTP API's door: who may call (HS256 tokens, ES256/RS256 keys published as a JWKS and
//! rotated, expired, wrongly signed, missing and anon tokens), from which browser origins (CORS),
//! and how much (body size, per-user rate). A real worker process, the emulator and a database,
//! as in http_api.rs.

mod http_api_support;
mod worker_support;

use std::time::Duration;

use http_api_support::*;
use serde_json::json;
use stripe_billing_tests::jwt::{hs256, user_claims, SigningKey, TEST_JWT_SECRET};
use uuid::Uuid;
use worker_support::*;

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
    let mut from_the_future = user_claims(user);
    from_the_future["iat"] = json!(stripe_billing_tests::jwt::unix_now() + 600);
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
        // PostgREST refuses it (PGRST303); so does the API, whose SQL runs as PostgREST's would.
        (
            "iat in the future",
            Some(hs256(TEST_JWT_SECRET, &from_the_future)),
            401,
            "JWT issued at future",
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

/// The @supabase/ssr session cookie signs a call from a configured origin; from anywhere
/// else (no Origin, another origin, Sec-Fetch-Site: cross-site, a form post) it is refused
/// with 403 before anything is queued. A bearer header still works and wins over a cookie.
#[tokio::test]
async fn session_cookie_only_from_allowed_origins() {
    let s = setup(&[
        "--no-listen-notify",
        "--poll-interval-ms",
        "3600000",
        "--session-cookie-origin",
        ORIGIN,
    ])
    .await;
    let user = Uuid::new_v4();
    let name = "sb-abcdefghijklmnop-auth-token";
    // Long enough to be split in two, as @supabase/ssr splits at 3180 characters.
    let cookie = session_cookie(name, &user_token(user), 3000, 3180);
    assert!(cookie.contains(".1="), "{cookie}");
    let body = json!({"priceId": "price_pack", "mode": "payment", "successUrl": OK_URL, "cancelUrl": CANCEL_URL}).to_string();

    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let refused: Vec<(&str, Headers, &str)> = vec![
        (
            "no Origin",
            vec![("cookie", &cookie)],
            "a call signed in by the session cookie must carry an Origin header",
        ),
        (
            "another origin",
            vec![("cookie", &cookie), ("origin", "https://evil.example")],
            "the session cookie is not accepted from origin \"https://evil.example\"",
        ),
        (
            "a sibling host",
            vec![
                ("cookie", &cookie),
                ("origin", "https://evil.example.test"),
                ("sec-fetch-site", "same-site"),
            ],
            "the session cookie is not accepted from origin \"https://evil.example.test\"",
        ),
        (
            "cross-site",
            vec![
                ("cookie", &cookie),
                ("origin", ORIGIN),
                ("sec-fetch-site", "cross-site"),
            ],
            "the session cookie is not accepted on a cross-site request",
        ),
        (
            "a form post from another site",
            vec![
                ("cookie", &cookie),
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
                ("content-type", "text/plain"),
            ],
            "the session cookie is not accepted on a cross-site request",
        ),
    ];
    for (case, headers, message) in refused {
        let a = s.post("/api/stripe/checkout", None, &body, &headers).await;
        assert_eq!(a.status, 403, "{case}: {a:?}");
        assert_eq!(a.body, json!({"error": message}), "{case}");
    }
    assert_eq!(
        s.requests().await,
        0,
        "a refused cookie call creates nothing"
    );
    s.worker
        .wait_log("not from an allowed origin", Duration::from_secs(5))
        .await;

    // From the app's own page: accepted, as the cookie's user.
    let a = s
        .post(
            "/api/stripe/checkout",
            None,
            &body,
            &[
                ("cookie", &cookie),
                ("origin", ORIGIN),
                ("sec-fetch-site", "same-site"),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let owner: Uuid = s
        .owner
        .query_one(
            "SELECT user_id FROM billing.stripe_requests WHERE result ->> 'session_id' = $1",
            &[&a.body["sessionId"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, user);
    // A broken cookie says so (401), an expired token in it is refused as in a header.
    let a = s
        .post(
            "/api/stripe/portal",
            None,
            "",
            &[
                ("cookie", &format!("{name}=base64-%%%")),
                ("origin", ORIGIN),
            ],
        )
        .await;
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.body["error"]
        .as_str()
        .unwrap()
        .starts_with("the session cookie is malformed"));
    // A bearer header wins over whatever cookie rides along.
    let other = Uuid::new_v4();
    let a = s
        .post(
            "/api/stripe/portal",
            Some(&user_token(other)),
            "",
            &[
                ("cookie", "sb-x-auth-token=garbage"),
                ("origin", "https://evil.example"),
            ],
        )
        .await;
    assert_eq!(
        a.body["error"], "no billing account yet, make a purchase first",
        "{a:?}"
    );
    // The browser may send the cookie cross-origin only when CORS allows credentials.
    let preflight = s
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/stripe/checkout", s.worker.base),
        )
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-credentials"],
        "true"
    );
    assert_eq!(s.requests().await, 1);
}
