//! Endpoints beyond creation: deleting customers, a session's line items, the portal's
//! configurations, and the answers when the account has none.

use serde_json::{json, Value};

use super::*;

async fn events(api: &Api) -> Vec<Value> {
    json_of(
        api.http
            .get(format!("{}/_emulator/events", api.base))
            .send()
            .await
            .unwrap(),
    )
    .await
    .as_array()
    .unwrap()
    .clone()
}

#[tokio::test]
async fn deleting_a_customer_cancels_its_subscriptions_and_leaves_a_stub() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let cus = api.customer().await;
    let done = checkout_and_complete(
        &api,
        &format!("mode=subscription&customer={cus}&success_url=https://a/ok&line_items[0][price]=price_basic&line_items[0][quantity]=1"),
    )
    .await;
    let sub = done["object"]["subscription"].as_str().unwrap().to_string();
    let before = events(&api).await.len();

    let r = api
        .http
        .delete(format!("{}/v1/customers/{cus}", api.base))
        .bearer_auth("sk_test_emulator")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        json_of(r).await,
        json!({"id": cus, "object": "customer", "deleted": true})
    );
    let (status, stub) = status_and_json(api.get(&format!("/v1/customers/{cus}"))).await;
    assert_eq!(
        (status, stub),
        (
            200,
            json!({"id": cus, "object": "customer", "deleted": true})
        )
    );
    let new: Vec<Value> = events(&api).await.split_off(before);
    let kinds: Vec<&str> = new.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["customer.subscription.deleted", "customer.deleted"]);
    let deleted: Value = serde_json::from_str(new[1]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(deleted["data"]["object"]["id"], cus.as_str());
    let (_, s) = status_and_json(api.get(&format!("/v1/subscriptions/{sub}"))).await;
    assert_eq!(s["status"], "canceled");

    // A deleted customer is "No such customer" for checkout and the portal.
    let body = format!("mode=payment&customer={cus}&success_url=https://a/ok&line_items[0][price]=price_pack&line_items[0][quantity]=1");
    for (path, body) in [
        ("/v1/checkout/sessions", body),
        ("/v1/billing_portal/sessions", format!("customer={cus}")),
    ] {
        let (status, e) = status_and_json(api.post(path, &body)).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(e["error"]["code"], "resource_missing");
        assert_eq!(e["error"]["param"], "customer");
        assert_eq!(e["error"]["message"], format!("No such customer: '{cus}'"));
    }
    // Deleting again, or an unknown id: 404.
    let r = api
        .http
        .delete(format!("{}/v1/customers/{cus}", api.base))
        .bearer_auth("sk_test_emulator")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn line_items_list_with_prices_discounts_and_pages() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let body = "mode=payment&success_url=https://a/ok&line_items[0][price]=price_pack&line_items[0][quantity]=2\
                &line_items[1][price]=price_pack&line_items[1][quantity]=1&discounts[0][coupon]=half";
    let (_, s) = status_and_json(api.post("/v1/checkout/sessions", body)).await;
    let id = s["id"].as_str().unwrap();
    let (status, list) =
        status_and_json(api.get(&format!("/v1/checkout/sessions/{id}/line_items"))).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    assert_eq!(list["has_more"], false);
    assert_eq!(
        list["url"],
        format!("/v1/checkout/sessions/{id}/line_items")
    );
    let items = list["data"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let first = &items[0];
    assert_eq!(first["object"], "item");
    assert!(first["id"].as_str().unwrap().starts_with("li_"));
    assert_eq!(first["price"]["object"], "price");
    assert_eq!(first["price"]["id"], "price_pack");
    assert_eq!(
        (
            first["quantity"].as_i64(),
            first["amount_subtotal"].as_i64()
        ),
        (Some(2), Some(1000))
    );
    let discounts: i64 = items
        .iter()
        .map(|i| i["amount_discount"].as_i64().unwrap())
        .sum();
    let totals: i64 = items
        .iter()
        .map(|i| i["amount_total"].as_i64().unwrap())
        .sum();
    assert_eq!((discounts, totals), (750, 750));
    assert_eq!(first["amount_tax"], 0);
    assert_eq!(first["currency"], "usd");
    assert!(first["description"].is_string());

    let (_, page) =
        status_and_json(api.get(&format!("/v1/checkout/sessions/{id}/line_items?limit=1"))).await;
    assert_eq!(
        (
            page["data"].as_array().unwrap().len(),
            page["has_more"].as_bool()
        ),
        (1, Some(true))
    );
    let after = page["data"][0]["id"].as_str().unwrap();
    let (_, next) = status_and_json(api.get(&format!(
        "/v1/checkout/sessions/{id}/line_items?limit=1&starting_after={after}"
    )))
    .await;
    assert_eq!(next["data"][0]["id"], items[1]["id"]);
    assert_eq!(next["has_more"], false);
    let (status, e) =
        status_and_json(api.get(&format!("/v1/checkout/sessions/{id}/line_items?limit=101"))).await;
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("limit")));
    // Backwards from the second item: the first, nothing newer.
    let second = items[1]["id"].as_str().unwrap();
    let (_, back) = status_and_json(api.get(&format!(
        "/v1/checkout/sessions/{id}/line_items?limit=1&ending_before={second}"
    )))
    .await;
    assert_eq!(
        (back["data"].clone(), back["has_more"].as_bool()),
        (json!([items[0].clone()]), Some(false))
    );
    // The cursors follow Stripe's pagination like every other list: an unknown one is a 400
    // naming it, and both at once are refused.
    for cursor in ["starting_after", "ending_before"] {
        let (status, e) = status_and_json(api.get(&format!(
            "/v1/checkout/sessions/{id}/line_items?{cursor}=li_missing"
        )))
        .await;
        assert_eq!(
            (
                status,
                e["error"]["code"].as_str(),
                e["error"]["param"].as_str(),
                e["error"]["message"].as_str()
            ),
            (
                400,
                Some("resource_missing"),
                Some(cursor),
                Some("No such item: 'li_missing'")
            ),
            "{cursor}"
        );
    }
    let (status, e) = status_and_json(api.get(&format!(
        "/v1/checkout/sessions/{id}/line_items?starting_after={after}&ending_before={second}"
    )))
    .await;
    assert_eq!(
        (status, e["error"]["message"].as_str()),
        (400, Some(crate::lists::BOTH_CURSORS))
    );
    let (status, e) =
        status_and_json(api.get("/v1/checkout/sessions/cs_test_missing/line_items")).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );

    // The completed event does not carry line_items (an includable property).
    let done = api
        .control(
            &format!("/checkout/{id}/complete"),
            json!({"deliver": false}),
        )
        .await;
    assert_eq!(types(&done), ["checkout.session.completed"]);
    assert!(object_of(&done, 0).get("line_items").is_none());
    // Expanding includes them.
    let (_, expanded) =
        status_and_json(api.get(&format!("/v1/checkout/sessions/{id}?expand[]=line_items"))).await;
    assert_eq!(expanded["line_items"]["data"].as_array().unwrap().len(), 2);
    let (status, e) =
        status_and_json(api.get(&format!("/v1/checkout/sessions/{id}?expand[]=a.b.c.d.e"))).await;
    assert_eq!(
        (status, e["error"]["message"].as_str()),
        (
            400,
            Some("You cannot expand more than 4 levels of a property.")
        )
    );
}

#[tokio::test]
async fn portal_configurations_and_an_account_without_one() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let cus = api.customer().await;
    let (status, list) = status_and_json(api.get("/v1/billing_portal/configurations")).await;
    assert_eq!(status, 200);
    let config = &list["data"][0];
    assert_eq!(config["object"], "billing_portal.configuration");
    assert_eq!(
        (config["is_default"].as_bool(), config["active"].as_bool()),
        (Some(true), Some(true))
    );
    let config_id = config["id"].as_str().unwrap().to_string();
    assert!(config_id.starts_with("bpc_"));
    let (status, portal) =
        status_and_json(api.post("/v1/billing_portal/sessions", &format!("customer={cus}"))).await;
    assert_eq!(
        (status, portal["configuration"].as_str()),
        (200, Some(config_id.as_str()))
    );
    let (_, none) =
        status_and_json(api.get("/v1/billing_portal/configurations?is_default=false")).await;
    assert_eq!(none["data"], json!([]));
    // Cursors and `expand[]`, which the list's schema accepts, are honoured.
    let (status, after) = status_and_json(api.get(&format!(
        "/v1/billing_portal/configurations?starting_after={config_id}"
    )))
    .await;
    assert_eq!(
        (status, after["data"].clone(), after["has_more"].as_bool()),
        (200, json!([]), Some(false))
    );
    let (status, e) =
        status_and_json(api.get("/v1/billing_portal/configurations?ending_before=bpc_missing"))
            .await;
    assert_eq!(
        (
            status,
            e["error"]["code"].as_str(),
            e["error"]["param"].as_str()
        ),
        (400, Some("resource_missing"), Some("ending_before"))
    );
    let (status, e) =
        status_and_json(api.get("/v1/billing_portal/configurations?expand[]=data.features")).await;
    assert_eq!(
        (status, e["error"]["message"].as_str()),
        (
            400,
            Some("This property cannot be expanded (data.features).")
        )
    );

    api.control("/portal_configuration", json!({"exists": false}))
        .await;
    let (status, list) = status_and_json(api.get("/v1/billing_portal/configurations")).await;
    assert_eq!((status, list["data"].clone()), (200, json!([])));
    let (status, e) =
        status_and_json(api.post("/v1/billing_portal/sessions", &format!("customer={cus}"))).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(
        e["error"]["message"],
        "You can't create a portal session in test mode until you save your customer portal \
         settings in test mode at https://dashboard.stripe.com/test/settings/billing/portal."
    );
    api.control("/portal_configuration", json!({"exists": true}))
        .await;
    let (status, _) =
        status_and_json(api.post("/v1/billing_portal/sessions", &format!("customer={cus}"))).await;
    assert_eq!(status, 200);
}
