//! At start: is the installed CRD the one this operator was built with?
//! Helm never upgrades the CRDs in a chart's `crds/`, so an older one is a
//! real possibility after an upgrade, and its missing fields would be
//! pruned from every app without a word.
//!
//! A newer CRD (the operator was downgraded, the CRD was not) stops the
//! operator too: apps may then set fields this operator does not know, which
//! it would silently ignore while the user believes them in effect. Its
//! message says to run the operator that matches the CRD, or to apply this
//! operator's CRD knowingly.
//!
//! The comparison is against the CRD as the API server stores and returns
//! it; `tests/e2e/` shows that it passes there, and fails on an older one.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use serde_json::Value;

use crate::{
    controller::runtime::diff::{contains, first_difference},
    crd,
    resource::VERSION,
};

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
    #[error(
        "the installed CRD {name} is newer than this operator ({}): it has {path}, which this operator does not \
         know and would ignore. Run the operator version that installed it, or apply this operator's CRD \
         (fields it does not have are then pruned from every app): {UPGRADE_COMMAND}",
        env!("CARGO_PKG_VERSION")
    )]
    Newer { name: String, path: String },
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
    // What ours has that theirs lacks or holds otherwise: theirs is older
    // (or other). Only what theirs has beyond ours: theirs is newer.
    let lacking = first_difference(&theirs, &wanted, "openAPIV3Schema");
    let beyond = first_difference(&wanted, &theirs, "openAPIV3Schema");
    let ours_sub = serde_json::to_value(&ours.spec.versions[0].subresources).unwrap_or(Value::Null);
    let theirs_sub = serde_json::to_value(&version.subresources).unwrap_or(Value::Null);
    match (lacking, beyond) {
        (Some(path), _) => Err(CrdProblem::Outdated { name, path }),
        (None, Some(path)) => Err(CrdProblem::Newer { name, path }),
        _ if !contains(&theirs_sub, &ours_sub, "subresources") => Err(CrdProblem::Outdated {
            name,
            path: "subresources".into(),
        }),
        _ => Ok(()),
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
        crd::spec_fields_mut(&mut old).unwrap().remove("minReadySeconds");
        let error = compare(&old).unwrap_err();
        assert!(
            matches!(&error, CrdProblem::Outdated { path, .. } if path.contains("minReadySeconds")),
            "{error}"
        );
        assert!(error.to_string().contains(UPGRADE_COMMAND));
    }

    #[test]
    fn a_crd_with_a_field_this_operator_lacks_is_newer_and_says_so() {
        let mut newer = crd::definition();
        let fields = crd::spec_fields_mut(&mut newer).unwrap();
        let field = fields["minReadySeconds"].clone();
        fields.insert("futureField".into(), field);
        let error = compare(&newer).unwrap_err();
        assert!(
            matches!(&error, CrdProblem::Newer { path, .. } if path.contains("futureField")),
            "{error}"
        );
        assert!(error.to_string().contains("newer than this operator"), "{error}");
    }

    #[test]
    fn a_crd_that_stopped_serving_the_version_is_refused() {
        let mut old = crd::definition();
        old.spec.versions[0].served = false;
        assert!(matches!(compare(&old), Err(CrdProblem::VersionNotServed { .. })));
    }
}
