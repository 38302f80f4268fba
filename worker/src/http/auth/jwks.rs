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
use tokio::sync::Mutex;
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

/// The key set at one URL.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    cache: Mutex<Cache>,
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
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The key for a token with this key id and algorithm. Without a key id, the first key of
    /// the algorithm (a set with one key needs none).
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        let mut cache = self.cache.lock().await;
        let stale = cache.fetched.is_none_or(|at| at.elapsed() >= MAX_AGE);
        if stale {
            self.refresh(&mut cache).await?;
        }
        if let Some(key) = find(&cache.keys, kid, alg) {
            return Ok(key);
        }
        let may_refresh = cache
            .fetched
            .is_none_or(|at| at.elapsed() >= REFRESH_COOLDOWN);
        if !stale && may_refresh {
            self.refresh(&mut cache).await?;
            if let Some(key) = find(&cache.keys, kid, alg) {
                return Ok(key);
            }
        }
        Err(AuthError::UnknownKey(
            kid.unwrap_or("(none)").chars().take(100).collect(),
        ))
    }

    /// Fetches the set. A failure keeps the keys cached so far (they stay valid until the
    /// fetch works again); only with nothing cached is it the caller's answer.
    async fn refresh(&self, cache: &mut Cache) -> Result<(), AuthError> {
        match self.fetch().await {
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

fn find(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    keys.iter()
        .find(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
        .map(|k| k.key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
