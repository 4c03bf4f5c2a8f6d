//! The two Services: `<app>-headless` for stable per-pod DNS names, and `<app>`
//! for users.

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{BuildError, app_name, child_meta, headless_service_name, selector_labels};
use crate::resource::{ServiceType, VisitCounterApp};

/// The headless Service the StatefulSet names as its `serviceName`: each pod
/// is `<app>-<ordinal>.<app>-headless.<namespace>.svc`.
pub fn desired_headless_service(app: &VisitCounterApp) -> Result<Service, BuildError> {
    let name = app_name(app)?;
    Ok(Service {
        metadata: child_meta(app, headless_service_name(name))?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(name)),
            ports: Some(vec![http_port(app.spec.port, None)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The user-facing Service, of the spec's type, with a fixed node port when the
/// spec gives one.
pub fn desired_service(app: &VisitCounterApp) -> Result<Service, BuildError> {
    let name = app_name(app)?;
    let spec = &app.spec.service;
    let node_port = match spec.type_ {
        ServiceType::ClusterIP => None,
        ServiceType::NodePort | ServiceType::LoadBalancer => spec.node_port,
    };
    let mut port = http_port(spec.port.unwrap_or(app.spec.port), node_port);
    port.target_port = Some(IntOrString::String("http".into()));
    Ok(Service {
        metadata: child_meta(app, name.to_owned())?,
        spec: Some(ServiceSpec {
            type_: Some(spec.type_.as_str().into()),
            selector: Some(selector_labels(name)),
            ports: Some(vec![port]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The preview Service of a blue/green app, `<app>-preview`: a ClusterIP
/// Service on the app's port, whose selector the blue/green rollout pins to
/// the pods of the new template (`rollout::blue_green`).
pub fn desired_preview_service(app: &VisitCounterApp) -> Result<Service, BuildError> {
    let name = app_name(app)?;
    Ok(Service {
        metadata: child_meta(app, preview_service_name(name))?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(name)),
            ports: Some(vec![http_port(app.spec.port, None)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Name of a blue/green app's preview Service.
pub fn preview_service_name(app: &str) -> String {
    format!("{app}-preview")
}

pub(super) fn http_port(port: i32, node_port: Option<i32>) -> ServicePort {
    ServicePort {
        name: Some("http".into()),
        protocol: Some("TCP".into()),
        port,
        target_port: Some(IntOrString::String("http".into())),
        node_port,
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::tests::app;
    use serde_json::json;

    #[test]
    fn headless_service_has_no_cluster_ip_and_selects_the_pods() {
        let svc = desired_headless_service(&app("web", json!({"port": 8081}))).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("web-headless"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.selector, Some(selector_labels("web")));
        let port = &spec.ports.unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8081));
    }

    #[test]
    fn service_defaults_to_node_port_on_the_app_port() {
        let spec = desired_service(&app("web", json!({"port": 8081})))
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.port, 8081);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
        assert_eq!(port.node_port, None);
    }

    #[test]
    fn service_keeps_a_fixed_node_port_and_its_own_port() {
        let app = app("web", json!({"service": {"port": 80, "nodePort": 30080}}));
        let port = &desired_service(&app).unwrap().spec.unwrap().ports.unwrap()[0];
        assert_eq!((port.port, port.node_port), (80, Some(30080)));
    }

    #[test]
    fn cluster_ip_service_has_no_node_port() {
        let app = app("web", json!({"service": {"type": "ClusterIP", "nodePort": 30080}}));
        let spec = desired_service(&app).unwrap().spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.ports.unwrap()[0].node_port, None);
    }
}
