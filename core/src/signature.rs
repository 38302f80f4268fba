//! Stripe webhook signature verification (DESIGN.md, "Signatures").
//!
//! Header: `t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`. The signed bytes are `"<t>.<raw body>"`,
//! HMAC-SHA256 keyed with the whole secret string (including `whsec_`).
//!
//! Semantics where Stripe's official libraries disagree:
//! - any one matching `v1` is enough; `v0`, unknown keys and empty items are ignored;
//! - hex compares case-insensitively and in constant time; empty or non-hex `v1` never matches;
//! - no `t`, a non-integer `t` or two different `t` values make the header malformed;
//! - the signature is checked before the timestamp, and the timestamp must lie within
//!   `tolerance` seconds of now in either direction; a tolerance of 0 or none disables it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Default tolerance between the header's timestamp and now, as in Stripe's libraries.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

/// Length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

/// Headers longer than this are rejected as malformed before any parsing work. Real headers are
/// under 300 bytes even with several rotated secrets; the cap keeps a hostile header cheap.
pub const MAX_HEADER_LEN: usize = 8 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// Why a payload failed verification. Messages never include the secret or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header was provided")]
    NoHeader,
    #[error("the Stripe-Signature header is malformed: {0}")]
    MalformedHeader(&'static str),
    #[error("the Stripe-Signature header has no v1 signatures")]
    NoV1Signatures,
    #[error("no signature in the Stripe-Signature header matches the payload")]
    NoMatchingSignature,
    #[error("the Stripe-Signature timestamp is outside the tolerance zone ({age_seconds} seconds from now, tolerance {tolerance_seconds} seconds)")]
    TimestampOutsideTolerance {
        age_seconds: i128,
        tolerance_seconds: i64,
    },
    #[error("no webhook signing secret is configured")]
    NoSecret,
    #[error(
        "the tolerance must be 0 or more seconds (0 or NULL turn the time check off), got {0}"
    )]
    NegativeTolerance(i64),
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// The signing time, seconds since the Unix epoch.
    pub timestamp: i64,
    /// The decoded `v1` signatures; `None` for an entry that is not 64 hex digits.
    pub v1: Vec<Option<[u8; TAG_LEN]>>,
}

/// Parses a header. Fails only for a missing or malformed header; a header without `v1`
/// entries parses, and [`verify`] reports it.
pub fn parse_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    if header.trim().is_empty() {
        return Err(SignatureError::NoHeader);
    }
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::MalformedHeader("it is longer than 8 KiB"));
    }
    let mut timestamp: Option<i64> = None;
    let mut v1 = Vec::new();
    for item in header.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => {
                let t = parse_timestamp(value.trim())?;
                if timestamp.is_some_and(|seen| seen != t) {
                    return Err(SignatureError::MalformedHeader(
                        "it has two different t= timestamps",
                    ));
                }
                timestamp = Some(t);
            }
            "v1" => v1.push(decode_tag(value.trim())),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MalformedHeader("it has no t= timestamp"))?;
    Ok(SignatureHeader { timestamp, v1 })
}

fn parse_timestamp(value: &str) -> Result<i64, SignatureError> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::MalformedHeader(
            "its t= timestamp is not an integer",
        ));
    }
    value
        .parse::<i64>()
        .map_err(|_| SignatureError::MalformedHeader("its t= timestamp is out of range"))
}

fn decode_tag(hex_text: &str) -> Option<[u8; TAG_LEN]> {
    let mut tag = [0u8; TAG_LEN];
    // `hex` accepts both cases, which gives the case-insensitive comparison.
    hex::decode_to_slice(hex_text, &mut tag).ok()?;
    Some(tag)
}

/// HMAC-SHA256 of `"<t>.<payload>"` keyed with the whole secret.
pub fn compute_signature(payload: &[u8], secret: &str, timestamp: i64) -> [u8; TAG_LEN] {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// Builds a valid `Stripe-Signature` header for a payload, as Stripe would send it.
pub fn signature_header(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(compute_signature(payload, secret, timestamp))
    )
}

/// Verifies `payload` against `header` with any of `secrets`. Returns the header's timestamp.
///
/// `tolerance_seconds` of `None` or `Some(0)` disables the time check (a negative one is an error); `now` is the
/// current Unix time. The signature is checked first so that a stale but forged request is
/// reported as forged.
pub fn verify<'a>(
    payload: &[u8],
    header: Option<&str>,
    secrets: impl IntoIterator<Item = &'a str>,
    tolerance_seconds: Option<i64>,
    now: i64,
) -> Result<i64, SignatureError> {
    // A negative tolerance is a mistake, not a way to turn the time check off.
    if let Some(t) = tolerance_seconds.filter(|t| *t < 0) {
        return Err(SignatureError::NegativeTolerance(t));
    }
    let secrets: Vec<&str> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let parsed = parse_header(header.ok_or(SignatureError::NoHeader)?)?;
    if parsed.v1.is_empty() {
        return Err(SignatureError::NoV1Signatures);
    }
    let matched = secrets.iter().any(|secret| {
        let expected = compute_signature(payload, secret, parsed.timestamp);
        // Fold over every candidate instead of stopping at the first match so the time taken
        // does not reveal which entry matched.
        parsed
            .v1
            .iter()
            .flatten()
            .fold(subtle::Choice::from(0), |acc, candidate| {
                acc | candidate.ct_eq(&expected)
            })
            .into()
    });
    if !matched {
        return Err(SignatureError::NoMatchingSignature);
    }
    if let Some(tolerance) = tolerance_seconds.filter(|t| *t != 0) {
        let age = i128::from(now) - i128::from(parsed.timestamp);
        if age.abs() > i128::from(tolerance) {
            return Err(SignatureError::TimestampOutsideTolerance {
                age_seconds: age,
                tolerance_seconds: tolerance,
            });
        }
    }
    Ok(parsed.timestamp)
}

#[cfg(test)]
mod tests;
