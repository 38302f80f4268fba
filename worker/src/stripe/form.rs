//! Stripe's request encoding: `application/x-www-form-urlencoded` with nested objects and
//! arrays in bracket notation (`line_items[0][price]=...`, `metadata[user_id]=...`).
//!
//! Parameters are built as JSON (readable with `json!`) and flattened here; nulls are left
//! out, because Stripe reads an empty value as "unset" and we never mean that.

use serde_json::Value;

/// Flattens a JSON object into `(name, value)` pairs in bracket notation, keys sorted.
/// A non-object top level has no parameter names and yields nothing.
pub fn flatten(params: &Value) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    if let Value::Object(map) = params {
        for (key, value) in map {
            push(&mut pairs, key.clone(), value);
        }
    }
    pairs
}

fn push(pairs: &mut Vec<(String, String)>, name: String, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bool(b) => pairs.push((name, b.to_string())),
        Value::Number(n) => pairs.push((name, n.to_string())),
        Value::String(s) => pairs.push((name, s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                push(pairs, format!("{name}[{i}]"), item);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                push(pairs, format!("{name}[{key}]"), item);
            }
        }
    }
}

/// The request body for `params`.
pub fn encode(params: &Value) -> String {
    // Serialising a list of string pairs cannot fail; the fallback is unreachable.
    serde_urlencoded::to_string(flatten(params)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_objects_and_arrays_use_brackets() {
        let params = json!({
            "mode": "payment",
            "line_items": [{"price": "price_1", "quantity": 2}, {"price": "price_2", "quantity": 1}],
            "metadata": {"user_id": "u1", "tokens": "500"},
            "subscription_data": {"metadata": {"user_id": "u1"}},
            "allow_promotion_codes": true,
            "coupon": null,
        });
        assert_eq!(
            flatten(&params),
            vec![
                ("allow_promotion_codes".into(), "true".into()),
                ("line_items[0][price]".into(), "price_1".into()),
                ("line_items[0][quantity]".into(), "2".into()),
                ("line_items[1][price]".into(), "price_2".into()),
                ("line_items[1][quantity]".into(), "1".into()),
                ("metadata[tokens]".into(), "500".into()),
                ("metadata[user_id]".into(), "u1".into()),
                ("mode".into(), "payment".into()),
                ("subscription_data[metadata][user_id]".into(), "u1".into()),
            ]
        );
    }

    #[test]
    fn encoding_escapes_names_and_values() {
        let body = encode(&json!({
            "success_url": "https://app.test/ok?session={CHECKOUT_SESSION_ID}&x=1",
            "metadata": {"note": "a b+c"},
        }));
        assert_eq!(
            body,
            "metadata%5Bnote%5D=a+b%2Bc&success_url=https%3A%2F%2Fapp.test%2Fok%3Fsession%3D%7BCHECKOUT_SESSION_ID%7D%26x%3D1"
        );
        // And it decodes back to the same pairs.
        let back: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
        assert_eq!(back[0], ("metadata[note]".into(), "a b+c".into()));
    }

    #[test]
    fn non_objects_and_empty_containers_yield_nothing() {
        assert!(flatten(&json!("x")).is_empty());
        assert!(flatten(&json!({"a": [], "b": {}, "c": null})).is_empty());
        assert_eq!(encode(&json!({})), "");
    }
}
