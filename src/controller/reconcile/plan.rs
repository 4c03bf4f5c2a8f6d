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

use super::desired::uncontrolled;
use crate::controller::{
    runtime::diff::{contains, content_hash, differences_under, first_difference},
    status::dropped_by_server,
};

/// Annotation on each child: the hash of the object last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "visitcounter.dev/applied-hash";

/// StatefulSet fields the API server refuses to change in place.
pub const IMMUTABLE_STATEFULSET_FIELDS: &[&str] =
    &["podManagementPolicy", "serviceName", "selector", "volumeClaimTemplates"];

/// What a re-create of a StatefulSet the app takes over changes.
pub const TAKEN_OVER: &str = "its owner (taken over, as visitcounter.dev/adopt says)";

/// A desired child, ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredChild {
    pub kind: &'static str,
    pub name: String,
    /// The object with its hash annotation.
    pub object: Value,
    pub hash: String,
    /// The resourceVersion of the live object a decision about this child
    /// read, when the write must not land on a newer one (a blue/green
    /// switch): sent with the apply, which the API server then refuses
    /// with 409 Conflict if the object changed since. Not hashed.
    pub precondition: Option<String>,
}

impl DesiredChild {
    /// Stamps `object` with the hash of its content.
    pub fn new(kind: &'static str, mut object: Value) -> Self {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let precondition = object["metadata"]
            .as_object_mut()
            .and_then(|meta| meta.remove("resourceVersion"))
            .and_then(|v| v.as_str().map(str::to_owned));
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
            precondition,
        }
    }
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
/// The write order (`desired::desired`, which says why) makes most dry runs
/// needless. What it leaves is an update of an existing Service or
/// ServiceAccount followed by an update of the StatefulSet: the StatefulSet
/// is tried first then. A re-create has its own sequence and is never
/// dry-run.
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
    if desired.kind == "StatefulSet" && uncontrolled(live) && !uncontrolled(&desired.object) {
        // One nothing controls, the app takes over (`desired::check_owned`
        // let it): as its own, from its own selector.
        return Step::Recreate {
            fields: vec![TAKEN_OVER],
        };
    }
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
    fn a_resource_version_is_a_precondition_of_the_write_not_part_of_the_object() {
        let object = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}}});
        let mut read = object.clone();
        read["metadata"]["resourceVersion"] = json!("41");
        let (plain, pinned) = (DesiredChild::new("Service", object), DesiredChild::new("Service", read));
        assert_eq!(pinned.precondition.as_deref(), Some("41"));
        assert_eq!(plain.precondition, None);
        assert_eq!(pinned.hash, plain.hash);
        assert_eq!(pinned.object, plain.object);
    }

    #[test]
    fn the_hash_is_stable_and_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"d": 2, "c": 3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"c": 3, "d": 2}, "b": 1}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_eq!(content_hash(&a).len(), 16);
    }
}
