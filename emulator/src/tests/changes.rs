//! Subscription changes: plan changes and their prorations, added items, trials, pauses.

use serde_json::json;

use super::*;

async fn change(api: &Api, sub: &str, body: serde_json::Value) -> serde_json::Value {
    api.control(&format!("/subscriptions/{sub}/change_price"), body)
        .await
}

#[tokio::test]
async fn create_prorations_bills_the_change_on_the_next_cycle_invoice() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    let changed = change(&api, &sub, json!({"price": "price_pro", "deliver": false})).await;
    assert_eq!(types(&changed), ["customer.subscription.updated"]);
    assert_eq!(
        changed["object"]["items"]["data"][0]["price"]["id"],
        "price_pro"
    );
    let renewed = api
        .control(
            &format!("/subscriptions/{sub}/renew"),
            json!({"deliver": false}),
        )
        .await;
    let invoice = object_of(&renewed, 3);
    assert_eq!(invoice["billing_reason"], "subscription_cycle");
    let lines = invoice["lines"]["data"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    let proration = |l: &serde_json::Value| {
        l["parent"]["subscription_item_details"]["proration"]
            .as_bool()
            .unwrap()
    };
    assert!(proration(&lines[0]) && lines[0]["amount"].as_i64().unwrap() < 0);
    assert!(proration(&lines[1]) && lines[1]["amount"].as_i64().unwrap() > 0);
    assert!(!proration(&lines[2]));
    assert_eq!(lines[2]["amount"], 3000);
    assert_eq!(lines[2]["pricing"]["price_details"]["price"], "price_pro");
    // Basil: proration lines carry no unit amount (recorded Stripe responses), the period
    // line its price's.
    assert_eq!(lines[0]["pricing"]["unit_amount_decimal"], json!(null));
    assert_eq!(lines[1]["pricing"]["unit_amount_decimal"], json!(null));
    assert_eq!(lines[2]["pricing"]["unit_amount_decimal"], "3000");
}

#[tokio::test]
async fn archiving_a_price_sends_price_updated() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let archived = api
        .control(
            "/prices/price_pro",
            json!({"active": false, "deliver": false}),
        )
        .await;
    assert_eq!(types(&archived), ["price.updated"]);
    let price = object_of(&archived, 0);
    assert_eq!(
        (price["id"].clone(), price["active"].clone()),
        (json!("price_pro"), json!(false))
    );
    assert_eq!(price["unit_amount_decimal"], "3000");
}

#[tokio::test]
async fn always_invoice_bills_the_change_now_and_none_not_at_all() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    let changed = change(
        &api,
        &sub,
        json!({"price": "price_pro", "proration_behavior": "always_invoice", "deliver": false}),
    )
    .await;
    assert_eq!(
        types(&changed),
        ["customer.subscription.updated", "invoice.paid"]
    );
    let invoice = object_of(&changed, 1);
    assert_eq!(invoice["billing_reason"], "subscription_update");
    let lines = invoice["lines"]["data"].as_array().unwrap();
    assert!(lines[0]["amount"].as_i64().unwrap() < 0 && lines[1]["amount"].as_i64().unwrap() > 0);
    assert!(lines[0]["description"]
        .as_str()
        .unwrap()
        .starts_with("Unused time on price_basic"));
    let back = change(
        &api,
        &sub,
        json!({"price": "price_basic", "proration_behavior": "none", "deliver": false}),
    )
    .await;
    assert_eq!(types(&back), ["customer.subscription.updated"]);
    let renewed = api
        .control(
            &format!("/subscriptions/{sub}/renew"),
            json!({"deliver": false}),
        )
        .await;
    assert_eq!(
        object_of(&renewed, 3)["lines"]["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, e) = api
        .control_err(
            &format!("/subscriptions/{sub}/change_price"),
            json!({"price": "price_pro", "proration_behavior": "sometimes"}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
}

#[tokio::test]
async fn an_interval_change_restarts_the_cycle_and_bills_the_year_now() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    let changed = change(&api, &sub, json!({"price": "price_year", "deliver": false})).await;
    assert_eq!(
        types(&changed),
        ["customer.subscription.updated", "invoice.paid"]
    );
    let after = &changed["object"];
    let item = &after["items"]["data"][0];
    let (start, end) = (
        item["current_period_start"].as_i64().unwrap(),
        item["current_period_end"].as_i64().unwrap(),
    );
    assert_eq!(after["billing_cycle_anchor"].as_i64(), Some(start));
    assert!((365 * 86_400..=366 * 86_400).contains(&(end - start)));
    assert_eq!(item["price"]["recurring"]["interval"], "year");
    let invoice = object_of(&changed, 1);
    assert_eq!(invoice["billing_reason"], "subscription_update");
    let amounts: Vec<i64> = invoice["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts.len(), 2);
    assert!(amounts[0] < 0 && amounts[1] == 10_000);
}

#[tokio::test]
async fn an_added_item_is_prorated_and_then_billed_on_its_own_line() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    let added = api
        .control(
            &format!("/subscriptions/{sub}/add_item"),
            json!({"price": "price_addon", "unit_amount": 300, "quantity": 2, "deliver": false}),
        )
        .await;
    assert_eq!(types(&added), ["customer.subscription.updated"]);
    let items = added["object"]["items"]["data"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["price"]["id"], "price_addon");
    assert_eq!(items[1]["quantity"], 2);
    let renewed = api
        .control(
            &format!("/subscriptions/{sub}/renew"),
            json!({"deliver": false}),
        )
        .await;
    let lines = object_of(&renewed, 3)["lines"]["data"].clone();
    let lines = lines.as_array().unwrap();
    assert_eq!(lines.len(), 3, "one proration line, then one line per item");
    assert_eq!(lines[1]["amount"], 1000);
    assert_eq!(lines[2]["amount"], 600);
    let (status, _) = api
        .control_err(
            &format!("/subscriptions/{sub}/add_item"),
            json!({"price": "price_unknown"}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn trials_start_free_and_end_naturally_or_early() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let body = "mode=subscription&success_url=https://a/ok&line_items[0][price]=price_basic&line_items[0][quantity]=1\
                &subscription_data[trial_period_days]=14";
    let done = checkout_and_complete(&api, body).await;
    assert_eq!(
        types(&done),
        [
            "checkout.session.completed",
            "customer.subscription.created",
            "invoice.paid"
        ]
    );
    assert_eq!(object_of(&done, 0)["payment_status"], "no_payment_required");
    let sub = object_of(&done, 1);
    assert_eq!(sub["status"], "trialing");
    let (trial_start, trial_end) = (
        sub["trial_start"].as_i64().unwrap(),
        sub["trial_end"].as_i64().unwrap(),
    );
    assert_eq!(trial_end - trial_start, 14 * 86_400);
    let invoice = object_of(&done, 2);
    assert_eq!(
        (
            invoice["billing_reason"].as_str(),
            invoice["amount_paid"].as_i64()
        ),
        (Some("subscription_create"), Some(0))
    );
    let id = sub["id"].as_str().unwrap().to_string();
    let (status, _) = api
        .control_err(&format!("/subscriptions/{id}/renew"), json!({}))
        .await;
    assert_eq!(status, 409);
    let ended = api
        .control(
            &format!("/subscriptions/{id}/end_trial"),
            json!({"deliver": false}),
        )
        .await;
    assert_eq!(
        types(&ended),
        [
            "customer.subscription.updated",
            "invoice.created",
            "invoice.finalized",
            "invoice.paid"
        ]
    );
    assert_eq!(
        created(&ended),
        [trial_end, trial_end, trial_end + 3600, trial_end + 3600]
    );
    assert_eq!(object_of(&ended, 0)["status"], "active");
    let cycle = object_of(&ended, 3);
    assert_eq!(
        (
            cycle["billing_reason"].as_str(),
            cycle["amount_paid"].as_i64()
        ),
        (Some("subscription_cycle"), Some(1000))
    );

    // Ending a trial early bills a full period now.
    let done = checkout_and_complete(&api, body).await;
    let id = done["object"]["subscription"].as_str().unwrap().to_string();
    let ended = api
        .control(
            &format!("/subscriptions/{id}/end_trial"),
            json!({"early": true, "deliver": false}),
        )
        .await;
    assert_eq!(
        types(&ended),
        ["customer.subscription.updated", "invoice.paid"]
    );
    let invoice = object_of(&ended, 1);
    assert_eq!(
        (
            invoice["billing_reason"].as_str(),
            invoice["amount_paid"].as_i64()
        ),
        (Some("subscription_update"), Some(1000))
    );
    let sub = &ended["object"];
    assert_eq!(sub["trial_end"], sub["billing_cycle_anchor"]);
}

#[tokio::test]
async fn paused_collection_keeps_the_status_and_follows_the_behavior() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    for (behavior, tail) in [
        ("void", vec!["invoice.voided"]),
        ("keep_as_draft", vec![]),
        (
            "mark_uncollectible",
            vec!["invoice.finalized", "invoice.marked_uncollectible"],
        ),
    ] {
        let sub = subscribed(&api).await;
        let paused = api
            .control(
                &format!("/subscriptions/{sub}/pause"),
                json!({"behavior": behavior, "deliver": false}),
            )
            .await;
        assert_eq!(types(&paused), ["customer.subscription.updated"]);
        assert_eq!(paused["object"]["status"], "active");
        assert_eq!(paused["object"]["pause_collection"]["behavior"], behavior);
        let renewed = api
            .control(
                &format!("/subscriptions/{sub}/renew"),
                json!({"deliver": false}),
            )
            .await;
        let mut expected = vec!["customer.subscription.updated", "invoice.created"];
        expected.extend(tail);
        assert_eq!(types(&renewed), expected, "{behavior}");
        assert_eq!(renewed["object"]["status"], "active");
        let resumed = api
            .control(
                &format!("/subscriptions/{sub}/resume"),
                json!({"deliver": false}),
            )
            .await;
        assert!(resumed["object"]["pause_collection"].is_null());
    }
    let sub = subscribed(&api).await;
    let (status, _) = api
        .control_err(
            &format!("/subscriptions/{sub}/pause"),
            json!({"behavior": "forever"}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_invoice_embeds_ten_lines_and_lists_them_all() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let sub = subscribed(&api).await;
    // Five plan changes billed on the next cycle: ten proration lines before the period's.
    for price in [
        "price_pro",
        "price_basic",
        "price_pro",
        "price_basic",
        "price_pro",
    ] {
        change(&api, &sub, json!({"price": price, "deliver": false})).await;
    }
    let renewed = api
        .control(
            &format!("/subscriptions/{sub}/renew"),
            json!({"deliver": false}),
        )
        .await;
    let invoice = object_of(&renewed, 3);
    assert_eq!(invoice["billing_reason"], "subscription_cycle");
    let embedded = invoice["lines"]["data"].as_array().unwrap();
    assert_eq!(
        (embedded.len(), invoice["lines"]["has_more"].as_bool()),
        (10, Some(true))
    );
    let id = invoice["id"].as_str().unwrap();
    let (status, all) =
        status_and_json(api.get(&format!("/v1/invoices/{id}/lines?limit=100"))).await;
    assert_eq!(status, 200, "{all}");
    let lines = all["data"].as_array().unwrap();
    assert_eq!(
        (lines.len(), all["has_more"].as_bool(), all["url"].as_str()),
        (
            11,
            Some(false),
            Some(format!("/v1/invoices/{id}/lines").as_str())
        )
    );
    assert_eq!(
        &lines[..10],
        &embedded[..],
        "the embedded page is the first"
    );
    let proration = |l: &serde_json::Value| {
        l["parent"]["subscription_item_details"]["proration"]
            .as_bool()
            .unwrap()
    };
    assert!(lines[..10].iter().all(proration) && !proration(&lines[10]));
    // Pages of 4 with starting_after give the same lines in the same order.
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let cursor = if after.is_empty() {
            String::new()
        } else {
            format!("&starting_after={after}")
        };
        let (_, page) =
            status_and_json(api.get(&format!("/v1/invoices/{id}/lines?limit=4{cursor}"))).await;
        let data = page["data"].as_array().unwrap();
        paged.extend(data.iter().cloned());
        after = data.last().unwrap()["id"].as_str().unwrap().to_string();
        if page["has_more"] != true {
            break;
        }
    }
    assert_eq!(&paged[..], &lines[..]);
    let (status, e) = status_and_json(api.get(&format!(
        "/v1/invoices/{id}/lines?starting_after=il_missing"
    )))
    .await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("starting_after"))
    );
    let (status, e) = status_and_json(api.get("/v1/invoices/in_missing/lines")).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
    let (status, _) = status_and_json(api.get(&format!("/v1/invoices/{id}/lines?color=red"))).await;
    assert_eq!(status, 400, "parameters are validated like every list's");
}
