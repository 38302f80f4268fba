//! Authentication: `Authorization: Bearer <key>` or HTTP basic with the key as the user, as
//! https://docs.stripe.com/api/authentication describes; a missing or wrong key is a 401.

use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine;

use super::error::ApiError;
use super::App;

pub fn authenticate(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized =
        |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", m);
    let missing = || {
        unauthorized(
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
             YOUR_SECRET_KEY')."
                .into(),
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?.trim();
    let key = if let Some(token) = value.strip_prefix("Bearer ") {
        token.trim().to_string()
    } else if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                unauthorized("Invalid API Key provided: (malformed basic auth)".into())
            })?;
        decoded.split(':').next().unwrap_or_default().to_string()
    } else {
        return Err(unauthorized(
            "Invalid authorization header. Use 'Authorization: Bearer YOUR_SECRET_KEY'.".into(),
        ));
    };
    if key.is_empty() {
        return Err(missing());
    }
    if key != app.secret_key {
        return Err(unauthorized(format!(
            "Invalid API Key provided: {}",
            mask_key(&key)
        )));
    }
    Ok(())
}

/// `sk_test_abcdef123456` → `sk_test_********3456`, as Stripe echoes a wrong key.
///
/// Counted in characters, not bytes: a key from basic auth is arbitrary UTF-8.
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    // Everything up to and including the second `_` is shown (`sk_test_`).
    let prefix = chars
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == '_')
        .nth(1)
        .map_or(0, |(i, _)| i + 1);
    let keep_tail = (chars.len() - prefix).min(4);
    let stars = chars.len() - prefix - keep_tail;
    let head: String = chars[..prefix].iter().collect();
    let tail: String = chars[chars.len() - keep_tail..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(stars))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keys_like_stripe() {
        assert_eq!(mask_key("sk_test_abcdef123456"), "sk_test_********3456");
        assert_eq!(mask_key("sk_live_x"), "sk_live_x");
        assert_eq!(mask_key("nonsense_key_value123"), "nonsense_key_****e123");
        assert_eq!(mask_key("nokey"), "*okey");
        assert_eq!(mask_key(""), "");
    }

    #[test]
    fn masks_non_ascii_keys_by_characters() {
        // A basic-auth user decodes to arbitrary UTF-8; byte offsets would split `é`.
        assert_eq!(mask_key("éé_é_é"), "éé_é_é");
        assert_eq!(mask_key("sk_tést_ééééé€ü"), "sk_tést_***éé€ü");
        assert_eq!(mask_key("ключ_тест_секретный"), "ключ_тест_*****тный");
        assert_eq!(mask_key("ü"), "ü");
    }
}
