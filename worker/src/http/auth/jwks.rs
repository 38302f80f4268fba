//! The published signing keys (a JSON Web Key Set, as Supabase serves it at
//! `/auth/v1/.well-known/jwks.json`), fetched on first use and cached. A token whose key id is
//! not in the cache makes one refresh (keys rotate: a new key is published before tokens are
//! signed with it), at most once per [`REFRESH_COOLDOWN`], so tokens with made-up key ids cannot
//! turn the worker into a flood of fetches. The whole set is fetched again after [`MAX_AGE`],
//! so a key the project revoked stops being accepted.
//!
//! Only ES256 (P-256) and RS256 signing keys are kept: the asymmetric keys Supabase issues.

use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::time::Instant;

use super::AuthError;

/// Shortest time between two fetches.
pub const REFRESH_COOLDOWN: Duration = Duration::from_secs(1);

/// A cached set older than this is fetched again before use.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// One fetch's time limit.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest key set read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A signing key from the set.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct Cache {
    keys: Vec<Key>,
    fetched: Option<Instant>,
}

impl Cache {
    fn stale(&self) -> bool {
        self.fetched.is_none_or(|at| at.elapsed() >= MAX_AGE)
    }

    /// Whether a token with a key id not in the set may fetch it again now.
    fn may_refetch(&self) -> bool {
        self.fetched
            .is_none_or(|at| at.elapsed() >= REFRESH_COOLDOWN)
    }
}

/// The key set at one URL.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    /// Held only to read or replace the set, never across a fetch: a token with a made-up key
    /// id may make a fetch (once per cooldown), and genuine tokens must not wait for it.
    cache: std::sync::Mutex<Cache>,
    /// Held across a fetch, so there is one at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub fn new(url: &str) -> Result<Jwks, String> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
        Ok(Jwks {
            url: url.to_string(),
            http,
            cache: std::sync::Mutex::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The key for a token with this key id and algorithm. Without a key id, the first key of
    /// the algorithm (a set with one key needs none).
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        if let Some(answer) = self.cached(kid, alg) {
            return answer;
        }
        let _fetching = self.fetching.lock().await;
        // Asked again: the fetch we waited for may have brought the key, or used up the
        // cooldown.
        if let Some(answer) = self.cached(kid, alg) {
            return answer;
        }
        self.refresh().await?;
        find(&self.lock().keys, kid, alg).ok_or_else(|| unknown(kid))
    }

    /// The answer the cached set gives, or None when the set must be fetched first: it is
    /// stale, or lacks the key and the cooldown allows fetching it.
    fn cached(&self, kid: Option<&str>, alg: Algorithm) -> Option<Result<DecodingKey, AuthError>> {
        let cache = self.lock();
        if cache.stale() {
            return None;
        }
        match find(&cache.keys, kid, alg) {
            Some(key) => Some(Ok(key)),
            None if cache.may_refetch() => None,
            None => Some(Err(unknown(kid))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // Nothing under this lock can panic half-way; a poisoned lock must not stop every
        // verification after it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches the set (the caller holds `fetching`). A failure keeps the keys cached so far
    /// (they stay valid until the fetch works again); only with nothing cached is it the
    /// caller's answer.
    async fn refresh(&self) -> Result<(), AuthError> {
        let fetched = self.fetch().await;
        let mut cache = self.lock();
        match fetched {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "fetched the JWKS");
                cache.keys = keys;
                cache.fetched = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "cannot fetch the JWKS");
                if cache.fetched.is_some() {
                    // Try again after the cooldown rather than on every request.
                    cache.fetched = Some(Instant::now());
                    Ok(())
                } else {
                    Err(AuthError::KeysUnavailable)
                }
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let resp = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| crate::error_chain(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| crate::error_chain(&e))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("the key set is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let set: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        keys_of(&set)
    }
}

/// The signing keys of a JWKS document this worker can use; keys of other kinds (encryption
/// keys, curves or algorithms it does not accept) are skipped.
fn keys_of(set: &Value) -> Result<Vec<Key>, String> {
    let Some(entries) = set.get("keys").and_then(Value::as_array) else {
        return Err("no \"keys\" array".into());
    };
    Ok(entries
        .iter()
        .filter_map(|entry| serde_json::from_value::<Jwk>(entry.clone()).ok())
        .filter_map(|jwk| signing_key(&jwk))
        .collect())
}

fn signing_key(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

fn unknown(kid: Option<&str>) -> AuthError {
    AuthError::UnknownKey(kid.unwrap_or("(none)").chars().take(100).collect())
}

fn find(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    keys.iter()
        .find(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
        .map(|k| k.key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    // Public halves of throwaway keys made for this test (openssl genpkey).
    const RSA_N: &str = "5tk84mJHRg0zWeYM1WWKtyJIQmtcfiodwrDi9GhJQ0k2JZOctMCErfB1UN2i8x5-O7TqI35g7o6JntcfC8kNvFJ6FrLHkSc7DFuA8fo-tUZrOWFGLiV4EEZD4_FtMhDFYiKt22IKZ0Ty57HGz3Y8-Awua_ips98qH_MEhiUrK-hwfOS9B2U5B461lPJFpbR7DB7U-d1_gar7bIlYHIHNfI9MHi__ZYilNVdZ4DRt9Hyf-FLXgbAgNlC2mXMOMFkTFj1O0_E0TN0zClh6NuLeZNKEO7JzIe2hMB0TVSr3COdb6N8CpYKLRvITBYeC5A05NarhUV11hA6YGz9a-t8eGQ";
    const EC_X: &str = "G-JycdPkESLa1Qgb4MfxcCB1gyMapRscF2GXTXAG6yU";
    const EC_Y: &str = "icyuosuOtuok8cDnNvwTBAHmxojpi7_vczrR4Wxdr_w";

    #[test]
    fn only_es256_and_rs256_signing_keys_are_kept() {
        // The shape Supabase publishes (x, y of a P-256 key), an RSA key, and keys to skip.
        let set = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "ec-1", "use": "sig",
             "key_ops": ["verify"], "ext": true,
             "x": EC_X,
             "y": EC_Y},
            {"kty": "RSA", "kid": "rsa-1", "n": RSA_N,
             "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "kid": "ec-384",
             "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": EC_X,
             "y": EC_Y},
            {"kty": "unknown"}
        ]});
        let keys = keys_of(&set).unwrap();
        let kept: Vec<(Option<&str>, Algorithm)> =
            keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
        assert_eq!(
            kept,
            [
                (Some("ec-1"), Algorithm::ES256),
                (Some("rsa-1"), Algorithm::RS256)
            ]
        );
        assert!(find(&keys, Some("ec-1"), Algorithm::ES256).is_some());
        // A key id with the wrong algorithm is not a match.
        assert!(find(&keys, Some("ec-1"), Algorithm::RS256).is_none());
        assert!(find(&keys, None, Algorithm::RS256).is_some());
        assert!(find(&keys, Some("gone"), Algorithm::ES256).is_none());
        assert!(keys_of(&json!({"no": "keys"})).is_err());
    }

    /// A key set server whose first answer is immediate and whose later ones take `slow`.
    async fn serve_keys(slow: Duration) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let counter = counter.clone();
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) > 0 {
                        tokio::time::sleep(slow).await;
                    }
                    axum::Json(json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec-1",
                                                 "x": EC_X, "y": EC_Y}]}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, hits)
    }

    #[tokio::test]
    async fn a_fetch_for_an_unknown_key_does_not_hold_up_known_keys() {
        let slow = Duration::from_secs(2);
        let (url, hits) = serve_keys(slow).await;
        let jwks = Arc::new(Jwks::new(&url).unwrap());
        assert!(jwks.key(Some("ec-1"), Algorithm::ES256).await.is_ok());
        tokio::time::sleep(REFRESH_COOLDOWN + Duration::from_millis(100)).await;

        let forged = |kid: &'static str| {
            let jwks = jwks.clone();
            tokio::spawn(async move { jwks.key(Some(kid), Algorithm::ES256).await })
        };
        let first = forged("forged-1");
        while hits.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = forged("forged-2");

        let started = Instant::now();
        assert!(jwks.key(Some("ec-1"), Algorithm::ES256).await.is_ok());
        assert!(started.elapsed() < slow / 4, "{:?}", started.elapsed());

        for forged in [first, second] {
            let answer = forged.await.unwrap();
            assert!(matches!(answer, Err(AuthError::UnknownKey(_))));
        }
        // One fetch at a time, and the second made-up key id found the cooldown used up.
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}
