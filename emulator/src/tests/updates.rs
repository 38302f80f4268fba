//! `POST /v1/subscriptions/{id}`: a seat change (one item's quantity) with each
//! `proration_behavior`, and what Stripe refuses.

use serde_json::{json, Value};

use super::*;

/// A subscription to Basic (one seat) and its item.
async fn seats(api: &Api) -> (String, String) {
    let sub = subscribed(api).await;
    let got = json_of(
        api.get(&format!("/v1/subscriptions/{sub}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let item = got["items"]["data"][0]["id"].as_str().unwrap().to_string();
    (sub, item)
}

async fn update(api: &Api, sub: &str, form: &str) -> (u16, Value) {
    status_and_json(api.post(&format!("/v1/subscriptions/{sub}"), form)).await
}

/// The newest invoice.paid event's invoice.
async fn last_paid_invoice(api: &Api) -> Value {
    let list = json_of(
        api.get("/v1/events?type=invoice.paid&limit=1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    list["data"][0]["data"]["object"].clone()
}

fn lines(invoice: &Value) -> Vec<(i64, i64, bool)> {
    invoice["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let proration = l["parent"]["subscription_item_details"]["proration"]
                .as_bool()
                .or_else(|| l["proration"].as_bool())
                .unwrap();
            (
                l["quantity"].as_i64().unwrap(),
                l["amount"].as_i64().unwrap(),
                proration,
            )
        })
        .collect()
}

#[tokio::test]
async fn always_invoice_bills_the_added_seats_at_once() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let (sub, item) = seats(&api).await;
    let before = last_paid_invoice(&api).await["id"].clone();
    let form =
        format!("items[0][id]={item}&items[0][quantity]=3&proration_behavior=always_invoice");
    let (status, answer) = update(&api, &sub, &form).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "subscription");
    assert_eq!(answer["items"]["data"][0]["quantity"], 3);
    let invoice = last_paid_invoice(&api).await;
    assert_ne!(invoice["id"], before, "a new invoice was paid");
    assert_eq!(invoice["billing_reason"], "subscription_update");
    let got = lines(&invoice);
    // Unused time at one seat credited, the rest of the period at three charged.
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].0, got[0].2), (1, true));
    assert!(got[0].1 < 0);
    assert_eq!((got[1].0, got[1].2), (3, true));
    assert!(got[1].1 > 0 && got[1].1 + got[0].1 > 0, "{got:?}");
    let updated = json_of(
        api.get("/v1/events?type=customer.subscription.updated&limit=1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let event = &updated["data"][0]["data"];
    assert_eq!(event["object"]["items"]["data"][0]["quantity"], 3);
    assert_eq!(
        event["previous_attributes"]["items"]["data"][0]["quantity"],
        1
    );
}

#[tokio::test]
async fn create_prorations_waits_for_the_renewal_and_none_prorates_nothing() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    for (behavior, want) in [("create_prorations", 3), ("none", 1)] {
        let (sub, item) = seats(&api).await;
        let paid = last_paid_invoice(&api).await["id"].clone();
        let form =
            format!("items[0][id]={item}&items[0][quantity]=2&proration_behavior={behavior}");
        let (status, answer) = update(&api, &sub, &form).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            last_paid_invoice(&api).await["id"],
            paid,
            "{behavior}: nothing invoiced yet"
        );
        let renewed = api
            .control(
                &format!("/subscriptions/{sub}/renew"),
                json!({"deliver": false}),
            )
            .await;
        let paid_at = types(&renewed)
            .iter()
            .rposition(|t| t == "invoice.paid")
            .unwrap();
        let invoice = object_of(&renewed, paid_at);
        let got = lines(&invoice);
        assert_eq!(got.len(), want, "{behavior}: {got:?}");
        // The period line bills two seats.
        assert_eq!(
            (got[want - 1].0, got[want - 1].2),
            (2, false),
            "{behavior}: {got:?}"
        );
    }
}

#[tokio::test]
async fn updates_refuse_what_stripe_refuses() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let (sub, item) = seats(&api).await;
    let refused = |form: String, status: u16, param: Option<&'static str>| {
        let (api, sub) = (&api, &sub);
        async move {
            let (got, e) = update(api, sub, &form).await;
            assert_eq!(
                (got, e["error"]["param"].as_str()),
                (status, param),
                "{form}: {e}"
            );
        }
    };
    refused(
        "items[0][id]=si_nope&items[0][quantity]=2".into(),
        400,
        Some("items[0][id]"),
    )
    .await;
    refused(
        format!("items[0][id]={item}&items[0][quantity]=-1"),
        400,
        Some("items[0][quantity]"),
    )
    .await;
    refused(
        format!("items[0][id]={item}&items[0][quantity]=two"),
        400,
        Some("items[0][quantity]"),
    )
    .await;
    refused(
        format!("items[0][id]={item}&items[0][quantity]=2&proration_behavior=later"),
        400,
        Some("proration_behavior"),
    )
    .await;
    refused(
        format!("items[0][id]={item}&items[0][quantity]=2&prorate_seats=true"),
        400,
        Some("prorate_seats"),
    )
    .await;
    // Valid for Stripe, but not modelled: refused rather than ignored.
    refused(
        format!("items[0][id]={item}&items[0][quantity]=2&metadata[a]=b"),
        400,
        Some("metadata"),
    )
    .await;
    let (status, _) = update(
        &api,
        "sub_nope",
        &format!("items[0][id]={item}&items[0][quantity]=2"),
    )
    .await;
    assert_eq!(status, 404);
    let got = json_of(
        api.get(&format!("/v1/subscriptions/{sub}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got["items"]["data"][0]["quantity"], 1, "nothing changed");
    api.control(
        &format!("/subscriptions/{sub}/cancel"),
        json!({"deliver": false}),
    )
    .await;
    let (status, e) = update(
        &api,
        &sub,
        &format!("items[0][id]={item}&items[0][quantity]=2"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        e["error"]["message"],
        "A canceled subscription can only update its cancellation_details and metadata."
    );
}

#[tokio::test]
async fn a_replayed_key_changes_the_quantity_once() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let (sub, item) = seats(&api).await;
    let form =
        format!("items[0][id]={item}&items[0][quantity]=4&proration_behavior=always_invoice");
    let send = || {
        api.post(&format!("/v1/subscriptions/{sub}"), &form)
            .header("Idempotency-Key", "seats-1")
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = send().await.unwrap();
    assert_eq!(second.headers()["Idempotent-Replayed"], "true");
    let paid = json_of(
        api.get("/v1/events?type=invoice.paid")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let updates = paid["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["object"]["billing_reason"] == "subscription_update")
        .count();
    assert_eq!(updates, 1);
}
