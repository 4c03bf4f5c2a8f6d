//! A shadow app's children (`updateStrategy.type: Shadow`): the Service
//! `<app>-shadow` that the route mirrors requests to, and, while a new
//! template waits for promotion, the StatefulSet `<app>-shadow` that runs
//! it (`rollout::shadow` decides when).
//!
//! The shadow's pods, and its claims, carry the instance label
//! `<app>-shadow`, not the app's: none of the app's Services selects them,
//! and their visits are never part of the app's count.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Service, ServiceSpec},
};

use super::{BuildError, INSTANCE_LABEL, app_name, child_meta, selector_labels, service::http_port};
use crate::resource::VisitCounterApp;

/// The name of the shadow StatefulSet, of its Service, and its pods'
/// instance label.
pub fn shadow_name(app: &str) -> String {
    format!("{app}-shadow")
}

/// The ClusterIP Service of the shadow's pods, on the app's port.
pub fn desired_shadow_service(app: &VisitCounterApp) -> Result<Service, BuildError> {
    let name = shadow_name(app_name(app)?);
    Ok(Service {
        metadata: child_meta(app, name.clone())?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![http_port(app.spec.port, None)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The shadow StatefulSet: the app's as built (`wanted`, with the new
/// template), renamed, its pods and claims labelled as the shadow's.
pub fn shadow_statefulset(wanted: &StatefulSet, app: &str) -> StatefulSet {
    let name = shadow_name(app);
    let mut shadow = wanted.clone();
    shadow.metadata.name = Some(name.clone());
    let relabel = |labels: &mut Option<std::collections::BTreeMap<String, String>>| {
        if let Some(labels) = labels.as_mut() {
            labels.insert(INSTANCE_LABEL.into(), name.clone());
        }
    };
    relabel(&mut shadow.metadata.labels);
    if let Some(spec) = shadow.spec.as_mut() {
        relabel(&mut spec.selector.match_labels);
        if let Some(metadata) = spec.template.metadata.as_mut() {
            relabel(&mut metadata.labels);
        }
        for claim in spec.volume_claim_templates.iter_mut().flatten() {
            relabel(&mut claim.metadata.labels);
        }
    }
    shadow
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::children::{BuildSettings, desired_children, tests::app};

    #[test]
    fn the_shadow_and_its_pods_and_claims_are_labelled_apart_from_the_app() {
        let web = app("web", json!({"replicas": 2}));
        let children = desired_children(&web, &BuildSettings::default()).unwrap();
        let shadow = shadow_statefulset(&children.stateful_set, "web");
        assert_eq!(shadow.metadata.name.as_deref(), Some("web-shadow"));
        let spec = shadow.spec.unwrap();
        let instance = |labels: &Option<std::collections::BTreeMap<String, String>>| {
            labels.as_ref().unwrap()[INSTANCE_LABEL].clone()
        };
        assert_eq!(instance(&spec.selector.match_labels), "web-shadow");
        assert_eq!(instance(&spec.template.metadata.unwrap().labels), "web-shadow");
        for claim in spec.volume_claim_templates.unwrap() {
            assert_eq!(instance(&claim.metadata.labels), "web-shadow");
        }
        let service = desired_shadow_service(&web).unwrap();
        assert_eq!(service.metadata.name.as_deref(), Some("web-shadow"));
        assert_eq!(service.spec.unwrap().selector.unwrap()[INSTANCE_LABEL], "web-shadow");
        // The app's own selectors never reach the shadow's pods.
        assert_eq!(children.service.spec.unwrap().selector.unwrap()[INSTANCE_LABEL], "web");
    }
}
