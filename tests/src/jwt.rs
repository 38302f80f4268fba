//! Tokens for the worker's HTTP API, made the way Supabase Auth makes them: HS256 with the
//! project's secret, or ES256/RS256 with a key it publishes in a JWKS. [`JwksServer`] is that
//! publication: a tiny HTTP server whose key set a test can change (rotation) and whose fetches
//! it can count. The RSA key is a throwaway made for these tests
//! (`tests/fixtures/jwt/rsa_test_key.pem`); EC keys are made fresh each run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use uuid::Uuid;

/// The HS256 secret the tests configure (Supabase's are at least 32 characters, too).
pub const TEST_JWT_SECRET: &str = "test-jwt-secret-with-at-least-32-characters";

pub fn unix_now() -> i64 {
    crate::events::unix_now()
}

/// Claims of a signed-in user as Supabase Auth issues them, valid for an hour.
pub fn user_claims(user: Uuid) -> Value {
    json!({
        "iss": "https://project.supabase.test/auth/v1", "sub": user.to_string(),
        "aud": "authenticated", "role": "authenticated", "email": format!("{user}@example.test"),
        "iat": unix_now(), "exp": unix_now() + 3600, "session_id": Uuid::new_v4().to_string(),
    })
}

/// An HS256 token of `claims`.
pub fn hs256(secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign HS256")
}

/// An asymmetric signing key with its public JWK.
pub struct SigningKey {
    pub kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A new P-256 key (ES256), as Supabase's asymmetric keys are by default.
    pub fn es256(kid: &str) -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("read the key back");
        // Uncompressed point: 0x04, x (32 bytes), y (32 bytes).
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                         "key_ops": ["verify"], "ext": true,
                         "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                         "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
        SigningKey {
            kid: kid.to_string(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    /// The fixture RSA key (RS256).
    pub fn rs256(kid: &str) -> SigningKey {
        let dir = shipped_sql::upgrade::repo_root().join("tests/fixtures/jwt");
        let pem = std::fs::read(dir.join("rsa_test_key.pem")).expect("RSA test key");
        let mut jwk: Value = serde_json::from_slice(
            &std::fs::read(dir.join("rsa_test_key.jwk.json")).expect("RSA test JWK"),
        )
        .expect("JWK is JSON");
        jwk["kid"] = json!(kid);
        SigningKey {
            kid: kid.to_string(),
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(&pem).expect("RSA PEM"),
            jwk,
        }
    }

    /// The public key as a JWKS entry.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// A token of `claims` signed with this key, naming `kid` in its header.
    pub fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        encode(&header, claims, &self.key).expect("sign")
    }

    /// A token of `claims` signed with this key and naming it.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(Some(&self.kid.clone()), claims)
    }
}

/// Serves `GET /jwks.json` with the keys set last; counts the fetches.
pub struct JwksServer {
    pub url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> JwksServer {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let app = {
            let (keys, fetches) = (keys.clone(), fetches.clone());
            axum::Router::new().route(
                "/jwks.json",
                axum::routing::get(move || {
                    let (keys, fetches) = (keys.clone(), fetches.clone());
                    async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let keys = keys.lock().unwrap().clone();
                        axum::Json(json!({ "keys": keys }))
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/jwks.json",
            listener.local_addr().expect("address")
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer {
            url,
            keys,
            fetches,
            task,
        }
    }

    /// Publishes `keys` instead of the current set.
    pub fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
