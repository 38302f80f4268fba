//! In-process HTTP tests: the emulator is started on 127.0.0.1:0 and driven over real HTTP,
//! the way the worker and the integration tests use it.

mod api;
mod lifecycle;

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
        "--coupon",
        "half:percent_off:50",
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
