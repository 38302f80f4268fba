//! Saved cards and PaymentIntents created through the API (what an auto top-up calls), one
//! test per rule of the README's table ("Saved cards and PaymentIntents" rows).

use serde_json::Value;

use super::*;

/// A customer with a saved test card `card`; returns (customer, saved card id).
async fn with_card(api: &Api, card: &str) -> (String, String) {
    let cus = api.customer().await;
    let (status, pm) = status_and_json(api.post(
        &format!("/v1/payment_methods/{card}/attach"),
        &format!("customer={cus}"),
    ))
    .await;
    assert_eq!(status, 200, "{pm}");
    let id = pm["id"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("pm_") && id != card,
        "a new card is saved: {pm}"
    );
    (cus, id)
}

fn charge(cus: &str, pm: &str, extra: &str) -> String {
    format!("amount=900&currency=usd&customer={cus}&payment_method={pm}{extra}")
}

#[tokio::test]
async fn a_saved_card_is_listed_and_charged_off_session() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let (cus, pm) = with_card(&api, "pm_card_visa").await;
    let (status, list) =
        status_and_json(api.get(&format!("/v1/customers/{cus}/payment_methods?type=card"))).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"][0]["id"], pm.as_str());
    let (status, pi) = status_and_json(api.post(
        "/v1/payment_intents",
        &charge(&cus, &pm, "&off_session=true&confirm=true&metadata[k]=v"),
    ))
    .await;
    assert_eq!(status, 200, "{pi}");
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount_received"], 900);
    assert_eq!(pi["metadata"]["k"], "v");
    assert!(pi["latest_charge"].as_str().unwrap().starts_with("ch_"));
}

#[tokio::test]
async fn declines_and_authentication_are_402_card_errors_naming_the_payment_intent() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    for (card, code) in [
        ("pm_card_chargeCustomerFail", "card_declined"),
        ("pm_card_authenticationRequired", "authentication_required"),
    ] {
        let (cus, pm) = with_card(&api, card).await;
        let (status, e) = status_and_json(api.post(
            "/v1/payment_intents",
            &charge(&cus, &pm, "&off_session=true&confirm=true"),
        ))
        .await;
        assert_eq!(status, 402, "{e}");
        assert_eq!(e["error"]["type"], "card_error");
        assert_eq!(e["error"]["code"], code);
        assert_eq!(
            e["error"]["payment_intent"]["status"],
            "requires_payment_method"
        );
        assert_eq!(
            e["error"]["payment_intent"]["last_payment_error"]["code"],
            code
        );
    }
    // On-session, a card that needs authentication asks for it instead of failing.
    let (cus, pm) = with_card(&api, "pm_card_authenticationRequired").await;
    let (status, pi) =
        status_and_json(api.post("/v1/payment_intents", &charge(&cus, &pm, "&confirm=true"))).await;
    assert_eq!(
        (status, pi["status"].as_str()),
        (200, Some("requires_action")),
        "{pi}"
    );
}

#[tokio::test]
async fn payment_intents_refuse_what_stripe_refuses() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let (cus, pm) = with_card(&api, "pm_card_visa").await;
    let other = api.customer().await;
    let refused = |form: String, param: &'static str| {
        let api = &api;
        async move {
            let (status, e): (u16, Value) =
                status_and_json(api.post("/v1/payment_intents", &form)).await;
            assert_eq!(
                (status, e["error"]["param"].as_str()),
                (400, Some(param)),
                "{form}: {e}"
            );
        }
    };
    refused(charge(&cus, &pm, "&off_session=true"), "off_session").await;
    refused(
        format!("amount=900&currency=usd&customer={cus}&confirm=true"),
        "payment_method",
    )
    .await;
    refused(charge(&other, &pm, "&confirm=true"), "payment_method").await;
    refused(charge(&cus, "pm_nope", "&confirm=true"), "payment_method").await;
    refused(format!("amount=20&currency=usd&customer={cus}"), "amount").await;
    refused(format!("currency=usd&customer={cus}"), "amount").await;
    refused(
        charge(&cus, &pm, "&off_session=sometimes&confirm=true"),
        "off_session",
    )
    .await;
}
