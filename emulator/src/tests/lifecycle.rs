//! Lifecycle steps, webhook delivery and signatures, API shapes.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use stripe_billing_core::signature::verify;

use super::*;
use crate::store::real_now;

type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver that records the raw body and the signature header.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let sig = headers["stripe-signature"].to_str().unwrap().to_string();
                assert_eq!(
                    headers["content-type"].to_str().unwrap().split(';').next(),
                    Some("application/json")
                );
                sink.lock()
                    .unwrap()
                    .push((String::from_utf8(body.to_vec()).unwrap(), sig));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn subscription_lifecycle_with_signed_webhooks() {
    let (url, received) = receiver().await;
    let running = emulator(&["--webhook-url", &url, "--webhook-secret", "whsec_test"]).await;
    let api = Api::new(&running);
    let body = "mode=subscription&success_url=https://a/ok&client_reference_id=u9&line_items[0][price]=price_basic&line_items[0][quantity]=1\
                &subscription_data[metadata][user_id]=u9&metadata[user_id]=u9";
    let s = json_of(
        api.post("/v1/checkout/sessions", body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = s["id"].as_str().unwrap();
    let done = api
        .control(&format!("/checkout/{id}/complete"), json!({}))
        .await;
    assert_eq!(
        types(&done),
        [
            "checkout.session.completed",
            "customer.subscription.created",
            "invoice.paid"
        ]
    );
    for e in done["events"].as_array().unwrap() {
        assert_eq!(e["delivery"]["status"], 200);
    }
    let completed: Value =
        serde_json::from_str(done["events"][0]["payload"].as_str().unwrap()).unwrap();
    let session = &completed["data"]["object"];
    assert_eq!(
        (
            session["status"].as_str(),
            session["payment_status"].as_str()
        ),
        (Some("complete"), Some("paid"))
    );
    assert_eq!(session["client_reference_id"], "u9");
    let sub_id = session["subscription"].as_str().unwrap().to_string();
    let paid: Value = serde_json::from_str(done["events"][2]["payload"].as_str().unwrap()).unwrap();
    let invoice = &paid["data"]["object"];
    assert_eq!(invoice["billing_reason"], "subscription_create");
    assert_eq!(invoice["amount_paid"], 1000);
    assert_eq!(
        invoice["parent"]["subscription_details"]["subscription"],
        sub_id.as_str()
    );
    assert_eq!(
        invoice["parent"]["subscription_details"]["metadata"]["user_id"],
        "u9"
    );
    assert_eq!(
        invoice["lines"]["data"][0]["pricing"]["price_details"]["price"],
        "price_basic"
    );
    assert_eq!(session["invoice"], invoice["id"]);

    let sub = json_of(
        api.get(&format!("/v1/subscriptions/{sub_id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let first_end = sub["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();
    assert!(sub.get("current_period_end").is_none());
    let renewed = api
        .control(&format!("/subscriptions/{sub_id}/renew"), json!({}))
        .await;
    assert_eq!(
        types(&renewed),
        [
            "customer.subscription.updated",
            "invoice.created",
            "invoice.finalized",
            "invoice.paid"
        ]
    );
    assert_eq!(
        renewed["object"]["items"]["data"][0]["current_period_start"],
        first_end
    );
    let changed = api
        .control(
            &format!("/subscriptions/{sub_id}/change_price"),
            json!({"price": "price_pro", "proration_behavior": "always_invoice"}),
        )
        .await;
    assert_eq!(
        types(&changed),
        ["customer.subscription.updated", "invoice.paid"]
    );
    let proration: Value =
        serde_json::from_str(changed["events"][1]["payload"].as_str().unwrap()).unwrap();
    let lines = &proration["data"]["object"]["lines"]["data"];
    assert!(lines[0]["amount"].as_i64().unwrap() < 0 && lines[1]["amount"].as_i64().unwrap() > 0);
    let failed = api
        .control(&format!("/subscriptions/{sub_id}/fail_payment"), json!({}))
        .await;
    assert_eq!(
        types(&failed),
        [
            "customer.subscription.updated",
            "invoice.created",
            "invoice.finalized",
            "invoice.payment_failed",
            "customer.subscription.updated"
        ]
    );
    assert_eq!(failed["object"]["status"], "past_due");
    let recovered = api
        .control(&format!("/subscriptions/{sub_id}/recover"), json!({}))
        .await;
    assert_eq!(recovered["object"]["status"], "active");
    let cancel = api
        .control(
            &format!("/subscriptions/{sub_id}/cancel"),
            json!({"at_period_end": true}),
        )
        .await;
    assert_eq!(types(&cancel), ["customer.subscription.updated"]);
    let ended = api
        .control(
            &format!("/subscriptions/{sub_id}/renew"),
            json!({"deliver": false}),
        )
        .await;
    assert_eq!(types(&ended), ["customer.subscription.deleted"]);
    assert!(ended["events"][0]["delivery"].is_null());

    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 17);
    let mut last = 0;
    for (payload, header) in &got {
        verify(
            payload.as_bytes(),
            Some(header),
            ["whsec_test"],
            Some(300),
            real_now(),
        )
        .unwrap();
        let event: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(
            (event["object"].as_str(), event["livemode"].as_bool()),
            (Some("event"), Some(false))
        );
        assert_eq!(event["api_version"], "2025-03-31.basil");
        let created = event["created"].as_i64().unwrap();
        assert!(created >= last, "created must not go backwards");
        last = created;
    }
}

#[tokio::test]
async fn legacy_shape_and_async_payments() {
    let running = emulator(&["--api-version", "2023-08-16"]).await;
    let api = Api::new(&running);
    let body = "mode=subscription&success_url=https://a/ok&line_items[0][price]=price_basic&line_items[0][quantity]=1&subscription_data[metadata][k]=v";
    let s = json_of(
        api.post("/v1/checkout/sessions", body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let done = api
        .control(
            &format!("/checkout/{}/complete", s["id"].as_str().unwrap()),
            json!({"deliver": false}),
        )
        .await;
    let invoice: Value =
        serde_json::from_str(done["events"][2]["payload"].as_str().unwrap()).unwrap();
    let invoice = &invoice["data"]["object"];
    let sub_id = done["object"]["subscription"].as_str().unwrap();
    assert_eq!(invoice["subscription"], sub_id);
    assert_eq!(invoice["subscription_details"]["metadata"]["k"], "v");
    assert_eq!(invoice["lines"]["data"][0]["price"]["id"], "price_basic");
    let sub = json_of(
        api.get(&format!("/v1/subscriptions/{sub_id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        sub["current_period_end"].as_i64().unwrap() > sub["current_period_start"].as_i64().unwrap()
    );
    // A request's Stripe-Version shapes its response.
    let basil = json_of(
        api.get(&format!("/v1/subscriptions/{sub_id}"))
            .header("Stripe-Version", "2025-03-31.basil")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(basil.get("current_period_end").is_none());

    let pay = json_of(
        api.post(
            "/v1/checkout/sessions",
            "mode=payment&success_url=https://a/ok&line_items[0][price]=price_pack&line_items[0][quantity]=1",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let pid = pay["id"].as_str().unwrap();
    let unpaid = api
        .control(
            &format!("/checkout/{pid}/complete"),
            json!({"payment_status": "unpaid", "deliver": false}),
        )
        .await;
    assert_eq!(unpaid["object"]["payment_status"], "unpaid");
    let ok = api
        .control(
            &format!("/checkout/{pid}/async_payment"),
            json!({"succeeded": true, "deliver": false}),
        )
        .await;
    assert_eq!(types(&ok), ["checkout.session.async_payment_succeeded"]);
    assert_eq!(ok["object"]["payment_status"], "paid");
    let r = api
        .http
        .post(format!(
            "{}/_emulator/checkout/{pid}/async_payment",
            api.base
        ))
        .json(&json!({"succeeded": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
}
