//! The `@supabase/ssr` session cookie as a second way to send the access token, for a
//! Next.js-style app whose browser code calls `/api/stripe/*` with `credentials: 'include'`
//! instead of an `Authorization` header.
//!
//! What @supabase/ssr writes (read in its source, src/cookies.ts and src/utils/chunker.ts):
//! - the cookie is named after supabase-js's storage key, `sb-<project ref>-auth-token`;
//! - its value is the session as JSON (`{"access_token": ..., "refresh_token": ..., ...}`),
//!   by default encoded as `base64-` followed by base64url of that JSON (the `raw` encoding
//!   writes the JSON itself, which the cookie serializer percent-encodes);
//! - a value whose percent-encoded form is longer than 3180 characters is split into
//!   `<name>.0`, `<name>.1`, … joined back in order until the first missing one; an unsplit
//!   cookie of the plain name wins over chunks.
//!
//! A cookie rides along on every request the browser makes to this host, including one a
//! page of another site triggers (a form post, a `no-cors` fetch), so a cookie alone proves
//! nothing about who asked: that is cross-site request forgery. A call that authenticates
//! with the cookie must therefore come from a configured origin (`Origin` header, which
//! browsers set on every cross-origin and every POST request and which a page cannot forge)
//! and must not be marked `Sec-Fetch-Site: cross-site`. Both are checked before anything is
//! read or queued, so a forged call creates nothing.

use axum::http::{header, HeaderMap};
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::Value;

use super::AuthError;

/// The prefix @supabase/ssr puts before a base64url-encoded value.
const BASE64_PREFIX: &str = "base64-";

/// More chunks than any session needs (a 4 KB cookie each); stops a header full of them.
const MAX_CHUNKS: usize = 32;

/// base64url with or without `=` padding, as @supabase/ssr's decoder accepts.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Which cookie holds the session and which origins may use it.
#[derive(Clone, Debug)]
pub struct SessionCookie {
    /// `sb-<ref>-auth-token`; None: whichever single `sb-*-auth-token` cookie is sent.
    pub name: Option<String>,
    /// Normalised origins (`scheme://host[:port]`, lower case).
    pub origins: Vec<String>,
}

impl SessionCookie {
    /// The access token in the session cookie of a request with these headers; Missing when
    /// there is no session cookie; CrossSite when there is one but the request may have been
    /// sent by another site's page.
    pub fn token(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        let jar = cookies(headers);
        let Some(name) = self.cookie_name(&jar)? else {
            return Err(AuthError::Missing);
        };
        let Some(value) = combine(&jar, &name) else {
            return Err(AuthError::Missing);
        };
        self.same_site(headers)?;
        access_token(&value)
    }

    /// The CSRF defence: an allowed `Origin`, and not `Sec-Fetch-Site: cross-site`.
    fn same_site(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if cross_site {
            return Err(AuthError::CrossSite(
                "the session cookie is not accepted on a cross-site request".into(),
            ));
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Err(AuthError::CrossSite(
                "a call signed in by the session cookie must carry an Origin header".into(),
            ));
        };
        let origin = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if self.origins.contains(&origin) {
            Ok(())
        } else {
            let shown: String = origin.chars().take(100).collect();
            Err(AuthError::CrossSite(format!(
                "the session cookie is not accepted from origin {shown:?}"
            )))
        }
    }

    /// The configured name, or the one `sb-*-auth-token` base name among the cookies sent.
    fn cookie_name(&self, jar: &[(String, String)]) -> Result<Option<String>, AuthError> {
        if let Some(name) = &self.name {
            return Ok(Some(name.clone()));
        }
        let mut bases: Vec<&str> = jar.iter().filter_map(|(n, _)| supabase_base(n)).collect();
        bases.sort_unstable();
        bases.dedup();
        match bases.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.to_string())),
            _ => Err(AuthError::BadCookie(
                "several sb-*-auth-token cookies were sent; configure --session-cookie-name",
            )),
        }
    }
}

/// `sb-<ref>-auth-token` of a cookie named that or `sb-<ref>-auth-token.<n>`.
fn supabase_base(name: &str) -> Option<&str> {
    let base = match name.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    };
    let reference = base.strip_prefix("sb-")?.strip_suffix("-auth-token")?;
    (!reference.is_empty() && !reference.contains('.')).then_some(base)
}

/// The request's cookies in order, values percent-decoded as the `cookie` package
/// (@supabase/ssr's parser) does; a value that does not decode is kept as sent.
fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut jar = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((name, raw)) = pair.split_once('=') else {
                continue;
            };
            let raw = raw.trim();
            let raw = raw
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(raw);
            let decoded = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map(|v| v.into_owned())
                .unwrap_or_else(|_| raw.to_string());
            jar.push((name.trim().to_string(), decoded));
        }
    }
    jar
}

/// The cookie's whole value: the plain name's when sent and non-empty, else the chunks
/// `.0`, `.1`, … up to the first missing one (the first of a repeated name wins).
fn combine(jar: &[(String, String)], name: &str) -> Option<String> {
    let get = |n: &str| {
        jar.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(value) = get(name) {
        return Some(value.to_string());
    }
    let mut whole = String::new();
    for i in 0..MAX_CHUNKS {
        match get(&format!("{name}.{i}")) {
            Some(chunk) => whole.push_str(chunk),
            None => break,
        }
    }
    (!whole.is_empty()).then_some(whole)
}

/// The `access_token` of the session JSON, `base64-`-encoded or raw.
fn access_token(value: &str) -> Result<String, AuthError> {
    let json = match value.strip_prefix(BASE64_PREFIX) {
        Some(encoded) => {
            let bytes = BASE64URL
                .decode(encoded.trim())
                .map_err(|_| AuthError::BadCookie("its base64 value does not decode"))?;
            String::from_utf8(bytes).map_err(|_| AuthError::BadCookie("it is not UTF-8"))?
        }
        None => value.to_string(),
    };
    let session: Value = serde_json::from_str(&json)
        .map_err(|_| AuthError::BadCookie("it does not hold a session (JSON)"))?;
    match session.get("access_token").and_then(Value::as_str) {
        Some(token) if !token.is_empty() => Ok(token.to_string()),
        _ => Err(AuthError::BadCookie("the session has no access_token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn jar() -> SessionCookie {
        SessionCookie {
            name: None,
            origins: vec!["https://app.example.com".into()],
        }
    }

    const SESSION: &str = r#"{"access_token":"eyJ.a.b","refresh_token":"r","token_type":"bearer"}"#;

    #[test]
    fn base64_raw_and_chunked_values() {
        let encoded = format!("base64-{}", BASE64URL.encode(SESSION));
        let origin = ("origin", "https://app.example.com");
        let one = format!("theme=dark; sb-abcd-auth-token={encoded}");
        assert_eq!(
            jar().token(&headers(&[("cookie", &one), origin])).unwrap(),
            "eyJ.a.b"
        );
        // Raw JSON, percent-encoded by the cookie serializer.
        let raw: String =
            percent_encoding::utf8_percent_encode(SESSION, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let c = format!("sb-abcd-auth-token={raw}");
        assert_eq!(
            jar().token(&headers(&[("cookie", &c), origin])).unwrap(),
            "eyJ.a.b"
        );
        // Chunks, out of order and in two Cookie headers (HTTP/2 splits them).
        let (a, b) = encoded.split_at(20);
        let c1 = format!("sb-abcd-auth-token.1={b}");
        let c0 = format!("sb-abcd-auth-token.0={a}; sb-abcd-auth-token-code-verifier=x");
        assert_eq!(
            jar()
                .token(&headers(&[("cookie", &c1), ("cookie", &c0), origin]))
                .unwrap(),
            "eyJ.a.b"
        );
        // A gap ends the chunks: .0 alone is not a session.
        let c = format!("sb-abcd-auth-token.0={a}; sb-abcd-auth-token.2={b}");
        assert!(matches!(
            jar().token(&headers(&[("cookie", &c), origin])),
            Err(AuthError::BadCookie(_))
        ));
    }

    #[test]
    fn no_session_cookie_is_missing_and_bad_ones_say_why() {
        let origin = ("origin", "https://app.example.com");
        for cookie in [
            "theme=dark",
            "sb-abcd-auth-token-code-verifier=x",
            "sb--auth-token=x",
        ] {
            assert_eq!(
                jar().token(&headers(&[("cookie", cookie), origin])),
                Err(AuthError::Missing),
                "{cookie}"
            );
        }
        let cases = [
            "sb-a-auth-token=base64-!!!",
            "sb-a-auth-token=not-json",
            "sb-a-auth-token=%7B%7D",
            "sb-a-auth-token=x; sb-b-auth-token=y",
        ];
        for cookie in cases {
            let got = jar().token(&headers(&[("cookie", cookie), origin]));
            assert!(
                matches!(got, Err(AuthError::BadCookie(_))),
                "{cookie}: {got:?}"
            );
        }
        // A configured name picks one among several.
        let named = SessionCookie {
            name: Some("sb-b-auth-token".into()),
            ..jar()
        };
        let session = format!("base64-{}", BASE64URL.encode(SESSION));
        let c = format!("sb-a-auth-token=x; sb-b-auth-token={session}");
        assert_eq!(
            named.token(&headers(&[("cookie", &c), origin])).unwrap(),
            "eyJ.a.b"
        );
    }

    #[test]
    fn cross_site_or_unlisted_origins_are_refused() {
        let c = format!("sb-abcd-auth-token=base64-{}", BASE64URL.encode(SESSION));
        let cookie = ("cookie", c.as_str());
        let refused = [
            vec![cookie],
            vec![cookie, ("origin", "https://evil.example")],
            vec![cookie, ("origin", "null")],
            vec![cookie, ("origin", "https://app.example.com.evil.example")],
            vec![
                cookie,
                ("origin", "https://app.example.com"),
                ("sec-fetch-site", "cross-site"),
            ],
        ];
        for h in refused {
            let got = jar().token(&headers(&h));
            assert!(
                matches!(got, Err(AuthError::CrossSite(_))),
                "{h:?}: {got:?}"
            );
        }
        for site in ["same-origin", "same-site"] {
            let h = headers(&[
                cookie,
                ("origin", "https://APP.example.com"),
                ("sec-fetch-site", site),
            ]);
            assert_eq!(jar().token(&h).unwrap(), "eyJ.a.b");
        }
    }
}
