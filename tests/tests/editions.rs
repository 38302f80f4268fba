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
            let db = e.as_db_error().unwrap_or_else(|| panic!("{select}: {e}"));
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
            Outcome::Value(v) => Outcome::Value(numbers_as_f64(v)),
        };
        let a = strip(a);
        let b = strip(b);
        assert_eq!(
            a, b,
            "{label}: the extension (left) and the pure-SQL edition (right) differ"
        );
        a
    }
}

/// The same number written differently (1000 and 1000.0, 1.5 and 1.50) is the same value, as
/// jsonb compares numbers (the extension's construct_event reads them as serde's f64).
fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        v => v,
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

const T0: i64 = 1_700_000_000;

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
        SignatureCase(
            "valid",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("300"),
            at(T0 + 10),
        ),
        SignatureCase(
            "wrong secret",
            s(&body),
            s(&sig(&body, "whsec_other", T0)),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "several v1, the second matches",
            s(&body),
            s(&format!(
                "t={T0},v1={},v1={good}",
                v1(&body, "whsec_old", T0)
            )),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "no t",
            s(&body),
            s(&format!("v1={good}")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "stale",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("300"),
            at(T0 + 301),
        ),
        SignatureCase(
            "future",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("300"),
            at(T0 - 301),
        ),
        SignatureCase(
            "at the edge",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("300"),
            at(T0 + 300),
        ),
        SignatureCase(
            "stale, tolerance 0",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("0"),
            at(T0 + 10_000),
        ),
        SignatureCase(
            "stale, tolerance NULL",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            None,
            at(T0 + 10_000),
        ),
        SignatureCase(
            "negative tolerance",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("-1"),
            at(T0),
        ),
        SignatureCase(
            "v0 only",
            s(&body),
            s(&format!("t={T0},v0={good}")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "white space",
            s(&body),
            s(&format!(" t = {T0} ,\tv1 =\u{a0}{good}\u{2003}, ")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "non-ASCII body",
            s(&unicode),
            s(&sig(&unicode, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("0"),
            at(T0),
        ),
        SignatureCase(
            "huge body",
            s(&huge),
            s(&sig(&huge, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("0"),
            at(T0),
        ),
        SignatureCase(
            "tampered body",
            s(&body.replace("in_1", "in_2")),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("0"),
            at(T0),
        ),
        SignatureCase(
            "empty header",
            s(&body),
            s(""),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "blank header",
            s(&body),
            s(" \u{3000}\t"),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "NULL header",
            s(&body),
            None,
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "NULL secret",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            None,
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "empty secret",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(""),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "empty secret, negative tolerance",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(""),
            s("-5"),
            at(T0),
        ),
        SignatureCase(
            "NULL payload",
            None,
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "empty payload",
            s(""),
            s(&sig("", TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "upper-case hex",
            s(&body),
            s(&format!("t={T0},v1={}", good.to_uppercase())),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "short and non-hex v1",
            s(&body),
            s(&format!("t={T0},v1={},v1=zz{}", &good[..62], &good[2..])),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "two different t",
            s(&body),
            s(&format!("t={T0},v1={good},t={}", T0 + 1)),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "the same t twice",
            s(&body),
            s(&format!("t={T0},v1={good},t={T0}")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "t out of range",
            s(&body),
            s(&format!("t=99999999999999999999,v1={good}")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "t not an integer",
            s(&body),
            s(&format!("t=17e8,v1={good}")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "t with a plus sign",
            s(&body),
            s(&format!("t=+{T0},v1={good}")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "t a lone minus",
            s(&body),
            s(&format!("t=-,v1={good}")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "t empty",
            s(&body),
            s(&format!("t=,v1={good}")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "T upper case",
            s(&body),
            s(&format!("T={T0},v1={good}")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "t with leading zeros",
            s(&body),
            s(&format!("t=000{T0},v1={good}")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "negative t",
            s(&body),
            s(&sig(&body, TEST_SECRET, -5)),
            s(TEST_SECRET),
            s("0"),
            at(T0),
        ),
        SignatureCase(
            "t minus zero",
            s(&body),
            s(&format!("t=-0,v1={}", v1(&body, TEST_SECRET, 0))),
            s(TEST_SECRET),
            s("0"),
            at(T0),
        ),
        SignatureCase(
            "unknown keys and empty items",
            s(&body),
            s(&format!(",,t={T0},,x=y,v1={good},garbage,")),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "header over 8 KiB",
            s(&body),
            s(&format!("t={T0},v1={good},{}", "v0=0,".repeat(1700))),
            s(TEST_SECRET),
            s("300"),
            at(T0),
        ),
        SignatureCase(
            "at infinity",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("300"),
            s("infinity"),
        ),
        SignatureCase(
            "at -infinity",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("300"),
            s("-infinity"),
        ),
        SignatureCase(
            "at NULL is the wall clock",
            s(&body),
            s(&sig(&body, TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("0"),
            None,
        ),
        SignatureCase(
            "not JSON",
            s("{\"id\": "),
            s(&sig("{\"id\": ", TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("0"),
            at(T0),
        ),
        SignatureCase(
            "JSON but not an object",
            s("[1, 2.50, 1e3]"),
            s(&sig("[1, 2.50, 1e3]", TEST_SECRET, T0)),
            s(TEST_SECRET),
            s("0"),
            at(T0),
        ),
    ];
    cases
}

/// The `at` argument: Unix seconds, or a timestamptz word.
const AT: &str = "CASE WHEN $5::text ~ '^-?[0-9]+$' THEN to_timestamp($5::text::bigint) ELSE $5::text::timestamptz END";

#[tokio::test]
async fn the_signature_functions_agree_on_every_edge_case() {
    let db = both().await;
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
    let db = both().await;
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

/// The golden fixture events (`tests/fixtures/events/<version>/NN-<type>.json`) with what
/// normalising each must give (`NN-<type>.normalized.json`, pinned by core/tests/golden.rs).
fn golden_events() -> Vec<(String, String, Value)> {
    let root = upgrade::repo_root().join("tests/fixtures/events");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("tests/fixtures/events exists") {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let name = path.display().to_string();
            if name.ends_with(".json") && !name.ends_with(".normalized.json") {
                let body = std::fs::read_to_string(&path).unwrap();
                let want = std::fs::read_to_string(path.with_extension("normalized.json"))
                    .unwrap_or_else(|e| panic!("{name} has no .normalized.json: {e}"));
                out.push((name, body, serde_json::from_str(&want).unwrap()));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every emulator template (each field a version has, mostly null) as the data.object of an
/// event, the events the tests build, and bodies made to test the readers' leniency.
fn normalisation_corpus() -> Vec<(String, String)> {
    let mut corpus = Vec::new();
    let fixtures = upgrade::repo_root().join("tests/fixtures/stripe");
    for (shape, version) in [
        (Shape::V2023, "2023-08-16"),
        (Shape::Basil, "2025-03-31.basil"),
    ] {
        for file in [
            format!("templates_v{version}.json"),
            format!("templates_payments_v{version}.json"),
        ] {
            let templates: Value =
                serde_json::from_str(&std::fs::read_to_string(fixtures.join(&file)).unwrap())
                    .unwrap();
            for (resource, object) in templates
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "_source")
            {
                let event =
                    events::event(shape, &format!("{resource}.updated"), T0, object.clone());
                corpus.push((format!("{version} template {resource}"), event.to_string()));
            }
        }
        let period = events::Period {
            start: T0,
            end: T0 + 2_592_000,
        };
        let sub = events::subscription(
            shape,
            &events::Sub {
                id: "sub_1",
                customer: "cus_1",
                status: "active",
                price_id: "price_pro",
                period,
                cancel_at_period_end: true,
                ended_at: None,
                user_id: Some("8d3f5c1e-2b4a-4c6d-9e8f-0a1b2c3d4e5f"),
            },
        );
        corpus.push((
            format!("{shape:?} built subscription"),
            events::event(shape, "customer.subscription.updated", T0, sub).to_string(),
        ));
        let invoice = events::invoice(
            shape,
            &events::Invoice {
                id: "in_1",
                subscription: "sub_1",
                customer: "cus_1",
                billing_reason: "subscription_update",
                paid: true,
                lines: vec![
                    events::Line {
                        price_id: "price_basic",
                        amount: -500,
                        proration: true,
                        period,
                    },
                    events::Line {
                        price_id: "price_pro",
                        amount: 1500,
                        proration: true,
                        period,
                    },
                    events::Line {
                        price_id: "price_pro",
                        amount: 2000,
                        proration: false,
                        period,
                    },
                ],
                user_id: Some("8d3f5c1e-2b4a-4c6d-9e8f-0a1b2c3d4e5f"),
            },
        );
        corpus.push((
            format!("{shape:?} built invoice"),
            events::event(shape, "invoice.paid", T0, invoice).to_string(),
        ));
    }
    let lenient = |object: &str| {
        format!(
            r#"{{"object":"event","id":"evt_1","type":"x","created":{T0},"livemode":true,"api_version":null,"data":{{"object":{object}}}}}"#
        )
    };
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
        ("white space around", format!("  \n{}\t ", lenient("{}"))),
        ("invoice payments, one unreadable", lenient(r#"{"object":"invoice","payments":{"data":[{"invoice":"in_1","payment":{"type":"payment_intent","payment_intent":"pi_1"}},{"payment":{"charge":{"id":5}}},{"payment":null},{"payment":{}}]}}"#)),
        ("invoice payments with an unreadable invoice", lenient(r#"{"object":"invoice","payments":{"data":[{"invoice":{"id":[]},"payment":{"payment_intent":"pi_1"}}]}}"#)),
        ("a charge with odd types", lenient(r#"{"object":"charge","id":"ch_1","customer":{"id":"cus_1"},"invoice":"","amount":"100","amount_refunded":5.5,"payment_intent":{"id":"pi_1","object":"payment_intent"}}"#)),
        ("a charge with an unreadable invoice", lenient(r#"{"object":"charge","id":"ch_1","invoice":{"id":true}}"#)),
        ("a refund", lenient(r#"{"object":"refund","id":"re_1","charge":"ch_1","customer":"cus_1","amount":300,"status":"succeeded"}"#)),
        ("a refund with an unreadable charge", lenient(r#"{"object":"refund","id":"re_1","charge":{"id":{}}}"#)),
        ("a dispute with a customer", lenient(r#"{"object":"dispute","id":"dp_1","charge":{"id":"ch_1"},"customer":"cus_1","amount":900,"status":"lost"}"#)),
        ("a credit note before basil", lenient(r#"{"object":"credit_note","id":"cn_1","invoice":"in_1","type":"post_payment","refund":"re_1","total":500}"#)),
        ("a credit note from basil", lenient(r#"{"object":"credit_note","id":"cn_1","refund":"re_0","refunds":[{"refund":"re_1","amount_refunded":200},{"refund":{"id":"re_2"},"amount_refunded":"x"}]}"#)),
        ("a credit note with an unreadable refund in refunds", lenient(r#"{"object":"credit_note","id":"cn_1","refund":"re_0","refunds":[{"refund":{"id":1}}]}"#)),
        ("a credit note with empty refunds", lenient(r#"{"object":"credit_note","id":"cn_1","refunds":[],"refund":{"id":"re_9"}}"#)),
        ("a credit note with refunds not a list", lenient(r#"{"object":"credit_note","id":"cn_1","refunds":{"data":[{"refund":"re_1"}]}}"#)),
        ("an invoice payment", lenient(r#"{"object":"invoice_payment","id":"inpay_1","invoice":"in_1","status":"paid","amount_paid":900,"payment":{"type":"charge","charge":"ch_1"}}"#)),
        ("an invoice payment with an unreadable payment", lenient(r#"{"object":"invoice_payment","id":"inpay_1","invoice":"in_1","payment":{"charge":{"id":5},"payment_intent":"pi_1"}}"#)),
    ] {
        corpus.push((what.to_string(), body));
    }
    corpus
}

#[tokio::test]
async fn every_golden_fixture_event_normalises_to_its_pinned_output_in_both_editions() {
    let db = both().await;
    let golden = golden_events();
    assert!(golden.len() >= 80, "only {} golden events", golden.len());
    for (name, body, want) in golden {
        let got = db
            .same(
                &format!("_normalize_event: {name}"),
                "billing._normalize_event($1::text)",
                &[Some(body)],
            )
            .await;
        assert_eq!(got, Outcome::Value(numbers_as_f64(want)), "{name}");
    }
}

#[tokio::test]
async fn every_event_is_normalised_alike() {
    let db = both().await;
    let mut normalised = 0;
    for (what, body) in normalisation_corpus() {
        let out = db
            .same(
                &format!("_normalize_event: {what}"),
                "billing._normalize_event($1::text)",
                &[Some(body)],
            )
            .await;
        if matches!(out, Outcome::Value(Value::Object(_))) {
            normalised += 1;
        }
    }
    assert!(
        normalised >= 40,
        "only {normalised} bodies normalised: the corpus is wrong"
    );
}

async fn normalise(client: &Client, body: String) -> Outcome {
    outcome(client, "billing._normalize_event($1::text)", &[Some(body)]).await
}

async fn schema_owner(client: &Client) -> String {
    client
        .query_one(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'billing'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Where the editions knowingly differ: JSON no Stripe payload contains, read by serde in the
/// extension and by jsonb in the pure-SQL edition. Pinned so that the list in DESIGN.md ("Two
/// editions") stays true.
#[tokio::test]
async fn the_editions_differ_only_on_json_stripe_never_sends() {
    let db = both().await;
    let event = |created: &str, extra: &str| {
        format!(
            r#"{{"object":"event","id":"evt_1","type":"x","created":{created}{extra},"data":{{"object":{{"object":"subscription","pause_collection":["void",5]}}}}}}"#
        )
    };
    let error_of = |o: &Outcome| match o {
        Outcome::Error { code, message, .. } => format!("{code}: {message}"),
        Outcome::Value(v) => format!("value {v}"),
    };
    // An integer written with an exponent or as -0: serde reads a float, jsonb the integer.
    for created in ["1e3", "-0"] {
        let body = event(created, "");
        assert_eq!(
            error_of(&normalise(&db.extension, body.clone()).await),
            "22023: the payload is not a Stripe event: it has no integer created time"
        );
        let Outcome::Value(pure) = normalise(&db.pure, body).await else {
            panic!("pure: {created}")
        };
        assert_eq!(
            pure["created"],
            json!(created.parse::<f64>().unwrap() as i64)
        );
    }
    // A repeated key: serde refuses the object, jsonb keeps the last value.
    let body = event("1", r#","id":"evt_2""#);
    assert_eq!(
        error_of(&normalise(&db.extension, body.clone()).await),
        "22023: the payload is not a Stripe event: it is not a JSON object"
    );
    let Outcome::Value(pure) = normalise(&db.pure, body).await else {
        panic!("pure: repeated key")
    };
    assert_eq!(pure["id"], "evt_2");
    // An array where an object is expected: serde fills the fields in order, jsonb has no
    // fields to read.
    let Outcome::Value(ext) = normalise(&db.extension, event("1", "")).await else {
        panic!("extension: array")
    };
    let Outcome::Value(pure) = normalise(&db.pure, event("1", "")).await else {
        panic!("pure: array")
    };
    assert_eq!(
        ext["data"]["pause_collection"],
        json!({"behavior": "void", "resumes_at": 5})
    );
    assert_eq!(pure["data"]["pause_collection"], Value::Null);
    // Escapes jsonb cannot store (NUL) or decode (a lone surrogate), in a field nobody reads:
    // serde skips the field, jsonb refuses the body.
    for escape in [r"\u0000", r"\ud800"] {
        let body = event("1", &format!(r#","note":"a{escape}b""#));
        assert!(
            matches!(
                normalise(&db.extension, body.clone()).await,
                Outcome::Value(_)
            ),
            "{escape}"
        );
        assert_eq!(
            error_of(&normalise(&db.pure, body).await),
            "22032: the webhook payload is not valid JSON",
            "{escape}"
        );
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
    let rust = [
        "billing.stripe_signature_is_valid(",
        "billing.construct_event(",
        "billing.stripe_signature_header(",
        "billing._verify_webhook_signature(",
        "billing._normalize_event(",
    ];
    if line.starts_with("function ")
        && rust
            .iter()
            .any(|f| line.starts_with(&format!("function {f}")))
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
    let db = both().await;
    let (ext_owner, pure_owner) = (
        schema_owner(&db.extension).await,
        schema_owner(&db.pure).await,
    );
    let ext: std::collections::BTreeSet<String> = upgrade::catalog_snapshot(&db.extension)
        .await
        .iter()
        .map(|l| comparable(l, &ext_owner))
        .filter(|l| {
            !l.starts_with("member ")
                && !l.starts_with("pg_dump keeps ")
                && !l.starts_with("event trigger ")
        })
        .collect();
    let pure_helpers = stripe_billing_tests::pure_sql::twin_helpers();
    let pure: std::collections::BTreeSet<String> = upgrade::catalog_snapshot(&db.pure)
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
