//! The two editions give the same answers (DESIGN.md, "Two editions"). One database has the
//! extension, the other the pure-SQL edition, and every call below runs on both: the same value,
//! or the same SQLSTATE, message and hint. Covered: the signature functions on the edge cases
//! Stripe's libraries disagree on, event normalisation on every fixture event (and the golden
//! outputs when tests/fixtures/events/ holds them), and the schema itself (every object but the
//! functions' language and bodies).
use serde_json::{json, Value};
use stripe_billing_core::signature::signature_header;
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::events::{self, Shape, TEST_SECRET};
use stripe_billing_tests::pg::TestDb;
use stripe_billing_tests::upgrade;
use tokio_postgres::Client;

/// A database of each edition.
struct Both {
    extension: Client,
    pure: Client,
    _dbs: (TestDb, TestDb),
}

async fn both() -> Both {
    let (ext, pure) = tokio::join!(
        TestDb::with_edition(Edition::Extension),
        TestDb::with_edition(Edition::Pure)
    );
    Both {
        extension: ext.owner().await,
        pure: pure.owner().await,
        _dbs: (ext, pure),
    }
}

/// What one call gave: its value as JSON, or its error.
#[derive(Debug, PartialEq)]
enum Outcome {
    Value(Value),
    Error {
        code: String,
        message: String,
        hint: Option<String>,
        detail: Option<String>,
    },
}

/// Runs `select` (one expression; `$n` are text parameters) and returns its value as JSON.
async fn outcome(client: &Client, select: &str, params: &[Option<String>]) -> Outcome {
    let sql = format!("SELECT to_jsonb(({select}))");
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    match client.query_one(&sql, &refs).await {
        Ok(row) => Outcome::Value(row.get::<_, Option<Value>>(0).unwrap_or(Value::Null)),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{select}: {e}"));
            Outcome::Error {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                hint: db.hint().map(str::to_string),
                detail: db.detail().map(str::to_string),
            }
        }
    }
}

impl Both {
    /// Runs the call on both editions and returns the extension's outcome, failing when the
    /// pure-SQL edition's differs. A detail is only compared for `compare_detail`.
    async fn same(&self, label: &str, select: &str, params: &[Option<String>]) -> Outcome {
        let (a, b) = tokio::join!(
            outcome(&self.extension, select, params),
            outcome(&self.pure, select, params)
        );
        let strip = |o: Outcome| match o {
            Outcome::Error {
                code,
                message,
                hint,
                detail,
            } => Outcome::Error {
                // The text of a JSON syntax error is the parser's own (serde's or Postgres').
                detail: if code == "22032" { None } else { detail },
                code,
                message,
                hint,
            },
            v => v,
        };
        let a = strip(a);
        let b = strip(b);
        assert_eq!(a, b, "{label}: the extension (left) and the pure-SQL edition (right) differ");
        a
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

const T0: i64 = 1_700_000_000;

/// One call of the signature functions: what it tests, then payload, header, secret, tolerance
/// and "at" (Unix seconds, or a timestamptz word).
struct SignatureCase(&'static str, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

fn signature_cases() -> Vec<SignatureCase> {
    let body = serde_json::to_string(&events::event(Shape::Basil, "invoice.paid", T0, json!({"object": "invoice", "id": "in_1"}))).unwrap();
    let sig = |payload: &str, secret: &str, t: i64| signature_header(payload.as_bytes(), secret, t);
    let v1 = |payload: &str, secret: &str, t: i64| sig(payload, secret, t).split_once(",v1=").unwrap().1.to_string();
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
const AT: &str = "CASE WHEN $5 ~ '^-?[0-9]+$' THEN to_timestamp($5::bigint) ELSE $5::timestamptz END";

#[tokio::test]
async fn the_signature_functions_agree_on_every_edge_case() {
    let db = both().await;
    let mut valid = 0;
    for SignatureCase(what, payload, header, secret, tolerance, at) in signature_cases() {
        let params = [payload.clone(), header.clone(), secret.clone(), tolerance.clone(), at.clone()];
        let is_valid = db
            .same(
                &format!("stripe_signature_is_valid: {what}"),
                &format!("billing.stripe_signature_is_valid($1, $2, $3, $4::int, {AT})"),
                &params,
            )
            .await;
        if is_valid == Outcome::Value(json!(true)) {
            valid += 1;
        }
        db.same(
            &format!("construct_event: {what}"),
            &format!("billing.construct_event($1, $2, $3, $4::int, {AT})"),
            &params,
        )
        .await;
        // The webhook path reads the wall clock, whose seconds appear in the tolerance message:
        // its time-sensitive cases are the ones above.
        if tolerance.as_deref() == Some("0") || tolerance.is_none() || tolerance.as_deref().is_some_and(|t| t.starts_with('-')) {
            db.same(
                &format!("_verify_webhook_signature: {what}"),
                "billing._verify_webhook_signature($1, $2, ARRAY[$3], $4::int)",
                &params[..4],
            )
            .await;
        }
    }
    assert!(valid >= 8, "too few valid cases ({valid}): the case table is wrong");
}

#[tokio::test]
async fn rotation_finds_the_same_secret_and_header_building_agrees() {
    let db = both().await;
    let body = "{\"id\":\"evt_1\"}";
    let header = signature_header(body.as_bytes(), "whsec_new", T0);
    for (what, secrets) in [
        ("NULL and empty entries count", "ARRAY[NULL, '', 'whsec_old', 'whsec_new']"),
        ("the first of two that match", "ARRAY['whsec_new', 'whsec_new']"),
        ("none matches", "ARRAY['whsec_a', 'whsec_b']"),
        ("no secret at all", "ARRAY[]::text[]"),
        ("a NULL array", "NULL::text[]"),
        ("only empty entries", "ARRAY['', NULL]"),
        ("a two-dimensional array", "ARRAY[['whsec_a', 'whsec_b'], ['whsec_c', 'whsec_new']]"),
    ] {
        for tolerance in ["0", "-3"] {
            db.same(
                &format!("_verify_webhook_signature: {what}, tolerance {tolerance}"),
                &format!("billing._verify_webhook_signature($1, $2, {secrets}, $3::int)"),
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
                "billing.stripe_signature_header($1, $2, $3::bigint)",
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

/// Every object of both fixture files as the data.object of an event, in its API shape, plus the
/// events the tests build, plus bodies made to test the readers' leniency.
fn normalisation_corpus() -> Vec<(String, String)> {
    let mut corpus = Vec::new();
    for (shape, file) in [
        (Shape::V2023, include_str!("../fixtures/stripe_objects_2023-08-16.json")),
        (Shape::Basil, include_str!("../fixtures/stripe_objects_basil.json")),
    ] {
        let fixtures: Value = serde_json::from_str(file).unwrap();
        for (resource, object) in fixtures["resources"].as_object().unwrap() {
            let event = events::event(shape, &format!("{resource}.updated"), T0, object.clone());
            corpus.push((format!("{shape:?} {resource}"), event.to_string()));
        }
        let period = events::Period { start: T0, end: T0 + 2_592_000 };
        let sub = events::subscription(shape, &events::Sub {
            id: "sub_1", customer: "cus_1", status: "active", price_id: "price_pro", period,
            cancel_at_period_end: true, ended_at: None, user_id: Some("8d3f5c1e-2b4a-4c6d-9e8f-0a1b2c3d4e5f"),
        });
        corpus.push((format!("{shape:?} built subscription"), events::event(shape, "customer.subscription.updated", T0, sub).to_string()));
        let invoice = events::invoice(shape, &events::Invoice {
            id: "in_1", subscription: "sub_1", customer: "cus_1", billing_reason: "subscription_update", paid: true,
            lines: vec![
                events::Line { price_id: "price_basic", amount: -500, proration: true, period },
                events::Line { price_id: "price_pro", amount: 1500, proration: true, period },
                events::Line { price_id: "price_pro", amount: 2000, proration: false, period },
            ],
            user_id: Some("8d3f5c1e-2b4a-4c6d-9e8f-0a1b2c3d4e5f"),
        });
        corpus.push((format!("{shape:?} built invoice"), events::event(shape, "invoice.paid", T0, invoice).to_string()));
        for (mode, status) in [("payment", "paid"), ("subscription", "no_payment_required"), ("payment", "unpaid")] {
            let session = events::checkout_session(shape, &events::Session {
                id: "cs_test_1", mode, payment_status: status, customer: "cus_1", user_id: None, price_id: "price_pack",
                subscription: None, invoice: None, amount_total: 900, request_id: Some("5b1f0d6e-8f43-4c1e-9d6a-2f7c3b9e1a44"),
            });
            corpus.push((format!("{shape:?} built {mode} session {status}"), events::event(shape, "checkout.session.completed", T0, session).to_string()));
        }
    }
    let lenient = |object: &str| format!(r#"{{"object":"event","id":"evt_1","type":"x","created":{T0},"livemode":true,"api_version":null,"data":{{"object":{object}}}}}"#);
    for (what, body) in [
        ("not JSON", "{\"id\": ".to_string()),
        ("empty", String::new()),
        ("an array", "[1, 2]".to_string()),
        ("a string", "\"evt_1\"".to_string()),
        ("object is not event", r#"{"object":"invoice","id":"evt_1","type":"x","created":1,"data":{"object":{}}}"#.to_string()),
        ("a bad id", r#"{"object":"event","id":"evt_é","type":"x","created":1,"data":{"object":{}}}"#.to_string()),
        ("an id that is all prefix", r#"{"object":"event","id":"evt_","type":"x","created":1,"data":{"object":{}}}"#.to_string()),
        ("a long id", format!(r#"{{"object":"event","id":"evt_{}","type":"x","created":1,"data":{{"object":{{}}}}}}"#, "a".repeat(252))),
        ("an empty type", r#"{"object":"event","id":"evt_1","type":"","created":1,"data":{"object":{}}}"#.to_string()),
        ("created a fraction", r#"{"object":"event","id":"evt_1","type":"x","created":1.0,"data":{"object":{}}}"#.to_string()),
        ("created too large", r#"{"object":"event","id":"evt_1","type":"x","created":9223372036854775808,"data":{"object":{}}}"#.to_string()),
        ("data a number", r#"{"object":"event","id":"evt_1","type":"x","created":1,"data":5}"#.to_string()),
        ("data null", r#"{"object":"event","id":"evt_1","type":"x","created":1,"data":null}"#.to_string()),
        ("data an empty array", r#"{"object":"event","id":"evt_1","type":"x","created":1,"data":[]}"#.to_string()),
        ("data an array of one", r#"{"object":"event","id":"evt_1","type":"x","created":1,"data":[{"object":"customer","id":"cus_1"}]}"#.to_string()),
        ("data an array of two", r#"{"object":"event","id":"evt_1","type":"x","created":1,"data":[{},{}]}"#.to_string()),
        ("data.object a string", r#"{"object":"event","id":"evt_1","type":"x","created":1,"data":{"object":"cus_1"}}"#.to_string()),
        ("customer with odd types", lenient(r#"{"object":"customer","id":"","deleted":1,"email":5,"metadata":[1]}"#)),
        ("deleted customer", lenient(r#"{"object":"customer","id":"cus_1","deleted":true,"metadata":{"user_id":"u","n":1.5,"big":12345678901234}}"#)),
        ("a reference with a numeric id", lenient(r#"{"object":"invoice","customer":{"id":5}}"#)),
        ("a reference with an empty id", lenient(r#"{"object":"invoice","customer":{"id":""},"subscription":""}"#)),
        ("a line with an unreadable price", lenient(r#"{"object":"invoice","lines":{"data":[{"price":{"id":5},"amount":1},{"price":"p"}]}}"#)),
        ("a line that is not an object", lenient(r#"{"object":"invoice","lines":{"data":[{"price":"p1"},5]}}"#)),
        ("lines that are not a list", lenient(r#"{"object":"invoice","lines":[{"price":"p1"}]}"#)),
        ("price details with an unreadable price", lenient(r#"{"object":"invoice","lines":{"data":[{"pricing":{"price_details":{"price":{"id":5}}},"price":"p2"}]}}"#)),
        ("parent with an unreadable subscription", lenient(r#"{"object":"invoice","parent":{"subscription_details":{"subscription":{"id":5},"metadata":{"a":"b"}}},"subscription_details":{"metadata":{"c":"d"}},"subscription":"sub_x"}"#)),
        ("parent metadata null", lenient(r#"{"object":"invoice","parent":{"subscription_details":{"subscription":"sub_p","metadata":null}},"subscription_details":{"metadata":{"c":"d"}}}"#)),
        ("proration in both places", lenient(r#"{"object":"invoice","lines":{"data":[{"proration":true,"parent":{"subscription_item_details":{"proration":false}},"period":{"start":"1","end":2}}]}}"#)),
        ("a subscription priced by plan only", lenient(r#"{"object":"subscription","plan":"price_old","quantity":3,"items":{"data":[]}}"#)),
        ("a subscription with an unreadable plan", lenient(r#"{"object":"subscription","plan":{"id":5}}"#)),
        ("an item with periods", lenient(r#"{"object":"subscription","items":{"data":[{"plan":{"id":"price_p"},"current_period_start":5,"current_period_end":6}]},"pause_collection":{}}"#)),
        ("paused collection", lenient(r#"{"object":"subscription","pause_collection":{"behavior":"void","resumes_at":99},"cancel_at_period_end":"yes"}"#)),
        ("a session with odd types", lenient(r#"{"object":"checkout.session","customer":{"id":null},"amount_total":"5","metadata":{"n":1.50},"client_reference_id":7}"#)),
        ("a charge", lenient(r#"{"object":"charge","id":"ch_1","customer":"cus_1"}"#)),
        ("no object type", lenient(r#"{"id":"x_1"}"#)),
        ("a NUL in a field nobody reads", lenient(r#"{"object":"customer","id":"cus_1","note":"a\u0000b"}"#)),
        ("a lone surrogate", lenient(r#"{"object":"customer","id":"cus_1","note":"\ud800"}"#)),
        ("white space around", format!("  \n{}\t ", lenient("{}"))),
    ] {
        corpus.push((what.to_string(), body));
    }
    corpus
}

#[tokio::test]
async fn every_event_is_normalised_alike() {
    let db = both().await;
    let mut normalised = 0;
    for (what, body) in normalisation_corpus() {
        let out = db
            .same(&format!("_normalize_event: {what}"), "billing._normalize_event($1)", &[Some(body)])
            .await;
        if matches!(out, Outcome::Value(Value::Object(_))) {
            normalised += 1;
        }
    }
    assert!(normalised >= 40, "only {normalised} bodies normalised: the corpus is wrong");
}
