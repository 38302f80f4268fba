//! Unit tests for signature parsing and verification. Expected tags were computed independently
//! with Python's `hmac` module, so a symmetric bug in signing and verifying cannot hide.

use super::*;

const SECRET: &str = "whsec_test_secret";
const ROTATED: &str = "whsec_rotated";
const T: i64 = 1_700_000_000;
const BODY: &str = r#"{"id":"evt_1","object":"event"}"#;
const BODY_TAG: &str = "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd";
const BODY_TAG_ROTATED: &str = "443d952004499c253336135326bfaef55fed4b9099dfbcff6d4aec5017c5185d";

fn check(
    header: &str,
    secrets: &[&str],
    tolerance: Option<i64>,
    now: i64,
) -> Result<i64, SignatureError> {
    verify(
        BODY.as_bytes(),
        Some(header),
        secrets.iter().copied(),
        tolerance,
        now,
    )
}

#[test]
fn signature_matches_an_independent_hmac() {
    assert_eq!(
        hex::encode(compute_signature(BODY.as_bytes(), SECRET, T)),
        BODY_TAG
    );
    assert_eq!(
        signature_header(BODY.as_bytes(), SECRET, T),
        format!("t={T},v1={BODY_TAG}")
    );
}

#[test]
fn unicode_escapes_whitespace_and_no_trailing_newline_are_signed_byte_for_byte() {
    let body = "{\"name\":\"Zoë 🚀 \\u00e9\\n\"}\n ";
    let tag = "8bea82640ae88788b4e9583a73f57c4b918eff003166f88c771b3178712d374b";
    assert_eq!(
        hex::encode(compute_signature(body.as_bytes(), "whsec_unicode", 1)),
        tag
    );
    let header = format!("t=1,v1={tag}");
    assert_eq!(
        verify(body.as_bytes(), Some(&header), ["whsec_unicode"], None, 0),
        Ok(1)
    );
    // Dropping the trailing whitespace changes the bytes, so the signature no longer matches.
    let trimmed = body.trim_end();
    assert_eq!(
        verify(
            trimmed.as_bytes(),
            Some(&header),
            ["whsec_unicode"],
            None,
            0
        ),
        Err(SignatureError::NoMatchingSignature)
    );
}

#[test]
fn valid_header_within_tolerance_is_accepted() {
    let header = format!("t={T},v1={BODY_TAG}");
    assert_eq!(check(&header, &[SECRET], Some(300), T + 300), Ok(T));
    assert_eq!(check(&header, &[SECRET], Some(300), T - 300), Ok(T));
}

#[test]
fn timestamp_outside_tolerance_is_rejected_in_both_directions() {
    let header = format!("t={T},v1={BODY_TAG}");
    for now in [T + 301, T - 301] {
        assert!(matches!(
            check(&header, &[SECRET], Some(300), now),
            Err(SignatureError::TimestampOutsideTolerance {
                tolerance_seconds: 300,
                ..
            })
        ));
    }
}

#[test]
fn zero_or_missing_tolerance_disables_the_time_check() {
    let header = format!("t={T},v1={BODY_TAG}");
    for tolerance in [None, Some(0)] {
        assert_eq!(check(&header, &[SECRET], tolerance, i64::MAX), Ok(T));
        assert_eq!(check(&header, &[SECRET], tolerance, i64::MIN), Ok(T));
    }
}

#[test]
fn a_negative_tolerance_is_an_error_not_a_way_to_skip_the_check() {
    let header = format!("t={T},v1={BODY_TAG}");
    assert_eq!(
        check(&header, &[SECRET], Some(-5), T),
        Err(SignatureError::NegativeTolerance(-5))
    );
}

#[test]
fn extreme_timestamps_and_clock_values_do_not_overflow() {
    for t in [i64::MIN, i64::MAX, 0, -1] {
        let header = signature_header(BODY.as_bytes(), SECRET, t);
        assert_eq!(check(&header, &[SECRET], None, 0), Ok(t));
        let res = check(
            &header,
            &[SECRET],
            Some(i64::MAX),
            if t > 0 { i64::MIN } else { i64::MAX },
        );
        assert!(matches!(
            res,
            Ok(_) | Err(SignatureError::TimestampOutsideTolerance { .. })
        ));
    }
}

#[test]
fn signature_is_checked_before_the_timestamp() {
    let header = format!("t={T},v1={BODY_TAG_ROTATED}");
    assert_eq!(
        check(&header, &[SECRET], Some(300), T + 10_000),
        Err(SignatureError::NoMatchingSignature)
    );
}

#[test]
fn any_matching_v1_is_enough_during_rotation() {
    let header = format!("t={T},v1={BODY_TAG_ROTATED},v1={BODY_TAG}");
    assert_eq!(check(&header, &[SECRET], None, T), Ok(T));
    assert_eq!(check(&header, &[ROTATED], None, T), Ok(T));
    let only_new = format!("t={T},v1={BODY_TAG_ROTATED}");
    assert_eq!(check(&only_new, &["whsec_other", ROTATED], None, T), Ok(T));
    assert_eq!(
        check(&only_new, &["whsec_other", SECRET], None, T),
        Err(SignatureError::NoMatchingSignature)
    );
}

#[test]
fn hex_compares_case_insensitively() {
    let header = format!("t={T},v1={}", BODY_TAG.to_uppercase());
    assert_eq!(check(&header, &[SECRET], None, T), Ok(T));
}

#[test]
fn v0_unknown_keys_empty_items_and_spaces_are_ignored() {
    let header = format!(" t={T} ,, v0=deadbeef,foo=bar,junk, v1={BODY_TAG},");
    assert_eq!(check(&header, &[SECRET], None, T), Ok(T));
}

#[test]
fn only_v0_or_no_signatures_is_reported_as_no_v1() {
    for header in [
        format!("t={T},v0={BODY_TAG}"),
        format!("t={T}"),
        format!("t={T},v2={BODY_TAG}"),
    ] {
        assert_eq!(
            check(&header, &[SECRET], None, T),
            Err(SignatureError::NoV1Signatures)
        );
    }
}

#[test]
fn bad_v1_values_never_match() {
    let odd = &BODY_TAG[1..];
    let long = format!("{BODY_TAG}00");
    let non_hex = BODY_TAG.replace('c', "g");
    for v1 in ["", odd, &long, &non_hex, "zz", "\u{1F680}"] {
        let header = format!("t={T},v1={v1}");
        assert_eq!(
            check(&header, &[SECRET], None, T),
            Err(SignatureError::NoMatchingSignature),
            "{v1:?}"
        );
    }
}

#[test]
fn missing_or_blank_header_is_no_header() {
    assert_eq!(
        verify(BODY.as_bytes(), None, [SECRET], None, T),
        Err(SignatureError::NoHeader)
    );
    for header in ["", "   ", "\n"] {
        assert_eq!(
            check(header, &[SECRET], None, T),
            Err(SignatureError::NoHeader)
        );
    }
}

#[test]
fn malformed_headers_are_reported() {
    let cases = [
        "garbage".to_string(),
        format!("v1={BODY_TAG}"),
        format!("t=,v1={BODY_TAG}"),
        format!("t=12a,v1={BODY_TAG}"),
        format!("t=1.5,v1={BODY_TAG}"),
        format!("t=+5,v1={BODY_TAG}"),
        format!("t=-,v1={BODY_TAG}"),
        format!("t=99999999999999999999999,v1={BODY_TAG}"),
        format!("t={T},t={},v1={BODY_TAG}", T + 1),
        "x".repeat(MAX_HEADER_LEN + 1),
    ];
    for header in cases {
        assert!(
            matches!(
                check(&header, &[SECRET], None, T),
                Err(SignatureError::MalformedHeader(_))
            ),
            "{}",
            &header[..header.len().min(60)]
        );
    }
    // The same timestamp twice is harmless.
    assert_eq!(
        check(&format!("t={T},t={T},v1={BODY_TAG}"), &[SECRET], None, T),
        Ok(T)
    );
}

#[test]
fn missing_or_empty_secrets_are_no_secret() {
    let header = format!("t={T},v1={BODY_TAG}");
    assert_eq!(check(&header, &[], None, T), Err(SignatureError::NoSecret));
    assert_eq!(
        check(&header, &[""], None, T),
        Err(SignatureError::NoSecret)
    );
}

#[test]
fn one_megabyte_body_verifies_and_one_flipped_byte_does_not() {
    let mut body = format!("{{\"data\":\"{}\"}}", "é".repeat(512 * 1024)).into_bytes();
    let header = signature_header(&body, SECRET, T);
    assert_eq!(verify(&body, Some(&header), [SECRET], Some(300), T), Ok(T));
    let mid = body.len() / 2;
    body[mid] ^= 1;
    assert_eq!(
        verify(&body, Some(&header), [SECRET], Some(300), T),
        Err(SignatureError::NoMatchingSignature)
    );
}

#[test]
fn messages_never_contain_the_secret_or_signatures() {
    let header = format!("t={T},v1={BODY_TAG_ROTATED}");
    let errors = [
        check(&header, &[SECRET], None, T).unwrap_err(),
        check(&format!("t=x,v1={BODY_TAG}"), &[SECRET], None, T).unwrap_err(),
        check(&format!("t={T},v1={BODY_TAG}"), &[SECRET], Some(1), 0).unwrap_err(),
    ];
    for e in errors {
        let msg = e.to_string();
        assert!(
            !msg.contains(SECRET) && !msg.contains(BODY_TAG) && !msg.contains(BODY_TAG_ROTATED),
            "{msg}"
        );
    }
}
