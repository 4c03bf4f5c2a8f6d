//! The CustomResourceDefinition, generated from the Rust types: the one source
//! of truth for `crds/`, the Helm chart and client-side validation.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON, JSONSchemaProps,
};
use kube::CustomResourceExt;

use crate::resource::VisitCounterApp;

/// The CRD of `VisitCounterApp`.
pub fn definition() -> CustomResourceDefinition {
    let mut crd = VisitCounterApp::crd();
    default_status(&mut crd);
    crd
}

/// Until the operator first writes a status, the API server shows one that
/// says no spec was observed yet (`observedGeneration: -1`). Without it an
/// app has no status at all, which kstatus (what Flux and kpt wait with)
/// reads as Current: healthy before a single pod exists, and for as long as
/// the operator is down. With it kstatus reads InProgress.
fn default_status(crd: &mut CustomResourceDefinition) {
    let status = crd
        .spec
        .versions
        .first_mut()
        .and_then(|v| v.schema.as_mut())
        .and_then(|s| s.open_api_v3_schema.as_mut())
        .and_then(|s| s.properties.as_mut())
        .and_then(|p| p.get_mut("status"));
    let Some(status) = status else { return };
    status.default = Some(JSON(serde_json::json!({})));
    if let Some(generation) = status.properties.as_mut().and_then(|p| p.get_mut("observedGeneration")) {
        generation.default = Some(JSON(serde_json::json!(-1)));
    }
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
