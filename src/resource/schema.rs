//! Schemas for fields whose Rust type does not say enough for a structural CRD.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// A Kubernetes quantity (`100m`, `128Mi`, `1`): an integer or a string, which
/// must parse as a quantity.
pub fn quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        // A bound keeps the CEL rules that read it cheap in the API server's
        // cost estimate.
        "maxLength": 64,
        "x-kubernetes-validations": [{
            "rule": "isQuantity(string(self))",
            "message": "must be a Kubernetes quantity such as 100m, 128Mi or 1Gi",
        }],
    })
}

/// An integer or a string (`IntOrString`), without k8s-openapi's long description.
pub fn int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "maxLength": 64,
    })
}

/// A JSON object of any shape, kept as written.
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A map of label values, each a valid Kubernetes label value.
pub fn label_values(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
        },
    })
}

/// A list of `metav1.Condition`, merged by `type` under server-side apply.
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = Vec::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}
