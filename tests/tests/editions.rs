//! The two editions give the same answers (DESIGN.md, "Two editions"). One database has the
//! extension, the other the pure-SQL edition, and every call runs on both: the same value, or
//! the same SQLSTATE, message and hint. Here: the signature functions on the edge cases Stripe's
//! libraries disagree on, and the schema itself (every object but the Rust functions' language
//! and bodies). Event normalisation is one SQL function both editions run (event_normalizer.rs).
mod editions_support;

use editions_support::{both, s, schema_owner, Outcome, T0};
use serde_json::{json, Value};
use shipped_sql::pure_sql;
use stripe_billing_core::signature::signature_header;
use stripe_billing_tests::catalog;
use stripe_billing_tests::events::{self, Shape, TEST_SECRET};

/// One call of the signature functions: what it tests, then payload, header, secret, tolerance
/// and "at" (Unix seconds, or a timestamptz word).
struct SignatureCase(
    &'static str,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

#[rustfmt::skip]
fn signature_cases() -> Vec<SignatureCase> {
    let body = serde_json::to_string(&events::event(
        Shape::Basil,
        "invoice.paid",
        T0,
        json!({"object": "invoice", "id": "in_1"}),
    ))
    .unwrap();
    let sig = |payload: &str, secret: &str, t: i64| signature_header(payload.as_bytes(), secret, t);
    let v1 = |payload: &str, secret: &str, t: i64| {
        sig(payload, secret, t)
            .split_once(",v1=")
            .unwrap()
            .1
            .to_string()
    };
    let good = v1(&body, TEST_SECRET, T0);
    let at = |t: i64| s(&format!("{t}"));
    let unicode = "{\"id\":\"evt_1\",\"note\":\"é 漢字 🙂 \\u00e9\"}".to_string();
    let huge = format!("{{\"id\":\"evt_1\",\"pad\":\"{}\"}}", "x".repeat(3 << 20));
    let cases = vec![
        SignatureCase("valid", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("300"), at(T0 + 10)),
        SignatureCase("wrong secret", s(&body), s(&sig(&body, "whsec_other", T0)), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("several v1, the second matches", s(&body), s(&format!("t={T0},v1={},v1={good}", v1(&body, "whsec_old", T0))), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("no t", s(&body), s(&format!("v1={good}")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("stale", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("300"), at(T0 + 301)),
        SignatureCase("future", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("300"), at(T0 - 301)),
        SignatureCase("at the edge", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("300"), at(T0 + 300)),
        SignatureCase("stale, tolerance 0", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("0"), at(T0 + 10_000)),
        SignatureCase("stale, tolerance NULL", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), None, at(T0 + 10_000)),
        SignatureCase("negative tolerance", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("-1"), at(T0)),
        SignatureCase("v0 only", s(&body), s(&format!("t={T0},v0={good}")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("white space", s(&body), s(&format!(" t = {T0} ,\tv1 =\u{a0}{good}\u{2003}, ")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("non-ASCII body", s(&unicode), s(&sig(&unicode, TEST_SECRET, T0)), s(TEST_SECRET), s("0"), at(T0)),
        SignatureCase("huge body", s(&huge), s(&sig(&huge, TEST_SECRET, T0)), s(TEST_SECRET), s("0"), at(T0)),
        SignatureCase("tampered body", s(&body.replace("in_1", "in_2")), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("0"), at(T0)),
        SignatureCase("empty header", s(&body), s(""), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("blank header", s(&body), s(" \u{3000}\t"), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("NULL header", s(&body), None, s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("NULL secret", s(&body), s(&sig(&body, TEST_SECRET, T0)), None, s("300"), at(T0)),
        SignatureCase("empty secret", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(""), s("300"), at(T0)),
        SignatureCase("empty secret, negative tolerance", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(""), s("-5"), at(T0)),
        SignatureCase("NULL payload", None, s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("empty payload", s(""), s(&sig("", TEST_SECRET, T0)), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("upper-case hex", s(&body), s(&format!("t={T0},v1={}", good.to_uppercase())), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("short and non-hex v1", s(&body), s(&format!("t={T0},v1={},v1=zz{}", &good[..62], &good[2..])), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("two different t", s(&body), s(&format!("t={T0},v1={good},t={}", T0 + 1)), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("the same t twice", s(&body), s(&format!("t={T0},v1={good},t={T0}")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("t out of range", s(&body), s(&format!("t=99999999999999999999,v1={good}")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("t not an integer", s(&body), s(&format!("t=17e8,v1={good}")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("t with a plus sign", s(&body), s(&format!("t=+{T0},v1={good}")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("t a lone minus", s(&body), s(&format!("t=-,v1={good}")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("t empty", s(&body), s(&format!("t=,v1={good}")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("T upper case", s(&body), s(&format!("T={T0},v1={good}")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("t with leading zeros", s(&body), s(&format!("t=000{T0},v1={good}")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("negative t", s(&body), s(&sig(&body, TEST_SECRET, -5)), s(TEST_SECRET), s("0"), at(T0)),
        SignatureCase("t minus zero", s(&body), s(&format!("t=-0,v1={}", v1(&body, TEST_SECRET, 0))), s(TEST_SECRET), s("0"), at(T0)),
        SignatureCase("unknown keys and empty items", s(&body), s(&format!(",,t={T0},,x=y,v1={good},garbage,")), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("header over 8 KiB", s(&body), s(&format!("t={T0},v1={good},{}", "v0=0,".repeat(1700))), s(TEST_SECRET), s("300"), at(T0)),
        SignatureCase("at infinity", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("300"), s("infinity")),
        SignatureCase("at -infinity", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("300"), s("-infinity")),
        SignatureCase("at NULL is the wall clock", s(&body), s(&sig(&body, TEST_SECRET, T0)), s(TEST_SECRET), s("0"), None),
        SignatureCase("not JSON", s("{\"id\": "), s(&sig("{\"id\": ", TEST_SECRET, T0)), s(TEST_SECRET), s("0"), at(T0)),
        SignatureCase("JSON but not an object", s("[1, 2.50, 1e3]"), s(&sig("[1, 2.50, 1e3]", TEST_SECRET, T0)), s(TEST_SECRET), s("0"), at(T0)),
    ];
    cases
}

/// The `at` argument: Unix seconds, or a timestamptz word.
const AT: &str = "CASE WHEN $5::text ~ '^-?[0-9]+$' THEN to_timestamp($5::text::bigint) ELSE $5::text::timestamptz END";

#[tokio::test]
async fn the_signature_functions_agree_on_every_edge_case() {
    let Some(db) = both().await else { return };
    let mut valid = 0;
    for SignatureCase(what, payload, header, secret, tolerance, at) in signature_cases() {
        let params = [
            payload.clone(),
            header.clone(),
            secret.clone(),
            tolerance.clone(),
            at.clone(),
        ];
        let is_valid = db
            .same(
                &format!("stripe_signature_is_valid: {what}"),
                &format!("billing.stripe_signature_is_valid($1::text, $2::text, $3::text, $4::text::int, {AT})"),
                &params,
            )
            .await;
        if is_valid == Outcome::Value(json!(true)) {
            valid += 1;
        }
        db.same(
            &format!("construct_event: {what}"),
            &format!("billing.construct_event($1::text, $2::text, $3::text, $4::text::int, {AT})"),
            &params,
        )
        .await;
        // The webhook path reads the wall clock, whose seconds appear in the tolerance message:
        // its time-sensitive cases are the ones above.
        if tolerance.as_deref() == Some("0")
            || tolerance.is_none()
            || tolerance.as_deref().is_some_and(|t| t.starts_with('-'))
        {
            db.same(
                &format!("_verify_webhook_signature: {what}"),
                "billing._verify_webhook_signature($1::text, $2::text, ARRAY[$3::text], $4::text::int)",
                &params[..4],
            )
            .await;
        }
    }
    assert!(
        valid >= 8,
        "too few valid cases ({valid}): the case table is wrong"
    );
}

#[tokio::test]
async fn rotation_finds_the_same_secret_and_header_building_agrees() {
    let Some(db) = both().await else { return };
    let body = "{\"id\":\"evt_1\"}";
    let header = signature_header(body.as_bytes(), "whsec_new", T0);
    for (what, secrets) in [
        (
            "NULL and empty entries count",
            "ARRAY[NULL, '', 'whsec_old', 'whsec_new']",
        ),
        (
            "the first of two that match",
            "ARRAY['whsec_new', 'whsec_new']",
        ),
        ("none matches", "ARRAY['whsec_a', 'whsec_b']"),
        ("no secret at all", "ARRAY[]::text[]"),
        ("a NULL array", "NULL::text[]"),
        ("only empty entries", "ARRAY['', NULL]"),
        (
            "a two-dimensional array",
            "ARRAY[['whsec_a', 'whsec_b'], ['whsec_c', 'whsec_new']]",
        ),
    ] {
        for tolerance in ["0", "-3"] {
            db.same(
                &format!("_verify_webhook_signature: {what}, tolerance {tolerance}"),
                &format!("billing._verify_webhook_signature($1::text, $2::text, {secrets}, $3::text::int)"),
                &[s(body), s(&header), s(tolerance)],
            )
            .await;
        }
    }
    for (payload, secret, t) in [
        (s(body), s(TEST_SECRET), s("1700000000")),
        (s("é 漢字 🙂"), s(TEST_SECRET), s("-42")),
        (s(""), s("whsec_x"), s("0")),
        (s(body), s(""), s("1")),
        (None, s(TEST_SECRET), s("1")),
        (s(body), s(TEST_SECRET), None),
    ] {
        let out = db
            .same(
                &format!("stripe_signature_header({payload:?}, {secret:?}, {t:?})"),
                "billing.stripe_signature_header($1::text, $2::text, $3::text::bigint)",
                &[payload.clone(), secret.clone(), t.clone()],
            )
            .await;
        if let (Some(p), Some(sec), Some(t), Outcome::Value(Value::String(h))) =
            (&payload, &secret, &t, &out)
        {
            assert_eq!(h, &signature_header(p.as_bytes(), sec, t.parse().unwrap()));
        }
    }
}

/// A catalog line with what may differ between the editions made equal: who owns the objects,
/// and how the functions written in Rust are implemented.
fn comparable(line: &str, owner: &str) -> String {
    let line = line
        .replace(&format!("{owner}=X/{owner}"), "OWNER=X/OWNER")
        .replace(&format!("={owner}/"), "=OWNER/")
        .replace(&format!("/{owner}"), "/OWNER")
        .replace(&format!("{{{owner}="), "{OWNER=")
        .replace(&format!(",{owner}="), ",OWNER=");
    let line = sorted_acls(&line);
    if line.starts_with("function ")
        && pure_sql::TWINS
            .iter()
            .any(|f| line.starts_with(&format!("function billing.{f}(")))
    {
        let head = line.split(" body:").next().unwrap_or_default();
        return head
            .split(' ')
            .filter(|w| !w.starts_with("lang="))
            .collect::<Vec<_>>()
            .join(" ");
    }
    line
}

/// Sorts the entries of every `acl={...}` in `line` again (renaming the owner moves it).
fn sorted_acls(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("acl={") {
        let (head, tail) = rest.split_at(at + "acl={".len());
        out.push_str(head);
        let end = tail.find('}').unwrap_or(tail.len());
        let mut entries: Vec<&str> = tail[..end].split(',').collect();
        entries.sort_unstable();
        out.push_str(&entries.join(","));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn both_editions_have_the_same_schema() {
    let Some(db) = both().await else { return };
    let (ext_owner, pure_owner) = (
        schema_owner(&db.extension).await,
        schema_owner(&db.pure).await,
    );
    let ext: std::collections::BTreeSet<String> = catalog::catalog_snapshot(&db.extension)
        .await
        .iter()
        .map(|l| comparable(l, &ext_owner))
        .filter(|l| {
            !l.starts_with("member ")
                && !l.starts_with("pg_dump keeps ")
                && !l.starts_with("event trigger ")
        })
        .collect();
    let pure_helpers = shipped_sql::pure_sql::twin_helpers();
    let pure: std::collections::BTreeSet<String> = catalog::catalog_snapshot(&db.pure)
        .await
        .iter()
        .map(|l| comparable(l, &pure_owner))
        .filter(|l| !l.starts_with("event trigger "))
        // The pure-SQL edition's own: its record of the version, the schema's comment, and the
        // helpers of the twins.
        .filter(|l| !l.contains("installation") && !l.starts_with("comment schema billing"))
        .filter(|l| {
            !pure_helpers.iter().any(|h| {
                l.contains(&format!("function billing.{h}("))
                    || l.contains(&format!("comment function billing.{h}("))
            })
        })
        .collect();
    let only_ext: Vec<&String> = ext.difference(&pure).collect();
    let only_pure: Vec<&String> = pure.difference(&ext).collect();
    assert!(
        only_ext.is_empty() && only_pure.is_empty(),
        "only in the extension:\n{}\n\nonly in the pure-SQL edition:\n{}",
        only_ext
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        only_pure
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        ext.len() > 500,
        "the snapshot is too small to mean anything: {}",
        ext.len()
    );
}
