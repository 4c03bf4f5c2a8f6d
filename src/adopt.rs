//! `visitcounter adopt --from-statefulset NAME`: the `VisitCounterApp` that
//! reproduces a live StatefulSet and its Service (a Helm release of the
//! report's charts, say), printed for the user to read and apply. Applied,
//! the app takes those objects over (`visitcounter.dev/adopt`) and its pods
//! reuse their claims, ordinal by ordinal. Read-only: it changes nothing.
//! The reading is `app_from`, pure; the CLI fetches the objects.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Container, Service},
};
use serde_json::{Map, Value, json};

use crate::resource::{ADOPT_ANNOTATION, API_VERSION, KIND};

/// The app, and what of the StatefulSet it does not carry over.
#[derive(Debug, PartialEq)]
pub struct Adopted {
    pub app: Value,
    pub left_out: Vec<String>,
}

/// Variables the operator sets itself in every pod.
const OPERATOR_VARIABLES: &[&str] = &[
    "VISITCOUNTER_POD_NAME",
    "VISITCOUNTER_PORT",
    "VISITCOUNTER_DATA_DIR",
    "VISITCOUNTER_CONFIG",
];

/// The app that reproduces `sts`, with `service` (the Service of the same
/// name, if any) as its user-facing Service.
pub fn app_from(sts: &StatefulSet, service: Option<&Service>) -> Adopted {
    let mut left_out = Vec::new();
    let name = sts.metadata.name.clone().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    let pod = spec.template.spec.clone().unwrap_or_default();
    let mut app = Map::new();
    app.insert("replicas".into(), json!(spec.replicas.unwrap_or(1)));
    if let Some(policy) = &spec.pod_management_policy {
        app.insert("podManagementPolicy".into(), json!(policy));
    }
    if let Some(seconds) = spec.min_ready_seconds.filter(|s| *s > 0) {
        app.insert("minReadySeconds".into(), json!(seconds));
    }
    if let Some(account) = pod.service_account_name.as_ref().filter(|a| *a != "default") {
        app.insert("serviceAccountName".into(), json!(account));
    }
    let template_meta = spec.template.metadata.clone().unwrap_or_default();
    if let Some(annotations) = template_meta.annotations.filter(|a| !a.is_empty()) {
        app.insert("podAnnotations".into(), json!(annotations));
    }
    if pod.containers.len() > 1 {
        left_out.push(format!(
            "containers other than the first ({}): the app runs one",
            pod.containers[1..]
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let claim = spec.volume_claim_templates.as_ref().and_then(|t| t.first());
    if let Some(container) = pod.containers.first() {
        container_fields(
            container,
            claim.and_then(|c| c.metadata.name.as_deref()),
            &mut app,
            &mut left_out,
        );
    }
    if let Some(claim) = claim {
        app.insert("storage".into(), storage(claim, pod.containers.first()));
    }
    if let Some(service) = service {
        app.insert("service".into(), service_fields(service));
    }
    let labels = template_meta.labels.unwrap_or_default();
    if !labels.is_empty() {
        left_out.push(format!(
            "the pod labels ({}): the app's pods carry its own, and the Service selects those",
            labels.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut metadata = json!({"name": name, "annotations": {ADOPT_ANNOTATION: "true"}});
    if let Some(namespace) = &sts.metadata.namespace {
        metadata["namespace"] = json!(namespace);
    }
    Adopted {
        app: json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": app}),
        left_out,
    }
}

fn container_fields(
    container: &Container,
    claim: Option<&str>,
    app: &mut Map<String, Value>,
    left_out: &mut Vec<String>,
) {
    if let Some(image) = &container.image {
        app.insert("image".into(), json!(image));
    }
    if let Some(policy) = &container.image_pull_policy {
        app.insert("imagePullPolicy".into(), json!(policy));
    }
    if let Some(port) = container.ports.as_ref().and_then(|p| p.first()) {
        app.insert("port".into(), json!(port.container_port));
    }
    if let Some(resources) = &container.resources {
        let pick = |m: &Option<
            std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            let m = m.clone().unwrap_or_default();
            let mut out = Map::new();
            for key in ["cpu", "memory"] {
                if let Some(q) = m.get(key) {
                    out.insert(key.into(), json!(q.0));
                }
            }
            Value::Object(out)
        };
        app.insert(
            "resources".into(),
            json!({"requests": pick(&resources.requests), "limits": pick(&resources.limits)}),
        );
    }
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        match &var.value {
            _ if OPERATOR_VARIABLES.contains(&var.name.as_str()) => {}
            Some(value) => env.push(json!({"name": var.name, "value": value})),
            None => left_out.push(format!("the variable {}: its value comes from elsewhere", var.name)),
        }
    }
    if !env.is_empty() {
        app.insert("config".into(), json!({"env": env}));
    }
    let others: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.as_str())
        .filter(|m| Some(*m) != claim)
        .collect();
    if !others.is_empty() {
        left_out.push(format!(
            "the volumes {}: the app mounts its claim and its config",
            others.join(", ")
        ));
    }
}

fn storage(claim: &k8s_openapi::api::core::v1::PersistentVolumeClaim, container: Option<&Container>) -> Value {
    let name = claim.metadata.name.clone().unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    let mut storage = json!({"claimTemplateName": name});
    if let Some(size) = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned())
    {
        storage["size"] = json!(size.0);
    }
    if let Some(class) = spec.storage_class_name {
        storage["storageClassName"] = json!(class);
    }
    if let Some(modes) = spec.access_modes {
        storage["accessModes"] = json!(modes);
    }
    let mount = container
        .and_then(|c| c.volume_mounts.as_ref())
        .and_then(|m| m.iter().find(|m| m.name == name));
    if let Some(mount) = mount {
        storage["mountPath"] = json!(mount.mount_path);
    }
    storage
}

fn service_fields(service: &Service) -> Value {
    let spec = service.spec.clone().unwrap_or_default();
    let port = spec.ports.as_ref().and_then(|p| p.first());
    let mut fields = json!({"type": spec.type_.unwrap_or_else(|| "ClusterIP".into())});
    if let Some(port) = port {
        fields["port"] = json!(port.port);
        if let Some(node_port) = port.node_port {
            fields["nodePort"] = json!(node_port);
        }
    }
    fields
}

/// The app as YAML, after comments that say what it does not carry.
pub fn to_yaml(adopted: &Adopted) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::from(
        "# Made by `visitcounter adopt` from a live StatefulSet. Applied, the app takes over the StatefulSet\n\
         # and its Services (visitcounter.dev/adopt): the StatefulSet is deleted with its pods and claims\n\
         # left, the app's own StatefulSet reuses the claims ordinal by ordinal, and the pods it left are\n\
         # replaced at once (the app has no ready pod until its own are Ready).\n",
    );
    for item in &adopted.left_out {
        out.push_str(&format!("# Not carried over: {item}.\n"));
    }
    out.push_str(&serde_saphyr::to_string(&adopted.app)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The StatefulSet of the report's `app-python` chart, as `helm install`
    /// leaves it.
    fn chart_statefulset() -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "app-python", "namespace": "default",
                         "annotations": {"meta.helm.sh/release-name": "app-python"}},
            "spec": {
                "replicas": 3, "podManagementPolicy": "Parallel", "serviceName": "app-python",
                "selector": {"matchLabels": {"app.kubernetes.io/instance": "app-python"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/instance": "app-python"},
                                 "annotations": {"vault.hashicorp.com/agent-inject": "true"}},
                    "spec": {"serviceAccountName": "internal-app", "containers": [{
                        "name": "app-python", "image": "example/app-python:1.16.0",
                        "ports": [{"containerPort": 8080}],
                        "env": [{"name": "APP_LANGUAGE", "value": "python"},
                                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                        "volumeMounts": [{"name": "python-counter-data", "mountPath": "/data"}]}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "python-counter-data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                             "resources": {"requests": {"storage": "62Mi"}}}}]}}))
        .unwrap()
    }

    fn node_port_service() -> Service {
        serde_json::from_value(json!({"metadata": {"name": "app-python"},
            "spec": {"type": "NodePort", "ports": [{"port": 8080, "nodePort": 31446}]}}))
        .unwrap()
    }

    #[test]
    fn the_reports_chart_becomes_an_app_that_reuses_its_claims_and_node_port() {
        let adopted = app_from(&chart_statefulset(), Some(&node_port_service()));
        let spec = &adopted.app["spec"];
        assert_eq!(adopted.app["metadata"]["annotations"][ADOPT_ANNOTATION], "true");
        assert_eq!(adopted.app["metadata"]["namespace"], "default");
        assert_eq!(spec["replicas"], 3);
        assert_eq!(spec["podManagementPolicy"], "Parallel");
        assert_eq!(spec["port"], 8080);
        assert_eq!(spec["serviceAccountName"], "internal-app");
        assert_eq!(spec["podAnnotations"]["vault.hashicorp.com/agent-inject"], "true");
        assert_eq!(
            spec["storage"],
            json!({"claimTemplateName": "python-counter-data", "size": "62Mi", "storageClassName": "standard",
                   "accessModes": ["ReadWriteOnce"], "mountPath": "/data"})
        );
        assert_eq!(
            spec["service"],
            json!({"type": "NodePort", "port": 8080, "nodePort": 31446})
        );
        assert_eq!(
            spec["config"]["env"],
            json!([{"name": "APP_LANGUAGE", "value": "python"}])
        );
    }

    #[test]
    fn what_is_not_carried_over_is_said() {
        let adopted = app_from(&chart_statefulset(), None);
        assert!(
            adopted.left_out.iter().any(|l| l.contains("SECRET")),
            "{:?}",
            adopted.left_out
        );
        assert!(adopted.left_out.iter().any(|l| l.contains("pod labels")));
        let yaml = to_yaml(&adopted).unwrap();
        assert!(yaml.contains("# Not carried over: the variable SECRET"), "{yaml}");
    }

    #[test]
    fn the_printed_app_is_admitted() {
        let adopted = app_from(&chart_statefulset(), Some(&node_port_service()));
        let admission = crate::admission::Admission::new();
        admission
            .admit(&adopted.app)
            .expect("the printed app passes the CRD's rules");
    }
}
