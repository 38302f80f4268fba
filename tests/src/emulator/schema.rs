//! Validation of decoded form parameters against Stripe's OpenAPI form schemas.
//!
//! The schemas are the `form_body` of the 2023-08-16 spec for the three POST operations and
//! the query parameters of the GETs, kept in `tests/fixtures/stripe/form_params_v2023-08-16.json`.
//! The validator understands the subset the spec uses there: `type`, `properties`,
//! `required`, `additionalProperties`, `enum`, `maxLength`, `anyOf` (mostly "value or `""` to
//! unset"). It returns the parameters with proper JSON types (booleans, integers, arrays),
//! which the business logic and the request log use.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::error::{one_of, ApiError};
use super::form::{index_map_to_array, is_index_map};

const FORM_PARAMS: &str = include_str!("../../fixtures/stripe/form_params_v2023-08-16.json");

/// Stripe's limits on metadata maps (documented, not in the OpenAPI schema).
const METADATA_MAX_KEYS: usize = 50;
const METADATA_KEY_MAX: usize = 40;
const METADATA_VALUE_MAX: usize = 500;

/// Operation schemas keyed like `"POST /v1/checkout/sessions"`.
pub struct Schemas {
    operations: HashMap<String, Value>,
}

impl Schemas {
    pub fn load() -> Self {
        let doc: Value = serde_json::from_str(FORM_PARAMS).expect("form params fixture is JSON");
        let operations = doc["operations"]
            .as_object()
            .expect("fixture has operations")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self { operations }
    }

    pub fn operation(&self, key: &str) -> Option<&Value> {
        self.operations.get(key)
    }
}

/// Validates the whole parameter object of one request.
pub fn validate(schema: &Value, params: &Value) -> Result<Value, ApiError> {
    check(schema, params, "")
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}[{key}]")
    }
}

fn is_empty_marker(schema: &Value) -> bool {
    schema["type"] == "string"
        && schema["enum"]
            .as_array()
            .is_some_and(|e| e.len() == 1 && e[0] == "")
}

/// Which JSON shape a schema branch expects, to pick the `anyOf` branch a value is meant for.
fn kind_fits(schema: &Value, value: &Value) -> bool {
    match schema["type"].as_str() {
        Some("object") => value.is_object() && !is_index_map(value.as_object().unwrap()),
        Some("array") => value.is_array() || value.as_object().is_some_and(is_index_map),
        Some(_) => value.is_string(),
        None => true,
    }
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<Value, ApiError> {
    if let Some(branches) = schema["anyOf"].as_array() {
        if value == "" && branches.iter().any(is_empty_marker) {
            return Ok(Value::String(String::new()));
        }
        let real: Vec<&Value> = branches.iter().filter(|b| !is_empty_marker(b)).collect();
        let branch = real
            .iter()
            .find(|b| kind_fits(b, value))
            .or(real.first())
            .copied()
            .unwrap_or(&Value::Null);
        return check(branch, value, path);
    }
    let enum_values: Option<Vec<String>> = schema["enum"].as_array().map(|e| {
        e.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    });
    if value == ""
        && !enum_values
            .as_ref()
            .is_some_and(|e| e.iter().any(|v| v.is_empty()))
    {
        return Err(ApiError::empty_param(path));
    }
    match schema["type"].as_str() {
        Some("object") => check_object(schema, value, path),
        Some("array") => check_array(schema, value, path),
        Some("string") => {
            let s = expect_string(value, path, "string")?;
            if let Some(allowed) = &enum_values {
                if !allowed.iter().any(|a| a == s) {
                    let listed: Vec<String> =
                        allowed.iter().filter(|a| !a.is_empty()).cloned().collect();
                    return Err(ApiError::invalid(
                        path,
                        format!("Invalid {path}: must be one of {}", one_of(&listed)),
                    )
                    .code("parameter_invalid_string"));
                }
            }
            if let Some(max) = schema["maxLength"].as_u64() {
                if s.chars().count() as u64 > max {
                    return Err(ApiError::invalid(
                        path,
                        format!(
                            "Invalid string: {}; must be at most {max} characters",
                            abbreviate(s)
                        ),
                    ));
                }
            }
            Ok(Value::String(s.to_string()))
        }
        Some("integer") => {
            let s = expect_string(value, path, "integer")?;
            s.parse::<i64>().map(Value::from).map_err(|_| {
                ApiError::invalid(path, format!("Invalid integer: {s}"))
                    .code("parameter_invalid_integer")
            })
        }
        Some("number") => {
            let s = expect_string(value, path, "decimal")?;
            s.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| ApiError::invalid(path, format!("Invalid decimal: {s}")))
        }
        Some("boolean") => match expect_string(value, path, "boolean")? {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            other => Err(ApiError::invalid(path, format!("Invalid boolean: {other}"))),
        },
        _ => Ok(value.clone()),
    }
}

/// Stripe shortens long values in messages: `Lottery Re...iting line`.
fn abbreviate(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 23 {
        return s.to_string();
    }
    let head: String = chars[..10].iter().collect();
    let tail: String = chars[chars.len() - 10..].iter().collect();
    format!("{head}...{tail}")
}

fn expect_string<'v>(value: &'v Value, path: &str, what: &str) -> Result<&'v str, ApiError> {
    value.as_str().ok_or_else(|| {
        ApiError::invalid(
            path,
            format!("Invalid {what}: {path} was given nested parameters, expected a single value"),
        )
    })
}

fn check_object(schema: &Value, value: &Value, path: &str) -> Result<Value, ApiError> {
    let map = match value {
        Value::Object(map) => map,
        _ => {
            return Err(ApiError::invalid(
                path,
                format!(
                    "Invalid object: {path} must be given as nested parameters ({path}[key]=value)"
                ),
            ))
        }
    };
    let props = schema["properties"].as_object();
    let additional = schema.get("additionalProperties").filter(|a| !a.is_null());
    // Unknown parameters are reported before anything else, as the real API does.
    if additional.is_none() {
        if let Some(unknown) = map
            .keys()
            .find(|k| !props.is_some_and(|p| p.contains_key(*k)))
        {
            return Err(ApiError::unknown_param(&child_path(path, unknown)));
        }
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().unwrap_or_default();
        if !map.contains_key(name) {
            return Err(ApiError::missing_param(&child_path(path, name)));
        }
    }
    if additional.is_some() && props.is_none() {
        check_metadata_limits(map, path)?;
    }
    // A metadata map (free keys, string values): `metadata[k]=` unsets `k`, which Stripe
    // accepts on every call, so an empty value is not `parameter_invalid_empty` here.
    let string_values = props.is_none() && additional.is_some_and(|a| a["type"] == "string");
    let mut out = Map::new();
    for (key, child) in map {
        if string_values && child == "" {
            out.insert(key.clone(), Value::String(String::new()));
            continue;
        }
        let sub = props
            .and_then(|p| p.get(key))
            .or(additional)
            .expect("unknown keys were rejected above");
        let sub = if sub.is_boolean() { &Value::Null } else { sub };
        out.insert(key.clone(), check(sub, child, &child_path(path, key))?);
    }
    Ok(Value::Object(out))
}

fn check_metadata_limits(map: &Map<String, Value>, path: &str) -> Result<(), ApiError> {
    if map.len() > METADATA_MAX_KEYS {
        return Err(ApiError::invalid(
            path,
            format!("Invalid {path}: it can have at most {METADATA_MAX_KEYS} keys"),
        ));
    }
    for (key, value) in map {
        if key.chars().count() > METADATA_KEY_MAX {
            return Err(ApiError::invalid(
                path,
                format!("Invalid key: {key} must be a string under {METADATA_KEY_MAX} characters"),
            ));
        }
        if value
            .as_str()
            .is_some_and(|v| v.chars().count() > METADATA_VALUE_MAX)
        {
            return Err(ApiError::invalid(
                child_path(path, key),
                format!("Invalid value for {path}[{key}]: must be at most {METADATA_VALUE_MAX} characters"),
            ));
        }
    }
    Ok(())
}

fn check_array(schema: &Value, value: &Value, path: &str) -> Result<Value, ApiError> {
    let items: Vec<Value> = match value {
        Value::Array(items) => items.clone(),
        Value::Object(map) if is_index_map(map) => index_map_to_array(map.clone()),
        _ => {
            return Err(ApiError::invalid(
                path,
                format!("Invalid array: {path} must be given as {path}[0]=… or {path}[]=…"),
            ))
        }
    };
    let item_schema = &schema["items"];
    items
        .iter()
        .enumerate()
        .map(|(i, item)| check(item_schema, item, &format!("{path}[{i}]")))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::form::parse_form;
    use serde_json::json;

    fn checkout(body: &str) -> Result<Value, ApiError> {
        let schemas = Schemas::load();
        let op = schemas.operation("POST /v1/checkout/sessions").unwrap();
        validate(op, &parse_form(body).unwrap())
    }

    const BASE: &str = "success_url=https://x/ok&mode=subscription&line_items[0][price]=price_a";

    #[test]
    fn accepts_and_types_a_realistic_body() {
        let v = checkout(&format!(
            "{BASE}&line_items[0][quantity]=1&allow_promotion_codes=true&metadata[user_id]=u\
             &subscription_data[metadata][tokens]=100&tax_id_collection[enabled]=true\
             &expand[]=subscription&customer_update[name]=auto"
        ))
        .unwrap();
        assert_eq!(
            v["line_items"],
            json!([{"price": "price_a", "quantity": 1}])
        );
        assert_eq!(v["allow_promotion_codes"], json!(true));
        assert_eq!(v["tax_id_collection"]["enabled"], json!(true));
        assert_eq!(v["subscription_data"]["metadata"]["tokens"], "100");
        assert_eq!(v["expand"], json!(["subscription"]));
    }

    #[test]
    fn unknown_parameter_is_named_like_stripe() {
        let e = checkout(&format!("{BASE}&line_items[0][pricee]=x")).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("parameter_unknown"));
        assert_eq!(e.param.as_deref(), Some("line_items[0][pricee]"));
        assert_eq!(
            e.message,
            "Received unknown parameter: line_items[0][pricee]"
        );
        let e = checkout(&format!("{BASE}&subscription_data[metdata][a]=b")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("subscription_data[metdata]"));
        let e = checkout(&format!("{BASE}&colour=red")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("colour"));
    }

    #[test]
    fn bad_enum_and_types() {
        let e = checkout("success_url=https://x&mode=subscriptions").unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.param.as_deref(), Some("mode"));
        assert_eq!(e.code.as_deref(), Some("parameter_invalid_string"));
        assert!(
            e.message.contains("payment, setup, or subscription"),
            "{}",
            e.message
        );
        let e = checkout(&format!("{BASE}&customer_update[name]=always")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("customer_update[name]"));
        let e = checkout(&format!("{BASE}&allow_promotion_codes=yes")).unwrap_err();
        assert_eq!(e.message, "Invalid boolean: yes");
        let e = checkout(&format!("{BASE}&line_items[0][quantity]=two")).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("parameter_invalid_integer"));
        assert_eq!(e.param.as_deref(), Some("line_items[0][quantity]"));
        let e = checkout(&format!("{BASE}&metadata=x")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("metadata"));
        let e = checkout("success_url=https://x&mode[x]=1").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("mode"));
    }

    #[test]
    fn missing_required_and_empty_values() {
        let e = checkout("mode=payment").unwrap_err();
        assert_eq!(e.code.as_deref(), Some("parameter_missing"));
        assert_eq!(e.param.as_deref(), Some("success_url"));
        let e = checkout(&format!("{BASE}&tax_id_collection[x]=1")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tax_id_collection[x]"));
        let e = checkout(&format!("{BASE}&tax_id_collection[enabled]=")).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("parameter_invalid_empty"));
        let e = checkout(&format!("{BASE}&client_reference_id=")).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("parameter_invalid_empty"));
    }

    #[test]
    fn max_length_and_metadata_limits() {
        let long = "x".repeat(201);
        let e = checkout(&format!("{BASE}&client_reference_id={long}")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("client_reference_id"));
        assert!(
            e.message.ends_with("must be at most 200 characters"),
            "{}",
            e.message
        );
        let key = "k".repeat(41);
        assert!(checkout(&format!("{BASE}&metadata[{key}]=v")).is_err());
        let value = "v".repeat(501);
        assert!(checkout(&format!("{BASE}&metadata[k]={value}")).is_err());
    }

    #[test]
    fn customer_metadata_may_be_unset_with_empty_string() {
        let schemas = Schemas::load();
        let op = schemas.operation("POST /v1/customers").unwrap();
        let v = validate(op, &parse_form("metadata=&email=a@b.c").unwrap()).unwrap();
        assert_eq!(v["metadata"], "");
        let v = validate(op, &parse_form("metadata[a]=1&address[city]=X").unwrap()).unwrap();
        assert_eq!(v["address"]["city"], "X");
        assert!(validate(op, &parse_form("address[town]=X").unwrap()).is_err());
    }

    #[test]
    fn empty_metadata_values_unset_keys() {
        let v = checkout(&format!(
            "{BASE}&metadata[gone]=&metadata[kept]=v&subscription_data[metadata][x]="
        ))
        .unwrap();
        assert_eq!(v["metadata"], json!({"gone": "", "kept": "v"}));
        assert_eq!(v["subscription_data"]["metadata"], json!({"x": ""}));
        let schemas = Schemas::load();
        let op = schemas.operation("POST /v1/customers").unwrap();
        let v = validate(op, &parse_form("metadata[a]=&email=a@b.c").unwrap()).unwrap();
        assert_eq!(v["metadata"], json!({"a": ""}));
        // Only metadata values: other empty strings still cannot be unset on create.
        let e = checkout(&format!("{BASE}&metadata[k]=&client_reference_id=")).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("parameter_invalid_empty"));
        assert_eq!(e.param.as_deref(), Some("client_reference_id"));
        // A nested value is still not a string.
        let e = checkout(&format!("{BASE}&metadata[k][x]=1")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("metadata[k]"));
    }
}
