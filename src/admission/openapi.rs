//! Turns the CRD's OpenAPI v3 structural schema into a JSON Schema that a
//! standard validator checks the way the API server does.
//!
//! The differences that matter: OpenAPI's `nullable`, Kubernetes'
//! `x-kubernetes-int-or-string`, `int32`/`int64` ranges (a plain validator
//! ignores `format`), and unknown fields (the API server rejects them under
//! `kubectl apply --validate=strict`, the default; a plain schema allows them).

use serde_json::{Map, Value, json};

/// A JSON Schema (draft 2020-12) equivalent to the structural `schema` of a
/// whole custom resource.
pub fn to_json_schema(schema: &Value) -> Value {
    let mut schema = schema.clone();
    // The API server accepts these at the root of every object whatever the
    // CRD's schema says; `metadata` is validated as ObjectMeta, not here.
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        properties.entry("apiVersion").or_insert(json!({"type": "string"}));
        properties.entry("kind").or_insert(json!({"type": "string"}));
        properties
            .entry("metadata")
            .or_insert(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    }
    convert(&mut schema);
    schema
}

fn convert(node: &mut Value) {
    let Some(object) = node.as_object_mut() else {
        return;
    };
    for key in ["properties", "patternProperties"] {
        if let Some(Value::Object(children)) = object.get_mut(key) {
            children.values_mut().for_each(convert);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = object.get_mut(key) {
            convert(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = object.get_mut(key) {
            branches.iter_mut().for_each(convert);
        }
    }

    let nullable = object.remove("nullable") == Some(Value::Bool(true));
    if object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        object.remove("anyOf");
        object.insert("type".into(), json!(["integer", "string"]));
    }
    integer_range(object);
    whole_number_bounds(object);
    if nullable {
        match object.get("type").cloned() {
            Some(Value::String(t)) => {
                object.insert("type".into(), json!([t, "null"]));
            }
            Some(Value::Array(mut types)) => {
                types.push("null".into());
                object.insert("type".into(), Value::Array(types));
            }
            _ => {}
        }
    }
    let preserves_unknown = object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if object.contains_key("properties") && !object.contains_key("additionalProperties") && !preserves_unknown {
        object.insert("additionalProperties".into(), Value::Bool(false));
    }
}

/// `format: int32` and `int64` bound the value, as the API server's decoding does.
fn integer_range(object: &mut Map<String, Value>) {
    let (min, max) = match object.get("format").and_then(Value::as_str) {
        Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
        Some("int64") => (i64::MIN, i64::MAX),
        _ => return,
    };
    object.entry("minimum").or_insert(min.into());
    object.entry("maximum").or_insert(max.into());
}

/// schemars writes bounds as floats (`0.0`); whole numbers read better in
/// messages.
fn whole_number_bounds(object: &mut Map<String, Value>) {
    for key in ["minimum", "maximum"] {
        if let Some(Value::Number(n)) = object.get(key)
            && let Some(f) = n.as_f64()
            && n.is_f64()
            && f.fract() == 0.0
            && f.abs() < 9.0e15
        {
            object.insert(key.into(), json!(f as i64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_int_or_string_accepts_both_and_null() {
        let schema = to_json_schema(&json!({
            "type": "object",
            "properties": {"q": {"x-kubernetes-int-or-string": true, "nullable": true, "anyOf": [{}, {}]}}
        }));
        assert_eq!(schema["properties"]["q"]["type"], json!(["integer", "string", "null"]));
        assert!(schema["properties"]["q"].get("anyOf").is_none());
    }

    #[test]
    fn objects_with_properties_reject_unknown_fields_unless_preserved() {
        let schema = to_json_schema(&json!({
            "type": "object",
            "properties": {
                "known": {"type": "object", "properties": {"a": {"type": "string"}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "map": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        }));
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["known"]["additionalProperties"], false);
        assert!(schema["properties"]["free"].get("additionalProperties").is_none());
        assert_eq!(
            schema["properties"]["map"]["additionalProperties"],
            json!({"type": "string"})
        );
    }

    #[test]
    fn int32_is_bounded_and_float_bounds_become_integers() {
        let schema = to_json_schema(&json!({"type": "integer", "format": "int32", "minimum": 0.0}));
        assert_eq!(schema["minimum"], json!(0));
        assert_eq!(schema["maximum"], json!(i32::MAX));
    }
}
