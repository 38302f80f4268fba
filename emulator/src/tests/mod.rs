//! In-process HTTP tests: the emulator is started on 127.0.0.1:0 and driven over real HTTP,
//! the way the worker and the integration tests use it.

mod api;
mod billing;
mod changes;
mod endpoints;
mod events_api;
mod golden;
mod intents;
mod invoice_payments;
mod lifecycle;
mod listing;
mod meters;
mod money;
mod rules;
mod schema;
mod updates;

use clap::Parser;
use reqwest::{RequestBuilder, Response};
use serde_json::Value;

use super::{start, Config, Running};

const KEY: &str = "sk_test_emulator";

async fn emulator(extra: &[&str]) -> Running {
    let mut args = vec![
        "stripe-emulator",
        "--price",
        "price_basic:recurring:1000",
        "--price",
        "price_pro:recurring:3000",
        "--price",
        "price_pack:one_time:500",
        "--price",
        "price_year:recurring:10000:year",
        "--coupon",
        "half:percent_off:50",
        "--coupon",
        "free:percent_off:100",
    ];
    args.extend_from_slice(extra);
    start(Config::parse_from(args))
        .await
        .expect("emulator starts")
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(running: &Running) -> Self {
        Self {
            base: running.base_url.clone(),
            http: reqwest::Client::new(),
        }
    }
    fn post(&self, path: &str, form: &str) -> RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.to_string())
    }
    fn get(&self, path: &str) -> RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(KEY)
    }
    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/_emulator{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }
    /// A control call expected to fail; returns the status and body.
    async fn control_err(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/_emulator{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
    async fn customer(&self) -> String {
        let v = json_of(
            self.post(
                "/v1/customers",
                "email=a%40example.com&metadata[user_id]=u1",
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        v["id"].as_str().unwrap().to_string()
    }
}

async fn json_of(r: Response) -> Value {
    r.json().await.unwrap()
}

async fn status_and_json(r: RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The event types of a control call's answer.
fn types(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// The `data.object` of event `i` of a control call's answer.
fn object_of(v: &Value, i: usize) -> Value {
    let payload: Value = serde_json::from_str(v["events"][i]["payload"].as_str().unwrap()).unwrap();
    payload["data"]["object"].clone()
}

/// The `created` of every event of a control call's answer.
fn created(v: &Value) -> Vec<i64> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["created"].as_i64().unwrap())
        .collect()
}

/// Creates a session with `body` and completes it (paid, no delivery); returns the answer.
async fn checkout_and_complete(api: &Api, body: &str) -> Value {
    let (status, s) = status_and_json(api.post("/v1/checkout/sessions", body)).await;
    assert_eq!(status, 200, "{s}");
    let id = s["id"].as_str().unwrap();
    api.control(
        &format!("/checkout/{id}/complete"),
        serde_json::json!({"deliver": false}),
    )
    .await
}

/// A paid monthly subscription to price_basic; returns its id.
async fn subscribed(api: &Api) -> String {
    let done = checkout_and_complete(
        api,
        "mode=subscription&success_url=https://a/ok&line_items[0][price]=price_basic&line_items[0][quantity]=1",
    )
    .await;
    done["object"]["subscription"].as_str().unwrap().to_string()
}
