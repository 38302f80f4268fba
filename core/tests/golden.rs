//! Golden tests of event normalisation over the one shared fixture set,
//! `tests/fixtures/events/<api version>/NN-<type>.json`: real-shaped events of every type the
//! product applies, in each API shape (written by the emulator, see
//! `tests/src/emulator/tests/golden.rs`). Next to each, `NN-<type>.normalized.json` is what
//! `normalize` must return. The pure-SQL edition's normaliser is held to the same files.
//!
//! After an intended change, `UPDATE_GOLDEN=1 cargo test -p stripe-billing-core --test golden`
//! rewrites the expected files; review the diff before committing it.
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

#[test]
fn both_api_shapes_normalise_to_the_same_fields() {
    // The same life in both versions gives the same keys per event type: the SQL never has to
    // know which version sent an event.
    let mut keys: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for file in fixtures() {
        let ev = normalize_to_json(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let version = file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let mut names: Vec<String> = ev["data"].as_object().unwrap().keys().cloned().collect();
        names.sort();
        keys.insert((ev["type"].as_str().unwrap().to_string(), version), names);
    }
    let versions: std::collections::BTreeSet<&String> = keys.keys().map(|(_, v)| v).collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    for ((ty, version), names) in &keys {
        for other in &versions {
            if let Some(theirs) = keys.get(&(ty.clone(), (*other).clone())) {
                assert_eq!(names, theirs, "{ty}: {version} vs {other}");
            }
        }
    }
}
