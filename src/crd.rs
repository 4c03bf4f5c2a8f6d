//! The CustomResourceDefinition, generated from the Rust types: the one source
//! of truth for `crds/`, the Helm chart and client-side validation.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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
