//! Billing after checkout: renewals with Stripe's timing, 3-D Secure on renewal, dunning and a
//! late payment, incomplete subscriptions expiring, sessions created outside the worker, and
//! zero-total payments.

use serde_json::json;

use super::*;

#[tokio::test]
async fn renewals_draft_at_period_end_and_charge_an_hour_later() {
    for version in ["2025-03-31.basil", "2023-08-16"] {
        let running = emulator(&["--api-version", version]).await;
        let api = Api::new(&running);
        let sub = subscribed(&api).await;
        let renewed = api
            .control(
                &format!("/subscriptions/{sub}/renew"),
                json!({"deliver": false}),
            )
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
        let at = created(&renewed);
        assert_eq!(at, [at[0], at[0], at[0] + 3600, at[0] + 3600], "{version}");
        let updated = object_of(&renewed, 0);
        let payload: serde_json::Value =
            serde_json::from_str(renewed["events"][0]["payload"].as_str().unwrap()).unwrap();
        let previous = &payload["data"]["previous_attributes"];
        let draft = object_of(&renewed, 1);
        assert_eq!(
            (draft["status"].as_str(), draft["number"].as_str()),
            (Some("draft"), None)
        );
        assert!(draft["status_transitions"]["finalized_at"].is_null());
        let finalized = object_of(&renewed, 2);
        assert_eq!(finalized["status"], "open");
        assert!(finalized["number"].is_string());
        assert!(finalized["hosted_invoice_url"].is_string());
        let paid = object_of(&renewed, 3);
        assert_eq!(
            (paid["status"].as_str(), paid["billing_reason"].as_str()),
            (Some("paid"), Some("subscription_cycle"))
        );
        if version.ends_with("basil") {
            // Periods live on the items from basil on.
            assert!(previous.get("items").is_some(), "{previous}");
            assert_eq!(
                updated["items"]["data"][0]["current_period_start"].as_i64(),
                Some(at[0])
            );
            assert_eq!(
                paid["parent"]["subscription_details"]["subscription"],
                sub.as_str()
            );
        } else {
            assert!(previous.get("current_period_start").is_some(), "{previous}");
            assert_eq!(updated["current_period_start"].as_i64(), Some(at[0]));
            assert_eq!(paid["subscription"], sub.as_str());
            assert_eq!(paid["paid"], true);
        }
    }
}

#[tokio::test]
async fn a_renewal_needing_3d_secure_is_past_due_until_the_customer_acts() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    let renewed = api
        .control(
            &format!("/subscriptions/{sub}/require_action"),
            json!({"deliver": false}),
        )
        .await;
    assert_eq!(
        types(&renewed),
        [
            "customer.subscription.updated",
            "invoice.created",
            "invoice.finalized",
            "invoice.payment_action_required",
            "customer.subscription.updated"
        ]
    );
    let invoice = object_of(&renewed, 3);
    assert_eq!(invoice["status"], "open");
    assert!(invoice["hosted_invoice_url"]
        .as_str()
        .unwrap()
        .contains(invoice["id"].as_str().unwrap()));
    assert_eq!(renewed["object"]["status"], "past_due");
    let done = api
        .control(
            &format!("/subscriptions/{sub}/complete_action"),
            json!({"deliver": false}),
        )
        .await;
    assert_eq!(
        types(&done),
        ["invoice.paid", "customer.subscription.updated"]
    );
    assert_eq!(object_of(&done, 0)["id"], invoice["id"]);
    assert_eq!(done["object"]["status"], "active");
    let (status, _) = api
        .control_err(&format!("/subscriptions/{sub}/complete_action"), json!({}))
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn canceled_for_non_payment_then_paid_late_stays_canceled() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    let failed = api
        .control(
            &format!("/subscriptions/{sub}/fail_payment"),
            json!({"deliver": false}),
        )
        .await;
    let open = object_of(&failed, 3)["id"].as_str().unwrap().to_string();
    assert_eq!(failed["object"]["status"], "past_due");
    let canceled = api
        .control(
            &format!("/subscriptions/{sub}/cancel"),
            json!({"reason": "payment_failed", "deliver": false}),
        )
        .await;
    assert_eq!(types(&canceled), ["customer.subscription.deleted"]);
    let object = object_of(&canceled, 0);
    assert_eq!(object["status"], "canceled");
    assert_eq!(object["cancellation_details"]["reason"], "payment_failed");
    // The open invoice is not voided by the cancellation ...
    let (_, invoice) = status_and_json(api.get(&format!("/v1/invoices/{open}"))).await;
    assert_eq!(invoice["status"], "open");
    // ... and paying it later does not reactivate the subscription.
    let paid = api
        .control(&format!("/invoices/{open}/pay"), json!({"deliver": false}))
        .await;
    assert_eq!(types(&paid), ["invoice.paid"]);
    assert_eq!(paid["object"]["status"], "paid");
    let (_, after) = status_and_json(api.get(&format!("/v1/subscriptions/{sub}"))).await;
    assert_eq!(after["status"], "canceled");
    let (status, _) = api
        .control_err(&format!("/invoices/{open}/pay"), json!({}))
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn an_unpaid_first_invoice_expires_the_incomplete_subscription() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let (_, s) = status_and_json(api.post(
        "/v1/checkout/sessions",
        "mode=subscription&success_url=https://a/ok&line_items[0][price]=price_basic&line_items[0][quantity]=1",
    ))
    .await;
    let done = api
        .control(
            &format!("/checkout/{}/complete", s["id"].as_str().unwrap()),
            json!({"payment_status": "unpaid", "deliver": false}),
        )
        .await;
    let sub = done["object"]["subscription"].as_str().unwrap().to_string();
    assert_eq!(object_of(&done, 1)["status"], "incomplete");
    let expired = api
        .control(
            &format!("/subscriptions/{sub}/expire"),
            json!({"deliver": false}),
        )
        .await;
    assert_eq!(
        types(&expired),
        ["invoice.voided", "customer.subscription.updated"]
    );
    assert_eq!(object_of(&expired, 0)["status"], "void");
    assert_eq!(expired["object"]["status"], "incomplete_expired");
    let (status, _) = api
        .control_err(&format!("/subscriptions/{sub}/expire"), json!({}))
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn sessions_created_outside_the_worker() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let link = api
        .control(
            "/checkout/external",
            json!({"price": "price_pack", "quantity": 3, "deliver": false}),
        )
        .await;
    assert_eq!(types(&link), ["checkout.session.completed"]);
    let s = object_of(&link, 0);
    assert!(s["id"].as_str().unwrap().starts_with("cs_test_"));
    assert_eq!(s["metadata"], json!({}));
    assert!(s["client_reference_id"].is_null());
    assert!(s["customer"].is_null(), "a guest payer");
    assert_eq!(
        (s["amount_total"].as_i64(), s["payment_status"].as_str()),
        (Some(1500), Some("paid"))
    );
    let cus = api.customer().await;
    let known = api
        .control(
            "/checkout/external",
            json!({"price": "price_pack", "customer": cus, "client_reference_id": "ref-1",
                   "deliver": false}),
        )
        .await;
    let s = object_of(&known, 0);
    assert_eq!(s["customer"], cus.as_str());
    assert_eq!(s["client_reference_id"], "ref-1");
    let (_, items) = status_and_json(api.get(&format!(
        "/v1/checkout/sessions/{}/line_items",
        s["id"].as_str().unwrap()
    )))
    .await;
    assert_eq!(items["data"][0]["quantity"], 1);
    let (status, _) = api
        .control_err("/checkout/external", json!({"price": "price_basic"}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_fully_discounted_payment_needs_no_payment() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let done = checkout_and_complete(
        &api,
        "mode=payment&success_url=https://a/ok&line_items[0][price]=price_pack&line_items[0][quantity]=2\
         &discounts[0][coupon]=free",
    )
    .await;
    assert_eq!(types(&done), ["checkout.session.completed"]);
    let s = object_of(&done, 0);
    assert_eq!(
        (s["amount_total"].as_i64(), s["payment_status"].as_str()),
        (Some(0), Some("no_payment_required"))
    );
    assert!(s["payment_intent"].is_null());
    assert!(s["customer"].as_str().unwrap().starts_with("cus_"));
}

#[tokio::test]
async fn the_hosted_invoice_page_confirms_the_payment() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    let renewed = api
        .control(
            &format!("/subscriptions/{sub}/require_action"),
            json!({"deliver": false}),
        )
        .await;
    let url = object_of(&renewed, 3)["hosted_invoice_url"]
        .as_str()
        .unwrap()
        .to_string();
    let page = api.http.get(&url).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<button>Pay</button>"));
    let paid = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status().as_u16(), 303);
    let (_, s) = status_and_json(api.get(&format!("/v1/subscriptions/{sub}"))).await;
    assert_eq!(s["status"], "active");
}
