//! Token verification with an HS256 secret (the JWKS path is tested end to end in
//! tests/tests/http_api_auth.rs, against a key set served over HTTP).

use super::*;
use crate::config::Secret;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use std::str::FromStr;
use std::time::Duration;

const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";
const USER: &str = "8d3f5c1e-2b4a-4c6d-9e8f-0a1b2c3d4e5f";

fn config(audience: Option<&str>) -> ApiConfig {
    ApiConfig {
        jwt_secret: Some(Secret::from_str(SECRET).unwrap()),
        jwks_url: None,
        jwt_audience: audience.map(str::to_string),
        cors_origins: Vec::new(),
        cookie_origins: Vec::new(),
        cookie_name: None,
        rate_per_minute: 20,
        burst: 5,
        max_body_bytes: 1024,
        concurrency: 1,
        wait: Duration::from_secs(1),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(claims: Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn user_claims() -> Value {
    json!({"sub": USER, "role": "authenticated", "aud": "authenticated",
           "email": "ada@example.com", "exp": now() + 3600, "iat": now()})
}

async fn check(verifier: &Verifier, authorization: Option<&str>) -> Result<Caller, AuthError> {
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
    }
    verifier.caller(&headers).await
}

#[tokio::test]
async fn a_user_token_is_accepted_with_all_its_claims() {
    let v = Verifier::new(&config(Some("authenticated"))).unwrap();
    let claims = user_claims();
    let caller = check(
        &v,
        Some(&format!("Bearer {}", token(claims.clone(), SECRET))),
    )
    .await
    .unwrap();
    assert_eq!(caller.sub, USER);
    assert_eq!(caller.claims, claims, "handed to SQL unchanged");
    // The scheme is case-insensitive.
    let lower = format!("bearer {}", token(user_claims(), SECRET));
    assert!(check(&v, Some(&lower)).await.is_ok());
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_reason() {
    let v = Verifier::new(&config(Some("authenticated"))).unwrap();
    let with = |patch: Value| {
        let mut claims = user_claims();
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = val.clone();
            }
        }
        format!("Bearer {}", token(claims, SECRET))
    };
    let cases = [
        (None, AuthError::Missing),
        (Some("Basic dXNlcjpwYXNz".to_string()), AuthError::NotBearer),
        (Some("Bearer".to_string()), AuthError::NotBearer),
        (
            Some(format!(
                "Bearer {}",
                token(user_claims(), "another-secret-of-32-characters-or-more")
            )),
            AuthError::BadSignature,
        ),
        (Some(with(json!({"exp": now() - 120}))), AuthError::Expired),
        (Some(with(json!({"exp": null}))), AuthError::NoExpiry),
        (
            Some(with(json!({"nbf": now() + 600}))),
            AuthError::NotYetValid,
        ),
        (
            Some(with(json!({"aud": "other"}))),
            AuthError::WrongAudience,
        ),
        (Some(with(json!({"aud": null}))), AuthError::WrongAudience),
        (
            Some(with(json!({"role": "anon", "sub": null}))),
            AuthError::NotAUser("anon".into()),
        ),
        (
            Some(with(json!({"role": "service_role"}))),
            AuthError::NotAUser("service_role".into()),
        ),
        (Some(with(json!({"sub": null}))), AuthError::NoSubject),
        // PostgREST's PGRST303: issued more than the 30 s skew from now.
        (
            Some(with(json!({"iat": now() + 600}))),
            AuthError::IssuedInFuture,
        ),
        (
            Some(with(json!({"iat": "yesterday"}))),
            AuthError::IatNotANumber,
        ),
    ];
    for (authorization, expected) in cases {
        let got = check(&v, authorization.as_deref()).await.unwrap_err();
        assert_eq!(got, expected, "{authorization:?}");
        assert_eq!(got.status(), StatusCode::UNAUTHORIZED);
    }
    let garbage = check(&v, Some("Bearer not.a.jwt")).await.unwrap_err();
    assert!(matches!(garbage, AuthError::Malformed(_)), "{garbage:?}");
}

#[tokio::test]
async fn expiry_has_a_small_leeway() {
    let v = Verifier::new(&config(None)).unwrap();
    let mut claims = user_claims();
    claims["exp"] = json!(now() - 5);
    assert!(
        check(&v, Some(&format!("Bearer {}", token(claims, SECRET))))
            .await
            .is_ok()
    );
    let mut claims = user_claims();
    claims["exp"] = json!(now() - LEEWAY_SECONDS as i64 - 5);
    assert_eq!(
        check(&v, Some(&format!("Bearer {}", token(claims, SECRET))))
            .await
            .unwrap_err(),
        AuthError::Expired
    );
}

#[tokio::test]
async fn iat_has_the_same_leeway_as_postgrest() {
    let v = Verifier::new(&config(None)).unwrap();
    let signed = |iat: Value| {
        let mut claims = user_claims();
        claims["iat"] = iat;
        format!("Bearer {}", token(claims, SECRET))
    };
    for ok in [json!(now() + 10), json!(now() - 86400), Value::Null] {
        assert!(check(&v, Some(&signed(ok.clone()))).await.is_ok(), "{ok}");
    }
    let err = check(&v, Some(&signed(json!(now() + LEEWAY_SECONDS as i64 + 5))))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "JWT issued at future");
}

#[tokio::test]
async fn without_a_configured_audience_aud_is_not_checked() {
    let v = Verifier::new(&config(None)).unwrap();
    let mut claims = user_claims();
    claims["aud"] = json!("anything");
    assert!(
        check(&v, Some(&format!("Bearer {}", token(claims, SECRET))))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn algorithms_without_a_configured_key_are_refused() {
    // An RS256 header with only an HS256 secret configured: never checked against the secret.
    let v = Verifier::new(&config(None)).unwrap();
    let forged = {
        let header = base64url(br#"{"alg":"RS256","typ":"JWT"}"#);
        let body = base64url(user_claims().to_string().as_bytes());
        format!("Bearer {header}.{body}.c2ln")
    };
    assert_eq!(
        check(&v, Some(&forged)).await.unwrap_err(),
        AuthError::Algorithm("RS256".into())
    );
    let none = {
        let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
        let body = base64url(user_claims().to_string().as_bytes());
        format!("Bearer {header}.{body}.")
    };
    assert!(check(&v, Some(&none)).await.is_err());
    let off = Verifier::new(&ApiConfig {
        jwt_secret: None,
        ..config(None)
    })
    .unwrap();
    let err = check(
        &off,
        Some(&format!("Bearer {}", token(user_claims(), SECRET))),
    )
    .await
    .unwrap_err();
    assert_eq!(err, AuthError::NotConfigured);
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn the_session_cookie_is_read_only_with_configured_origins() {
    use base64::Engine;
    let session = json!({"access_token": token(user_claims(), SECRET), "refresh_token": "r"});
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(session.to_string());
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        format!("sb-ref-auth-token=base64-{value}").parse().unwrap(),
    );
    headers.insert(header::ORIGIN, "https://app.example.com".parse().unwrap());
    // Without --session-cookie-origin the cookie is not even looked at.
    let off = Verifier::new(&config(None)).unwrap();
    assert_eq!(off.caller(&headers).await.unwrap_err(), AuthError::Missing);
    let on = Verifier::new(&ApiConfig {
        cookie_origins: vec!["https://app.example.com".into()],
        ..config(None)
    })
    .unwrap();
    assert_eq!(on.caller(&headers).await.unwrap().sub, USER);
    // A bearer header wins, even a bad one.
    headers.insert(header::AUTHORIZATION, "Basic x".parse().unwrap());
    assert_eq!(on.caller(&headers).await.unwrap_err(), AuthError::NotBearer);
}
