//! What the event normaliser, `billing._normalize_event` (sql/events/normalize.sql), does with
//! a body that is not a well-formed Stripe event: what is not an event at all is refused with
//! its reason (a SQLSTATE and message per case), and fields of unexpected types read as absent.
//! Well-formed events, the golden fixtures and both API shapes: event_normalizer.rs.
use serde_json::{json, Value};
use stripe_billing_tests::events::normalise;
use stripe_billing_tests::pg::TestDb;

const T0: i64 = 1_700_000_000;

/// An event around `object` (a JSON text).
fn around(object: &str) -> String {
    format!(
        r#"{{"object":"event","id":"evt_1","type":"x","created":{T0},"livemode":true,"api_version":null,"data":{{"object":{object}}}}}"#
    )
}

#[tokio::test]
async fn what_is_not_a_stripe_event_is_refused_with_its_reason() {
    let db = TestDb::new().await;
    let client = db.owner().await;
    let not_event = |reason: &str| format!("22023: the payload is not a Stripe event: {reason}");
    let envelope = |fields: &str| format!(r#"{{"object":"event",{fields}}}"#);
    for (body, want) in [
        (
            "{\"id\": ".to_string(),
            "22032: the webhook payload is not valid JSON".to_string(),
        ),
        (
            String::new(),
            "22032: the webhook payload is not valid JSON".to_string(),
        ),
        (
            r#"{"a":"\ud800"}"#.to_string(),
            "22032: the webhook payload is not valid JSON".to_string(),
        ),
        ("[1, 2]".to_string(), not_event("it is not a JSON object")),
        (
            "\"evt_1\"".to_string(),
            not_event("it is not a JSON object"),
        ),
        (
            r#"{"object":"invoice","id":"evt_1","type":"x","created":1,"data":{"object":{}}}"#
                .to_string(),
            not_event("its \"object\" is not \"event\""),
        ),
        (
            envelope(r#""id":"evt_é","type":"x","created":1,"data":{"object":{}}"#),
            not_event("it has no valid evt_ id"),
        ),
        (
            envelope(r#""id":"evt_","type":"x","created":1,"data":{"object":{}}"#),
            not_event("it has no valid evt_ id"),
        ),
        (
            envelope(r#""id":5,"type":"x","created":1,"data":{"object":{}}"#),
            not_event("it has no valid evt_ id"),
        ),
        (
            envelope(&format!(
                r#""id":"evt_{}","type":"x","created":1,"data":{{"object":{{}}}}"#,
                "a".repeat(252)
            )),
            not_event("it has no valid evt_ id"),
        ),
        (
            envelope(r#""id":"evt_1","type":"","created":1,"data":{"object":{}}"#),
            not_event("it has no type"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":1.0,"data":{"object":{}}"#),
            not_event("it has no integer created time"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":"1","data":{"object":{}}"#),
            not_event("it has no integer created time"),
        ),
        (
            envelope(
                r#""id":"evt_1","type":"x","created":9223372036854775808,"data":{"object":{}}"#,
            ),
            not_event("it has no integer created time"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":1,"data":5"#),
            not_event("it has no data.object"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":1,"data":null"#),
            not_event("it has no data.object"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":1,"data":[{"object":{}}]"#),
            not_event("it has no data.object"),
        ),
        (
            envelope(r#""id":"evt_1","type":"x","created":1,"data":{"object":"cus_1"}"#),
            not_event("it has no data.object"),
        ),
    ] {
        assert_eq!(normalise(&client, &body).await, Err(want), "{body}");
    }
    // A NUL escape, which jsonb cannot hold, in a field nobody reads does not refuse the event.
    let body = around(r#"{"object":"customer","id":"cus_1","name":"a\u0000b"}"#);
    assert_eq!(
        normalise(&client, &body).await.unwrap()["customer"],
        "cus_1"
    );
    assert_eq!(
        normalise(&client, &format!(" \n{}\t ", around("{}")))
            .await
            .unwrap()["id"],
        "evt_1"
    );
}

#[tokio::test]
async fn fields_of_unexpected_types_read_as_absent() {
    let db = TestDb::new().await;
    let client = db.owner().await;
    let data = |object: &'static str| {
        let client = &client;
        async move {
            let ev = normalise(client, &around(object)).await.unwrap();
            (ev["customer"].clone(), ev["data"].clone())
        }
    };
    let (customer, d) =
        data(r#"{"object":"customer","id":"","deleted":1,"email":5,"metadata":[1]}"#).await;
    assert_eq!(
        (customer, d),
        (
            json!(""),
            json!({"id": "", "deleted": false, "email": null, "metadata": {}})
        )
    );
    let (customer, d) = data(r#"{"object":"invoice","customer":{"id":5},"subscription":"","lines":{"data":[{"price":{"id":5,"unit_amount":"9"},"amount":1.5},5,{"plan":{"id":"p2"},"amount":"7","pricing":{"unit_amount_decimal":"1e3"}}]}}"#).await;
    assert_eq!(customer, Value::Null);
    assert_eq!(d["subscription"], Value::Null);
    assert_eq!(
        d["lines"],
        json!([
            // A number stays a number, whole or not: an effect that needs a whole one says so.
            // A unit amount is a number, or a decimal string (unit_amount_decimal) read as one.
            {"price_id": null, "amount": 1.5, "quantity": null, "proration": false, "period_start": null, "period_end": null, "unit_amount": null},
            {"price_id": "p2", "amount": null, "quantity": null, "proration": false, "period_start": null, "period_end": null, "unit_amount": null}
        ])
    );
    let (_, d) = data(r#"{"object":"invoice","lines":{"data":[{"pricing":{"unit_amount_decimal":"2933.333333333333"}},{"price":{"unit_amount_decimal":"10.5","unit_amount":11}},{"price":{"unit_amount":12}}]}}"#).await;
    assert_eq!(
        d["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["unit_amount"].to_string())
            .collect::<Vec<_>>(),
        ["2933.333333333333", "10.5", "12"]
    );
    let (_, d) = data(r#"{"object":"invoice","lines":[{"price":"p1"}],"parent":{"subscription_details":{"subscription":{"id":"sub_p"},"metadata":null}},"subscription_details":{"metadata":{"c":"d"}},"subscription":"sub_x"}"#).await;
    assert_eq!(
        (
            d["lines"].clone(),
            d["subscription"].clone(),
            d["subscription_metadata"].clone()
        ),
        (json!([]), json!("sub_p"), json!({"c": "d"}))
    );
    let (_, d) = data(r#"{"object":"invoice","lines":{"data":[{"proration":true,"parent":{"subscription_item_details":{"proration":false}},"period":{"start":"1","end":2}}]}}"#).await;
    assert_eq!(
        (
            d["lines"][0]["proration"].clone(),
            d["lines"][0]["period_start"].clone(),
            d["lines"][0]["period_end"].clone()
        ),
        (json!(false), Value::Null, json!(2))
    );
    let (_, d) = data(r#"{"object":"subscription","plan":"price_old","quantity":3,"items":{"data":[]},"cancel_at_period_end":"yes","pause_collection":{"behavior":"void","resumes_at":99}}"#).await;
    assert_eq!(
        d["items"],
        json!([{"item_id": null, "price_id": "price_old", "quantity": 3, "current_period_start": null, "current_period_end": null}])
    );
    assert_eq!(
        (
            d["cancel_at_period_end"].clone(),
            d["pause_collection"].clone()
        ),
        (json!(false), json!({"behavior": "void", "resumes_at": 99}))
    );
    let (_, d) = data(r#"{"object":"subscription","items":{"data":[{"plan":{"id":"price_p"},"current_period_start":5,"current_period_end":6}]},"pause_collection":[1]}"#).await;
    assert_eq!(
        (
            d["current_period_start"].clone(),
            d["current_period_end"].clone(),
            d["pause_collection"].clone()
        ),
        (json!(5), json!(6), Value::Null)
    );
    let (customer, d) = data(r#"{"object":"checkout.session","customer":{"id":null},"amount_total":"5","metadata":{"n":1.50},"client_reference_id":7}"#).await;
    assert_eq!(
        (
            customer,
            d["amount_total"].clone(),
            d["client_reference_id"].clone(),
            d["metadata"].clone()
        ),
        (Value::Null, Value::Null, Value::Null, json!({"n": 1.50}))
    );
    let (_, d) = data(r#"{"object":"invoice","payments":{"data":[{"invoice":"in_1","payment":{"type":"payment_intent","payment_intent":"pi_1"}},{"payment":{"charge":{"id":5}}},{"payment":null},5]}}"#).await;
    assert_eq!(
        d["payments"],
        json!([{"payment_intent": "pi_1", "charge": null}, {"payment_intent": null, "charge": null}])
    );
    let (customer, d) = data(r#"{"object":"charge","id":"ch_1","customer":{"id":"cus_1"},"invoice":"","amount":"100","amount_refunded":5.5,"payment_intent":{"id":"pi_1","object":"payment_intent"}}"#).await;
    assert_eq!(
        (customer, d),
        (
            json!("cus_1"),
            json!({"id": "ch_1", "payment_intent": "pi_1", "invoice": null, "amount": null, "amount_refunded": 5.5, "currency": null})
        )
    );
    let (customer, d) = data(r#"{"object":"dispute","id":"dp_1","charge":{"id":"ch_1"},"customer":"cus_1","amount":900,"status":"lost"}"#).await;
    assert_eq!(
        (customer, d["charge"].clone(), d["amount"].clone()),
        (Value::Null, json!("ch_1"), json!(900))
    );
    let (_, d) = data(r#"{"object":"credit_note","id":"cn_1","refund":"re_0","refunds":[{"refund":"re_1","amount_refunded":200},{"refund":{"id":"re_2"},"amount_refunded":"x"}]}"#).await;
    assert_eq!(
        d["refunds"],
        json!([{"refund": "re_1", "amount_refunded": 200}, {"refund": "re_2", "amount_refunded": null}])
    );
    let (_, d) =
        data(r#"{"object":"credit_note","id":"cn_1","refunds":[],"refund":{"id":"re_9"}}"#).await;
    assert_eq!(
        d["refunds"],
        json!([{"refund": "re_9", "amount_refunded": null}])
    );
    let (customer, d) = data(r#"{"object":"invoice_payment","id":"inpay_1","invoice":"in_1","status":"paid","amount_paid":900,"payment":{"type":"charge","charge":"ch_1"},"customer":"cus_1"}"#).await;
    assert_eq!(
        (customer, d),
        (
            Value::Null,
            json!({"id": "inpay_1", "invoice": "in_1", "status": "paid", "amount_paid": 900, "payment_intent": null, "charge": "ch_1"})
        )
    );
    let (customer, d) = data(r#"{"id":"x_1","customer":"cus_1"}"#).await;
    assert_eq!((customer, d), (Value::Null, json!({})));
}
