//! Who is calling the HTTP API: the bearer JWT, verified the way PostgREST and Supabase verify
//! it, with the project's HS256 secret or with the ES256/RS256 keys it publishes as a JWKS
//! (`jwks`). Only a signed-in user (`role` = `authenticated`, with a `sub`) may call; the
//! verified claims are then handed to SQL unchanged as `request.jwt.claims`, so the SQL API
//! sees exactly what it would see behind PostgREST.
//!
//! The algorithm in the token's header picks the kind of key, and each kind is only ever
//! checked against its own keys: an HS256 token is never checked against a public key (the
//! classic algorithm-confusion attack), and a token whose algorithm no configured key serves is
//! refused.
//!
//! The token comes from the `Authorization: Bearer` header or, for the origins configured for
//! it, from the `@supabase/ssr` session cookie (`cookie`, which also holds the CSRF checks).
//! A bearer header always wins: a call that sends one is judged by it alone.

mod cookie;
mod jwks;

use std::collections::HashSet;

use axum::http::{header, HeaderMap, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::ApiConfig;
pub use cookie::SessionCookie;
pub use jwks::Jwks;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds: PostgREST's fixed allowance
/// (its docs, "JWT claims validation"; PostgREST PR #2772), so a token PostgREST takes is
/// taken here and one it refuses is refused.
pub const LEEWAY_SECONDS: u64 = 30;

/// The only role that may call the API, as PostgREST names a signed-in Supabase user.
pub const USER_ROLE: &str = "authenticated";

/// A verified caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The `sub` claim: the user id (SQL checks that it is a uuid).
    pub sub: String,
    /// The whole verified payload, for `request.jwt.claims`.
    pub claims: Value,
}

/// Why a call is not authenticated. Messages name the problem, never the token or a key.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthError {
    #[error("not signed in: send Authorization: Bearer <the user's access token>")]
    Missing,
    #[error("the Authorization header is not a bearer token")]
    NotBearer,
    #[error("JWT is malformed: {0}")]
    Malformed(String),
    #[error("JWT expired")]
    Expired,
    #[error("JWT is not valid yet (nbf)")]
    NotYetValid,
    /// PostgREST's PGRST303 message for the same token.
    #[error("JWT issued at future")]
    IssuedInFuture,
    #[error("JWT iat claim is not a number")]
    IatNotANumber,
    #[error("JWT has no exp claim")]
    NoExpiry,
    #[error("JWT signature does not match")]
    BadSignature,
    #[error("JWT audience is not accepted")]
    WrongAudience,
    #[error("JWT algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("JWT key id {0:?} is not among the published signing keys")]
    UnknownKey(String),
    #[error("only signed-in users may call this (the token's role is {0:?}, not authenticated)")]
    NotAUser(String),
    #[error("JWT has no sub claim")]
    NoSubject,
    /// The JWKS could not be fetched and no copy is cached: our problem, not the caller's.
    #[error("the signing keys cannot be fetched right now")]
    KeysUnavailable,
    #[error("the HTTP API is not configured: start the worker with --jwt-secret or --jwks-url")]
    NotConfigured,
    #[error("the session cookie is malformed: {0}")]
    BadCookie(&'static str),
    /// A cookie-authenticated call that another site's page may have sent (CSRF).
    #[error("{0}")]
    CrossSite(String),
}

impl AuthError {
    /// 401 for the caller's token, 503 when we cannot check it.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::KeysUnavailable | AuthError::NotConfigured => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AuthError::CrossSite(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Verifies bearer tokens.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
    audience: Option<String>,
    cookie: Option<SessionCookie>,
}

impl Verifier {
    pub fn new(config: &ApiConfig) -> Result<Verifier, String> {
        let jwks = match &config.jwks_url {
            Some(url) => Some(Jwks::new(url)?),
            None => None,
        };
        Ok(Verifier {
            secret: config
                .jwt_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            jwks,
            audience: config.jwt_audience.clone(),
            // No origins: the cookie is never read, so no browser can be tricked into using it.
            cookie: (!config.cookie_origins.is_empty()).then(|| SessionCookie {
                name: config.cookie_name.clone(),
                origins: config.cookie_origins.clone(),
            }),
        })
    }

    /// The caller of a request with these headers.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        if self.secret.is_none() && self.jwks.is_none() {
            return Err(AuthError::NotConfigured);
        }
        let token = match (&self.cookie, headers.contains_key(header::AUTHORIZATION)) {
            (Some(cookie), false) => cookie.token(headers)?,
            _ => bearer_token(headers)?.to_string(),
        };
        let claims = self.verify(&token).await?;
        not_issued_in_future(&claims, now())?;
        caller_of(claims)
    }

    /// The verified payload of `token`.
    async fn verify(&self, token: &str) -> Result<Value, AuthError> {
        let head =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let key = match head.alg {
            Algorithm::HS256 => self
                .secret
                .clone()
                .ok_or_else(|| AuthError::Algorithm("HS256".into()))?,
            Algorithm::ES256 | Algorithm::RS256 => match &self.jwks {
                Some(jwks) => jwks.key(head.kid.as_deref(), head.alg).await?,
                None => return Err(AuthError::Algorithm(format!("{:?}", head.alg))),
            },
            other => return Err(AuthError::Algorithm(format!("{other:?}"))),
        };
        let validation = self.validation(head.alg);
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => AuthError::NoExpiry,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                    AuthError::WrongAudience
                }
                _ => AuthError::Malformed(e.to_string()),
            })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A token that never expires is refused: a leaked one would work forever.
        validation.required_spec_claims = HashSet::from(["exp".to_string()]);
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_string());
            }
            // Supabase's tokens carry `aud`; without a configured audience it is not checked.
            None => validation.validate_aud = false,
        }
        validation
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?.trim();
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthError::NotBearer),
    }
}

/// PostgREST refuses a token whose `iat` lies more than the allowed skew in the future
/// (PGRST303 "JWT issued at future") and one whose `iat` is not a number; jsonwebtoken does
/// not look at `iat`, so it is checked here. A token without `iat` passes, as there.
fn not_issued_in_future(claims: &Value, now: u64) -> Result<(), AuthError> {
    match claims.get("iat") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(iat)) => match iat.as_f64() {
            Some(iat) if iat > (now + LEEWAY_SECONDS) as f64 => Err(AuthError::IssuedInFuture),
            _ => Ok(()),
        },
        Some(_) => Err(AuthError::IatNotANumber),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Only a signed-in user may call: PostgREST's `anon` (and any other role) may not.
fn caller_of(claims: Value) -> Result<Caller, AuthError> {
    let role = claims.get("role").and_then(Value::as_str).unwrap_or("");
    if role != USER_ROLE {
        let shown: String = role.chars().take(40).collect();
        return Err(AuthError::NotAUser(shown));
    }
    let sub = match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => sub.to_string(),
        _ => return Err(AuthError::NoSubject),
    };
    Ok(Caller { sub, claims })
}

#[cfg(test)]
mod tests;
