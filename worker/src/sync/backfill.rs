//! Adopting a Stripe account that existed before the product: every customer is linked to its
//! user (by `metadata.user_id`, or by a mapping file the operator supplies), and every live
//! subscription of a linked customer is recorded, so existing subscribers receive tokens at
//! their next renewal. Idempotent and safe to re-run; the report says what was linked,
//! adopted and skipped, and why.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::list_all;
use crate::db::Db;
use crate::stripe::Stripe;

/// Subscription statuses that still bill (the ones worth adopting).
const LIVE: &[&str] = &[
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "paused",
    "incomplete",
];

/// Customer id or e-mail address (lower case) → user id, from the operator's file.
#[derive(Debug, Default)]
pub struct Mapping(HashMap<String, Uuid>);

impl Mapping {
    /// Reads `KEY,USER_ID` lines (KEY: a `cus_…` id or an e-mail address; `#` starts a
    /// comment). Errors name the line.
    pub fn parse(text: &str) -> Result<Mapping, String> {
        let mut map = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (key, user) = line
                .split_once(',')
                .ok_or_else(|| format!("line {}: expected KEY,USER_ID", n + 1))?;
            let user = Uuid::parse_str(user.trim()).map_err(|_| {
                format!("line {}: {:?} is not a user id (uuid)", n + 1, user.trim())
            })?;
            let key = key.trim();
            if !(key.starts_with("cus_") || key.contains('@')) {
                return Err(format!(
                    "line {}: {key:?} is neither a customer id (cus_...) nor an e-mail address",
                    n + 1
                ));
            }
            map.insert(normal_key(key), user);
        }
        Ok(Mapping(map))
    }

    pub fn load(path: &Path) -> Result<Mapping, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Mapping::parse(&text)
    }

    fn user_of(&self, customer: &Value) -> Option<Uuid> {
        let by_id = customer["id"].as_str().and_then(|id| self.0.get(id));
        let by_email = customer["email"]
            .as_str()
            .and_then(|e| self.0.get(&normal_key(e)));
        by_id.or(by_email).copied()
    }
}

fn normal_key(key: &str) -> String {
    if key.starts_with("cus_") {
        key.to_string()
    } else {
        key.to_lowercase()
    }
}

/// What a backfill did: outcome → count, and one line per skipped object.
#[derive(Debug, Default)]
pub struct Report {
    pub customers: BTreeMap<String, usize>,
    pub subscriptions: BTreeMap<String, usize>,
    pub skipped: Vec<String>,
}

impl Report {
    fn count(map: &mut BTreeMap<String, usize>, answer: &Value) -> String {
        let outcome = answer["outcome"].as_str().unwrap_or("failed").to_string();
        *map.entry(outcome.clone()).or_default() += 1;
        outcome
    }

    /// The report as printed: totals, then each skipped object with its reason.
    pub fn render(&self) -> String {
        let totals = |m: &BTreeMap<String, usize>| {
            if m.is_empty() {
                return "none".to_string();
            }
            m.iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!(
            "customers: {}\nsubscriptions: {}\n",
            totals(&self.customers),
            totals(&self.subscriptions)
        );
        for line in &self.skipped {
            out.push_str(&format!("skipped {line}\n"));
        }
        out
    }
}

/// Runs the backfill once.
pub async fn run(
    db: &Db,
    stripe: &Stripe,
    mapping: &Mapping,
    abort: &CancellationToken,
) -> Result<Report, String> {
    let mut conn = db.get().await.map_err(|e| e.to_string())?;
    let mut report = Report::default();
    let customers = list_all(stripe, "/v1/customers", &json!({}), abort)
        .await
        .map_err(|e| format!("listing customers: {e}"))?
        .data;
    for customer in &customers {
        let user = mapping.user_of(customer);
        let answer: Value = conn
            .query_one("SELECT billing.adopt_customer($1, $2)", &[customer, &user])
            .await
            .map_err(|e| format!("adopting customer {}: {e}", customer["id"]))?
            .get(0);
        if Report::count(&mut report.customers, &answer) == "skipped" {
            report.skipped.push(format!(
                "customer {}: {}",
                answer["customer"].as_str().unwrap_or("?"),
                answer["reason"].as_str().unwrap_or("")
            ));
        }
    }
    let subscriptions = list_all(
        stripe,
        "/v1/subscriptions",
        &json!({"status": "all"}),
        abort,
    )
    .await
    .map_err(|e| format!("listing subscriptions: {e}"))?;
    // Stripe's state as of its answer: newer than any event sent before it.
    let at = subscriptions.date.unwrap_or_else(SystemTime::now);
    for sub in subscriptions
        .data
        .iter()
        .filter(|s| LIVE.contains(&s["status"].as_str().unwrap_or("")))
    {
        let answer: Value = conn
            .query_one("SELECT billing.adopt_subscription($1, $2)", &[sub, &at])
            .await
            .map_err(|e| format!("adopting subscription {}: {e}", sub["id"]))?
            .get(0);
        if Report::count(&mut report.subscriptions, &answer) != "adopted" {
            report.skipped.push(format!(
                "subscription {}: {}",
                answer["subscription"].as_str().unwrap_or("?"),
                answer["reason"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_reads_ids_and_emails_and_names_bad_lines() {
        let m = Mapping::parse(
            "# exported from the old system\ncus_Q1,0b9f6f4e-6a3c-4d0e-9a53-0c1f0e3f6a01\nAda@Example.com , 0b9f6f4e-6a3c-4d0e-9a53-0c1f0e3f6a02\n\n",
        )
        .unwrap();
        assert_eq!(
            m.user_of(&json!({"id": "cus_Q1"})).unwrap().to_string(),
            "0b9f6f4e-6a3c-4d0e-9a53-0c1f0e3f6a01"
        );
        assert_eq!(
            m.user_of(&json!({"id": "cus_other", "email": "ada@example.COM"}))
                .unwrap()
                .to_string(),
            "0b9f6f4e-6a3c-4d0e-9a53-0c1f0e3f6a02"
        );
        assert!(m.user_of(&json!({"id": "cus_none"})).is_none());
        assert_eq!(
            Mapping::parse("cus_1,not-a-uuid").unwrap_err(),
            "line 1: \"not-a-uuid\" is not a user id (uuid)"
        );
        assert!(Mapping::parse("bob,0b9f6f4e-6a3c-4d0e-9a53-0c1f0e3f6a01")
            .unwrap_err()
            .contains("neither a customer id"));
        assert_eq!(
            Mapping::parse("just-one-field").unwrap_err(),
            "line 1: expected KEY,USER_ID"
        );
    }
}
