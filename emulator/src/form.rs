//! Decoding of Stripe's `application/x-www-form-urlencoded` bodies with bracket notation.
//!
//! `metadata[user_id]=7&line_items[0][price]=p&expand[]=customer` becomes
//! `{"metadata":{"user_id":"7"},"line_items":{"0":{"price":"p"}},"expand":["customer"]}`.
//! Numeric indices stay object keys here on purpose: only the schema knows whether
//! `metadata[0]` is a map key or `line_items[0]` an array slot, so the validator turns
//! them into arrays where an array is expected (see [`normalize_arrays`] for the schema-less
//! variant). Every leaf is a string; types come from the schema, as on the real API.

use serde_json::{Map, Value};

/// A body or query string that cannot be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError(pub String);

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    /// `[]`: append a new array element.
    Append,
}

/// Parses a form-encoded string (percent-decoding, `+` as space) into a nested JSON object.
pub fn parse_form(input: &str) -> Result<Value, FormError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(input).map_err(|e| {
        FormError(format!(
            "Invalid request: the body could not be decoded ({e})"
        ))
    })?;
    let mut root = Value::Object(Map::new());
    for (key, value) in pairs {
        if key.is_empty() {
            // `&&` or a trailing `&` decode to nothing; a bare `=x` has no name at all.
            if value.is_empty() {
                continue;
            }
            return Err(FormError(
                "Invalid request: a parameter has an empty name".into(),
            ));
        }
        let segments = split_key(&key)?;
        insert(&mut root, &segments, value, &key)?;
    }
    Ok(root)
}

/// Splits `a[b][0][]` into `[Key(a), Key(b), Key(0), Append]`.
fn split_key(key: &str) -> Result<Vec<Segment>, FormError> {
    let malformed = || FormError(format!("Invalid request: malformed parameter name '{key}'"));
    let (base, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if base.is_empty() || base.contains(']') {
        return Err(malformed());
    }
    let mut segments = vec![Segment::Key(base.to_string())];
    while !rest.is_empty() {
        if !rest.starts_with('[') {
            return Err(malformed());
        }
        let close = rest.find(']').ok_or_else(malformed)?;
        let inner = &rest[1..close];
        if inner.contains('[') {
            return Err(malformed());
        }
        segments.push(if inner.is_empty() {
            Segment::Append
        } else {
            Segment::Key(inner.to_string())
        });
        rest = &rest[close + 1..];
    }
    Ok(segments)
}

fn conflict(key: &str) -> FormError {
    FormError(format!(
        "Invalid request: parameter '{key}' is given both as a value and as a nested parameter"
    ))
}

fn insert(slot: &mut Value, rest: &[Segment], value: String, key: &str) -> Result<(), FormError> {
    let Some((first, tail)) = rest.split_first() else {
        return match slot {
            // A repeated scalar keeps the last value, as Rack-style parsers do.
            Value::Null | Value::String(_) => {
                *slot = Value::String(value);
                Ok(())
            }
            _ => Err(conflict(key)),
        };
    };
    match first {
        Segment::Key(name) => {
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(map) = slot else {
                return Err(conflict(key));
            };
            let child = map.entry(name.clone()).or_insert(Value::Null);
            insert(child, tail, value, key)
        }
        Segment::Append => {
            if slot.is_null() {
                *slot = Value::Array(Vec::new());
            }
            let Value::Array(items) = slot else {
                return Err(conflict(key));
            };
            // `a[][x]=1&a[][y]=2` builds one element, `a[][x]=1&a[][x]=2` two: a new element
            // starts when the last one already has the key being set (the Rails convention).
            let reuse_last = match (items.last(), tail.first()) {
                (Some(Value::Object(last)), Some(Segment::Key(k))) => !last.contains_key(k),
                _ => false,
            };
            if !reuse_last {
                items.push(Value::Null);
            }
            let last = items.last_mut().expect("just ensured an element");
            insert(last, tail, value, key)
        }
    }
}

/// Whether every key of `map` is a decimal array index (and there is at least one).
pub fn is_index_map(map: &Map<String, Value>) -> bool {
    !map.is_empty()
        && map
            .keys()
            .all(|k| !k.is_empty() && k.len() < 10 && k.bytes().all(|b| b.is_ascii_digit()))
}

/// Converts an index map (`{"1":b,"0":a}`) into an array ordered by index (`[a,b]`).
/// Gaps are closed, as Stripe does for `line_items[0]…&line_items[5]…`.
pub fn index_map_to_array(map: Map<String, Value>) -> Vec<Value> {
    let mut entries: Vec<(u64, Value)> = map
        .into_iter()
        .map(|(k, v)| (k.parse::<u64>().unwrap_or(u64::MAX), v))
        .collect();
    entries.sort_by_key(|(i, _)| *i);
    entries.into_iter().map(|(_, v)| v).collect()
}

/// Schema-less normalisation: turns every index map into an array, recursively. Used where no
/// schema applies (request log of unknown routes) and by tests.
pub fn normalize_arrays(value: Value) -> Value {
    match value {
        Value::Object(map) if is_index_map(&map) => Value::Array(
            index_map_to_array(map)
                .into_iter()
                .map(normalize_arrays)
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalize_arrays(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_arrays).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_brackets_and_indices() {
        let v = parse_form(
            "mode=subscription&line_items[0][price]=price_a&line_items[0][quantity]=2\
             &subscription_data[metadata][user_id]=u1&metadata[k]=v&customer_update[name]=auto",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({
                "mode": "subscription",
                "line_items": {"0": {"price": "price_a", "quantity": "2"}},
                "subscription_data": {"metadata": {"user_id": "u1"}},
                "metadata": {"k": "v"},
                "customer_update": {"name": "auto"}
            })
        );
        assert_eq!(
            normalize_arrays(v)["line_items"],
            json!([{"price": "price_a", "quantity": "2"}])
        );
    }

    #[test]
    fn arrays_by_append_and_sorted_indices() {
        let v = parse_form("expand[]=customer&expand[]=subscription").unwrap();
        assert_eq!(v, json!({"expand": ["customer", "subscription"]}));
        let v = parse_form("a[10]=z&a[2]=y&a[0]=x").unwrap();
        assert_eq!(normalize_arrays(v), json!({"a": ["x", "y", "z"]}));
        let v = parse_form("d[][coupon]=c1&d[][promotion_code]=p1&d[][coupon]=c2").unwrap();
        assert_eq!(
            v,
            json!({"d": [{"coupon": "c1", "promotion_code": "p1"}, {"coupon": "c2"}]})
        );
    }

    #[test]
    fn percent_encoding_and_plus() {
        let v = parse_form(
            "success_url=https%3A%2F%2Fex.com%2Fok%3Fs%3D%7BCHECKOUT_SESSION_ID%7D\
             &metadata%5Bnote%5D=a+b%26c&name=J%C3%BCrgen",
        )
        .unwrap();
        assert_eq!(
            v["success_url"],
            "https://ex.com/ok?s={CHECKOUT_SESSION_ID}"
        );
        assert_eq!(v["metadata"]["note"], "a b&c");
        assert_eq!(v["name"], "Jürgen");
    }

    #[test]
    fn repeated_scalar_keeps_last_and_empty_values_survive() {
        let v = parse_form("a=1&a=2&b=&&").unwrap();
        assert_eq!(v, json!({"a": "2", "b": ""}));
    }

    #[test]
    fn malformed_and_conflicting_names() {
        assert!(parse_form("a[b=1").is_err());
        assert!(parse_form("a]b=1").is_err());
        assert!(parse_form("[x]=1").is_err());
        assert!(parse_form("a=1&a[b]=2").is_err());
        assert!(parse_form("a[b]=2&a=1").is_err());
        assert!(parse_form("=x").is_err());
    }
}
