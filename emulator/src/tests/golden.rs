//! Writes the golden event fixtures (`tests/fixtures/events/<version>/`): every event the
//! emulator sends along a customer's life (subscription, renewal, failed and 3-D Secure
//! payments, an upgrade, a token pack, refunds (one of which fails), a dispute won and one lost, credit notes, a
//! cancellation, a deleted customer), in each API shape. The writer is not run by `make test`
//! (`the_golden_events_are_what_the_emulator_sends` is: it fails when the event sequence or
//! the key paths of a payload no longer match the stored files); run it to regenerate after
//! changing what the emulator renders:
//!
//! ```sh
//! cargo test -p stripe-emulator golden -- --ignored
//! UPDATE_GOLDEN=1 scripts/integration-test.sh --test event_normalizer   # then review the diff
//! ```
//!
//! Only the event payloads are written here; the expected normalised forms next to them
//! (`*.normalized.json`) belong to the normaliser's test, tests/tests/event_normalizer.rs.

use serde_json::{json, Value};

use super::*;

async fn scenario(api: &Api) {
    // A subscription bought through Checkout, renewed, then paid late after a failure.
    let sub = subscribed(api).await;
    api.control(
        &format!("/subscriptions/{sub}/renew"),
        json!({"deliver": false}),
    )
    .await;
    api.control(
        &format!("/subscriptions/{sub}/fail_payment"),
        json!({"deliver": false}),
    )
    .await;
    api.control(
        &format!("/subscriptions/{sub}/recover"),
        json!({"deliver": false}),
    )
    .await;
    api.control(
        &format!("/subscriptions/{sub}/require_action"),
        json!({"deliver": false}),
    )
    .await;
    api.control(
        &format!("/subscriptions/{sub}/complete_action"),
        json!({"deliver": false}),
    )
    .await;
    // An upgrade invoiced at once (proration lines), a credit note refunding part of it.
    let up = api
        .control(
            &format!("/subscriptions/{sub}/change_price"),
            json!({"price": "price_pro", "proration_behavior": "always_invoice", "deliver": false}),
        )
        .await;
    let invoice = up["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(e["payload"].as_str().unwrap()).unwrap())
        .find(|e| e["type"] == "invoice.paid")
        .map(|e| e["data"]["object"]["id"].as_str().unwrap().to_string())
        .expect("the upgrade invoice is paid");
    let note = api
        .control(
            &format!("/invoices/{invoice}/credit_note"),
            json!({"amount": 500, "refund": true, "deliver": false}),
        )
        .await;
    let note_id = note["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(e["payload"].as_str().unwrap()).unwrap())
        .find(|e| e["type"] == "credit_note.created")
        .map(|e| e["data"]["object"]["id"].as_str().unwrap().to_string())
        .unwrap();
    api.control(
        &format!("/credit_notes/{note_id}/void"),
        json!({"deliver": false}),
    )
    .await;
    api.control(
        &format!("/invoices/{invoice}/credit_note"),
        json!({"amount": 300, "out_of_band": true, "deliver": false}),
    )
    .await;
    // A token pack, refunded in two parts; another disputed and won; a third disputed and lost.
    for outcome in ["refund", "won", "lost"] {
        let done = checkout_and_complete(
            api,
            "mode=payment&success_url=https://a/ok&line_items[0][price]=price_pack&line_items[0][quantity]=2",
        )
        .await;
        let pi = done["object"]["payment_intent"]
            .as_str()
            .unwrap()
            .to_string();
        let intent = json_of(
            api.get(&format!("/v1/payment_intents/{pi}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let charge = intent["latest_charge"].as_str().unwrap().to_string();
        if outcome == "refund" {
            for amount in [300, 700] {
                api.control(
                    &format!("/charges/{charge}/refund"),
                    json!({"amount": amount, "deliver": false}),
                )
                .await;
            }
            // The second refund fails: `charge.refund.updated` before acacia, `refund.updated`
            // and `refund.failed` from acacia on.
            let listed = json_of(
                api.get(&format!("/v1/charges/{charge}?expand[]=refunds"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            let second = listed["refunds"]["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["amount"] == 700)
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            api.control(
                &format!("/refunds/{second}/fail"),
                json!({"deliver": false}),
            )
            .await;
            continue;
        }
        let d = api
            .control(
                &format!("/charges/{charge}/dispute"),
                json!({"deliver": false}),
            )
            .await;
        let dispute = object_of(&d, 0)["id"].as_str().unwrap().to_string();
        api.control(
            &format!("/disputes/{dispute}/close"),
            json!({"won": outcome == "won", "deliver": false}),
        )
        .await;
    }
    // An abandoned session expires; the subscription ends; the customer is deleted.
    let (_, open) = status_and_json(api.post(
        "/v1/checkout/sessions",
        "mode=payment&success_url=https://a/ok&line_items[0][price]=price_pack&line_items[0][quantity]=1",
    ))
    .await;
    let open_id = open["id"].as_str().unwrap();
    status_and_json(api.post(&format!("/v1/checkout/sessions/{open_id}/expire"), "")).await;
    api.control(
        &format!("/subscriptions/{sub}/cancel"),
        json!({"at_period_end": false, "deliver": false}),
    )
    .await;
    let customer = api
        .control(
            "/customers",
            json!({"email": "gold@example.com", "deliver": false}),
        )
        .await;
    let cus = object_of(&customer, 0)["id"].as_str().unwrap().to_string();
    api.http
        .delete(format!("{}/v1/customers/{cus}", api.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
}

/// The events the scenario makes in `version`, in order: (type, payload).
async fn recorded(version: &str) -> Vec<(String, Value)> {
    let running = emulator(&["--api-version", version]).await;
    let api = Api::new(&running);
    scenario(&api).await;
    let events: Value = json_of(
        api.http
            .get(format!("{}/_emulator/events", api.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let ty = e["type"].as_str().unwrap().to_string();
            (
                ty,
                serde_json::from_str(e["payload"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

const VERSIONS: [&str; 2] = ["2023-08-16", "2025-03-31.basil"];

/// The golden events live with the tests that read them (core and both editions), not here.
fn fixtures_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/events")
}

/// The fixture file of the `n`th event (from 0).
fn file_name(n: usize, ty: &str) -> String {
    format!("{:02}-{ty}.json", n + 1)
}

#[tokio::test]
#[ignore = "writes tests/fixtures/events; run by hand to regenerate"]
async fn write_golden_events() {
    let root = fixtures_root();
    for version in VERSIONS {
        let events = recorded(version).await;
        let dir = root.join(version);
        if dir.exists() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let path = f.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
        std::fs::create_dir_all(&dir).unwrap();
        let mut types = std::collections::HashSet::new();
        // Every event, numbered in the order Stripe would send them.
        for (n, (ty, payload)) in events.iter().enumerate() {
            types.insert(ty.clone());
            std::fs::write(
                dir.join(file_name(n, ty)),
                serde_json::to_string_pretty(payload).unwrap() + "\n",
            )
            .unwrap();
        }
        assert!(
            types.len() >= 20,
            "{version}: only {} event types",
            types.len()
        );
    }
}

/// The key paths of a JSON value (`data.object.items.data[].price.id`), values left out:
/// ids, timestamps and amounts change from run to run or do not matter here, the shape does.
fn key_paths(v: &Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    out.insert(prefix.to_string());
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                key_paths(x, &format!("{prefix}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for x in items {
                key_paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn the_golden_events_are_what_the_emulator_sends() {
    // The stored fixtures are what the core and both editions are tested on: a change to what
    // the emulator renders that was not re-recorded (see the module docs) fails here.
    let root = fixtures_root();
    for version in VERSIONS {
        let mut stored: Vec<String> = std::fs::read_dir(root.join(version))
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".json") && !n.ends_with(".normalized.json"))
            .collect();
        stored.sort();
        let events = recorded(version).await;
        let sent: Vec<String> = events
            .iter()
            .enumerate()
            .map(|(n, (ty, _))| file_name(n, ty))
            .collect();
        assert_eq!(sent, stored, "{version}: the event sequence");
        let mut differ = Vec::new();
        for (name, (_, payload)) in sent.iter().zip(&events) {
            let text = std::fs::read_to_string(root.join(version).join(name)).unwrap();
            let want: Value = serde_json::from_str(&text).unwrap();
            let (mut got_paths, mut want_paths) = Default::default();
            key_paths(payload, "", &mut got_paths);
            key_paths(&want, "", &mut want_paths);
            for path in got_paths.symmetric_difference(&want_paths) {
                let side = if want_paths.contains(path) {
                    "stored only"
                } else {
                    "sent only"
                };
                differ.push(format!("{version}/{name}: {path} ({side})"));
            }
        }
        assert!(
            differ.is_empty(),
            "the emulator's events differ from the fixtures (regenerate them, see the module \
             docs): {differ:#?}"
        );
    }
}
