//! What to do with each child, decided from the desired object and the
//! cached live one. Pure: no client.
//!
//! A child is written only when it is missing, when the desired object
//! changed since it was last applied (its hash annotation says so; this
//! also covers fields the spec no longer sets, which server-side apply then
//! removes), or when a field the operator sets has drifted (a hand edit).
//! Fields the API server defaults or allocates are not the operator's and
//! never count as drift.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Annotation on each child: the hash of the object last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "visitcounter.dev/applied-hash";

/// StatefulSet fields the API server refuses to change in place.
pub const IMMUTABLE_STATEFULSET_FIELDS: &[&str] =
    &["podManagementPolicy", "serviceName", "selector", "volumeClaimTemplates"];

/// StatefulSet fields that an API server drops when a feature gate is off,
/// with the gate: applying them again would only be dropped again.
pub const GATED_STATEFULSET_FIELDS: &[(&str, &str)] = &[(
    "/spec/updateStrategy/rollingUpdate/maxUnavailable",
    "MaxUnavailableStatefulSet",
)];

/// The gated fields `desired` sets that the API server left out of `live`,
/// as JSON pointers.
pub fn dropped_by_server(desired: &Value, live: &Value) -> Vec<&'static str> {
    GATED_STATEFULSET_FIELDS
        .iter()
        .map(|(pointer, _)| *pointer)
        .filter(|p| desired.pointer(p).is_some_and(|v| !v.is_null()) && live.pointer(p).is_none())
        .collect()
}

/// A desired child, ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredChild {
    pub kind: &'static str,
    pub name: String,
    /// The object with its hash annotation.
    pub object: Value,
    pub hash: String,
}

impl DesiredChild {
    /// Stamps `object` with the hash of its content.
    pub fn new(kind: &'static str, mut object: Value) -> Self {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let hash = content_hash(&object);
        if let Some(meta) = object["metadata"].as_object_mut() {
            let annotations = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(map) = annotations.as_object_mut() {
                map.insert(APPLIED_HASH_ANNOTATION.into(), Value::String(hash.clone()));
            }
        }
        Self {
            kind,
            name,
            object,
            hash,
        }
    }
}

/// First 16 hex digits of the SHA-256 of the object's canonical JSON (keys
/// sorted, as `serde_json` maps are).
pub fn content_hash(object: &Value) -> String {
    let digest = Sha256::digest(object.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// What to do with one child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    UpToDate,
    Create,
    /// The desired object changed since the last apply.
    Update,
    /// A field the operator sets differs on the live object.
    RestoreDrift {
        path: String,
    },
    /// Fields the API server refuses to change in place differ: the
    /// StatefulSet is deleted with its pods and claims orphaned, and created
    /// again; the new one adopts them.
    Recreate {
        fields: Vec<&'static str>,
    },
}

impl Step {
    pub fn writes(&self) -> bool {
        *self != Step::UpToDate
    }
}

/// Which writes are first sent as a server-side-apply dry run, so that a
/// spec the API server refuses for one child leaves every child as it was.
///
/// The children are written in an order that makes most dry runs needless:
/// the Services first (a node port another Service holds is the refusal a
/// valid spec meets), then what the pods use, the StatefulSet last. A
/// refused first write has changed nothing; a new ConfigMap changes nothing
/// any pod uses until the StatefulSet names it; and children this reconcile
/// created are deleted again when a later write is refused. What is left is
/// an update of an existing Service or ServiceAccount followed by an update
/// of the StatefulSet: the StatefulSet is tried first then. A re-create has
/// its own sequence and is never dry-run.
pub fn dry_runs(children: &[(&str, &Step)]) -> Vec<bool> {
    let mut changed_in_place = false;
    children
        .iter()
        .map(|(kind, step)| {
            let in_place = matches!(step, Step::Update | Step::RestoreDrift { .. });
            let dry_run = *kind == "StatefulSet" && in_place && changed_in_place;
            changed_in_place |= in_place && matches!(*kind, "Service" | "ServiceAccount");
            dry_run
        })
        .collect()
}

/// Decides the step for `desired` given the cached `live` object.
pub fn plan(desired: &DesiredChild, live: Option<&Value>) -> Step {
    let Some(live) = live else {
        return Step::Create;
    };
    if desired.kind == "StatefulSet" {
        let fields: Vec<&'static str> = IMMUTABLE_STATEFULSET_FIELDS
            .iter()
            .copied()
            .filter(|f| !contains(&live["spec"][*f], &desired.object["spec"][*f], f))
            .collect();
        if !fields.is_empty() {
            return Step::Recreate { fields };
        }
    }
    let applied = live["metadata"]["annotations"][APPLIED_HASH_ANNOTATION].as_str();
    if applied != Some(desired.hash.as_str()) {
        return Step::Update;
    }
    // A field the API server dropped is not drift: it would drop it again.
    let dropped = if desired.kind == "StatefulSet" {
        dropped_by_server(&desired.object, live)
    } else {
        Vec::new()
    };
    let mut wanted = std::borrow::Cow::Borrowed(&desired.object);
    for pointer in dropped {
        if let Some(field) = wanted.to_mut().pointer_mut(pointer) {
            *field = Value::Null;
        }
    }
    match first_difference(live, &wanted, "") {
        Some(path) => Step::RestoreDrift { path },
        None => Step::UpToDate,
    }
}

/// Whether every field set in `desired` has the same value in `live`.
pub fn contains(live: &Value, desired: &Value, key: &str) -> bool {
    first_difference_under(live, desired, key, key).is_none()
}

pub fn first_difference(live: &Value, desired: &Value, path: &str) -> Option<String> {
    first_difference_under(live, desired, "", path)
}

/// The path of the first field of `desired` that `live` lacks or holds
/// with another value. `key` is the map key `desired` sits under, which says
/// whether a string is a resource quantity.
fn first_difference_under(live: &Value, desired: &Value, key: &str, path: &str) -> Option<String> {
    let mut found = Vec::new();
    differences_under(live, desired, key, path, &mut found, 1);
    found.pop()
}

/// The paths of the fields of `desired` an update changes on `live` (its
/// applied-hash annotation aside), the first `limit` of them: what an Event
/// names.
pub fn changed_fields(desired: &Value, live: &Value, limit: usize) -> Vec<String> {
    let mut wanted = desired.clone();
    if let Some(annotations) = wanted["metadata"]["annotations"].as_object_mut() {
        annotations.remove(APPLIED_HASH_ANNOTATION);
    }
    let mut found = Vec::new();
    differences_under(live, &wanted, "", "", &mut found, limit);
    found
}

/// Collects into `found` (up to `limit`) the paths where `live` lacks a
/// field of `desired` or holds it with another value.
fn differences_under(live: &Value, desired: &Value, key: &str, path: &str, found: &mut Vec<String>, limit: usize) {
    if found.len() >= limit {
        return;
    }
    match desired {
        Value::Null => {}
        Value::Object(wanted) => {
            let Value::Object(have) = live else {
                found.push(path.to_owned());
                return;
            };
            let quantities = matches!(key, "requests" | "limits" | "capacity");
            for (k, v) in wanted {
                if found.len() >= limit {
                    return;
                }
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match have.get(k) {
                    // The API server leaves zero values out of what it
                    // returns (`minReadySeconds: 0`, `hostNetwork: false`).
                    None if is_zero(v) => {}
                    None => found.push(child),
                    Some(h) if quantities => {
                        if !same_quantity(h, v) {
                            found.push(child);
                        }
                    }
                    Some(h) => differences_under(h, v, k, &child, found, limit),
                }
            }
        }
        Value::Array(wanted) => {
            let Value::Array(have) = live else {
                found.push(path.to_owned());
                return;
            };
            if have.len() != wanted.len() {
                found.push(path.to_owned());
                return;
            }
            for (i, (w, h)) in wanted.iter().zip(have).enumerate() {
                differences_under(h, w, key, &format!("{path}[{i}]"), found, limit);
            }
        }
        Value::Number(w) => match live {
            Value::Number(h) if h.as_f64() == w.as_f64() => {}
            _ => found.push(path.to_owned()),
        },
        _ => {
            if live != desired {
                found.push(path.to_owned());
            }
        }
    }
}

/// Whether a desired value means the same as an absent one: null, `0`,
/// `false`, `""`, or an empty list or object (or one of only such values).
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.values().all(is_zero),
    }
}

/// Compares two quantities by value, since the API server rewrites some
/// (`0.5` is stored as `500m`).
fn same_quantity(live: &Value, desired: &Value) -> bool {
    match (quantity_value(live), quantity_value(desired)) {
        (Some(a), Some(b)) => (a - b).abs() <= f64::EPSILON * 16.0 * a.abs().max(b.abs()).max(1.0),
        _ => live == desired,
    }
}

/// The value of a Kubernetes quantity (`128Mi`, `0.5`, `100m`, `1e3`).
pub fn quantity_value(value: &Value) -> Option<f64> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => return n.as_f64(),
        _ => return None,
    };
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((text.as_str(), 1.0));
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn child(object: Value) -> DesiredChild {
        DesiredChild::new("ConfigMap", object)
    }

    fn live_after_apply(desired: &DesiredChild) -> Value {
        let mut live = desired.object.clone();
        live["metadata"]["uid"] = json!("u1");
        live["metadata"]["resourceVersion"] = json!("7");
        live
    }

    #[test]
    fn a_missing_child_is_created() {
        assert_eq!(plan(&child(json!({"metadata": {"name": "a"}})), None), Step::Create);
    }

    #[test]
    fn server_defaults_and_extra_fields_are_not_drift() {
        let desired = DesiredChild::new(
            "Service",
            json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}], "type": "NodePort"}}),
        );
        let mut live = live_after_apply(&desired);
        live["spec"]["ports"][0]["nodePort"] = json!(30080);
        live["spec"]["ports"][0]["protocol"] = json!("TCP");
        live["spec"]["clusterIP"] = json!("10.0.0.1");
        live["metadata"]["labels"] = json!({"added-by-someone": "x"});
        assert_eq!(plan(&desired, Some(&live)), Step::UpToDate);
    }

    #[test]
    fn an_update_names_the_fields_it_changes_but_not_the_hash() {
        let before = DesiredChild::new(
            "StatefulSet",
            json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "template": {"spec": {"volumes": [
                {"name": "config", "configMap": {"name": "web-config-aaaaaaaaaa"}}]}}}}),
        );
        let mut after = before.object.clone();
        after["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = json!("another");
        after["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = json!("web-config-bbbbbbbbbb");
        after["spec"]["replicas"] = json!(3);
        assert_eq!(
            changed_fields(&after, &before.object, 5),
            ["spec.replicas", "spec.template.spec.volumes[0].configMap.name"]
        );
        assert_eq!(changed_fields(&after, &before.object, 1), ["spec.replicas"]);
        let mut only_hash = before.object.clone();
        only_hash["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = json!("another");
        assert!(changed_fields(&only_hash, &before.object, 5).is_empty());
    }

    #[test]
    fn zero_values_the_api_server_leaves_out_are_not_drift() {
        let desired = DesiredChild::new(
            "StatefulSet",
            json!({"metadata": {"name": "a"}, "spec": {"minReadySeconds": 0, "replicas": 2,
                "template": {"spec": {"hostNetwork": false, "volumes": [], "securityContext": {"runAsGroup": 0}}}}}),
        );
        let mut live = live_after_apply(&desired);
        live["spec"] = json!({"replicas": 2, "template": {"spec": {}}});
        assert_eq!(plan(&desired, Some(&live)), Step::UpToDate);
        live["spec"]["minReadySeconds"] = json!(5);
        assert_eq!(
            plan(&desired, Some(&live)),
            Step::RestoreDrift {
                path: "spec.minReadySeconds".into()
            }
        );
    }

    #[test]
    fn a_gated_field_the_api_server_dropped_is_not_drift() {
        let desired = DesiredChild::new(
            "StatefulSet",
            json!({"metadata": {"name": "a"}, "spec": {"replicas": 3,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}}}),
        );
        let mut live = live_after_apply(&desired);
        live["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
        assert_eq!(
            dropped_by_server(&desired.object, &live),
            vec!["/spec/updateStrategy/rollingUpdate/maxUnavailable"]
        );
        assert_eq!(plan(&desired, Some(&live)), Step::UpToDate);
        live["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = json!(1);
        assert!(dropped_by_server(&desired.object, &live).is_empty());
        assert!(matches!(plan(&desired, Some(&live)), Step::RestoreDrift { .. }));
    }

    #[test]
    fn only_a_statefulset_update_after_a_service_update_is_dry_run() {
        let drift = || Step::RestoreDrift { path: "x".into() };
        let kinds = ["Service", "Service", "ConfigMap", "StatefulSet"];
        let runs = |steps: [Step; 4]| dry_runs(&kinds.iter().copied().zip(steps.iter()).collect::<Vec<_>>());
        // A new app: created children are deleted again if a later one is refused.
        assert_eq!(
            runs([Step::Create, Step::Create, Step::Create, Step::Create]),
            [false; 4]
        );
        // A new config and a scale: the new ConfigMap changes nothing in use.
        assert_eq!(
            runs([Step::UpToDate, Step::UpToDate, Step::Create, Step::Update]),
            [false; 4]
        );
        // A port change: the Service is updated in place, so the StatefulSet
        // is tried first.
        assert_eq!(
            runs([Step::Update, Step::UpToDate, Step::UpToDate, drift()]),
            [false, false, false, true]
        );
        let recreate = Step::Recreate {
            fields: vec!["podManagementPolicy"],
        };
        assert_eq!(
            runs([Step::Update, Step::UpToDate, Step::UpToDate, recreate]),
            [false; 4]
        );
    }

    #[test]
    fn quantities_compare_by_value() {
        let desired =
            child(json!({"metadata": {"name": "a"}, "resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}}}));
        let mut live = live_after_apply(&desired);
        live["resources"]["requests"] = json!({"cpu": "500m", "memory": "1024Mi"});
        assert_eq!(plan(&desired, Some(&live)), Step::UpToDate);
        live["resources"]["requests"]["cpu"] = json!("600m");
        assert_eq!(
            plan(&desired, Some(&live)),
            Step::RestoreDrift {
                path: "resources.requests.cpu".into()
            }
        );
    }

    #[test]
    fn a_hand_edit_of_an_owned_field_is_drift_with_its_path() {
        let desired = child(json!({"metadata": {"name": "a"}, "data": {"k": "v"}, "list": [1, 2]}));
        let mut live = live_after_apply(&desired);
        live["data"]["k"] = json!("edited");
        assert_eq!(
            plan(&desired, Some(&live)),
            Step::RestoreDrift { path: "data.k".into() }
        );
        let mut live = live_after_apply(&desired);
        live["list"] = json!([1]);
        assert_eq!(plan(&desired, Some(&live)), Step::RestoreDrift { path: "list".into() });
    }

    #[test]
    fn a_changed_desired_object_is_an_update_even_when_it_only_drops_a_field() {
        let before = child(json!({"metadata": {"name": "a"}, "data": {"k": "v", "old": "x"}}));
        let live = live_after_apply(&before);
        let after = child(json!({"metadata": {"name": "a"}, "data": {"k": "v"}}));
        assert_eq!(plan(&after, Some(&live)), Step::Update);
    }

    #[test]
    fn immutable_statefulset_fields_call_for_a_recreate() {
        let sts = |policy: &str| {
            DesiredChild::new(
                "StatefulSet",
                json!({"metadata": {"name": "a"}, "spec": {"podManagementPolicy": policy, "replicas": 1}}),
            )
        };
        let live = live_after_apply(&sts("OrderedReady"));
        assert_eq!(
            plan(&sts("Parallel"), Some(&live)),
            Step::Recreate {
                fields: vec!["podManagementPolicy"]
            }
        );
    }

    #[test]
    fn the_hash_is_stable_and_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"d": 2, "c": 3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"c": 3, "d": 2}, "b": 1}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_eq!(content_hash(&a).len(), 16);
    }

    #[test]
    fn quantity_values() {
        assert_eq!(quantity_value(&json!("128Mi")), Some(134_217_728.0));
        assert_eq!(quantity_value(&json!("1e3")), Some(1000.0));
        assert_eq!(quantity_value(&json!(2)), Some(2.0));
        assert_eq!(quantity_value(&json!("lots")), None);
    }
}
