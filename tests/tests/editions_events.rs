//! Event normalisation gives the same answers in both editions (DESIGN.md, "Two editions"):
//! every golden fixture event gives its pinned output in both, and every emulator template,
//! built event and body made to test the readers' leniency gives the same value or the same
//! error. Where the editions knowingly differ is pinned at the end.
mod editions_support;

use editions_support::{both, normalise, numbers_as_f64, Outcome, T0};
use serde_json::{json, Value};
use shipped_sql::upgrade;
use stripe_billing_tests::events::{self, Shape};

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
    let fixtures = upgrade::repo_root().join("emulator/fixtures");
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
