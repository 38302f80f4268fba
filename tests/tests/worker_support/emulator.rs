//! The local Stripe emulator as a process of its own, and the calls tests make to it: Stripe's
//! API with the secret key, and its control endpoints (faults, logged requests, events).

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use super::{emulator_binary, SECRET_KEY, WEBHOOK_SECRET};

/// The local Stripe emulator, killed when dropped.
pub struct Emulator {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts `stripe-emulator` with prices price_pro (recurring) and price_pack (one-time),
    /// delivering webhooks to `webhook_url` if given.
    pub async fn start(webhook_url: Option<&str>) -> Emulator {
        Emulator::start_with(webhook_url, &[]).await
    }

    /// Like [`Emulator::start_with`], delivering webhooks to the webhook endpoint of a worker
    /// that will listen on 127.0.0.1:`port`.
    pub async fn delivering_to(port: u16, extra: &[&str]) -> Emulator {
        let hook = format!("http://127.0.0.1:{port}/api/stripe/webhook");
        Emulator::start_with(Some(&hook), extra).await
    }

    /// Like [`Emulator::start`], with more command-line arguments (say `--price …`).
    pub async fn start_with(webhook_url: Option<&str>, extra: &[&str]) -> Emulator {
        let mut cmd = Command::new(emulator_binary());
        cmd.args(extra);
        cmd.args(["--listen", "127.0.0.1:0", "--secret-key", SECRET_KEY])
            .args(["--webhook-secret", WEBHOOK_SECRET])
            .args(["--price", "price_pro:recurring:2000"])
            .args(["--price", "price_pack:one_time:900"])
            .args(["--coupon", "SPRING:percent_off:10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(url) = webhook_url {
            cmd.args(["--webhook-url", url]);
        }
        let mut child = cmd.spawn().expect("start stripe-emulator");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("stripe-emulator prints its address")
            .expect("read stdout")
            .expect("a line");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_string();
        Emulator {
            child,
            url,
            http: reqwest::Client::new(),
        }
    }

    /// A control or API call that must succeed; returns the JSON answer.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("emulator control call");
        let status = resp.status();
        let body: Value = resp.json().await.expect("emulator answers JSON");
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// A control call (`POST /_emulator/...`, see the emulator's module docs); its answer.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.control(reqwest::Method::POST, path, Some(body)).await
    }

    /// Queues a fault (see the emulator's control API).
    pub async fn fault(&self, fault: Value) {
        self.control(reqwest::Method::POST, "/_emulator/faults", Some(fault))
            .await;
    }

    /// Every API call the emulator served.
    pub async fn requests(&self) -> Vec<Value> {
        let log = self
            .control(reqwest::Method::GET, "/_emulator/requests", None)
            .await;
        log.as_array().cloned().unwrap_or_default()
    }

    /// Calls to `path` that created an object (200 and not an idempotent replay).
    pub async fn created(&self, path: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["path"] == path && r["status"] == 200 && r["replayed"] != true)
            .collect()
    }

    /// All calls to `path` with idempotency key `key`.
    pub async fn calls(&self, path: &str, key: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["path"] == path && r["idempotency_key"] == key)
            .collect()
    }

    /// The Checkout Session calls of request `id`, whatever customer they sent: the key is
    /// `checkout-<request id>-<customer id>`.
    pub async fn checkout_calls(&self, id: Uuid) -> Vec<Value> {
        let prefix = format!("checkout-{id}-");
        self.requests()
            .await
            .into_iter()
            .filter(|r| {
                r["path"] == "/v1/checkout/sessions"
                    && r["idempotency_key"]
                        .as_str()
                        .is_some_and(|k| k.starts_with(&prefix))
            })
            .collect()
    }

    /// Completes a Checkout Session as if the customer paid; returns the lifecycle report.
    /// Waits until the worker has asked for `user`'s Stripe customer (the first call of a
    /// checkout), so a test can act while the session call is still to come.
    pub async fn wait_for_customer(&self, user: Uuid, within: Duration) {
        let deadline = Instant::now() + within;
        let for_user = |calls: Vec<Value>| {
            calls
                .iter()
                .any(|c| c["params"]["metadata"]["user_id"] == user.to_string().as_str())
        };
        while !for_user(self.created("/v1/customers").await) {
            assert!(Instant::now() < deadline, "the customer was never created");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn complete_checkout(&self, session_id: &str) -> Value {
        self.control(
            reqwest::Method::POST,
            &format!("/_emulator/checkout/{session_id}/complete"),
            Some(json!({"payment_status": "paid"})),
        )
        .await
    }
}

impl Emulator {
    /// A Stripe API call with the secret key (`form` is form-encoded); returns status and JSON.
    pub async fn stripe(&self, method: reqwest::Method, path: &str, form: &str) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(SECRET_KEY)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .await
            .expect("emulator API call");
        (
            resp.status().as_u16(),
            resp.json().await.expect("JSON answer"),
        )
    }

    /// The latest charge of a PaymentIntent.
    pub async fn charge_of(&self, payment_intent: &str) -> String {
        let path = format!("/v1/payment_intents/{payment_intent}");
        let (status, pi) = self.stripe(reqwest::Method::GET, &path, "").await;
        assert_eq!(status, 200, "{path}: {pi}");
        pi["latest_charge"].as_str().unwrap().to_string()
    }

    /// Every event the emulator has made so far, in order, as Stripe would send them.
    pub async fn events(&self) -> Vec<Value> {
        let list = self
            .control(reqwest::Method::GET, "/_emulator/events", None)
            .await;
        list.as_array()
            .expect("a list of events")
            .iter()
            .map(|e| {
                serde_json::from_str(e["payload"].as_str().expect("payload")).expect("JSON payload")
            })
            .collect()
    }
}
