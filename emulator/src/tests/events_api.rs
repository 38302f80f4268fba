//! The Events API (list semantics, filters, the 30-day window by the emulator's clock) and
//! deliveries dropped as if the endpoint were down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::*;

async fn get(api: &Api, path: &str) -> (u16, Value) {
    status_and_json(api.get(path)).await
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn kinds(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// A webhook receiver answering `status`; counts the requests.
async fn receiver(status: u16) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

/// Every event the control API recorded, oldest first.
async fn all_events(api: &Api) -> Vec<Value> {
    let r = api
        .http
        .get(format!("{}/_emulator/events", api.base))
        .send()
        .await
        .unwrap();
    json_of(r).await.as_array().unwrap().clone()
}

/// A paid payment-mode session, completed with delivery.
async fn buy_pack(api: &Api) -> Value {
    let (_, s) = status_and_json(api.post(
        "/v1/checkout/sessions",
        "mode=payment&success_url=https://a/ok&line_items[0][price]=price_pack&line_items[0][quantity]=1",
    ))
    .await;
    let id = s["id"].as_str().unwrap();
    api.control(&format!("/checkout/{id}/complete"), json!({}))
        .await
}

#[tokio::test]
async fn events_list_newest_first_with_cursors_and_filters() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    let t1 = api.control("/clock/advance", json!({"seconds": 100})).await["clock"]
        .as_i64()
        .unwrap();
    api.control(
        &format!("/subscriptions/{sub}/cancel"),
        json!({"at_period_end": true}),
    )
    .await;
    let t2 = api.control("/clock/advance", json!({"seconds": 100})).await["clock"]
        .as_i64()
        .unwrap();
    api.control(&format!("/subscriptions/{sub}/uncancel"), json!({}))
        .await;
    buy_pack(&api).await;
    let recorded: Vec<String> = all_events(&api)
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(recorded.len(), 6);
    let newest_first: Vec<String> = recorded.iter().rev().cloned().collect();

    let (status, page) = get(&api, "/v1/events").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["object"].as_str(), page["url"].as_str()),
        (Some("list"), Some("/v1/events"))
    );
    assert_eq!(ids(&page), newest_first);
    assert_eq!(page["has_more"], false);
    assert_eq!(page["data"][0]["object"], "event");

    let (_, first) = get(&api, "/v1/events?limit=3").await;
    assert_eq!(
        (ids(&first), first["has_more"].as_bool()),
        (newest_first[..3].to_vec(), Some(true))
    );
    let (_, next) = get(
        &api,
        &format!("/v1/events?limit=2&starting_after={}", newest_first[2]),
    )
    .await;
    assert_eq!(
        (ids(&next), next["has_more"].as_bool()),
        (newest_first[3..5].to_vec(), Some(true))
    );
    let (_, back) = get(
        &api,
        &format!("/v1/events?limit=2&ending_before={}", newest_first[3]),
    )
    .await;
    assert_eq!(
        (ids(&back), back["has_more"].as_bool()),
        (newest_first[1..3].to_vec(), Some(true))
    );

    let (_, subs) = get(&api, "/v1/events?type=customer.subscription.*").await;
    assert_eq!(
        kinds(&subs),
        [
            "customer.subscription.updated",
            "customer.subscription.updated",
            "customer.subscription.created"
        ]
    );
    let (_, two) = get(
        &api,
        "/v1/events?types[]=checkout.session.completed&types[]=invoice.paid",
    )
    .await;
    assert_eq!(
        kinds(&two),
        [
            "checkout.session.completed",
            "invoice.paid",
            "checkout.session.completed"
        ]
    );
    let (_, exact) = get(&api, "/v1/events?type=invoice.paid").await;
    assert_eq!(kinds(&exact), ["invoice.paid"]);

    let (_, recent) = get(&api, &format!("/v1/events?created[gte]={t2}")).await;
    assert_eq!(
        kinds(&recent),
        [
            "checkout.session.completed",
            "customer.subscription.updated"
        ]
    );
    let (_, at) = get(&api, &format!("/v1/events?created={t1}")).await;
    assert_eq!(kinds(&at), ["customer.subscription.updated"]);
    let (_, before) = get(&api, &format!("/v1/events?created[lt]={t1}")).await;
    assert_eq!(ids(&before).len(), 3);

    let (status, one) = get(&api, &format!("/v1/events/{}", recorded[0])).await;
    assert_eq!(
        (status, one["type"].as_str()),
        (200, Some("checkout.session.completed"))
    );
}

#[tokio::test]
async fn events_list_refuses_what_stripe_refuses() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    subscribed(&api).await;
    let id = all_events(&api).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, e) = get(
        &api,
        &format!("/v1/events?starting_after={id}&ending_before={id}"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        e["error"]["message"],
        "Received both starting_after and ending_before parameters. Please pass in only one."
    );
    let (status, e) = get(&api, "/v1/events?type=invoice.paid&types[]=invoice.paid").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("parameters_exclusive"))
    );
    let many: String = (0..21).map(|i| format!("&types[]=t{i}")).collect();
    let (status, e) = get(&api, &format!("/v1/events?limit=1{many}")).await;
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("types")));
    for bad in [
        "limit=0",
        "limit=101",
        "delivery_success=maybe",
        "created[after]=1",
        "colour=red",
    ] {
        let (status, _) = get(&api, &format!("/v1/events?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, e) = get(&api, "/v1/events?starting_after=evt_nope").await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("starting_after"))
    );
    let (status, e) = get(&api, "/v1/events/evt_nope").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
}

#[tokio::test]
async fn events_older_than_thirty_days_are_gone_from_the_api() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    subscribed(&api).await;
    let old = all_events(&api).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let moved = api.control("/clock/advance", json!({"days": 29})).await;
    assert!(moved["clock"].is_i64());
    let (status, _) = get(&api, &format!("/v1/events/{old}")).await;
    assert_eq!(status, 200, "29 days later the event is still there");
    api.control("/clock/advance", json!({"days": 1, "seconds": 1}))
        .await;
    let (status, e) = get(&api, &format!("/v1/events/{old}")).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
    let (_, list) = get(&api, "/v1/events").await;
    assert_eq!(list["data"], json!([]));
    // The control API still has it.
    assert_eq!(all_events(&api).await.len(), 3);
    let (status, _) = api.control_err("/clock/advance", json!({"days": -1})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn dropped_deliveries_fail_and_list_as_not_delivered() {
    let (url, hits) = receiver(200).await;
    let running = emulator(&["--webhook-url", &url]).await;
    let api = Api::new(&running);
    let dropped = api
        .control(
            "/webhook/drop",
            json!({"types": ["customer.subscription.*"]}),
        )
        .await;
    assert_eq!(dropped["drop"]["types"], json!(["customer.subscription.*"]));
    // Completed with "deliver": false: three events that were never sent.
    let sub = subscribed(&api).await;
    let canceled = api
        .control(
            &format!("/subscriptions/{sub}/cancel"),
            json!({"at_period_end": true}),
        )
        .await;
    let delivery = &canceled["events"][0]["delivery"];
    assert_eq!(
        (delivery["dropped"].as_bool(), delivery["status"].as_u64()),
        (Some(true), None)
    );
    let bought = buy_pack(&api).await;
    assert_eq!(bought["events"][0]["delivery"]["status"], 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let (_, failed) = get(&api, "/v1/events?delivery_success=false").await;
    assert_eq!(
        kinds(&failed),
        [
            "customer.subscription.updated",
            "invoice.paid",
            "customer.subscription.created",
            "checkout.session.completed"
        ]
    );
    assert!(failed["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["pending_webhooks"] == 1));
    let (_, delivered) = get(&api, "/v1/events?delivery_success=true").await;
    assert_eq!(kinds(&delivered), ["checkout.session.completed"]);
    assert_eq!(delivered["data"][0]["pending_webhooks"], 0);

    // The endpoint is back: a redelivery succeeds.
    let r = api
        .http
        .delete(format!("{}/_emulator/webhook/drop", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let id = failed["data"][0]["id"].as_str().unwrap();
    let again = api
        .control(&format!("/events/{id}/deliver"), json!({}))
        .await;
    assert_eq!(again["events"][0]["delivery"]["status"], 200);
    let (_, failed) = get(&api, "/v1/events?delivery_success=false").await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn an_endpoint_answering_errors_fails_deliveries_and_a_seeded_fraction_is_reproducible() {
    let (url, _) = receiver(500).await;
    let running = emulator(&["--webhook-url", &url]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    let canceled = api
        .control(
            &format!("/subscriptions/{sub}/cancel"),
            json!({"at_period_end": true}),
        )
        .await;
    assert_eq!(canceled["events"][0]["delivery"]["status"], 500);
    let (_, failed) = get(
        &api,
        "/v1/events?delivery_success=false&type=customer.subscription.updated",
    )
    .await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);

    let mut runs = Vec::new();
    for _ in 0..2 {
        api.control("/webhook/drop", json!({"fraction": 0.5, "seed": 42}))
            .await;
        let mut dropped = Vec::new();
        for action in ["uncancel", "cancel"].repeat(6) {
            let r = api
                .control(
                    &format!("/subscriptions/{sub}/{action}"),
                    json!({"at_period_end": true}),
                )
                .await;
            dropped.push(r["events"][0]["delivery"]["dropped"].as_bool().unwrap());
        }
        runs.push(dropped);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].contains(&true) && runs[0].contains(&false),
        "{:?}",
        runs[0]
    );
    for bad in [
        json!({}),
        json!({"fraction": 1.5}),
        json!({"all": true, "types": ["x"]}),
    ] {
        let (status, _) = api.control_err("/webhook/drop", bad).await;
        assert_eq!(status, 400);
    }
}
