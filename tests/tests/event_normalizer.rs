//! The one event normaliser, `billing._normalize_event` (sql/events/normalize.sql), which both
//! editions run (the integration suite runs once per edition): every golden fixture event gives
//! its pinned output, both API shapes give the same fields but for the documented differences,
//! and every emulator template and built event reads. What it refuses or reads leniently is
//! pinned body by body in event_normalizer_malformed.rs.
//!
//! The golden set is `tests/fixtures/events/<api version>/NN-<type>.json` (written by the
//! emulator); `NN-<type>.normalized.json` beside each is what normalising it must give. After
//! an intended change, `UPDATE_GOLDEN=1 scripts/integration-test.sh --test event_normalizer`
//! rewrites the expected files; review the diff before committing it.
use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{json, Value};
use shipped_sql::upgrade::repo_root;
use stripe_billing_tests::events::{self, normalise, Shape};
use stripe_billing_tests::pg::TestDb;

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
