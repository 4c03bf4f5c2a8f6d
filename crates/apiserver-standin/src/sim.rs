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
        "PersistentVolumeClaim" => check_claim(store, rt, name, object, old),
        _ => Ok(()),
    }
}

fn claim_size(claim: &Value) -> Option<f64> {
    let text = claim["spec"]["resources"]["requests"]["storage"].as_str()?;
    let (number, scale) = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
    ]
    .iter()
    .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|n| (n, *scale)))
    .unwrap_or((text, 1.0));
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// A claim gets the default StorageClass when it names none, and is bound at
/// once; it can only grow, and only when its class allows expansion. The
/// resizer's work is instant: the capacity follows the request.
fn check_claim(
    store: &Store,
    rt: ResourceType,
    name: &str,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let classes = find("storage.k8s.io", "storageclasses").expect("storage classes are served");
    let class_of = |class: &str| {
        store
            .objects
            .get(&Key::new(classes, "", class))
            .map(|e| e.object.clone())
    };
    match old {
        None => {
            if object["spec"]["storageClassName"].as_str().is_none()
                && let Some(default) = store.objects.values().find(|e| {
                    e.rt == classes
                        && e.object["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
                })
            {
                object["spec"]["storageClassName"] = default.object["metadata"]["name"].clone();
            }
        }
        Some(old) => {
            let (before, after) = (claim_size(old), claim_size(object));
            if after < before {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity",
                ));
            }
            if after > before {
                let expands = old["spec"]["storageClassName"]
                    .as_str()
                    .and_then(class_of)
                    .is_some_and(|sc| sc["allowVolumeExpansion"] == true);
                if !expands {
                    return Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "persistentvolumeclaims \"{name}\" is forbidden: only dynamically provisioned pvc can be \
                             resized and the storageclass that provisions the pvc must support resize"
                        ),
                    ));
                }
            }
        }
    }
    let requested = object["spec"]["resources"]["requests"]["storage"].clone();
    object["status"] = json!({"phase": "Bound", "capacity": {"storage": requested}});
    Ok(())
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

/// Whether a pod made from `template` would become ready: it is not pending,
/// and its image is not one the test broke.
fn would_be_ready(store: &Store, spec: &Value) -> bool {
    store.pods == Pods::Ready
        && !spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["image"].as_str().is_some_and(|i| store.broken_images.contains(i)))
}

/// The kubelet's part for one pod: phase and readiness (with the time the
/// readiness last turned); an IP a test gave stays.
fn run_kubelet(store: &mut Store, namespace: &str, pod_name: &str) {
    let pods_rt = find("", "pods").expect("pods are served");
    let Some(pod) = store.objects.get(&Key::new(pods_rt, namespace, pod_name)) else {
        return;
    };
    let ready = would_be_ready(store, &pod.object["spec"]);
    let phase = if store.pods == Pods::Pending {
        "Pending"
    } else {
        "Running"
    };
    let _ = update_pod_status(store, namespace, pod_name, |status| {
        let ready = if ready { "True" } else { "False" };
        let previous = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned();
        let since = match previous {
            Some(c) if c["status"] == ready => c["lastTransitionTime"].clone(),
            _ => json!(k8s_openapi::jiff::Timestamp::now().to_string()),
        };
        status["phase"] = json!(phase);
        status["conditions"] = json!([{"type": "Ready", "status": ready, "lastTransitionTime": since}]);
    });
}

/// The label the StatefulSet controller puts on each pod: its revision.
const REVISION_LABEL: &str = "controller-revision-hash";

/// A pod's owner reference to its StatefulSet `sts`, as its controller.
fn owner_references(sts: &Value) -> Value {
    json!([{
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"], "uid": sts["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    }])
}

/// The revision of the stored pod `key`, if it exists.
fn pod_revision(store: &Store, key: &Key) -> Option<String> {
    let pod = &store.objects.get(key)?.object;
    Some(
        pod["metadata"]["labels"][REVISION_LABEL]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn is_ready(store: &Store, key: &Key) -> bool {
    store.objects.get(key).is_some_and(|e| {
        e.object["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    })
}

/// Writes the pod `ordinal` of the StatefulSet from the template of
/// `revision`, as a new pod (the old one, if any, is deleted first).
fn create_pod(store: &mut Store, sts: &Value, ordinal: u64, revision: &str) {
    let pods_rt = find("", "pods").expect("pods are served");
    let name = sts["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = sts["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let pod_name = format!("{name}-{ordinal}");
    if store.objects.contains_key(&Key::new(pods_rt, &namespace, &pod_name)) {
        let _ = store.delete(pods_rt, &namespace, &pod_name, false, None);
    }
    let template = store
        .revisions
        .get(revision)
        .cloned()
        .unwrap_or_else(|| sts["spec"]["template"].clone());
    let mut pod = json!({
        "metadata": {"labels": template["metadata"]["labels"].clone(), "ownerReferences": owner_references(sts)},
        "spec": template["spec"].clone(),
    });
    pod["metadata"]["labels"][REVISION_LABEL] = json!(revision);
    let _ = store.write(
        pods_rt,
        &namespace,
        &pod_name,
        None,
        Write::Update { object: pod },
        "statefulset-controller",
        false,
    );
    run_kubelet(store, &namespace, &pod_name);
}

/// The StatefulSet controller, run after every change to a StatefulSet and
/// after one of its pods is deleted, as the real one does:
/// - revisions: the update revision is the template's; the current one
///   becomes it once every pod runs it;
/// - pods and claims for each ordinal in order (adopting orphans), a new pod
///   at the current revision below the partition and the update revision
///   from it up; under `OrderedReady` it stops at the first pod that is not
///   ready, and does nothing else (kubernetes#67250);
/// - pods above the replica count deleted, claims never deleted;
/// - `RollingUpdate`: from the highest ordinal down to the partition, each
///   pod of another revision replaced, stopping at one that is not ready;
///   `OnDelete`: nothing replaced;
/// - status.
pub fn run_statefulset_controller(store: &mut Store, key: &Key) {
    let Some(entry) = store.objects.get(key) else {
        return;
    };
    let sts = entry.object.clone();
    let uid = sts["metadata"]["uid"].clone();
    let name = key.name.clone();
    let namespace = key.namespace.clone();
    let spec = &sts["spec"];
    let replicas = spec["replicas"].as_u64().unwrap_or(1);
    let update_revision = format!("{name}-{}", template_hash(&spec["template"]));
    store
        .revisions
        .insert(update_revision.clone(), spec["template"].clone());
    let current_revision = sts["status"]["currentRevision"]
        .as_str()
        .unwrap_or(&update_revision)
        .to_owned();
    let monotonic = spec["podManagementPolicy"] != "Parallel";
    let rolling = spec["updateStrategy"]["type"] != "OnDelete";
    let partition = if rolling {
        spec["updateStrategy"]["rollingUpdate"]["partition"]
            .as_u64()
            .unwrap_or(0)
    } else {
        0
    };
    let pods_rt = find("", "pods").expect("pods are served");
    let claims_rt = find("", "persistentvolumeclaims").expect("claims are served");
    let pod_key = |ordinal: u64| Key::new(pods_rt, &namespace, &format!("{name}-{ordinal}"));
    let mut blocked = false;
    for ordinal in 0..replicas {
        for template in spec["volumeClaimTemplates"].as_array().into_iter().flatten() {
            let claim = format!(
                "{}-{name}-{ordinal}",
                template["metadata"]["name"].as_str().unwrap_or("data")
            );
            if store.objects.contains_key(&Key::new(claims_rt, &namespace, &claim)) {
                continue;
            }
            let object = json!({
                "metadata": {"labels": spec["selector"]["matchLabels"].clone()},
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
        match store.objects.get(&pod_key(ordinal)).map(|e| e.object.clone()) {
            None => {
                let revision = if rolling && ordinal < partition {
                    &current_revision
                } else {
                    &update_revision
                };
                create_pod(store, &sts, ordinal, revision);
            }
            Some(mut pod) => {
                // Adopt an orphan.
                if pod["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(|r| r.is_empty())
                {
                    pod["metadata"]["ownerReferences"] = owner_references(&sts);
                    let _ = store.write(
                        pods_rt,
                        &namespace,
                        &format!("{name}-{ordinal}"),
                        None,
                        Write::Update { object: pod },
                        "statefulset-controller",
                        false,
                    );
                }
                run_kubelet(store, &namespace, &format!("{name}-{ordinal}"));
            }
        }
        if monotonic && !is_ready(store, &pod_key(ordinal)) {
            blocked = true;
            break;
        }
    }
    if !blocked {
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
    }
    if !blocked && rolling {
        for ordinal in (partition..replicas).rev() {
            if pod_revision(store, &pod_key(ordinal)).is_some_and(|r| r != update_revision) {
                create_pod(store, &sts, ordinal, &update_revision);
            }
            if !is_ready(store, &pod_key(ordinal)) {
                break;
            }
        }
    }
    let revisions: Vec<(String, bool)> = (0..replicas)
        .filter_map(|ordinal| {
            let key = pod_key(ordinal);
            Some((pod_revision(store, &key)?, is_ready(store, &key)))
        })
        .collect();
    let count = |wanted: &str| revisions.iter().filter(|(r, _)| r == wanted).count();
    let updated = count(&update_revision);
    let current_revision = if updated as u64 == replicas {
        update_revision.clone()
    } else {
        current_revision
    };
    let ready = revisions.iter().filter(|(_, ready)| *ready).count();
    let status = json!({"status": {
        "observedGeneration": sts["metadata"]["generation"],
        "replicas": revisions.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": count(&current_revision),
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
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
