//! At start: is the installed CRD the one this operator was built with?
//! Helm never upgrades the CRDs in a chart's `crds/`, so an older one is a
//! real possibility after an upgrade, and its missing fields would be
//! pruned from every app without a word.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use serde_json::Value;

use crate::{controller::plan::contains, crd, resource::VERSION};

/// The command that installs or upgrades the CRD.
pub const UPGRADE_COMMAND: &str = "visitcounter crd | kubectl apply --server-side -f -";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrdProblem {
    #[error("the CRD {name} is not installed; install it with: {UPGRADE_COMMAND}")]
    Missing { name: String },
    #[error(
        "the installed CRD {name} does not serve version {VERSION}, which this operator ({}) uses; \
         upgrade it with: {UPGRADE_COMMAND}",
        env!("CARGO_PKG_VERSION")
    )]
    VersionNotServed { name: String },
    #[error(
        "the installed CRD {name} is not the one this operator ({}) was built with: its schema differs at {path}. \
         Helm does not upgrade CRDs; upgrade it with: {UPGRADE_COMMAND}",
        env!("CARGO_PKG_VERSION")
    )]
    Outdated { name: String, path: String },
    #[error("cannot read the CRD {name} (the operator needs `get` on customresourcedefinitions): {message}")]
    Unreadable { name: String, message: String },
}

/// Compares an installed CRD with the built-in one. Pure.
pub fn compare(installed: &CustomResourceDefinition) -> Result<(), CrdProblem> {
    let ours = crd::definition();
    let name = ours.metadata.name.clone().unwrap_or_default();
    let Some(version) = installed.spec.versions.iter().find(|v| v.name == VERSION && v.served) else {
        return Err(CrdProblem::VersionNotServed { name });
    };
    let theirs = serde_json::to_value(version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()))
        .unwrap_or(Value::Null);
    let wanted = crd::openapi_schema();
    let path = crate::controller::plan::first_difference(&theirs, &wanted, "openAPIV3Schema")
        .or_else(|| crate::controller::plan::first_difference(&wanted, &theirs, "openAPIV3Schema"));
    let ours_sub = serde_json::to_value(&ours.spec.versions[0].subresources).unwrap_or(Value::Null);
    let theirs_sub = serde_json::to_value(&version.subresources).unwrap_or(Value::Null);
    match path {
        Some(path) => Err(CrdProblem::Outdated { name, path }),
        None if !contains(&theirs_sub, &ours_sub, "subresources") => Err(CrdProblem::Outdated {
            name,
            path: "subresources".into(),
        }),
        None => Ok(()),
    }
}

/// Reads the installed CRD and compares it.
pub async fn check_installed(client: &Client) -> Result<(), CrdProblem> {
    let name = crd::definition().metadata.name.unwrap_or_default();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.get_opt(&name).await {
        Ok(Some(installed)) => compare(&installed),
        Ok(None) => Err(CrdProblem::Missing { name }),
        Err(error) => Err(CrdProblem::Unreadable {
            name,
            message: error.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_crd_passes() {
        assert_eq!(compare(&crd::definition()), Ok(()));
    }

    #[test]
    fn a_crd_without_a_new_field_is_outdated_and_says_where_and_what_to_run() {
        let mut old = crd::definition();
        let schema = old.spec.versions[0]
            .schema
            .as_mut()
            .unwrap()
            .open_api_v3_schema
            .as_mut()
            .unwrap();
        let spec = schema.properties.as_mut().unwrap().get_mut("spec").unwrap();
        spec.properties.as_mut().unwrap().remove("minReadySeconds");
        let error = compare(&old).unwrap_err();
        assert!(
            matches!(&error, CrdProblem::Outdated { path, .. } if path.contains("minReadySeconds")),
            "{error}"
        );
        assert!(error.to_string().contains(UPGRADE_COMMAND));
    }

    #[test]
    fn a_crd_that_stopped_serving_the_version_is_refused() {
        let mut old = crd::definition();
        old.spec.versions[0].served = false;
        assert!(matches!(compare(&old), Err(CrdProblem::VersionNotServed { .. })));
    }
}
