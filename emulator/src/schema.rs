//! Validation of decoded form parameters against Stripe's request schemas, per API version.
//!
//! Two fixtures hold the schemas: `form_params_v2023-08-16.json` (the `form_body` of the
//! 2023-08-16 OpenAPI spec for the POST operations and the query parameters of the GETs) and
//! `form_params_v2025-03-31.basil.json` (derived from the request-parameter types of the npm
//! package stripe@18.0.0, which pins 2025-03-31.basil). A request is validated against the
//! schema of the version it is made with ([`Shape::of`] its `Stripe-Version`, else the
//! account's version): 2023-08-16 for every version before 2025-03-31, basil for basil and
//! later releases.
//!
//! The basil fixture has no `maxLength` (TypeScript types carry none). Where a parameter path
//! exists in both schemas, its `maxLength` is taken from the 2023-08-16 schema when loading
//! ([`copy_max_length`]); a parameter that only basil has is not length-checked.
//!
//! The validator understands the subset the fixtures use: `type`, `properties`, `required`,
//! `additionalProperties`, `enum`, `maxLength`, `anyOf` (mostly "value or `""` to unset"). It
//! returns the parameters with proper JSON types (booleans, integers, arrays), which the
//! business logic and the request log use.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::error::{one_of, ApiError};
use super::form::{index_map_to_array, is_index_map};
use super::render::Shape;

const LEGACY_PARAMS: &str = include_str!("../fixtures/form_params_v2023-08-16.json");
const BASIL_PARAMS: &str = include_str!("../fixtures/form_params_v2025-03-31.basil.json");

/// Stripe's limits on metadata maps (https://docs.stripe.com/metadata: 50 pairs, keys up to
/// 40 characters, values up to 500), not in the schemas.
const METADATA_MAX_KEYS: usize = 50;
const METADATA_KEY_MAX: usize = 40;
const METADATA_VALUE_MAX: usize = 500;

type Operations = HashMap<String, Value>;

fn operations(fixture: &str) -> Operations {
    let doc: Value = serde_json::from_str(fixture).expect("form params fixture is JSON");
    doc["operations"]
        .as_object()
        .expect("fixture has operations")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Operation schemas keyed like `"POST /v1/checkout/sessions"`, one set per API shape.
pub struct Schemas {
    legacy: Operations,
    basil: Operations,
}

impl Schemas {
    pub fn load() -> Self {
        let legacy = operations(LEGACY_PARAMS);
        let mut basil = operations(BASIL_PARAMS);
        for (key, schema) in basil.iter_mut() {
            if let Some(old) = legacy.get(key) {
                copy_max_length(schema, old);
            }
        }
        Self { legacy, basil }
    }

    /// The schema of `key` for requests made with an API version of `shape`.
    pub fn operation(&self, shape: Shape, key: &str) -> Option<&Value> {
        match shape {
            Shape::V2023 => self.legacy.get(key),
            Shape::Basil => self.basil.get(key),
        }
    }
}

/// The branches of a schema node: its `anyOf` minus the "`\"\"` to unset" marker, or itself.
fn branches_mut(schema: &mut Value) -> Vec<&mut Value> {
    if schema.get("anyOf").is_some() {
        schema["anyOf"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .filter(|b| !is_empty_marker(b))
            .collect()
    } else {
        vec![schema]
    }
}

fn branches(schema: &Value) -> Vec<&Value> {
    match schema["anyOf"].as_array() {
        Some(all) => all.iter().filter(|b| !is_empty_marker(b)).collect(),
        None => vec![schema],
    }
}

/// Copies `maxLength` from the 2023-08-16 schema `old` into the basil schema `new` wherever
/// both have the same parameter path (object properties, map values, array items, and the
/// `anyOf` branch of the same type).
pub fn copy_max_length(new: &mut Value, old: &Value) {
    let old_branches = branches(old);
    for branch in branches_mut(new) {
        let kind = branch["type"].clone();
        let Some(counterpart) = old_branches.iter().find(|o| o["type"] == kind) else {
            continue;
        };
        match kind.as_str() {
            Some("string") => {
                if let Some(max) = counterpart.get("maxLength") {
                    branch["maxLength"] = max.clone();
                }
            }
            Some("array") => copy_max_length(&mut branch["items"], &counterpart["items"]),
            Some("object") => {
                if let Some(props) = branch.get_mut("properties").and_then(Value::as_object_mut) {
                    for (name, prop) in props.iter_mut() {
                        if let Some(old_prop) = counterpart["properties"].get(name) {
                            copy_max_length(prop, old_prop);
                        }
                    }
                }
                if let (Some(extra), Some(old_extra)) = (
                    branch.get_mut("additionalProperties"),
                    counterpart.get("additionalProperties"),
                ) {
                    if extra.is_object() && old_extra.is_object() {
                        copy_max_length(extra, old_extra);
                    }
                }
            }
            _ => {}
        }
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
            // Stripe answers without a `code` here (stripe-node issue reported
            // `{"type","message":"Invalid integer: ","param":"amount"}`).
            s.parse::<i64>()
                .map(Value::from)
                .map_err(|_| ApiError::invalid(path, format!("Invalid integer: {s}")))
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
    // The key and value messages are Stripe's (stripe-php issue 246, Stripe staff); the one
    // for too many keys is the emulator's.
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
        if let Some(v) = value
            .as_str()
            .filter(|v| v.chars().count() > METADATA_VALUE_MAX)
        {
            return Err(ApiError::invalid(
                path,
                format!(
                    "Invalid val: {} must be a string under {METADATA_VALUE_MAX} characters",
                    abbreviate(v)
                ),
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
