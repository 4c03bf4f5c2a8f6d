//! The CustomResourceDefinition, generated from the Rust types: the one source
//! of truth for `crds/`, the Helm chart and client-side validation.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSONSchemaProps};
use kube::CustomResourceExt;

use crate::resource::VisitCounterApp;

/// The CRD of `VisitCounterApp`.
pub fn definition() -> CustomResourceDefinition {
    VisitCounterApp::crd()
}

/// The `openAPIV3Schema` of the CRD's only version, as JSON.
pub fn openapi_schema() -> serde_json::Value {
    let crd = definition();
    let schema = crd
        .spec
        .versions
        .into_iter()
        .next()
        .and_then(|v| v.schema)
        .and_then(|s| s.open_api_v3_schema);
    // The derive always emits a schema for a derived (not manual) CRD.
    serde_json::to_value(schema).unwrap_or_default()
}

/// The CRD as YAML, exactly as committed in `crds/visitcounterapp.yaml`.
pub fn yaml() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(&definition())
}

/// The schemas of `spec`'s fields in a CRD of this resource, to change: for
/// tests that install an older or a newer CRD than this operator's.
pub fn spec_fields_mut(crd: &mut CustomResourceDefinition) -> Option<&mut BTreeMap<String, JSONSchemaProps>> {
    let schema = crd
        .spec
        .versions
        .first_mut()?
        .schema
        .as_mut()?
        .open_api_v3_schema
        .as_mut()?;
    schema.properties.as_mut()?.get_mut("spec")?.properties.as_mut()
}
