//! What a set-up checker and a backfill read: customers, subscriptions, prices and webhook
//! endpoints; objects made outside the worker; expiring a Checkout Session; and the schema
//! check of every new operation in both API versions.

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

async fn new_customer(api: &Api, email: &str) -> String {
    let (status, c) = status_and_json(api.post("/v1/customers", &format!("email={email}"))).await;
    assert_eq!(status, 200, "{c}");
    c["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn customers_list_newest_first_by_email_without_deleted_ones() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let a = new_customer(&api, "a%40example.com").await;
    let b = new_customer(&api, "b%40example.com").await;
    let c = new_customer(&api, "a%40example.com").await;
    let gone = new_customer(&api, "gone%40example.com").await;
    let r = api
        .http
        .delete(format!("{}/v1/customers/{gone}", api.base))
        .bearer_auth("sk_test_emulator")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, list) = get(&api, "/v1/customers").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        (list["url"].as_str(), ids(&list)),
        (Some("/v1/customers"), vec![c.clone(), b.clone(), a.clone()])
    );
    let (_, same) = get(&api, "/v1/customers?email=a%40example.com").await;
    assert_eq!(ids(&same), [c.clone(), a.clone()]);
    let (_, none) = get(&api, "/v1/customers?email=A%40example.com").await;
    assert_eq!(
        ids(&none),
        Vec::<String>::new(),
        "the email filter is case-sensitive"
    );
    let (_, page) = get(&api, &format!("/v1/customers?limit=1&starting_after={c}")).await;
    assert_eq!(
        (ids(&page), page["has_more"].as_bool()),
        (vec![b.clone()], Some(true))
    );
    let (status, e) = get(&api, "/v1/customers?limit=101").await;
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("limit")));
}

#[tokio::test]
async fn subscriptions_list_leaves_out_canceled_ones_unless_asked() {
    let running = emulator(&["--price", "price_other:recurring:2000"]).await;
    let api = Api::new(&running);
    let active = subscribed(&api).await;
    let canceled = subscribed(&api).await;
    api.control(
        &format!("/subscriptions/{canceled}/cancel"),
        json!({"deliver": false}),
    )
    .await;
    let done = checkout_and_complete(
        &api,
        "mode=subscription&success_url=https://a/ok&line_items[0][price]=price_other&line_items[0][quantity]=1",
    )
    .await;
    let other = done["object"]["subscription"].as_str().unwrap().to_string();
    let customer = done["object"]["customer"].as_str().unwrap().to_string();

    let (status, list) = get(&api, "/v1/subscriptions").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), [other.clone(), active.clone()]);
    let (_, all) = get(&api, "/v1/subscriptions?status=all").await;
    assert_eq!(ids(&all), [other.clone(), canceled.clone(), active.clone()]);
    for status in ["canceled", "ended"] {
        let (_, list) = get(&api, &format!("/v1/subscriptions?status={status}")).await;
        assert_eq!(ids(&list), vec![canceled.clone()], "{status}");
    }
    let (_, by_price) = get(&api, "/v1/subscriptions?price=price_basic&status=all").await;
    assert_eq!(ids(&by_price), [canceled.clone(), active.clone()]);
    let (_, mine) = get(&api, &format!("/v1/subscriptions?customer={customer}")).await;
    assert_eq!(ids(&mine), vec![other.clone()]);
    let (_, expanded) = get(&api, "/v1/subscriptions?expand[]=data.customer&limit=1").await;
    assert_eq!(expanded["data"][0]["customer"]["id"], customer.as_str());
    let (status, e) = get(&api, "/v1/subscriptions?status=sleeping").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("parameter_invalid_string"))
    );
}

#[tokio::test]
async fn prices_can_be_read_and_archived() {
    let running = emulator(&["--inactive-price", "price_pack"]).await;
    let api = Api::new(&running);
    let (status, basic) = get(&api, "/v1/prices/price_basic").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            basic["type"].as_str(),
            basic["recurring"]["interval"].as_str(),
            basic["active"].as_bool()
        ),
        (Some("recurring"), Some("month"), Some(true))
    );
    let (_, year) = get(&api, "/v1/prices/price_year").await;
    assert_eq!(year["recurring"]["interval"], "year");
    let (_, pack) = get(&api, "/v1/prices/price_pack").await;
    assert_eq!(
        (
            pack["type"].as_str(),
            pack["recurring"].is_null(),
            pack["active"].as_bool()
        ),
        (Some("one_time"), true, Some(false))
    );
    let body = "mode=payment&success_url=https://a/ok&line_items[0][price]=price_pack&line_items[0][quantity]=1";
    let (status, e) = status_and_json(api.post("/v1/checkout/sessions", body)).await;
    assert_eq!(status, 400);
    assert_eq!(
        e["error"]["message"],
        "The price specified is inactive. This field only accepts active prices."
    );
    api.control("/prices/price_pack", json!({"active": true}))
        .await;
    let (status, _) = status_and_json(api.post("/v1/checkout/sessions", body)).await;
    assert_eq!(status, 200);
    api.control("/prices/price_basic", json!({"active": false}))
        .await;
    assert_eq!(get(&api, "/v1/prices/price_basic").await.1["active"], false);
    let (status, e) = get(&api, "/v1/prices/price_nope").await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
    assert_eq!(e["error"]["message"], "No such price: 'price_nope'");
    let (status, _) = api
        .control_err("/prices/price_nope", json!({"active": false}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unknown_inactive_prices_stop_the_start() {
    let config = <crate::Config as clap::Parser>::parse_from([
        "stripe-emulator",
        "--inactive-price",
        "price_x",
    ]);
    assert!(crate::start(config).await.is_err());
}

#[tokio::test]
async fn webhook_endpoints_list_the_emulator_url_and_registered_ones() {
    let running = emulator(&["--webhook-url", "http://127.0.0.1:9/hook"]).await;
    let api = Api::new(&running);
    let (status, list) = get(&api, "/v1/webhook_endpoints").await;
    assert_eq!(status, 200, "{list}");
    let own = &list["data"][0];
    assert_eq!(
        (
            own["object"].as_str(),
            own["url"].as_str(),
            own["status"].as_str()
        ),
        (
            Some("webhook_endpoint"),
            Some("http://127.0.0.1:9/hook"),
            Some("enabled")
        )
    );
    assert_eq!(own["enabled_events"], json!(["*"]));
    assert_eq!(own["api_version"], "2025-03-31.basil");
    let added = api
        .control(
            "/webhook_endpoints",
            json!({"url": "https://app.example/stripe", "enabled_events": ["invoice.paid"]}),
        )
        .await;
    let (_, list) = get(&api, "/v1/webhook_endpoints").await;
    assert_eq!(ids(&list)[0], added["id"].as_str().unwrap());
    assert_eq!(list["data"][0]["enabled_events"], json!(["invoice.paid"]));
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    api.control("/webhook", json!({"url": null})).await;
    let (_, list) = get(&api, "/v1/webhook_endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, _) = api
        .control_err("/webhook_endpoints", json!({"url": "x"}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn customers_and_subscriptions_made_in_the_dashboard() {
    for version in ["2023-08-16", "2025-03-31.basil"] {
        let running = emulator(&["--api-version", version]).await;
        let api = Api::new(&running);
        let tagged = api
            .control(
                "/customers",
                json!({"email": "t@example.com", "metadata": {"user_id": "u7"}, "deliver": false}),
            )
            .await;
        assert_eq!(types(&tagged), ["customer.created"]);
        assert_eq!(object_of(&tagged, 0)["metadata"], json!({"user_id": "u7"}));
        let bare = api.control("/customers", json!({"deliver": false})).await;
        let cus = bare["object"]["id"].as_str().unwrap().to_string();
        assert_eq!(object_of(&bare, 0)["metadata"], json!({}));

        let sub = api
            .control(
                "/subscriptions",
                json!({"customer": cus, "price": "price_basic", "deliver": false}),
            )
            .await;
        assert_eq!(
            types(&sub),
            ["customer.subscription.created", "invoice.paid"]
        );
        let created = object_of(&sub, 0);
        assert_eq!(
            (
                created["status"].as_str(),
                created["metadata"].clone(),
                created["customer"].as_str()
            ),
            (Some("active"), json!({}), Some(cus.as_str()))
        );
        let tagged_sub = api
            .control(
                "/subscriptions",
                json!({"customer": cus, "price": "price_year", "quantity": 2,
                       "metadata": {"user_id": "u7"}, "paid": false, "deliver": false}),
            )
            .await;
        assert_eq!(types(&tagged_sub), ["customer.subscription.created"]);
        let created = object_of(&tagged_sub, 0);
        assert_eq!(created["status"], "incomplete");
        assert_eq!(created["metadata"]["user_id"], "u7");
        assert_eq!(created["items"]["data"][0]["quantity"], 2);
        let (_, list) = get(&api, &format!("/v1/subscriptions?customer={cus}")).await;
        assert_eq!(list["data"].as_array().unwrap().len(), 2);
        for (bad, code) in [
            (json!({"customer": "cus_nope", "price": "price_basic"}), 404),
            (json!({"customer": cus, "price": "price_pack"}), 400),
            (json!({"customer": cus}), 400),
            (
                json!({"customer": cus, "price": "price_basic", "metadata": {"n": 1}}),
                400,
            ),
        ] {
            let (status, e) = api.control_err("/subscriptions", bad.clone()).await;
            assert_eq!(status, code, "{bad}: {e}");
        }
    }
}

async fn open_session(api: &Api, version: &str) -> String {
    let (status, s) = status_and_json(
        api.post(
            "/v1/checkout/sessions",
            "mode=payment&success_url=https://a/ok&line_items[0][price]=price_pack&line_items[0][quantity]=1",
        )
        .header("Stripe-Version", version),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    s["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn open_checkout_sessions_expire_and_others_answer_stripes_400() {
    for version in ["2023-08-16", "2025-03-31.basil"] {
        let running = emulator(&["--api-version", version]).await;
        let api = Api::new(&running);
        let id = open_session(&api, version).await;
        let (status, s) =
            status_and_json(api.post(&format!("/v1/checkout/sessions/{id}/expire"), "")).await;
        assert_eq!(status, 200, "{s}");
        assert_eq!(
            (s["status"].as_str(), s["url"].is_null()),
            (Some("expired"), true)
        );
        let events = json_of(
            api.http
                .get(format!("{}/_emulator/events", api.base))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let last = events.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["type"], "checkout.session.expired");
        let payload: Value = serde_json::from_str(last["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["data"]["object"]["status"], "expired");
        assert_eq!(payload["api_version"], version);

        let (status, e) =
            status_and_json(api.post(&format!("/v1/checkout/sessions/{id}/expire"), "")).await;
        assert_eq!(status, 400);
        assert_eq!(
            e["error"]["message"],
            "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of `expired`."
        );
        let (status, _) = api
            .control_err(&format!("/checkout/{id}/complete"), json!({}))
            .await;
        assert_eq!(status, 409, "an expired session cannot be completed");

        let paid = open_session(&api, version).await;
        api.control(
            &format!("/checkout/{paid}/complete"),
            json!({"deliver": false}),
        )
        .await;
        let (_, e) =
            status_and_json(api.post(&format!("/v1/checkout/sessions/{paid}/expire"), "")).await;
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("has a status of `complete`."));
        let (status, e) =
            status_and_json(api.post("/v1/checkout/sessions/cs_nope/expire", "")).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (404, Some("resource_missing"))
        );
    }
}

#[tokio::test]
async fn every_new_operation_is_validated_against_its_versions_schema() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    subscribed(&api).await;
    let id = open_session(&api, "2025-03-31.basil").await;
    for version in ["2023-08-16", "2025-03-31.basil"] {
        for path in [
            "/v1/customers",
            "/v1/subscriptions",
            "/v1/prices/price_basic",
            "/v1/events",
            "/v1/webhook_endpoints",
            "/v1/charges/ch_x",
            "/v1/payment_intents/pi_x",
            "/v1/events/evt_x",
        ] {
            let (status, e) = status_and_json(
                api.get(&format!("{path}?colour=red"))
                    .header("Stripe-Version", version),
            )
            .await;
            assert_eq!(
                (
                    status,
                    e["error"]["code"].as_str(),
                    e["error"]["param"].as_str()
                ),
                (400, Some("parameter_unknown"), Some("colour")),
                "{version} {path}"
            );
        }
        let (status, e) = status_and_json(
            api.post(&format!("/v1/checkout/sessions/{id}/expire"), "colour=red")
                .header("Stripe-Version", version),
        )
        .await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("parameter_unknown"))
        );
        let (status, list) = status_and_json(
            api.get("/v1/events?delivery_success=false&limit=2")
                .header("Stripe-Version", version),
        )
        .await;
        assert_eq!(status, 200, "{list}");
    }
}
