//! Shared set-up of the HTTP API tests (http_api.rs, http_api_auth.rs): a seeded database, the
//! emulator, a JWKS with an ES256 and an RS256 key, and a worker that accepts HS256 tokens and
//! the JWKS's; and the calls a front end makes, as plain HTTP.
#![allow(dead_code)]

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use stripe_billing_tests::jwt::{hs256, user_claims, JwksServer, SigningKey, TEST_JWT_SECRET};
use stripe_billing_tests::pg::TestDb;
use uuid::Uuid;

use crate::worker_support::*;

pub const ORIGIN: &str = "https://app.example.test";

/// Flags that leave the queue loop idle once started: only the API serves requests.
pub const QUEUE_IDLE: [&str; 3] = ["--no-listen-notify", "--poll-interval-ms", "3600000"];

pub struct Setup {
    pub db: TestDb,
    pub owner: tokio_postgres::Client,
    pub emulator: Emulator,
    pub worker: Worker,
    pub jwks: JwksServer,
    pub ec: SigningKey,
    pub rsa: SigningKey,
    pub http: reqwest::Client,
}

/// A seeded database, the emulator, a JWKS with an ES256 and an RS256 key, and a worker that
/// accepts HS256 tokens and the JWKS's, with `extra` flags.
pub async fn setup(extra: &[&str]) -> Setup {
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
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Setup {
    /// POSTs `body` to `path` with `token` (as `Authorization: Bearer`) and extra headers.
    pub async fn post(
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
    pub async fn buy_pack(&self, token: &str, headers: &[(&str, &str)]) -> Answer {
        let body = json!({"priceId": "price_pack", "mode": "payment", "successUrl": OK_URL, "cancelUrl": CANCEL_URL});
        self.post(
            "/api/stripe/checkout",
            Some(token),
            &body.to_string(),
            headers,
        )
        .await
    }

    pub async fn requests(&self) -> i64 {
        self.owner
            .query_one("SELECT count(*) FROM billing.stripe_requests", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The request row whose session is `session_id`.
    pub async fn request_of(&self, session_id: &str) -> Uuid {
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

/// The `Cookie` header a browser sends for the session @supabase/ssr stores (its default
/// encoding: `base64-` + base64url of the session JSON), split into `.0`, `.1`, … pieces of at
/// most `chunk` characters as its chunker does for a long session. The session carries a
/// user object padded to `pad` characters, as a real one with metadata is long.
pub fn session_cookie(name: &str, token: &str, pad: usize, chunk: usize) -> String {
    use base64::Engine;
    let session = json!({
        "access_token": token, "token_type": "bearer", "expires_in": 3600,
        "expires_at": stripe_billing_tests::jwt::unix_now() + 3600, "refresh_token": "r3fr3sh",
        "user": {"id": Uuid::new_v4(), "user_metadata": {"bio": "x".repeat(pad)}},
    });
    let value = format!(
        "base64-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(session.to_string())
    );
    if value.len() <= chunk {
        return format!("{name}={value}");
    }
    let pieces: Vec<String> = value
        .as_bytes()
        .chunks(chunk)
        .enumerate()
        .map(|(i, piece)| format!("{name}.{i}={}", std::str::from_utf8(piece).unwrap()))
        .collect();
    pieces.join("; ")
}

pub fn user_token(user: Uuid) -> String {
    hs256(TEST_JWT_SECRET, &user_claims(user))
}

pub fn keys(body: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}
