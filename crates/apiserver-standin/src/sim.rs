//! What the rest of a control plane would do: the API server's defaults,
//! allocations and refusals, and a StatefulSet controller that creates pods
//! and claims and reports status. No kubelet runs, so pods are ready or
//! pending as the test says.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::{
    resources::{ResourceType, find},
    store::{ApiError, Key, Store, Write},
};

/// What happens to the pods a StatefulSet asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pods {
    /// They are created and become ready at once (a cluster with nodes).
    Ready,
    /// They are created and stay pending (a control plane with no nodes).
    Pending,
}

const FIRST_NODE_PORT: u64 = 30000;
const LAST_NODE_PORT: u64 = 32767;

fn default_field(object: &mut Value, field: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.entry(field.to_owned()).or_insert(value);
    }
}

/// The API server's defaults for the fields the operator leaves out, so that
/// a controller that compares naively sees a difference on every resync.
pub fn default(rt: ResourceType, object: &mut Value) {
    match rt.kind {
        "StatefulSet" => default_statefulset(object),
        "Service" => {
            let spec = &mut object["spec"];
            default_field(spec, "type", json!("ClusterIP"));
            default_field(spec, "sessionAffinity", json!("None"));
            default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
            default_field(spec, "ipFamilies", json!(["IPv4"]));
            default_field(spec, "internalTrafficPolicy", json!("Cluster"));
            if spec["type"] == "NodePort" {
                default_field(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            for port in spec["ports"].as_array_mut().into_iter().flatten() {
                default_field(port, "protocol", json!("TCP"));
                let number = port["port"].clone();
                default_field(port, "targetPort", number);
            }
        }
        _ => {}
    }
}

fn default_statefulset(object: &mut Value) {
    let spec = &mut object["spec"];
    default_field(spec, "revisionHistoryLimit", json!(10));
    default_field(spec, "podManagementPolicy", json!("OrderedReady"));
    default_field(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
    if spec["updateStrategy"]["type"] == "RollingUpdate" {
        default_field(&mut spec["updateStrategy"], "rollingUpdate", json!({"partition": 0}));
        default_field(&mut spec["updateStrategy"]["rollingUpdate"], "partition", json!(0));
    }
    default_field(
        spec,
        "persistentVolumeClaimRetentionPolicy",
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
    let pod = &mut spec["template"]["spec"];
    default_field(pod, "restartPolicy", json!("Always"));
    default_field(pod, "dnsPolicy", json!("ClusterFirst"));
    default_field(pod, "schedulerName", json!("default-scheduler"));
    default_field(pod, "terminationGracePeriodSeconds", json!(30));
    for container in pod["containers"].as_array_mut().into_iter().flatten() {
        default_field(container, "terminationMessagePath", json!("/dev/termination-log"));
        default_field(container, "terminationMessagePolicy", json!("File"));
        default_field(container, "imagePullPolicy", json!("IfNotPresent"));
        for port in container["ports"].as_array_mut().into_iter().flatten() {
            default_field(port, "protocol", json!("TCP"));
        }
        for probe in ["livenessProbe", "readinessProbe"] {
            if let Some(get) = container[probe]["httpGet"].as_object_mut() {
                get.entry("scheme").or_insert(json!("HTTP"));
            }
        }
        for bound in ["requests", "limits"] {
            if let Some(map) = container["resources"][bound].as_object_mut() {
                for quantity in map.values_mut() {
                    canonical_quantity(quantity);
                }
            }
        }
    }
    for claim in spec["volumeClaimTemplates"].as_array_mut().into_iter().flatten() {
        default_field(&mut claim["spec"], "volumeMode", json!("Filesystem"));
        default_field(claim, "status", json!({"phase": "Pending"}));
    }
}

/// Writes a decimal quantity with a fraction the way the API server does:
/// `0.5` becomes `500m`.
fn canonical_quantity(quantity: &mut Value) {
    let text = match quantity {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    if let Ok(number) = text.parse::<f64>()
        && text.contains('.')
    {
        let milli = number * 1000.0;
        if (milli - milli.round()).abs() < 1e-9 {
            *quantity = json!(format!("{}m", milli.round() as i64));
            return;
        }
    }
    if let Value::Number(_) = quantity {
        *quantity = json!(text);
    }
}

/// The checks of the API server the operator depends on.
pub fn check(
    store: &mut Store,
    rt: ResourceType,
    namespace: &str,
    name: &str,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    match rt.kind {
        "StatefulSet" => {
            if let Some(old) = old {
                check_statefulset_update(rt, name, &old["spec"], &object["spec"])?;
            }
            Ok(())
        }
        "Service" => allocate_service(store, rt, namespace, name, object, old),
        _ => Ok(()),
    }
}

const STATEFULSET_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
];

fn check_statefulset_update(rt: ResourceType, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    let keys: BTreeSet<&String> = old
        .as_object()
        .into_iter()
        .chain(new.as_object())
        .flat_map(|m| m.keys())
        .collect();
    let changed = keys
        .into_iter()
        .any(|k| !STATEFULSET_MUTABLE.contains(&k.as_str()) && old.get(k) != new.get(k));
    if changed {
        return Err(ApiError::invalid(
            rt,
            name,
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', \
             'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
    Ok(())
}

fn allocate_service(
    store: &mut Store,
    rt: ResourceType,
    namespace: &str,
    name: &str,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let old_spec = old.map(|o| o["spec"].clone()).unwrap_or(Value::Null);
    let spec = &mut object["spec"];
    match (&old_spec["clusterIP"], spec.get("clusterIP")) {
        (Value::String(old_ip), Some(Value::String(new_ip))) if old_ip != new_ip => {
            return Err(ApiError::invalid(
                rt,
                name,
                "spec.clusterIPs[0]: Invalid value: field is immutable",
            ));
        }
        (Value::String(old_ip), _) => spec["clusterIP"] = json!(old_ip),
        (_, None) => {
            let n = store.rv;
            spec["clusterIP"] = json!(format!("10.96.{}.{}", (n / 250) % 250, n % 250 + 1));
        }
        _ => {}
    }
    let ip = spec["clusterIP"].clone();
    spec["clusterIPs"] = json!([ip]);
    let wants_node_ports = matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"));
    let me = Key::new(rt, namespace, name);
    let mut taken: BTreeSet<u64> = store
        .objects
        .iter()
        .filter(|(k, e)| e.rt.kind == "Service" && **k != me)
        .flat_map(|(_, e)| e.object["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["nodePort"].as_u64())
        .collect();
    let old_ports = old_spec["ports"].as_array().cloned().unwrap_or_default();
    for (i, port) in spec["ports"].as_array_mut().into_iter().flatten().enumerate() {
        if !wants_node_ports {
            if let Some(p) = port.as_object_mut() {
                p.remove("nodePort");
            }
            continue;
        }
        match port["nodePort"].as_u64() {
            Some(wanted) if taken.contains(&wanted) => {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    format!("spec.ports[{i}].nodePort: Invalid value: {wanted}: provided port is already allocated"),
                ));
            }
            Some(wanted) => {
                taken.insert(wanted);
            }
            None => {
                let kept = old_ports
                    .iter()
                    .find(|p| p["port"] == port["port"])
                    .and_then(|p| p["nodePort"].as_u64());
                let port_number = kept
                    .or_else(|| (FIRST_NODE_PORT..=LAST_NODE_PORT).find(|p| !taken.contains(p)))
                    .ok_or_else(|| ApiError::invalid(rt, name, "no free node port"))?;
                taken.insert(port_number);
                port["nodePort"] = json!(port_number);
            }
        }
    }
    Ok(())
}

fn template_hash(template: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    format!("{:08x}", hasher.finish() as u32)
}

/// Changes a pod's status as the kubelet does, keeping the rest of it.
pub fn update_pod_status(
    store: &mut Store,
    namespace: &str,
    name: &str,
    change: impl FnOnce(&mut Value),
) -> Result<Value, ApiError> {
    let rt = find("", "pods").expect("pods are served");
    let mut status = store
        .objects
        .get(&Key::new(rt, namespace, name))
        .ok_or_else(|| ApiError::not_found(rt, name))?
        .object["status"]
        .clone();
    if !status.is_object() {
        status = json!({});
    }
    change(&mut status);
    store.write(
        rt,
        namespace,
        name,
        Some("status"),
        Write::Update {
            object: json!({"status": status}),
        },
        "kubelet",
        false,
    )
}

/// The StatefulSet controller, run after every change to a StatefulSet:
/// pods and claims for each ordinal (adopting orphans), pods above the
/// replica count deleted, claims never deleted, and status.
pub fn run_statefulset_controller(store: &mut Store, key: &Key) {
    let Some(entry) = store.objects.get(key) else {
        return;
    };
    let sts = entry.object.clone();
    let uid = sts["metadata"]["uid"].clone();
    let name = key.name.clone();
    let namespace = key.namespace.clone();
    let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(1);
    let revision = format!("{name}-{}", template_hash(&sts["spec"]["template"]));
    let pods_rt = find("", "pods").expect("pods are served");
    let claims_rt = find("", "persistentvolumeclaims").expect("claims are served");
    let owner = json!([{
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": uid,
        "controller": true, "blockOwnerDeletion": true,
    }]);
    let phase = match store.pods {
        Pods::Ready => "Running",
        Pods::Pending => "Pending",
    };
    for ordinal in 0..replicas {
        let pod_name = format!("{name}-{ordinal}");
        let pod_key = Key::new(pods_rt, &namespace, &pod_name);
        let mut pod = match store.objects.get(&pod_key) {
            Some(e) => e.object.clone(),
            None => json!({
                "metadata": {"labels": sts["spec"]["template"]["metadata"]["labels"].clone()},
                "spec": sts["spec"]["template"]["spec"].clone(),
            }),
        };
        if pod["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            pod["metadata"]["ownerReferences"] = owner.clone();
        }
        pod["metadata"]["labels"]["controller-revision-hash"] = json!(revision);
        let _ = store.write(
            pods_rt,
            &namespace,
            &pod_name,
            None,
            Write::Update { object: pod },
            "statefulset-controller",
            false,
        );
        // The kubelet's part: phase and readiness; an IP a test gave stays.
        let _ = update_pod_status(store, &namespace, &pod_name, |status| {
            status["phase"] = json!(phase);
            status["conditions"] =
                json!([{"type": "Ready", "status": if phase == "Running" { "True" } else { "False" }}]);
        });
        for template in sts["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
            let claim = format!(
                "{}-{name}-{ordinal}",
                template["metadata"]["name"].as_str().unwrap_or("data")
            );
            if store.objects.contains_key(&Key::new(claims_rt, &namespace, &claim)) {
                continue;
            }
            let object = json!({
                "metadata": {"labels": sts["spec"]["selector"]["matchLabels"].clone()},
                "spec": template["spec"].clone(),
            });
            let _ = store.write(
                claims_rt,
                &namespace,
                &claim,
                None,
                Write::Update { object },
                "statefulset-controller",
                false,
            );
        }
    }
    let extra: Vec<Key> = store
        .objects
        .iter()
        .filter(|(k, e)| {
            e.rt.kind == "Pod"
                && k.namespace == namespace
                && crate::store::owner_uids(&e.object).any(|u| Some(u) == uid.as_str())
                && k.name
                    .strip_prefix(&format!("{name}-"))
                    .and_then(|o| o.parse::<u64>().ok())
                    .is_some_and(|o| o >= replicas)
        })
        .map(|(k, _)| k.clone())
        .collect();
    for pod in extra {
        let _ = store.delete(pods_rt, &pod.namespace, &pod.name, false, None);
    }
    let ready = if store.pods == Pods::Ready { replicas } else { 0 };
    let status = json!({"status": {
        "observedGeneration": sts["metadata"]["generation"],
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": replicas,
        "updatedReplicas": replicas,
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
    }});
    let rt = find("apps", "statefulsets").expect("statefulsets are served");
    let _ = store.write(
        rt,
        &namespace,
        &name,
        Some("status"),
        Write::Update { object: status },
        "statefulset-controller",
        false,
    );
}
