//! `GET /v1/invoice_payments` (basil and later): which invoices a PaymentIntent paid, the
//! worker's lookup when a refund or dispute names a payment nothing links (README rules table).

use serde_json::Value;

use super::*;

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
async fn invoice_payments_list_by_payment_intent_with_validated_parameters() {
    let running = emulator(&["--api-version", "2025-03-31.basil"]).await;
    let api = Api::new(&running);
    let session = bought_pack(&api).await;
    let pi = session["payment_intent"].as_str().unwrap();
    let invoice = session["invoice"].as_str().unwrap();
    bought_pack(&api).await; // another payment, not listed below
    let (status, list) = status_and_json(api.get(&format!(
        "/v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]={pi}"
    )))
    .await;
    assert_eq!(status, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["object"], "invoice_payment");
    assert_eq!(data[0]["invoice"], invoice);
    assert_eq!(data[0]["payment"]["payment_intent"], pi);
    assert_eq!(
        (data[0]["status"].as_str(), data[0]["amount_paid"].as_i64()),
        (Some("paid"), Some(1000))
    );
    assert_eq!(list["has_more"], false);
    // By invoice, and every one without a filter.
    let (_, by_invoice) =
        status_and_json(api.get(&format!("/v1/invoice_payments?invoice={invoice}"))).await;
    assert_eq!(by_invoice["data"][0]["id"], data[0]["id"]);
    let (_, all) = status_and_json(api.get("/v1/invoice_payments")).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2, "{all}");
    // The schema (stripe@18.0.0): payment[type] is required, and only payment_intent.
    let (status, e) = status_and_json(api.get(&format!(
        "/v1/invoice_payments?payment[payment_intent]={pi}"
    )))
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("parameter_missing")),
        "{e}"
    );
    let (status, e) = status_and_json(api.get("/v1/invoice_payments?payment[type]=charge")).await;
    assert_eq!(status, 400, "{e}");
    let (status, e) = status_and_json(api.get("/v1/invoice_payments?status=done")).await;
    assert_eq!(status, 400, "{e}");
}

#[tokio::test]
async fn before_basil_there_is_no_invoice_payments_endpoint() {
    let running = emulator(&["--api-version", "2023-08-16"]).await;
    let api = Api::new(&running);
    let (status, e) = status_and_json(api.get("/v1/invoice_payments")).await;
    assert_eq!(status, 404, "{e}");
}
