//! What the 0.1.0 schema expects of this library. One shared library serves every installed
//! schema version, and between installing a new library and `ALTER EXTENSION stripe_billing
//! UPDATE` the 0.1.0 SQL still calls `normalize_event` (symbol `normalize_event_wrapper`) and
//! reads its 0.1.0 output. This keeps that contract, so webhooks arriving in that window still
//! apply; no SQL is generated for it (the 0.2.0 schema has `_normalize_event` instead).
//! Remove it once no supported upgrade starts at 0.1.0.
use crate::errors::raise;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::Value;
use stripe_billing_core::event;

/// The 0.1.0 normalised event: today's, plus the keys the 0.1.0 effects read.
#[pg_extern(immutable, strict, parallel_safe, sql = false)]
fn normalize_event(payload: &str) -> JsonB {
    let mut v = event::normalize_to_json(payload).unwrap_or_else(|e| {
        let code = match e {
            event::EventError::NotJson(_) => PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            event::EventError::NotAnEvent(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        };
        raise(code, e.to_string(), None, None)
    });
    let kind = v["object_type"].as_str().unwrap_or_default().to_string();
    let data = &mut v["data"];
    match kind.as_str() {
        "subscription" => {
            data["price_id"] = data["items"][0]["price_id"].clone();
            data["quantity"] = data["items"][0]["quantity"].clone();
        }
        "invoice" => {
            let lines: Vec<Value> = data["lines"].as_array().cloned().unwrap_or_default();
            let priced: Vec<&Value> = lines.iter().filter(|l| l["price_id"].is_string()).collect();
            let amount = |l: &Value| l["amount"].as_i64().unwrap_or(0);
            data["main_line"] = priced
                .iter()
                .filter(|l| l["proration"] == false)
                .max_by_key(|l| l["period_end"].as_i64().unwrap_or(i64::MIN))
                .map_or(Value::Null, |l| (*l).clone());
            data["upgrade_line"] = priced
                .iter()
                .filter(|l| amount(l) > 0)
                .max_by_key(|l| amount(l))
                .map_or(Value::Null, |l| (*l).clone());
            data["replaced_price_id"] = priced
                .iter()
                .find(|l| amount(l) < 0)
                .map_or(Value::Null, |l| l["price_id"].clone());
        }
        _ => {}
    }
    JsonB(v)
}
