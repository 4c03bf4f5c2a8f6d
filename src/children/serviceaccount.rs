//! The pods' ServiceAccount, when the app asks the operator to create it.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{BuildError, app_name, child_meta};
use crate::resource::{VisitCounterApp, VisitCounterAppSpec};

/// The ServiceAccount the pods of the app `app_name` run as: the one the spec
/// names, else the app's own when the operator creates it, else none (the
/// namespace's `default`).
pub fn service_account_name(app_name: &str, spec: &VisitCounterAppSpec) -> Option<String> {
    match (&spec.service_account_name, spec.create_service_account) {
        (Some(name), _) => Some(name.clone()),
        (None, true) => Some(app_name.to_owned()),
        (None, false) => None,
    }
}

/// The ServiceAccount to keep, with `createServiceAccount`. Its token is
/// mounted as usual: agents such as Vault's authenticate pods with it.
pub fn desired_service_account(app: &VisitCounterApp) -> Result<Option<ServiceAccount>, BuildError> {
    if !app.spec.create_service_account {
        return Ok(None);
    }
    let Some(name) = service_account_name(app_name(app)?, &app.spec) else {
        return Ok(None);
    };
    Ok(Some(ServiceAccount {
        metadata: child_meta(app, name)?,
        ..ServiceAccount::default()
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::children::tests::app;

    #[test]
    fn no_service_account_unless_asked() {
        let plain = app("web", json!({}));
        assert_eq!(desired_service_account(&plain).unwrap(), None);
        assert_eq!(service_account_name("web", &plain.spec), None);
        let named = app("web", json!({"serviceAccountName": "internal-app"}));
        assert_eq!(desired_service_account(&named).unwrap(), None);
        assert_eq!(
            service_account_name("web", &named.spec).as_deref(),
            Some("internal-app")
        );
    }

    #[test]
    fn a_created_service_account_takes_the_named_or_the_apps_name() {
        let named = app(
            "web",
            json!({"serviceAccountName": "internal-app", "createServiceAccount": true}),
        );
        let account = desired_service_account(&named).unwrap().unwrap();
        assert_eq!(account.metadata.name.as_deref(), Some("internal-app"));
        assert_eq!(account.metadata.owner_references.unwrap()[0].name, "web");
        let unnamed = app("web", json!({"createServiceAccount": true}));
        let account = desired_service_account(&unnamed).unwrap().unwrap();
        assert_eq!(account.metadata.name.as_deref(), Some("web"));
        assert_eq!(service_account_name("web", &unnamed.spec).as_deref(), Some("web"));
    }
}
