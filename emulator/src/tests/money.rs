//! Payments behind purchases, in both payload shapes: PaymentIntents and Charges, an
//! invoice's payment fields (2023-08-16) or `payments` (basil), refunds, disputes and credit
//! notes with their events.

use serde_json::{json, Value};

use super::*;

const VERSIONS: [&str; 2] = ["2023-08-16", "2025-03-31.basil"];

fn legacy(version: &str) -> bool {
    version == "2023-08-16"
}

async fn get(api: &Api, path: &str) -> Value {
    let (status, v) = status_and_json(api.get(path)).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// A paid payment-mode session for 2 × price_pack with an invoice; returns the session.
async fn bought_pack(api: &Api) -> Value {
    let cus = api.customer().await;
    let done = checkout_and_complete(
        api,
        &format!(
            "mode=payment&customer={cus}&success_url=https://a/ok&invoice_creation[enabled]=true\
             &line_items[0][price]=price_pack&line_items[0][quantity]=2"
        ),
    )
    .await;
    done["object"].clone()
}

#[tokio::test]
async fn paid_purchases_have_a_payment_intent_and_a_charge_shaped_per_version() {
    for version in VERSIONS {
        let running = emulator(&["--api-version", version]).await;
        let api = Api::new(&running);
        let session = bought_pack(&api).await;
        let pi = session["payment_intent"].as_str().unwrap();
        let invoice = session["invoice"].as_str().unwrap();
        let intent = get(&api, &format!("/v1/payment_intents/{pi}")).await;
        assert_eq!(
            (intent["object"].as_str(), intent["status"].as_str()),
            (Some("payment_intent"), Some("succeeded"))
        );
        assert_eq!(intent["amount"], 1000);
        let ch = intent["latest_charge"].as_str().unwrap().to_string();
        assert!(ch.starts_with("ch_"), "{intent}");
        let charge = get(&api, &format!("/v1/charges/{ch}")).await;
        for (key, want) in [
            ("payment_intent", json!(pi)),
            ("amount", json!(1000)),
            ("amount_refunded", json!(0)),
            ("refunded", json!(false)),
            ("disputed", json!(false)),
            ("customer", session["customer"].clone()),
        ] {
            assert_eq!(charge[key], want, "{version} {key}");
        }
        // `refunds` is includable since 2022-11-15.
        assert!(charge.get("refunds").is_none(), "{charge}");
        let inv = get(&api, &format!("/v1/invoices/{invoice}")).await;
        if legacy(version) {
            assert_eq!(charge["invoice"], invoice);
            assert_eq!(intent["invoice"], invoice);
            assert_eq!(
                (inv["payment_intent"].as_str(), inv["charge"].as_str()),
                (Some(pi), Some(ch.as_str()))
            );
        } else {
            for (object, name) in [(&charge, "charge"), (&intent, "intent")] {
                assert!(object.get("invoice").is_none(), "{version} {name}");
            }
            for key in ["payment_intent", "charge", "paid", "payments"] {
                assert!(inv.get(key).is_none(), "basil invoice has no {key}");
            }
            let inv = get(&api, &format!("/v1/invoices/{invoice}?expand[]=payments")).await;
            let payment = &inv["payments"]["data"][0];
            assert_eq!(payment["object"], "invoice_payment");
            assert_eq!(
                payment["payment"],
                json!({"type": "payment_intent", "payment_intent": pi})
            );
            assert_eq!(
                (payment["status"].as_str(), payment["amount_paid"].as_i64()),
                (Some("paid"), Some(1000))
            );
            let deep = get(
                &api,
                &format!("/v1/invoices/{invoice}?expand[]=payments.data.payment.payment_intent"),
            )
            .await;
            assert_eq!(
                deep["payments"]["data"][0]["payment"]["payment_intent"]["latest_charge"],
                ch.as_str()
            );
        }
        let expanded = get(
            &api,
            &format!("/v1/payment_intents/{pi}?expand[]=latest_charge"),
        )
        .await;
        assert_eq!(expanded["latest_charge"]["id"], ch.as_str());
        let (status, e) = status_and_json(api.get("/v1/charges/ch_nope")).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (404, Some("resource_missing"))
        );
        assert_eq!(e["error"]["message"], "No such charge: 'ch_nope'");
    }
}

#[tokio::test]
async fn subscription_invoices_are_charged_at_creation_and_renewal() {
    for version in VERSIONS {
        let running = emulator(&["--api-version", version]).await;
        let api = Api::new(&running);
        let sub = subscribed(&api).await;
        let renewed = api
            .control(
                &format!("/subscriptions/{sub}/renew"),
                json!({"deliver": false}),
            )
            .await;
        let paid = object_of(&renewed, 3);
        let invoice = paid["id"].as_str().unwrap();
        let expand = if legacy(version) {
            ""
        } else {
            "?expand[]=payments"
        };
        let inv = get(&api, &format!("/v1/invoices/{invoice}{expand}")).await;
        let pi = if legacy(version) {
            assert!(inv["charge"].as_str().unwrap().starts_with("ch_"));
            inv["payment_intent"].as_str().unwrap().to_string()
        } else {
            inv["payments"]["data"][0]["payment"]["payment_intent"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let intent = get(&api, &format!("/v1/payment_intents/{pi}")).await;
        assert_eq!(
            (intent["amount"].as_i64(), intent["status"].as_str()),
            (Some(1000), Some("succeeded"))
        );
        // An unpaid invoice has no payment yet.
        let failed = api
            .control(
                &format!("/subscriptions/{sub}/fail_payment"),
                json!({"deliver": false}),
            )
            .await;
        let open = object_of(&failed, 3);
        let open = open["id"].as_str().unwrap();
        let inv = get(&api, &format!("/v1/invoices/{open}{expand}")).await;
        if legacy(version) {
            assert!(inv["charge"].is_null());
            let (status, e) =
                status_and_json(api.get(&format!("/v1/invoices/{open}?expand[]=payments"))).await;
            assert_eq!(status, 400, "no payments before basil: {e}");
        } else {
            assert_eq!(inv["payments"]["data"], json!([]));
        }
    }
}

/// The events of a refund of a charge: `charge.refunded`, and from 2024-10-28.acacia on
/// `refund.created` ("Previously, these events were only sent for refunds without a
/// corresponding charge": https://docs.stripe.com/changelog/acacia/2024-10-28/refund-webhook-update).
fn refund_types(version: &str) -> Vec<&'static str> {
    if legacy(version) {
        vec!["charge.refunded"]
    } else {
        vec!["charge.refunded", "refund.created"]
    }
}

#[tokio::test]
async fn refunds_accumulate_and_send_refund_events_from_acacia_on() {
    for version in VERSIONS {
        let running = emulator(&["--api-version", version]).await;
        let api = Api::new(&running);
        let session = bought_pack(&api).await;
        let pi = session["payment_intent"].as_str().unwrap();
        let ch = get(&api, &format!("/v1/payment_intents/{pi}")).await["latest_charge"]
            .as_str()
            .unwrap()
            .to_string();
        let first = api
            .control(
                &format!("/charges/{ch}/refund"),
                json!({"amount": 300, "deliver": false}),
            )
            .await;
        assert_eq!(types(&first), refund_types(version), "{version}");
        let charge = object_of(&first, 0);
        assert_eq!(
            (
                charge["amount_refunded"].as_i64(),
                charge["refunded"].as_bool()
            ),
            (Some(300), Some(false))
        );
        let listed = get(&api, &format!("/v1/charges/{ch}?expand[]=refunds")).await;
        let id = listed["refunds"]["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(id.starts_with("re_"));
        let refund = get(&api, &format!("/v1/refunds/{id}")).await;
        if !legacy(version) {
            assert_eq!(object_of(&first, 1), refund, "{version}");
        }
        for (key, want) in [
            ("object", json!("refund")),
            ("charge", json!(ch)),
            ("payment_intent", json!(pi)),
            ("amount", json!(300)),
            ("status", json!("succeeded")),
            ("currency", json!("usd")),
        ] {
            assert_eq!(refund[key], want, "{version} {key}");
        }
        // The rest by default: now fully refunded.
        let rest = api
            .control(&format!("/charges/{ch}/refund"), json!({"deliver": false}))
            .await;
        let charge = object_of(&rest, 0);
        assert_eq!(
            (
                charge["amount_refunded"].as_i64(),
                charge["refunded"].as_bool()
            ),
            (Some(1000), Some(true))
        );
        let (status, _) = api
            .control_err(&format!("/charges/{ch}/refund"), json!({}))
            .await;
        assert_eq!(status, 409);
        let listed = get(&api, &format!("/v1/charges/{ch}?expand[]=refunds")).await;
        let amounts: Vec<i64> = listed["refunds"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["amount"].as_i64().unwrap())
            .collect();
        assert_eq!(amounts.iter().sum::<i64>(), 1000, "{version}: {amounts:?}");
        assert_eq!(
            get(&api, &format!("/v1/charges/{ch}")).await["amount_refunded"],
            1000
        );
        let (status, _) = status_and_json(api.get("/v1/refunds/re_missing")).await;
        assert_eq!(status, 404);
    }
}

/// A refund of a charge that fails: from acacia on `refund.updated` and `refund.failed`,
/// before it `charge.refund.updated` (the changelog above; the `stripe@17.3.0` event text of
/// `charge.refund.updated`, "Occurs whenever a refund is updated, on selected payment
/// methods"); the charge no longer counts it.
#[tokio::test]
async fn a_failed_refund_is_reported_per_version_and_leaves_the_charge() {
    for version in VERSIONS {
        let running = emulator(&["--api-version", version]).await;
        let api = Api::new(&running);
        let session = bought_pack(&api).await;
        let pi = session["payment_intent"].as_str().unwrap();
        let ch = get(&api, &format!("/v1/payment_intents/{pi}")).await["latest_charge"]
            .as_str()
            .unwrap()
            .to_string();
        api.control(
            &format!("/charges/{ch}/refund"),
            json!({"amount": 400, "deliver": false}),
        )
        .await;
        let listed = get(&api, &format!("/v1/charges/{ch}?expand[]=refunds")).await;
        let id = listed["refunds"]["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let failed = api
            .control(&format!("/refunds/{id}/fail"), json!({"deliver": false}))
            .await;
        let want: &[&str] = if legacy(version) {
            &["charge.refund.updated"]
        } else {
            &["refund.updated", "refund.failed"]
        };
        assert_eq!(types(&failed), want, "{version}");
        for i in 0..want.len() {
            let refund = object_of(&failed, i);
            assert_eq!(
                (refund["id"].as_str(), refund["status"].as_str()),
                (Some(id.as_str()), Some("failed")),
                "{version}"
            );
        }
        assert_eq!(
            get(&api, &format!("/v1/refunds/{id}")).await["status"],
            "failed"
        );
        assert_eq!(
            get(&api, &format!("/v1/charges/{ch}")).await["amount_refunded"],
            0,
            "{version}"
        );
        let (status, _) = api
            .control_err(&format!("/refunds/{id}/fail"), json!({}))
            .await;
        assert_eq!(status, 409, "{version}: already failed");
    }
}

#[tokio::test]
async fn refunds_of_more_than_is_left_are_refused() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let session = bought_pack(&api).await;
    let pi = session["payment_intent"].as_str().unwrap();
    let ch = get(&api, &format!("/v1/payment_intents/{pi}")).await["latest_charge"]
        .as_str()
        .unwrap()
        .to_string();
    for bad in [
        json!({"amount": 1001}),
        json!({"amount": 0}),
        json!({"amount": "x"}),
    ] {
        let (status, e) = api
            .control_err(&format!("/charges/{ch}/refund"), bad.clone())
            .await;
        assert_eq!(status, 400, "{bad}: {e}");
    }
    let (status, _) = api.control_err("/charges/ch_nope/refund", json!({})).await;
    assert_eq!(status, 404);
}

async fn charge_of(api: &Api) -> String {
    let session = bought_pack(api).await;
    let pi = session["payment_intent"].as_str().unwrap();
    get(api, &format!("/v1/payment_intents/{pi}")).await["latest_charge"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn disputes_withdraw_funds_and_close_won_or_lost() {
    for version in VERSIONS {
        let running = emulator(&["--api-version", version]).await;
        let api = Api::new(&running);
        let ch = charge_of(&api).await;
        let opened = api
            .control(&format!("/charges/{ch}/dispute"), json!({"deliver": false}))
            .await;
        assert_eq!(
            types(&opened),
            ["charge.dispute.created", "charge.dispute.funds_withdrawn"]
        );
        let dispute = object_of(&opened, 0);
        let du = dispute["id"].as_str().unwrap().to_string();
        assert!(du.starts_with("du_"));
        for (key, want) in [
            ("object", json!("dispute")),
            ("charge", json!(ch)),
            ("amount", json!(1000)),
            ("status", json!("needs_response")),
        ] {
            assert_eq!(dispute[key], want, "{version} {key}");
        }
        assert!(dispute["payment_intent"]
            .as_str()
            .unwrap()
            .starts_with("pi_"));
        assert_eq!(
            get(&api, &format!("/v1/charges/{ch}")).await["disputed"],
            true
        );
        let (status, _) = api
            .control_err(&format!("/charges/{ch}/dispute"), json!({}))
            .await;
        assert_eq!(status, 409, "a charge is disputed once");
        let won = api
            .control(
                &format!("/disputes/{du}/close"),
                json!({"won": true, "deliver": false}),
            )
            .await;
        assert_eq!(
            types(&won),
            ["charge.dispute.closed", "charge.dispute.funds_reinstated"]
        );
        assert_eq!(object_of(&won, 0)["status"], "won");
        let (status, _) = api
            .control_err(&format!("/disputes/{du}/close"), json!({"won": false}))
            .await;
        assert_eq!(status, 409, "closed already");

        let other = charge_of(&api).await;
        let opened = api
            .control(
                &format!("/charges/{other}/dispute"),
                json!({"amount": 400, "deliver": false}),
            )
            .await;
        let du = object_of(&opened, 0)["id"].as_str().unwrap().to_string();
        assert_eq!(object_of(&opened, 0)["amount"], 400);
        let lost = api
            .control(
                &format!("/disputes/{du}/close"),
                json!({"won": false, "deliver": false}),
            )
            .await;
        assert_eq!(types(&lost), ["charge.dispute.closed"]);
        assert_eq!(object_of(&lost, 0)["status"], "lost");
        let (status, _) = api
            .control_err(&format!("/disputes/{du}/close"), json!({}))
            .await;
        assert_eq!(status, 400, "won is required");
    }
}

#[tokio::test]
async fn credit_notes_refund_credit_or_record_outside_stripe_and_void() {
    for version in VERSIONS {
        let running = emulator(&["--api-version", version]).await;
        let api = Api::new(&running);
        let session = bought_pack(&api).await;
        let invoice = session["invoice"].as_str().unwrap().to_string();
        let refunded = api
            .control(
                &format!("/invoices/{invoice}/credit_note"),
                json!({"amount": 400, "refund": true, "reason": "order_change", "deliver": false}),
            )
            .await;
        let mut want = refund_types(version);
        want.push("credit_note.created");
        assert_eq!(types(&refunded), want, "{version}");
        let note = object_of(&refunded, want.len() - 1);
        let refund = get(
            &api,
            &format!(
                "/v1/charges/{}?expand[]=refunds",
                object_of(&refunded, 0)["id"].as_str().unwrap()
            ),
        )
        .await["refunds"]["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let cn = note["id"].as_str().unwrap().to_string();
        assert!(cn.starts_with("cn_"));
        for (key, want) in [
            ("object", json!("credit_note")),
            ("invoice", json!(invoice)),
            ("amount", json!(400)),
            ("total", json!(400)),
            ("status", json!("issued")),
            ("reason", json!("order_change")),
            ("out_of_band_amount", json!(null)),
        ] {
            assert_eq!(note[key], want, "{version} {key}");
        }
        assert_eq!(note["lines"]["data"][0]["amount"], 400);
        assert_eq!(note["lines"]["data"][0]["object"], "credit_note_line_item");
        if legacy(version) {
            assert_eq!(note["refund"], refund.as_str());
            assert!(note.get("refunds").is_none());
        } else {
            assert_eq!(
                note["refunds"],
                json!([{"amount_refunded": 400, "refund": refund}])
            );
            assert!(note.get("refund").is_none());
        }
        let inv = get(&api, &format!("/v1/invoices/{invoice}")).await;
        assert_eq!(inv["post_payment_credit_notes_amount"], 400);

        let outside = api
            .control(
                &format!("/invoices/{invoice}/credit_note"),
                json!({"amount": 100, "out_of_band": true, "deliver": false}),
            )
            .await;
        assert_eq!(types(&outside), ["credit_note.created"]);
        assert_eq!(object_of(&outside, 0)["out_of_band_amount"], 100);
        let credited = api
            .control(
                &format!("/invoices/{invoice}/credit_note"),
                json!({"amount": 500, "deliver": false}),
            )
            .await;
        assert!(object_of(&credited, 0)["customer_balance_transaction"]
            .as_str()
            .unwrap()
            .starts_with("cbtxn_"));
        let (status, _) = api
            .control_err(
                &format!("/invoices/{invoice}/credit_note"),
                json!({"amount": 1}),
            )
            .await;
        assert_eq!(status, 400, "the invoice is fully credited");

        let voided = api
            .control(
                &format!("/credit_notes/{cn}/void"),
                json!({"deliver": false}),
            )
            .await;
        assert_eq!(types(&voided), ["credit_note.voided"]);
        let note = object_of(&voided, 0);
        assert_eq!(note["status"], "void");
        assert!(note["voided_at"].is_i64());
        let (status, _) = api
            .control_err(&format!("/credit_notes/{cn}/void"), json!({}))
            .await;
        assert_eq!(status, 409);
        let inv = get(&api, &format!("/v1/invoices/{invoice}")).await;
        assert_eq!(inv["post_payment_credit_notes_amount"], 600);
    }
}

#[tokio::test]
async fn credit_notes_need_a_paid_invoice_and_an_amount() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    let paid = get(&api, &format!("/v1/subscriptions/{sub}")).await["latest_invoice"]
        .as_str()
        .unwrap()
        .to_string();
    for bad in [
        json!({}),
        json!({"amount": 100, "refund": true, "out_of_band": true}),
        json!({"amount": 100, "reason": "whim"}),
        json!({"amount": -5}),
    ] {
        let (status, e) = api
            .control_err(&format!("/invoices/{paid}/credit_note"), bad.clone())
            .await;
        assert_eq!(status, 400, "{bad}: {e}");
    }
    let failed = api
        .control(
            &format!("/subscriptions/{sub}/fail_payment"),
            json!({"deliver": false}),
        )
        .await;
    let open = object_of(&failed, 3)["id"].as_str().unwrap().to_string();
    let (status, _) = api
        .control_err(
            &format!("/invoices/{open}/credit_note"),
            json!({"amount": 100}),
        )
        .await;
    assert_eq!(status, 409, "only paid invoices");
    let (status, _) = api
        .control_err("/invoices/in_nope/credit_note", json!({"amount": 1}))
        .await;
    assert_eq!(status, 404);
}
