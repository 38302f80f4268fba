//! The one event normaliser, `billing._normalize_event` (sql/events/normalize.sql), which both
//! editions run (the integration suite runs once per edition): every golden fixture event gives
//! its pinned output, both API shapes give the same fields but for the documented differences,
//! every emulator template and built event reads, and what it refuses or reads leniently is
//! pinned body by body.
//!
//! The golden set is `tests/fixtures/events/<api version>/NN-<type>.json` (written by the
//! emulator); `NN-<type>.normalized.json` beside each is what normalising it must give. After
//! an intended change, `UPDATE_GOLDEN=1 scripts/integration-test.sh --test event_normalizer`
//! rewrites the expected files; review the diff before committing it.
use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{json, Value};
use shipped_sql::upgrade::repo_root;
use stripe_billing_tests::events::{self, Shape};
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

const LEGACY: &str = "2023-08-16";
const BASIL: &str = "2025-03-31.basil";
const T0: i64 = 1_700_000_000;

/// The golden fixture events, in name order.
fn fixtures() -> Vec<PathBuf> {
    let root = repo_root().join("tests/fixtures/events");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).expect("tests/fixtures/events exists") {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let name = path.display().to_string();
            if name.ends_with(".json") && !name.ends_with(".normalized.json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Normalises `body`: its value, or its error as `SQLSTATE: message`.
async fn normalise(client: &Client, body: &str) -> Result<Value, String> {
    client
        .query_one("SELECT billing._normalize_event($1::text)", &[&body])
        .await
        .map(|row| row.get::<_, Option<Value>>(0).unwrap_or(Value::Null))
        .map_err(|e| {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
            format!("{}: {}", db.code().code(), db.message())
        })
}

#[tokio::test]
async fn every_golden_fixture_event_normalises_to_its_pinned_output() {
    let db = TestDb::new().await;
    let client = db.owner().await;
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let files = fixtures();
    assert!(files.len() >= 80, "only {} fixture events", files.len());
    let mut differ = Vec::new();
    for file in &files {
        let body = std::fs::read_to_string(file).unwrap();
        let got = normalise(&client, &body)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let want_path = file.with_extension("normalized.json");
        let want: Option<Value> = std::fs::read_to_string(&want_path)
            .ok()
            .map(|s| serde_json::from_str(&s).unwrap());
        if want.as_ref() != Some(&got) {
            if update {
                let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
                std::fs::write(&want_path, text).unwrap();
            }
            differ.push(file.display().to_string());
        }
    }
    assert!(
        update || differ.is_empty(),
        "normalised output differs from the golden files (UPDATE_GOLDEN=1 rewrites them): {differ:#?}"
    );
}

#[tokio::test]
async fn the_types_the_product_applies_have_typed_data_and_the_envelope_names_the_object() {
    let db = TestDb::new().await;
    let client = db.owner().await;
    for file in fixtures() {
        let body = std::fs::read_to_string(&file).unwrap();
        let ev = normalise(&client, &body).await.unwrap();
        let ty = ev["type"].as_str().unwrap();
        let typed = ev["data"].as_object().is_some_and(|d| !d.is_empty());
        if stripe_billing_core::event::APPLIED_TYPES.contains(&ty) {
            assert!(typed, "{}: {ty} has no typed data", file.display());
        }
        assert!(ev["object_id"].is_string(), "{}", file.display());
        assert_eq!(
            ev["created"],
            serde_json::from_str::<Value>(&body).unwrap()["created"]
        );
    }
}

/// The non-null paths of a JSON value: `a.b`, `a.list[].c` (array elements share one path);
/// an empty object or array counts as a path of its own, a `null` as none.
fn non_null_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Null => {}
        Value::Object(map) if !map.is_empty() => {
            for (k, x) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                non_null_paths(x, &path, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for x in items {
                non_null_paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// The documented differences between the two shapes' normalised events: (event types with
/// this prefix, path, the only version that has it, why).
const SHAPE_DIFFERENCES: &[(&str, &str, &str, &str)] = &[
    (
        "invoice.",
        "data.lines[].unit_amount",
        LEGACY,
        "basil's proration lines carry pricing.unit_amount_decimal null (the catalog's synced price says it)",
    ),
    (
        "invoice.",
        "data.charge",
        LEGACY,
        "basil removed Invoice.charge (the payment is in invoice.payments)",
    ),
    (
        "invoice.",
        "data.payment_intent",
        LEGACY,
        "basil removed Invoice.payment_intent (the payment is in invoice.payments)",
    ),
    (
        "charge.",
        "data.invoice",
        LEGACY,
        "basil removed Charge.invoice",
    ),
    (
        "customer.subscription.",
        "data.items[].current_period_start",
        BASIL,
        "basil moved the periods onto the subscription items",
    ),
    (
        "customer.subscription.",
        "data.items[].current_period_end",
        BASIL,
        "basil moved the periods onto the subscription items",
    ),
    (
        "credit_note.",
        "data.refunds[].amount_refunded",
        BASIL,
        "basil's credit note lists refunds with their amounts; before, `refund` is one id",
    ),
];

/// Events one version sends and the other does not, for the same story: before
/// 2024-10-28.acacia Stripe sends no `refund.*` event for a charge's refund and reports its
/// change as `charge.refund.updated`; from acacia on `refund.created`, `refund.updated` and
/// `refund.failed` (https://docs.stripe.com/changelog/acacia/2024-10-28/refund-webhook-update).
const VERSION_ONLY_EVENTS: &[(&str, &str)] = &[
    (LEGACY, "charge.refund.updated"),
    (BASIL, "refund.created"),
    (BASIL, "refund.updated"),
    (BASIL, "refund.failed"),
];

#[test]
fn both_api_shapes_normalise_to_the_same_fields() {
    // The same life in both versions, event by event (paired in order, less the events only
    // one version sends), gives the same non-null fields but for the documented differences:
    // the effects never have to know which version sent an event, and a shape that turns a
    // field into null is caught.
    let root = repo_root().join("tests/fixtures/events");
    let normalized = |version: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root.join(version))
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".normalized.json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .filter(|n| {
                let ty = n[3..].trim_end_matches(".normalized.json");
                !VERSION_ONLY_EVENTS.contains(&(version, ty))
            })
            .collect()
    };
    let (legacy_names, basil_names) = (normalized(LEGACY), normalized(BASIL));
    let kinds =
        |names: &[String]| -> Vec<String> { names.iter().map(|n| n[3..].to_string()).collect() };
    assert_eq!(
        kinds(&legacy_names),
        kinds(&basil_names),
        "the same events in both versions"
    );
    assert!(
        legacy_names.len() >= 40,
        "only {} events",
        legacy_names.len()
    );
    let names: Vec<(String, String)> = legacy_names.into_iter().zip(basil_names).collect();
    let mut used = BTreeSet::new();
    let mut differ = Vec::new();
    for (legacy_name, basil_name) in &names {
        let paths = |version: &str| {
            let name = if version == LEGACY {
                legacy_name
            } else {
                basil_name
            };
            let text = std::fs::read_to_string(root.join(version).join(name)).unwrap();
            let ev: Value = serde_json::from_str(&text).unwrap();
            let mut out = BTreeSet::new();
            non_null_paths(&ev, "", &mut out);
            (ev["type"].as_str().unwrap().to_string(), out)
        };
        let (ty, legacy) = paths(LEGACY);
        let (basil_ty, basil) = paths(BASIL);
        assert_eq!(ty, basil_ty, "{legacy_name}");
        let name = legacy_name;
        for (version, only) in [
            (LEGACY, legacy.difference(&basil)),
            (BASIL, basil.difference(&legacy)),
        ] {
            for path in only {
                match SHAPE_DIFFERENCES
                    .iter()
                    .position(|(p, f, v, _)| ty.starts_with(p) && f == path && *v == version)
                {
                    Some(i) => {
                        used.insert(i);
                    }
                    None => differ.push(format!("{name}: {path} only in {version}")),
                }
            }
        }
    }
    assert!(differ.is_empty(), "undocumented differences: {differ:#?}");
    let unused: Vec<_> = (0..SHAPE_DIFFERENCES.len())
        .filter(|i| !used.contains(i))
        .map(|i| SHAPE_DIFFERENCES[i])
        .collect();
    assert!(
        unused.is_empty(),
        "documented differences no fixture shows: {unused:#?}"
    );
}

#[tokio::test]
async fn every_emulator_template_and_built_event_reads() {
    // Each field a version has (mostly null in the templates) must read without an error, and
    // the events the tests build must read as what they were built from.
    let db = TestDb::new().await;
    let client = db.owner().await;
    let fixtures = repo_root().join("emulator/fixtures");
    for (shape, version) in [(Shape::V2023, LEGACY), (Shape::Basil, BASIL)] {
        for file in [
            format!("templates_v{version}.json"),
            format!("templates_payments_v{version}.json"),
        ] {
            let templates: Value =
                serde_json::from_str(&std::fs::read_to_string(fixtures.join(&file)).unwrap())
                    .unwrap();
            for (resource, object) in templates.as_object().unwrap() {
                if resource == "_source" {
                    continue;
                }
                let event =
                    events::event(shape, &format!("{resource}.updated"), T0, object.clone());
                let ev = normalise(&client, &event.to_string())
                    .await
                    .unwrap_or_else(|e| panic!("{file} {resource}: {e}"));
                assert_eq!(ev["created"], json!(T0), "{file} {resource}");
            }
        }
        let period = events::Period {
            start: T0,
            end: T0 + 2_592_000,
        };
        let line = |price_id, amount, proration| events::Line {
            price_id,
            amount,
            proration,
            period,
        };
        let invoice = events::invoice(
            shape,
            &events::Invoice {
                id: "in_1",
                subscription: "sub_1",
                customer: "cus_1",
                billing_reason: "subscription_update",
                paid: true,
                lines: vec![
                    line("price_basic", -500, true),
                    line("price_pro", 1500, true),
                    line("price_pro", 2000, false),
                ],
                user_id: Some("8d3f5c1e-2b4a-4c6d-9e8f-0a1b2c3d4e5f"),
            },
        );
        let ev = normalise(
            &client,
            &events::event(shape, "invoice.paid", T0, invoice).to_string(),
        )
        .await
        .unwrap();
        let lines: Vec<(Value, Value, Value, Value)> = ev["data"]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["price_id"].clone(),
                    l["amount"].clone(),
                    l["proration"].clone(),
                    l["period_end"].clone(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                (
                    json!("price_basic"),
                    json!(-500),
                    json!(true),
                    json!(T0 + 2_592_000)
                ),
                (
                    json!("price_pro"),
                    json!(1500),
                    json!(true),
                    json!(T0 + 2_592_000)
                ),
                (
                    json!("price_pro"),
                    json!(2000),
                    json!(false),
                    json!(T0 + 2_592_000)
                ),
            ],
            "{version}"
        );
        assert_eq!(ev["data"]["subscription"], "sub_1", "{version}");
        assert_eq!(ev["customer"], "cus_1", "{version}");
        assert_eq!(
            ev["data"]["subscription_metadata"]["user_id"], "8d3f5c1e-2b4a-4c6d-9e8f-0a1b2c3d4e5f",
            "{version}"
        );
    }
}

#[tokio::test]
async fn invoice_item_prorations_and_a_page_of_more_lines_read() {
    let db = TestDb::new().await;
    let client = db.owner().await;
    let period = events::Period {
        start: T0,
        end: T0 + 2_592_000,
    };
    for shape in Shape::ALL {
        let mut invoice = events::invoice(
            shape,
            &events::Invoice {
                id: "in_1",
                subscription: "sub_1",
                customer: "cus_1",
                billing_reason: "subscription_cycle",
                paid: true,
                lines: vec![events::Line {
                    price_id: "price_pro",
                    amount: 1500,
                    proration: false,
                    period,
                }],
                user_id: None,
            },
        );
        let read = |invoice: &Value| {
            let body = events::event(shape, "invoice.paid", T0, invoice.clone()).to_string();
            let client = &client;
            async move {
                let d = normalise(client, &body).await.unwrap()["data"].clone();
                (
                    d["lines"][0]["proration"].clone(),
                    d["lines_has_more"].clone(),
                )
            }
        };
        assert_eq!(
            read(&invoice).await,
            (json!(false), json!(false)),
            "{shape:?}"
        );
        invoice["lines"]["has_more"] = json!(true);
        assert_eq!(
            read(&invoice).await,
            (json!(false), json!(true)),
            "{shape:?}"
        );
        invoice["lines"]["has_more"] = json!("true");
        assert_eq!(
            read(&invoice).await.1,
            json!(false),
            "{shape:?}: not a boolean"
        );
        if shape == Shape::Basil {
            // The parent of a line an invoice item made (basil's invoice line item).
            invoice["lines"]["data"][0]["parent"] = json!({"type": "invoice_item_details",
                "invoice_item_details": {"invoice_item": "ii_1", "proration": true,
                    "proration_details": {"credited_items": null}, "subscription": "sub_1"},
                "subscription_item_details": null});
            assert_eq!(read(&invoice).await.0, json!(true));
        }
    }
}

/// An event around `object` (a JSON text).
fn around(object: &str) -> String {
    format!(
        r#"{{"object":"event","id":"evt_1","type":"x","created":{T0},"livemode":true,"api_version":null,"data":{{"object":{object}}}}}"#
    )
}

#[tokio::test]
async fn what_is_not_a_stripe_event_is_refused_with_its_reason() {
    let db = TestDb::new().await;
    let client = db.owner().await;
    let not_event = |reason: &str| format!("22023: the payload is not a Stripe event: {reason}");
    let envelope = |fields: &str| format!(r#"{{"object":"event",{fields}}}"#);
    for (body, want) in [
        (
            "{\"id\": ".to_string(),
            "22032: the webhook payload is not valid JSON".to_string(),
        ),
        (
            String::new(),
            "22032: the webhook payload is not valid JSON".to_string(),
        ),
        (
            r#"{"a":"\ud800"}"#.to_string(),
            "22032: the webhook payload is not valid JSON".to_string(),
        ),
        ("[1, 2]".to_string(), not_event("it is not a JSON object")),
        (
            "\"evt_1\"".to_string(),
            not_event("it is not a JSON object"),
        ),
        (
            r#"{"object":"invoice","id":"evt_1","type":"x","created":1,"data":{"object":{}}}"#
                .to_string(),
            not_event("its \"object\" is not \"event\""),
        ),
        (
            envelope(r#""id":"evt_é","type":"x","created":1,"data":{"object":{}}"#),
            not_event("it has no valid evt_ id"),
        ),
        (
            envelope(r#""id":"evt_","type":"x","created":1,"data":{"object":{}}"#),
            not_event("it has no valid evt_ id"),
        ),
        (
            envelope(r#""id":5,"type":"x","created":1,"data":{"object":{}}"#),
            not_event("it has no valid evt_ id"),
        ),
        (
            envelope(&format!(
                r#""id":"evt_{}","type":"x","created":1,"data":{{"object":{{}}}}"#,
                "a".repeat(252)
            )),
            not_event("it has no valid evt_ id"),
        ),
        (
            envelope(r#""id":"evt_1","type":"","created":1,"data":{"object":{}}"#),
            not_event("it has no type"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":1.0,"data":{"object":{}}"#),
            not_event("it has no integer created time"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":"1","data":{"object":{}}"#),
            not_event("it has no integer created time"),
        ),
        (
            envelope(
                r#""id":"evt_1","type":"x","created":9223372036854775808,"data":{"object":{}}"#,
            ),
            not_event("it has no integer created time"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":1,"data":5"#),
            not_event("it has no data.object"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":1,"data":null"#),
            not_event("it has no data.object"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":1,"data":[{"object":{}}]"#),
            not_event("it has no data.object"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":1,"data":{"object":"cus_1"}"#),
            not_event("it has no data.object"),
        ),
    ] {
        assert_eq!(normalise(&client, &body).await, Err(want), "{body}");
    }
    // A NUL escape, which jsonb cannot hold, in a field nobody reads does not refuse the event.
    let body = around(r#"{"object":"customer","id":"cus_1","name":"a\u0000b"}"#);
    assert_eq!(
        normalise(&client, &body).await.unwrap()["customer"],
        "cus_1"
    );
    assert_eq!(
        normalise(&client, &format!(" \n{}\t ", around("{}")))
            .await
            .unwrap()["id"],
        "evt_1"
    );
}

#[tokio::test]
async fn fields_of_unexpected_types_read_as_absent() {
    let db = TestDb::new().await;
    let client = db.owner().await;
    let data = |object: &'static str| {
        let client = &client;
        async move {
            let ev = normalise(client, &around(object)).await.unwrap();
            (ev["customer"].clone(), ev["data"].clone())
        }
    };
    let (customer, d) =
        data(r#"{"object":"customer","id":"","deleted":1,"email":5,"metadata":[1]}"#).await;
    assert_eq!(
        (customer, d),
        (
            json!(""),
            json!({"id": "", "deleted": false, "email": null, "metadata": {}})
        )
    );
    let (customer, d) = data(r#"{"object":"invoice","customer":{"id":5},"subscription":"","lines":{"data":[{"price":{"id":5,"unit_amount":"9"},"amount":1.5},5,{"plan":{"id":"p2"},"amount":"7","pricing":{"unit_amount_decimal":"1e3"}}]}}"#).await;
    assert_eq!(customer, Value::Null);
    assert_eq!(d["subscription"], Value::Null);
    assert_eq!(
        d["lines"],
        json!([
            // A number stays a number, whole or not: an effect that needs a whole one says so.
            // A unit amount is a number, or a decimal string (unit_amount_decimal) read as one.
            {"price_id": null, "amount": 1.5, "quantity": null, "proration": false, "period_start": null, "period_end": null, "unit_amount": null},
            {"price_id": "p2", "amount": null, "quantity": null, "proration": false, "period_start": null, "period_end": null, "unit_amount": null}
        ])
    );
    let (_, d) = data(r#"{"object":"invoice","lines":{"data":[{"pricing":{"unit_amount_decimal":"2933.333333333333"}},{"price":{"unit_amount_decimal":"10.5","unit_amount":11}},{"price":{"unit_amount":12}}]}}"#).await;
    assert_eq!(
        d["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["unit_amount"].to_string())
            .collect::<Vec<_>>(),
        ["2933.333333333333", "10.5", "12"]
    );
    let (_, d) = data(r#"{"object":"invoice","lines":[{"price":"p1"}],"parent":{"subscription_details":{"subscription":{"id":"sub_p"},"metadata":null}},"subscription_details":{"metadata":{"c":"d"}},"subscription":"sub_x"}"#).await;
    assert_eq!(
        (
            d["lines"].clone(),
            d["subscription"].clone(),
            d["subscription_metadata"].clone()
        ),
        (json!([]), json!("sub_p"), json!({"c": "d"}))
    );
    let (_, d) = data(r#"{"object":"invoice","lines":{"data":[{"proration":true,"parent":{"subscription_item_details":{"proration":false}},"period":{"start":"1","end":2}}]}}"#).await;
    assert_eq!(
        (
            d["lines"][0]["proration"].clone(),
            d["lines"][0]["period_start"].clone(),
            d["lines"][0]["period_end"].clone()
        ),
        (json!(false), Value::Null, json!(2))
    );
    let (_, d) = data(r#"{"object":"subscription","plan":"price_old","quantity":3,"items":{"data":[]},"cancel_at_period_end":"yes","pause_collection":{"behavior":"void","resumes_at":99}}"#).await;
    assert_eq!(
        d["items"],
        json!([{"item_id": null, "price_id": "price_old", "quantity": 3, "current_period_start": null, "current_period_end": null}])
    );
    assert_eq!(
        (
            d["cancel_at_period_end"].clone(),
            d["pause_collection"].clone()
        ),
        (json!(false), json!({"behavior": "void", "resumes_at": 99}))
    );
    let (_, d) = data(r#"{"object":"subscription","items":{"data":[{"plan":{"id":"price_p"},"current_period_start":5,"current_period_end":6}]},"pause_collection":[1]}"#).await;
    assert_eq!(
        (
            d["current_period_start"].clone(),
            d["current_period_end"].clone(),
            d["pause_collection"].clone()
        ),
        (json!(5), json!(6), Value::Null)
    );
    let (customer, d) = data(r#"{"object":"checkout.session","customer":{"id":null},"amount_total":"5","metadata":{"n":1.50},"client_reference_id":7}"#).await;
    assert_eq!(
        (
            customer,
            d["amount_total"].clone(),
            d["client_reference_id"].clone(),
            d["metadata"].clone()
        ),
        (Value::Null, Value::Null, Value::Null, json!({"n": 1.50}))
    );
    let (_, d) = data(r#"{"object":"invoice","payments":{"data":[{"invoice":"in_1","payment":{"type":"payment_intent","payment_intent":"pi_1"}},{"payment":{"charge":{"id":5}}},{"payment":null},5]}}"#).await;
    assert_eq!(
        d["payments"],
        json!([{"payment_intent": "pi_1", "charge": null}, {"payment_intent": null, "charge": null}])
    );
    let (customer, d) = data(r#"{"object":"charge","id":"ch_1","customer":{"id":"cus_1"},"invoice":"","amount":"100","amount_refunded":5.5,"payment_intent":{"id":"pi_1","object":"payment_intent"}}"#).await;
    assert_eq!(
        (customer, d),
        (
            json!("cus_1"),
            json!({"id": "ch_1", "payment_intent": "pi_1", "invoice": null, "amount": null, "amount_refunded": 5.5, "currency": null})
        )
    );
    let (customer, d) = data(r#"{"object":"dispute","id":"dp_1","charge":{"id":"ch_1"},"customer":"cus_1","amount":900,"status":"lost"}"#).await;
    assert_eq!(
        (customer, d["charge"].clone(), d["amount"].clone()),
        (Value::Null, json!("ch_1"), json!(900))
    );
    let (_, d) = data(r#"{"object":"credit_note","id":"cn_1","refund":"re_0","refunds":[{"refund":"re_1","amount_refunded":200},{"refund":{"id":"re_2"},"amount_refunded":"x"}]}"#).await;
    assert_eq!(
        d["refunds"],
        json!([{"refund": "re_1", "amount_refunded": 200}, {"refund": "re_2", "amount_refunded": null}])
    );
    let (_, d) =
        data(r#"{"object":"credit_note","id":"cn_1","refunds":[],"refund":{"id":"re_9"}}"#).await;
    assert_eq!(
        d["refunds"],
        json!([{"refund": "re_9", "amount_refunded": null}])
    );
    let (customer, d) = data(r#"{"object":"invoice_payment","id":"inpay_1","invoice":"in_1","status":"paid","amount_paid":900,"payment":{"type":"charge","charge":"ch_1"},"customer":"cus_1"}"#).await;
    assert_eq!(
        (customer, d),
        (
            Value::Null,
            json!({"id": "inpay_1", "invoice": "in_1", "status": "paid", "amount_paid": 900, "payment_intent": null, "charge": "ch_1"})
        )
    );
    let (customer, d) = data(r#"{"id":"x_1","customer":"cus_1"}"#).await;
    assert_eq!((customer, d), (Value::Null, json!({})));
}
