//! Billing Meters over HTTP, one test per rule of the README's table: meters created and
//! listed, meter events recorded with their identifier, a repeated identifier refused even
//! under a new idempotency key (and replayed under the same one), the timestamp window, the
//! identifier's length, and what Stripe leaves to its asynchronous checks.

use super::*;
use crate::clock::real_now;

fn event(identifier: &str, timestamp: i64) -> String {
    format!(
        "event_name=tokens_over&payload[stripe_customer_id]=cus_1&payload[value]=25\
         &identifier={identifier}&timestamp={timestamp}"
    )
}

#[tokio::test]
async fn meters_are_created_and_listed_in_both_versions() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    for version in ["2023-08-16", "2025-03-31.basil"] {
        let (status, m) = status_and_json(
            api.post(
                "/v1/billing/meters",
                &format!(
                    "display_name=Tokens&event_name=ev_{}&default_aggregation[formula]=sum",
                    version.len()
                ),
            )
            .header("Stripe-Version", version),
        )
        .await;
        assert_eq!(status, 200, "{version}: {m}");
        assert!(m["id"].as_str().unwrap().starts_with("mtr_"));
        assert_eq!(m["status"], "active");
        assert_eq!(
            m["customer_mapping"]["event_payload_key"],
            "stripe_customer_id"
        );
        assert_eq!(m["value_settings"]["event_payload_key"], "value");
    }
    // display_name and default_aggregation are required.
    let (status, e) = status_and_json(api.post("/v1/billing/meters", "event_name=x")).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "parameter_missing");
    let (status, list) = status_and_json(api.get("/v1/billing/meters?status=active&limit=1")).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["has_more"], true);
    let (status, e) = status_and_json(api.get("/v1/billing/meters?status=sleeping")).await;
    assert_eq!(status, 400, "{e}");
}

#[tokio::test]
async fn a_meter_event_is_recorded_once_per_identifier() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let now = real_now();
    let post = |key: &str, body: String| {
        api.post("/v1/billing/meter_events", &body)
            .header("Idempotency-Key", key.to_string())
    };
    let (status, e) = status_and_json(post("k1", event("ovg_1", now))).await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(
        (
            e["object"].as_str(),
            e["identifier"].as_str(),
            e["payload"]["value"].as_str()
        ),
        (Some("billing.meter_event"), Some("ovg_1"), Some("25"))
    );
    // The same key replays the answer; a new key with the same identifier is refused.
    let replay = post("k1", event("ovg_1", now)).send().await.unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["Idempotent-Replayed"], "true");
    let refused = post("k2", event("ovg_1", now)).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.headers()["Stripe-Should-Retry"], "false");
    let e: Value = refused.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(
        e["error"]["message"],
        "An event already exists with identifier ovg_1."
    );
    let recorded = api
        .http
        .get(format!(
            "{}/_emulator/meter_events?customer=cus_1",
            api.base
        ))
        .send()
        .await
        .unwrap();
    let recorded: Value = recorded.json().await.unwrap();
    assert_eq!(recorded["data"].as_array().unwrap().len(), 1);
    // No meter has the name and the customer is unknown: Stripe checks those later.
    let (status, _) = status_and_json(post("k3", event("ovg_2", now))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_meter_event_s_timestamp_and_identifier_are_bounded() {
    let running = emulator(&[]).await;
    let api = Api::new(&running);
    let now = real_now();
    let day = 86_400;
    for (ts, ok) in [
        (now - 35 * day + 60, true),
        (now - 35 * day - 60, false),
        (now + 240, true),
        (now + 360, false),
    ] {
        let id = format!("ovg_ts_{ts}");
        let (status, e) =
            status_and_json(api.post("/v1/billing/meter_events", &event(&id, ts))).await;
        assert_eq!(status == 200, ok, "timestamp {ts} (now {now}): {e}");
        if !ok {
            assert_eq!(e["error"]["param"], "timestamp");
        }
    }
    let long = "x".repeat(101);
    let (status, e) =
        status_and_json(api.post("/v1/billing/meter_events", &event(&long, now))).await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("identifier")),
        "{e}"
    );
    let (status, e) = status_and_json(api.post(
        "/v1/billing/meter_events",
        "event_name=tokens_over&timestamp=1",
    ))
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("parameter_missing")),
        "{e}"
    );
}
