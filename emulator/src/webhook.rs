//! Events: the envelope Stripe sends, signing with the webhook secret, and delivery.
//!
//! An event's payload is serialised once, when the event is created, and those exact bytes
//! are signed and delivered (and redelivered), as with Stripe: a receiver must verify the
//! raw body, never a re-serialisation.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use stripe_billing_core::signature::signature_header;

use super::store::{ids, real_now, DeliveryStatus, Store, StoredEvent};

/// Builds an event for `object` in the state it has now, and records it.
///
/// `previous` is the same object rendered before the change; `customer.*.updated` events
/// carry the top-level fields that changed in `data.previous_attributes`, as Stripe's do.
pub fn create_event(
    store: &mut Store,
    api_version: &str,
    kind: &str,
    object: Value,
    previous: Option<&Value>,
) -> StoredEvent {
    let mut data = json!({ "object": object });
    if let (Some(Value::Object(before)), Some(after)) = (previous, data["object"].as_object()) {
        let changed: serde_json::Map<String, Value> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        data["previous_attributes"] = Value::Object(changed);
    }
    let event = json!({
        "id": ids::long("evt"),
        "object": "event",
        "api_version": api_version,
        "created": store.clock.now(),
        "data": data,
        "livemode": false,
        "pending_webhooks": u8::from(store.webhook_url.is_some()),
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
    });
    let stored = StoredEvent {
        id: event["id"].as_str().unwrap_or_default().to_string(),
        kind: kind.to_string(),
        created: event["created"].as_i64().unwrap_or_default(),
        payload: serde_json::to_string(&event).expect("events serialise"),
        delivery: if store.webhook_url.is_some() {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::NoEndpoint
        },
    };
    store.events.push(stored.clone());
    stored
}

/// What a control call reports for each event.
#[derive(Debug, Clone, Serialize)]
pub struct EventReport {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    /// The exact body that was (or would be) POSTed.
    pub payload: String,
    /// A valid `Stripe-Signature` for `payload`, signed now.
    pub signature_header: String,
    pub delivery: Option<Delivery>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub url: String,
    /// HTTP status of the receiver's answer; `None` when the request failed.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    /// Failed on purpose (`POST /_emulator/webhook/drop`): nothing was sent.
    pub dropped: bool,
}

/// Why a dropped delivery failed.
pub const DROPPED: &str =
    "dropped by the emulator (POST /_emulator/webhook/drop): the endpoint is down";

/// Where and how to deliver, copied out of the store so no lock is held during I/O.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Option<String>,
    pub secret: String,
    /// Events whose delivery fails as if the endpoint were down.
    pub dropped: HashSet<String>,
}

/// Where `events` go, and which of them the drop rule makes fail (decided now, under the
/// store's lock, so a seeded rule gives the same answers run after run).
pub fn target(store: &mut Store, events: &[StoredEvent]) -> Target {
    let mut dropped = HashSet::new();
    if let (Some(_), Some(rule)) = (&store.webhook_url, store.drop_rule.as_mut()) {
        dropped = events
            .iter()
            .filter(|e| rule.drops(&e.kind))
            .map(|e| e.id.clone())
            .collect();
    }
    Target {
        url: store.webhook_url.clone(),
        secret: store.webhook_secret.clone(),
        dropped,
    }
}

/// Records how each delivery went, for `GET /v1/events?delivery_success=…`.
pub fn record(store: &mut Store, reports: &[EventReport]) {
    for report in reports {
        let Some(delivery) = &report.delivery else {
            continue;
        };
        let ok = delivery.status.is_some_and(|s| (200..300).contains(&s));
        if let Some(e) = store.events.iter_mut().find(|e| e.id == report.id) {
            e.delivery = if ok {
                DeliveryStatus::Succeeded
            } else {
                DeliveryStatus::Failed
            };
        }
    }
}

/// Signs each event and, when `deliver` is set and a URL is configured, POSTs them in order
/// (one at a time, so the receiver sees them in creation order).
pub async fn dispatch(
    http: &reqwest::Client,
    target: &Target,
    events: Vec<StoredEvent>,
    deliver: bool,
) -> Vec<EventReport> {
    let mut reports = Vec::with_capacity(events.len());
    for event in events {
        // The signature time is the wall clock at sending, independent of the emulator clock.
        let header = signature_header(event.payload.as_bytes(), &target.secret, real_now());
        let delivery = match (&target.url, deliver) {
            (Some(url), true) if target.dropped.contains(&event.id) => {
                tracing::info!(url, id = %event.id, "webhook delivery dropped");
                Some(Delivery {
                    url: url.clone(),
                    status: None,
                    error: Some(DROPPED.into()),
                    response_body: None,
                    dropped: true,
                })
            }
            (Some(url), true) => Some(post(http, url, &event.payload, &header).await),
            _ => None,
        };
        reports.push(EventReport {
            id: event.id,
            kind: event.kind,
            created: event.created,
            payload: event.payload,
            signature_header: header,
            delivery,
        });
    }
    reports
}

async fn post(http: &reqwest::Client, url: &str, payload: &str, header: &str) -> Delivery {
    let result = http
        .post(url)
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Stripe-Signature", header)
        .header("User-Agent", "Stripe/1.0 (+stripe-emulator)")
        .timeout(Duration::from_secs(30))
        .body(payload.to_string())
        .send()
        .await;
    match result {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response
                .text()
                .await
                .ok()
                .map(|b| b.chars().take(2000).collect());
            tracing::info!(url, status, "webhook delivered");
            Delivery {
                url: url.to_string(),
                status: Some(status),
                error: None,
                response_body: body,
                dropped: false,
            }
        }
        Err(e) => {
            tracing::warn!(url, error = %e, "webhook delivery failed");
            Delivery {
                url: url.to_string(),
                status: None,
                error: Some(e.to_string()),
                response_body: None,
                dropped: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stripe_billing_core::signature::verify;

    #[test]
    fn envelope_and_previous_attributes() {
        let mut store = Store::default();
        let before = json!({"id": "sub_1", "status": "active", "cancel_at_period_end": false});
        let after = json!({"id": "sub_1", "status": "active", "cancel_at_period_end": true});
        let e = create_event(
            &mut store,
            "2025-03-31.basil",
            "customer.subscription.updated",
            after,
            Some(&before),
        );
        let v: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(v["object"], "event");
        assert_eq!(v["api_version"], "2025-03-31.basil");
        assert_eq!(v["livemode"], false);
        assert_eq!(v["pending_webhooks"], 0);
        assert_eq!(v["request"], json!({"id": null, "idempotency_key": null}));
        assert_eq!(
            v["data"]["previous_attributes"],
            json!({"cancel_at_period_end": false})
        );
        assert!(e.id.starts_with("evt_") && store.events.len() == 1);
    }

    #[tokio::test]
    async fn reports_are_signed_over_the_exact_payload() {
        let mut store = Store::default();
        let e = create_event(
            &mut store,
            "2023-08-16",
            "invoice.paid",
            json!({"id": "in_1"}),
            None,
        );
        let target = Target {
            url: None,
            secret: "whsec_t".into(),
            dropped: HashSet::new(),
        };
        let reports = dispatch(&reqwest::Client::new(), &target, vec![e], true).await;
        let r = &reports[0];
        assert!(r.delivery.is_none());
        verify(
            r.payload.as_bytes(),
            Some(&r.signature_header),
            ["whsec_t"],
            Some(300),
            real_now(),
        )
        .unwrap();
    }
}
