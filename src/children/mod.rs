//! Pure builders: from one `VisitCounterApp` to the children the operator
//! applies. No client, no clock, no I/O, so each builder is unit-tested and
//! `render` prints exactly what the operator would apply.

mod configmap;
mod route;
mod service;
mod serviceaccount;
mod shadow;
mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Service, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::Resource;

use crate::resource::{UpdateStrategyType, VisitCounterApp};

pub use configmap::{CONFIG_JSON_KEY, desired_config_map, is_config_map_of};
pub use route::{
    Backend, ROUTE_API_VERSION, ROUTE_KIND, Traffic, Versions, ab_header_match, canary_service_name, desired_traffic,
    set_ab_rules, set_backends, stable_service_name,
};
pub use service::{desired_headless_service, desired_preview_service, desired_service, preview_service_name};
pub use serviceaccount::{desired_service_account, service_account_name};
pub use shadow::{desired_shadow_service, shadow_name, shadow_statefulset};
pub use statefulset::{CONFIG_MOUNT_PATH, desired_statefulset};

/// Image of the apps whose spec names none: this operator's own image, which
/// runs `visitcounter serve`.
pub const DEFAULT_APP_IMAGE: &str = concat!("visitcounter/visitcounter:", env!("CARGO_PKG_VERSION"));

/// `app.kubernetes.io/name` of every app's children.
pub const APP_NAME_LABEL_VALUE: &str = "visitcounter";
/// `app.kubernetes.io/managed-by` of every app's children.
pub const MANAGED_BY: &str = "visitcounter-operator";

/// Settings that come from the operator, not from the app.
#[derive(Clone, Debug)]
pub struct BuildSettings {
    /// Image of apps whose spec names none.
    pub default_image: String,
}

impl Default for BuildSettings {
    fn default() -> Self {
        Self {
            default_image: DEFAULT_APP_IMAGE.into(),
        }
    }
}

/// Why an app's children cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("metadata.name is required")]
    MissingName,
    #[error("spec.config.json must be a JSON object")]
    ConfigNotAnObject,
}

/// Everything the operator keeps for one app, in the order it applies them:
/// what the pods mount and the Services they are reached by come before the
/// StatefulSet.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// Only with `createServiceAccount`.
    pub service_account: Option<ServiceAccount>,
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub service: Service,
    /// Under `BlueGreen`, the StatefulSet of the new template beside the
    /// serving one, and the Service that reaches it (`rollout::blue_green`).
    pub preview: Option<Preview>,
    /// Under `Shadow`, the shadow's Service and, while a new template waits
    /// for promotion, its StatefulSet (`rollout::shadow`).
    pub shadow: Option<Preview>,
    /// With `spec.traffic`, the HTTPRoute and the Services per version.
    pub traffic: Option<Traffic>,
    pub stateful_set: StatefulSet,
}

/// A second StatefulSet of the new template (a blue/green app's preview, or
/// a shadow) and its Service; the StatefulSet only while a rollout is under
/// way.
#[derive(Clone, Debug, PartialEq)]
pub struct Preview {
    pub service: Service,
    pub stateful_set: Option<StatefulSet>,
}

/// Builds all the children of `app`.
pub fn desired_children(app: &VisitCounterApp, settings: &BuildSettings) -> Result<Children, BuildError> {
    let config_map = desired_config_map(app)?;
    Ok(Children {
        service_account: desired_service_account(app)?,
        stateful_set: desired_statefulset(app, settings, &config_map)?,
        headless_service: desired_headless_service(app)?,
        service: desired_service(app)?,
        preview: match app.spec.update_strategy.type_ {
            UpdateStrategyType::BlueGreen => Some(Preview {
                service: desired_preview_service(app)?,
                stateful_set: None,
            }),
            _ => None,
        },
        shadow: match app.spec.update_strategy.type_ {
            UpdateStrategyType::Shadow => Some(Preview {
                service: desired_shadow_service(app)?,
                stateful_set: None,
            }),
            _ => None,
        },
        traffic: desired_traffic(app)?,
        config_map,
    })
}

/// The app's name, which every child name derives from.
pub fn app_name(app: &VisitCounterApp) -> Result<&str, BuildError> {
    app.metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(BuildError::MissingName)
}

/// Name of a blue/green app's second StatefulSet (`rollout::blue_green`).
pub fn green_statefulset_name(app: &str) -> String {
    format!("{app}-green")
}

/// Name of the headless Service that gives each pod its DNS name.
pub fn headless_service_name(app: &str) -> String {
    format!("{app}-headless")
}

/// The label that names the app on each of its children and pods.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Labels that never change for the life of the app: the StatefulSet selector
/// and the Services' selectors use these and nothing else, because a
/// StatefulSet's selector is immutable.
pub fn selector_labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME_LABEL_VALUE.to_owned()),
        (INSTANCE_LABEL.to_owned(), app.to_owned()),
    ])
}

/// Labels of every child object.
pub fn common_labels(app: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(app);
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels
}

/// The selector of the app's pods as a label-selector string, for the scale
/// subresource.
pub fn selector_string(app: &str) -> String {
    selector_labels(app)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Metadata of a child named `name`: same namespace as the app, the common
/// labels, and a controller owner reference once the app has a uid (it has none
/// when rendered from a file).
fn child_meta(app: &VisitCounterApp, name: String) -> Result<ObjectMeta, BuildError> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: app.metadata.namespace.clone(),
        labels: Some(common_labels(app_name(app)?)),
        owner_references: owner_reference(app).map(|o| vec![o]),
        ..ObjectMeta::default()
    })
}

fn owner_reference(app: &VisitCounterApp) -> Option<OwnerReference> {
    app.metadata.uid.as_ref()?;
    app.controller_owner_ref(&())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resource::VisitCounterAppSpec;

    /// An app as the API server would hand it over: every schema default
    /// applied, with a uid.
    pub fn app(name: &str, spec: serde_json::Value) -> VisitCounterApp {
        let spec: VisitCounterAppSpec = serde_json::from_value(spec).expect("test spec deserializes");
        let mut app = VisitCounterApp::new(name, spec);
        app.metadata.namespace = Some("shop".into());
        app.metadata.uid = Some("0d9c5b41-2f0b-4c39-a0f3-7d7d5a1c2f10".into());
        app
    }

    #[test]
    fn every_child_is_owned_by_the_app_when_it_has_a_uid() {
        let children = desired_children(&app("web", serde_json::json!({})), &BuildSettings::default()).unwrap();
        let metas = [
            &children.config_map.metadata,
            &children.headless_service.metadata,
            &children.service.metadata,
            &children.stateful_set.metadata,
        ];
        for meta in metas {
            let owners = meta.owner_references.as_ref().expect("owner references");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "VisitCounterApp");
            assert_eq!(owners[0].name, "web");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("shop"));
            assert_eq!(
                meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
                MANAGED_BY
            );
        }
    }

    #[test]
    fn an_app_without_uid_gets_no_owner_reference() {
        let mut app = app("web", serde_json::json!({}));
        app.metadata.uid = None;
        let children = desired_children(&app, &BuildSettings::default()).unwrap();
        assert_eq!(children.stateful_set.metadata.owner_references, None);
    }

    #[test]
    fn an_app_without_name_is_an_error_not_a_panic() {
        let mut app = app("web", serde_json::json!({}));
        app.metadata.name = None;
        assert_eq!(
            desired_children(&app, &BuildSettings::default()),
            Err(BuildError::MissingName)
        );
    }

    #[test]
    fn selector_string_lists_only_the_stable_labels() {
        assert_eq!(
            selector_string("web"),
            "app.kubernetes.io/instance=web,app.kubernetes.io/name=visitcounter"
        );
    }
}
