//! The API surface: round trip, auth, idempotency, faults, checkout rules.

use serde_json::json;

use super::*;

#[tokio::test]
async fn http_round_trip_customer_checkout_and_log() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let customer = api.customer().await;
    assert!(customer.starts_with("cus_"));
    let (status, c) = status_and_json(api.get(&format!("/v1/customers/{customer}"))).await;
    assert_eq!(
        (
            status,
            c["object"].as_str(),
            c["metadata"]["user_id"].as_str()
        ),
        (200, Some("customer"), Some("u1"))
    );

    let body = format!(
        "mode=subscription&customer={customer}&success_url=https%3A%2F%2Fapp%2Fok&cancel_url=https%3A%2F%2Fapp%2Fno\
         &line_items[0][price]=price_basic&line_items[0][quantity]=1&client_reference_id=u1\
         &subscription_data[metadata][user_id]=u1&tax_id_collection[enabled]=true&customer_update[name]=auto\
         &customer_update[address]=auto"
    );
    let (status, s) = status_and_json(api.post("/v1/checkout/sessions", &body)).await;
    assert_eq!(status, 200, "{s}");
    let id = s["id"].as_str().unwrap();
    assert!(id.starts_with("cs_test_"));
    assert_eq!(s["url"], format!("{}/pay/{id}", running.base_url));
    assert_eq!(
        (s["status"].as_str(), s["amount_total"].as_i64()),
        (Some("open"), Some(1000))
    );
    let (_, again) = status_and_json(api.get(&format!(
        "/v1/checkout/sessions/{id}?expand[]=customer&expand[]=line_items"
    )))
    .await;
    assert_eq!(again["customer"]["id"], customer);
    assert_eq!(again["line_items"]["data"][0]["price"]["id"], "price_basic");

    let (status, portal) = status_and_json(api.post(
        "/v1/billing_portal/sessions",
        &format!("customer={customer}&return_url=https://app/account"),
    ))
    .await;
    assert_eq!(status, 200);
    assert!(portal["id"].as_str().unwrap().starts_with("bps_"));
    assert!(portal["url"]
        .as_str()
        .unwrap()
        .starts_with(&running.base_url));

    let (status, e) = status_and_json(api.get("/v1/nothing")).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (404, Some("invalid_request_error"))
    );
    let (status, e) = status_and_json(api.get("/v1/subscriptions/sub_missing")).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );

    let log: Value = json_of(
        api.http
            .get(format!("{}/_emulator/requests", api.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let create = log
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/v1/checkout/sessions")
        .unwrap();
    assert_eq!(create["params"]["line_items"][0]["quantity"], 1);
    assert_eq!(create["status"], 200);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn authentication() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let url = format!("{}/v1/customers", api.base);
    let (status, e) = status_and_json(api.http.post(&url)).await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (401, Some("invalid_request_error"))
    );
    let (status, e) =
        status_and_json(api.http.post(&url).bearer_auth("sk_test_wrong_key_1234")).await;
    assert_eq!(status, 401);
    assert!(e["error"]["message"].as_str().unwrap().contains("1234"));
    let (status, _) = status_and_json(api.http.post(&url).basic_auth(KEY, Some(""))).await;
    assert_eq!(status, 200);
    // A basic-auth user is arbitrary UTF-8; masking it must not split a character.
    let (status, e) = status_and_json(api.http.post(&url).basic_auth("éé_é_é", Some(""))).await;
    assert_eq!(
        (status, e["error"]["message"].as_str()),
        (401, Some("Invalid API Key provided: éé_é_é"))
    );
    let (status, e) = status_and_json(
        api.post("/v1/customers", "")
            .header("Stripe-Version", "2099-01-01"),
    )
    .await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
}

#[tokio::test]
async fn idempotency_replays_and_rejects_changed_params() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let first = api
        .post("/v1/customers", "email=x%40y.z")
        .header("Idempotency-Key", "k1")
        .send()
        .await
        .unwrap();
    assert!(first.headers().get("Idempotent-Replayed").is_none());
    let first = json_of(first).await;
    let second = api
        .post("/v1/customers", "email=x%40y.z")
        .header("Idempotency-Key", "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(second.headers()["Idempotent-Replayed"], "true");
    assert_eq!(json_of(second).await, first);
    let (status, e) = status_and_json(
        api.post("/v1/customers", "email=other%40y.z")
            .header("Idempotency-Key", "k1"),
    )
    .await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (400, Some("idempotency_error"))
    );
    assert_eq!(
        e["error"]["message"],
        "Keys for idempotent requests can only be used with the same parameters they were \
         first used with. Try using a key other than 'k1' if you meant to execute a different \
         request."
    );
    // Validation errors are not stored: the key can still be used once the request is fixed.
    let (status, _) = status_and_json(
        api.post("/v1/customers", "emial=x")
            .header("Idempotency-Key", "k2"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = status_and_json(
        api.post("/v1/customers", "email=x%40y.z")
            .header("Idempotency-Key", "k2"),
    )
    .await;
    assert_eq!(status, 200);
    let state = json_of(
        api.http
            .get(format!("{}/_emulator/state", api.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(state["counts"]["customers"], 2);
    let log = json_of(
        api.http
            .get(format!("{}/_emulator/requests", api.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        log.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["replayed"] == true)
            .count(),
        1
    );
}

#[tokio::test]
async fn injected_failures_are_not_cached() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    api.control(
        "/faults",
        json!({"path": "/v1/customers", "status": 500, "count": 1, "should_retry": true}),
    )
    .await;
    api.control(
        "/faults",
        json!({"path": "/v1/*", "status": 429, "count": 1, "method": "GET"}),
    )
    .await;
    let r = api
        .post("/v1/customers", "email=a%40b.co")
        .header("Idempotency-Key", "same")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert_eq!(r.headers()["Stripe-Should-Retry"], "true");
    assert_eq!(json_of(r).await["error"]["type"], "api_error");
    let r = api
        .post("/v1/customers", "email=a%40b.co")
        .header("Idempotency-Key", "same")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("Idempotent-Replayed").is_none());
    let (status, e) = status_and_json(api.get("/v1/customers/cus_x")).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (429, Some("rate_limit"))
    );
    api.control("/faults", json!({"path": "/v1/customers", "delay_ms": 50}))
        .await;
    let started = std::time::Instant::now();
    let (status, _) = status_and_json(api.post("/v1/customers", "")).await;
    assert!(status == 200 && started.elapsed().as_millis() >= 50);
}

#[tokio::test]
async fn concurrent_duplicate_gets_409_and_the_key_stays_usable() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    api.control("/faults", json!({"path": "/v1/customers", "delay_ms": 300}))
        .await;
    let slow = api
        .post("/v1/customers", "email=a%40b.co")
        .header("Idempotency-Key", "dup")
        .send();
    let fast = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        api.post("/v1/customers", "email=a%40b.co")
            .header("Idempotency-Key", "dup")
            .send()
            .await
    };
    let (slow, fast) = tokio::join!(slow, fast);
    assert_eq!(slow.unwrap().status().as_u16(), 200);
    let fast = fast.unwrap();
    assert_eq!(fast.status().as_u16(), 409);
    let e = json_of(fast).await;
    assert_eq!(
        (e["error"]["type"].as_str(), e["error"]["code"].as_str()),
        (
            Some("invalid_request_error"),
            Some("idempotency_key_in_use")
        )
    );
    assert_eq!(
        e["error"]["message"],
        "There is currently another in-progress request using this Idempotent Key (that \
         probably means you submitted twice, and the other request is still going through): \
         dup. Please try again later."
    );
    let again = api
        .post("/v1/customers", "email=a%40b.co")
        .header("Idempotency-Key", "dup")
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["Idempotent-Replayed"], "true");
}

#[tokio::test]
async fn a_500_during_execution_is_stored_and_replayed_for_the_key() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    api.control(
        "/faults",
        json!({"path": "/v1/customers", "status": 500, "during_execution": true,
               "should_retry": false}),
    )
    .await;
    let first = api
        .post("/v1/customers", "email=a%40b.co")
        .header("Idempotency-Key", "k500")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 500);
    let first_body = json_of(first).await;
    let again = api
        .post("/v1/customers", "email=a%40b.co")
        .header("Idempotency-Key", "k500")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 500);
    assert_eq!(again.headers()["Idempotent-Replayed"], "true");
    assert_eq!(again.headers()["Stripe-Should-Retry"], "false");
    assert_eq!(json_of(again).await, first_body);
    // A new key executes normally; no customer was created by the failed request.
    let (status, _) = status_and_json(
        api.post("/v1/customers", "email=a%40b.co")
            .header("Idempotency-Key", "k-new"),
    )
    .await;
    assert_eq!(status, 200);
    let state = json_of(
        api.http
            .get(format!("{}/_emulator/state", api.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(state["counts"]["customers"], 1);
}

#[tokio::test]
async fn business_rule_errors_are_stored_for_the_key() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let body = "mode=payment&success_url=https://a/ok&line_items[0][price]=price_nope&line_items[0][quantity]=1";
    for replayed in [false, true] {
        let r = api
            .post("/v1/checkout/sessions", body)
            .header("Idempotency-Key", "rule")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        assert_eq!(r.headers().get("Idempotent-Replayed").is_some(), replayed);
    }
}

#[tokio::test]
async fn requests_are_validated_with_their_versions_schema() {
    let running = emulator(&["--api-version", "2023-08-16"]).await;
    let api = Api::new(&running);
    let embedded = "mode=payment&ui_mode=embedded&return_url=https://a/r&line_items[0][price]=price_pack&line_items[0][quantity]=1";
    // The account's version (2023-08-16) has no ui_mode.
    let (status, e) = status_and_json(api.post("/v1/checkout/sessions", embedded)).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("parameter_unknown"))
    );
    // A request made with basil is checked against basil.
    let (status, s) = status_and_json(
        api.post("/v1/checkout/sessions", embedded)
            .header("Stripe-Version", "2025-03-31.basil"),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    // Later releases are validated (and shaped) like basil.
    let (status, _) = status_and_json(
        api.post("/v1/checkout/sessions", embedded)
            .header("Stripe-Version", "2025-09-30.clover"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, e) = status_and_json(
        api.post("/v1/checkout/sessions", embedded)
            .header("Stripe-Version", "2024-06-20"),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("parameter_unknown"))
    );
}

#[tokio::test]
async fn request_level_rules() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    // The API takes form-encoded bodies.
    let (status, e) = status_and_json(
        api.http
            .post(format!("{}/v1/customers", api.base))
            .bearer_auth(KEY)
            .json(&json!({"email": "a@b.co"})),
    )
    .await;
    assert_eq!(
        (status, e["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    // Idempotency keys are at most 255 characters.
    let (status, _) = status_and_json(
        api.post("/v1/customers", "")
            .header("Idempotency-Key", "k".repeat(256)),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = status_and_json(
        api.post("/v1/customers", "")
            .header("Idempotency-Key", "k".repeat(255)),
    )
    .await;
    assert_eq!(status, 200);
    // A property that cannot be expanded.
    let customer = api.customer().await;
    let (status, e) =
        status_and_json(api.get(&format!("/v1/customers/{customer}?expand[]=metadata"))).await;
    assert_eq!(
        (status, e["error"]["message"].as_str()),
        (400, Some("This property cannot be expanded (metadata)."))
    );
    // price_data is not emulated.
    let (status, e) = status_and_json(api.post(
        "/v1/checkout/sessions",
        "mode=payment&success_url=https://a/ok&line_items[0][price_data][currency]=usd\
         &line_items[0][price_data][unit_amount]=100&line_items[0][price_data][product]=prod_1\
         &line_items[0][quantity]=1",
    ))
    .await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("line_items[0][price_data]"))
    );
    // A portal session needs a customer.
    let (status, e) =
        status_and_json(api.post("/v1/billing_portal/sessions", "return_url=https://a")).await;
    assert_eq!(
        (
            status,
            e["error"]["code"].as_str(),
            e["error"]["param"].as_str()
        ),
        (400, Some("parameter_missing"), Some("customer"))
    );
}
