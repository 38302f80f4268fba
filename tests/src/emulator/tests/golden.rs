//! Writes the golden event fixtures (`tests/fixtures/events/<version>/`): every event the
//! emulator sends along a customer's life (subscription, renewal, failed and 3-D Secure
//! payments, an upgrade, a token pack, refunds, a dispute won and one lost, credit notes, a
//! cancellation, a deleted customer), in each API shape. It is not run by `make test`; run it to
//! regenerate after changing what the emulator renders:
//!
//! ```sh
//! cargo test -p stripe-billing-tests --lib golden -- --ignored
//! UPDATE_GOLDEN=1 cargo test -p stripe-billing-core --test golden   # then review the diff
//! ```
//!
//! Only the event payloads are written here; the expected normalised forms next to them
//! (`*.normalized.json`) belong to core's golden test.

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

#[tokio::test]
#[ignore = "writes tests/fixtures/events; run by hand to regenerate"]
async fn write_golden_events() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/events");
    for version in ["2023-08-16", "2025-03-31.basil"] {
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
        for (n, e) in events.as_array().unwrap().iter().enumerate() {
            let payload = e["payload"].as_str().unwrap();
            let ty = e["type"].as_str().unwrap();
            types.insert(ty.to_string());
            let pretty: Value = serde_json::from_str(payload).unwrap();
            std::fs::write(
                dir.join(format!("{:02}-{ty}.json", n + 1)),
                serde_json::to_string_pretty(&pretty).unwrap() + "\n",
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
