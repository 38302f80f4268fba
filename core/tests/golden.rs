//! Golden tests of event normalisation over the one shared fixture set,
//! `tests/fixtures/events/<api version>/NN-<type>.json`: real-shaped events of every type the
//! product applies, in each API shape (written by the emulator, see
//! `tests/src/emulator/tests/golden.rs`). Next to each, `NN-<type>.normalized.json` is what
//! `normalize` must return. The pure-SQL edition's normaliser is held to the same files.
//!
//! After an intended change, `UPDATE_GOLDEN=1 cargo test -p stripe-billing-core --test golden`
//! rewrites the expected files; review the diff before committing it.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use stripe_billing_core::event::normalize_to_json;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/events");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).expect("tests/fixtures/events exists") {
        let dir = dir.unwrap().path();
        for f in std::fs::read_dir(&dir).unwrap() {
            let path = f.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".json") && !name.ends_with(".normalized.json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn expected_path(event: &Path) -> PathBuf {
    event.with_extension("normalized.json")
}

#[test]
fn every_fixture_event_normalises_to_its_golden_file() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let files = fixtures();
    assert!(files.len() >= 40, "only {} fixture events", files.len());
    let mut differ = Vec::new();
    for file in &files {
        let payload = std::fs::read_to_string(file).unwrap();
        let got = normalize_to_json(&payload).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let want_path = expected_path(file);
        let want: Option<Value> = std::fs::read_to_string(&want_path)
            .ok()
            .map(|s| serde_json::from_str(&s).unwrap());
        if want.as_ref() != Some(&got) {
            if update {
                std::fs::write(
                    &want_path,
                    serde_json::to_string_pretty(&got).unwrap() + "\n",
                )
                .unwrap();
            }
            differ.push(file.display().to_string());
        }
    }
    assert!(
        update || differ.is_empty(),
        "normalised output differs from the golden files (UPDATE_GOLDEN=1 rewrites them): {differ:#?}"
    );
}

#[test]
fn the_types_the_product_applies_all_have_typed_data() {
    for file in fixtures() {
        let ev = normalize_to_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let ty = ev["type"].as_str().unwrap();
        let typed = ev["data"].as_object().is_some_and(|d| !d.is_empty());
        let applied = !matches!(ty, "invoice.created" | "invoice.finalized");
        assert!(
            !applied || typed,
            "{}: {ty} has no typed data",
            file.display()
        );
        // The object's own id and the customer are lifted into the envelope.
        assert!(ev["object_id"].is_string(), "{}", file.display());
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

const LEGACY: &str = "2023-08-16";
const BASIL: &str = "2025-03-31.basil";

/// The documented differences between the two shapes' normalised events: (event types with
/// this prefix, path, the only version that has it, why).
const SHAPE_DIFFERENCES: &[(&str, &str, &str, &str)] = &[
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

#[test]
fn both_api_shapes_normalise_to_the_same_fields() {
    // The same life in both versions, event by event (paired by file name), gives the same
    // non-null fields but for the documented differences: the SQL never has to know which
    // version sent an event, and a shape that turns a field into null is caught.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/events");
    let normalized = |version: &str| -> BTreeSet<String> {
        std::fs::read_dir(root.join(version))
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".normalized.json"))
            .collect()
    };
    let names = normalized(LEGACY);
    assert_eq!(names, normalized(BASIL), "the same events in both versions");
    assert!(names.len() >= 40, "only {} events", names.len());
    let mut used = BTreeSet::new();
    let mut differ = Vec::new();
    for name in &names {
        let paths = |version: &str| {
            let text = std::fs::read_to_string(root.join(version).join(name)).unwrap();
            let ev: Value = serde_json::from_str(&text).unwrap();
            let mut out = BTreeSet::new();
            non_null_paths(&ev, "", &mut out);
            (ev["type"].as_str().unwrap().to_string(), out)
        };
        let (ty, legacy) = paths(LEGACY);
        let (basil_ty, basil) = paths(BASIL);
        assert_eq!(ty, basil_ty, "{name}");
        let only = [
            (LEGACY, legacy.difference(&basil)),
            (BASIL, basil.difference(&legacy)),
        ];
        for (version, paths) in only {
            for path in paths {
                let allowed = SHAPE_DIFFERENCES.iter().position(|(prefix, p, v, _)| {
                    ty.starts_with(prefix) && p == path && *v == version
                });
                match allowed {
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
