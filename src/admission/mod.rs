//! Admission of a `VisitCounterApp` written by a user, before anything is built
//! from it: the checks the API server makes on `kubectl apply`, in its order.
//!
//! 1. unknown fields are refused;
//! 2. schema defaults are applied;
//! 3. the structural schema (types, enums, ranges, patterns) is checked;
//! 4. the CEL `x-kubernetes-validations` are evaluated, by kube's own CEL
//!    evaluator over the generated CRD, so the rules are written once.
//!
//! `render` admits its input with this, so a file that `render` accepts is one
//! the API server accepts, and the other way round.

pub mod openapi;

use std::fmt;

use kube::core::cel::Validator;
use serde_json::Value;

use crate::{
    crd,
    resource::{API_VERSION, KIND, VisitCounterApp},
};

/// One thing wrong with an object, at a field path such as
/// `spec.updateStrategy.rollingUpdate.partition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field; empty for the object as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found with an object. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Rejected(pub Vec<Problem>);

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// The admission checks, compiled once for the CRD this binary was built with.
pub struct Admission {
    openapi: Value,
    structural: jsonschema::Validator,
    cel: Validator,
}

impl Admission {
    pub fn new() -> Self {
        let openapi = crd::openapi_schema();
        // The schema is generated from our own types; failing to compile it is a
        // bug caught by every test, not a user error.
        let structural = jsonschema::validator_for(&openapi::to_json_schema(&openapi))
            .expect("the generated CRD schema compiles as JSON Schema");
        Self {
            openapi,
            structural,
            cel: Validator::new(),
        }
    }

    /// Checks `object` as the API server would on create, and returns it with
    /// every schema default applied.
    pub fn admit(&self, object: &Value) -> Result<VisitCounterApp, Rejected> {
        self.admit_update(object, None)
    }

    /// Checks `object` as the API server would when it replaces `old`: the
    /// transition rules (those that read `oldSelf`, such as the one that
    /// refuses to shrink `storage.size`) apply only then.
    pub fn admit_update(&self, object: &Value, old: Option<&Value>) -> Result<VisitCounterApp, Rejected> {
        let mut problems = identity_problems(object);
        if !problems.is_empty() {
            return Err(Rejected(problems));
        }
        let defaulted = kube::core::cel::apply_defaults(&self.openapi, object);
        problems.extend(
            self.structural
                .iter_errors(&defaulted)
                .flat_map(|e| structural_problems(&e, &defaulted)),
        );
        if problems.is_empty()
            && let Err(errors) = self.cel.validate(
                &self.openapi,
                &defaulted,
                old.map(|o| kube::core::cel::apply_defaults(&self.openapi, o)).as_ref(),
            )
        {
            problems.extend(errors.iter().map(|e| Problem {
                path: e.field_path.clone(),
                message: e.message.clone(),
            }));
        }
        if !problems.is_empty() {
            problems.sort_by(|a, b| a.path.cmp(&b.path));
            problems.dedup();
            return Err(Rejected(problems));
        }
        serde_json::from_value(defaulted).map_err(|e| {
            Rejected(vec![Problem {
                path: String::new(),
                message: format!("does not decode as a {KIND}: {e}"),
            }])
        })
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self::new()
    }
}

/// The object must be a `VisitCounterApp` with a name before anything else is
/// worth checking.
fn identity_problems(object: &Value) -> Vec<Problem> {
    let problem = |path: &str, message: String| Problem {
        path: path.into(),
        message,
    };
    let Some(map) = object.as_object() else {
        return vec![problem(
            "",
            format!("expected a {KIND} object, found {}", describe(object)),
        )];
    };
    let mut problems = Vec::new();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => problems.push(problem("apiVersion", format!("expected {API_VERSION}, found {other}"))),
        None => problems.push(problem("apiVersion", format!("Required value: expected {API_VERSION}"))),
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(KIND) => {}
        Some(other) => problems.push(problem("kind", format!("expected {KIND}, found {other}"))),
        None => problems.push(problem("kind", format!("Required value: expected {KIND}"))),
    }
    match map.get("metadata").and_then(|m| m.get("name")) {
        Some(Value::String(name)) if !name.is_empty() => {}
        Some(Value::String(_)) | None => problems.push(problem("metadata.name", "Required value".into())),
        Some(other) => problems.push(problem(
            "metadata.name",
            format!("expected a string, found {}", describe(other)),
        )),
    }
    problems
}

fn structural_problems(error: &jsonschema::ValidationError<'_>, instance: &Value) -> Vec<Problem> {
    let path = dotted_path(error.instance_path().as_str(), instance);
    match error.kind() {
        jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|field| Problem {
                path: join(&path, field),
                message: "unknown field".into(),
            })
            .collect(),
        _ => vec![Problem {
            path,
            message: error.to_string(),
        }],
    }
}

/// `/spec/storage/accessModes/0` in `instance` as `spec.storage.accessModes[0]`.
fn dotted_path(pointer: &str, instance: &Value) -> String {
    let mut path = String::new();
    let mut node = Some(instance);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match node {
            Some(Value::Array(items)) => {
                path.push_str(&format!("[{segment}]"));
                node = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                node = other.and_then(|n| n.get(&segment));
                path = join(&path, &segment);
            }
        }
    }
    path
}

fn join(path: &str, field: &str) -> String {
    let simple = !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), simple) {
        (true, true) => field.to_owned(),
        (false, true) => format!("{path}.{field}"),
        (_, false) => format!("{path}[{field}]"),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn admit(spec: Value) -> Result<VisitCounterApp, Rejected> {
        Admission::new().admit(&json!({
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "web"}, "spec": spec
        }))
    }

    fn problems(spec: Value) -> Vec<String> {
        admit(spec)
            .expect_err("the spec is refused")
            .0
            .iter()
            .map(Problem::to_string)
            .collect()
    }

    #[test]
    fn an_empty_spec_is_admitted_with_every_default() {
        let app = admit(json!({})).unwrap();
        assert_eq!(app.spec.replicas, 1);
        assert_eq!(app.spec.port, 8080);
        assert_eq!(app.spec.storage.size.0, "1Gi");
        assert_eq!(app.spec.probes.liveness.path.as_deref(), Some("/healthz"));
        assert_eq!(app.spec.probes.liveness.period_seconds, 10);
    }

    #[test]
    fn defaults_fill_in_below_what_the_user_wrote() {
        let app = admit(json!({"probes": {"liveness": {"periodSeconds": 5}}})).unwrap();
        assert_eq!(app.spec.probes.liveness.period_seconds, 5);
        assert_eq!(app.spec.probes.liveness.failure_threshold, 3);
        assert_eq!(app.spec.probes.readiness.path.as_deref(), Some("/readyz"));
    }

    #[test]
    fn partition_above_replicas_is_refused_by_the_cel_rule() {
        assert_eq!(
            problems(json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"partition": 5}}})),
            ["spec.updateStrategy.rollingUpdate.partition: 5 is greater than spec.replicas (3)"]
        );
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        assert_eq!(
            problems(json!({"sevice": {}, "storage": {"sise": "1Gi"}})),
            ["spec.sevice: unknown field", "spec.storage.sise: unknown field"]
        );
    }

    #[test]
    fn free_form_config_json_keeps_unknown_fields() {
        let app = admit(json!({"config": {"json": {"anything": {"goes": [1, 2]}}}})).unwrap();
        assert_eq!(app.spec.config.json["anything"]["goes"], json!([1, 2]));
    }

    #[test]
    fn ranges_and_enums_are_checked() {
        assert_eq!(
            problems(json!({"replicas": -1})),
            ["spec.replicas: -1 is less than the minimum of 0"]
        );
        assert_eq!(
            problems(json!({"service": {"nodePort": 80}})),
            ["spec.service.nodePort: 80 is less than the minimum of 30000"]
        );
        let policy = problems(json!({"podManagementPolicy": "Sometimes"}));
        assert_eq!(policy.len(), 1);
        assert!(
            policy[0].starts_with("spec.podManagementPolicy: \"Sometimes\" is not one of"),
            "{policy:?}"
        );
    }

    #[test]
    fn node_port_needs_a_node_port_service() {
        assert_eq!(
            problems(json!({"service": {"type": "ClusterIP", "nodePort": 30080}})),
            ["spec.service.nodePort: service.nodePort can only be set when service.type is NodePort or LoadBalancer"]
        );
    }

    #[test]
    fn quantities_must_parse_and_requests_fit_in_limits() {
        assert_eq!(
            problems(json!({"storage": {"size": "lots"}})),
            ["spec.storage.size: must be a Kubernetes quantity such as 100m, 128Mi or 1Gi"]
        );
        assert_eq!(
            problems(json!({"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "128Mi"}}})),
            ["spec.resources.requests.memory: the memory request must not be greater than the memory limit"]
        );
    }

    #[test]
    fn storage_can_grow_but_not_shrink() {
        let app = |size: &str| {
            json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "web"},
                   "spec": {"storage": {"size": size}}})
        };
        let admission = Admission::new();
        assert!(admission.admit_update(&app("2Gi"), Some(&app("1Gi"))).is_ok());
        assert!(admission.admit_update(&app("1024Mi"), Some(&app("1Gi"))).is_ok());
        assert_eq!(
            admission
                .admit_update(&app("500Mi"), Some(&app("1Gi")))
                .unwrap_err()
                .to_string(),
            "spec.storage.size: storage.size cannot shrink from 1Gi to 500Mi: Kubernetes can grow a volume but never \
             make it smaller, and the visit counts live on it"
        );
        // The default counts as the old size when the old spec had none.
        let unset = json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "web"}, "spec": {}});
        assert!(admission.admit_update(&app("512Mi"), Some(&unset)).is_err());
        // On create there is nothing to shrink from.
        assert!(admission.admit(&app("1Mi")).is_ok());
    }

    #[test]
    fn canary_replicas_and_partition_exclude_each_other() {
        assert!(admit(json!({"updateStrategy": {"rollingUpdate": {"canaryReplicas": 1}}})).is_ok());
        assert_eq!(
            problems(
                json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"canaryReplicas": 1, "partition": 2}}})
            ),
            vec![
                "spec.updateStrategy.rollingUpdate.canaryReplicas: set either partition or canaryReplicas, not both: \
                 canaryReplicas sets the partition to replicas - canaryReplicas"
            ]
        );
    }

    #[test]
    fn the_claim_template_name_is_kept_and_cannot_be_config() {
        let admission = Admission::new();
        let app = |claims: &str| {
            json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "web"},
                   "spec": {"storage": {"claimTemplateName": claims}}})
        };
        assert!(admission.admit(&app("python-counter-data")).is_ok());
        let changed = admission
            .admit_update(&app("other"), Some(&app("python-counter-data")))
            .unwrap_err()
            .to_string();
        assert!(changed.contains("storage.claimTemplateName cannot change"), "{changed}");
        let config = admission.admit(&app("config")).unwrap_err().to_string();
        assert!(config.contains("cannot be config"), "{config}");
    }

    #[test]
    fn steps_are_admitted_alone_and_refused_beside_what_they_set() {
        let steps = json!([{"replicas": 1}, {"pauseSeconds": 60}, {"replicas": 2}]);
        assert!(
            admit(
                json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"steps": steps, "abortAction": "Rollback"}}})
            )
            .is_ok()
        );
        for (other, why) in [
            (
                json!({"partition": 1}),
                "set either steps or partition, not both: the steps set the partition",
            ),
            (
                json!({"canaryReplicas": 1}),
                "set either steps or canaryReplicas, not both: a step of replicas is a canary of that many pods",
            ),
            (
                json!({"maxUnavailable": 2}),
                "set either steps or maxUnavailable, not both: the steps set the pace",
            ),
        ] {
            let mut rolling = other.clone();
            rolling["steps"] = steps.clone();
            assert_eq!(
                problems(json!({"replicas": 3, "updateStrategy": {"rollingUpdate": rolling}})),
                [format!("spec.updateStrategy.rollingUpdate.steps: {why}")],
                "{other}"
            );
        }
    }

    #[test]
    fn a_step_above_the_replicas_or_of_two_kinds_is_refused() {
        assert_eq!(
            problems(json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"steps": [{"replicas": 4}]}}})),
            ["spec.updateStrategy.rollingUpdate.steps: a step asks for more pods than spec.replicas (3)"]
        );
        assert_eq!(
            problems(json!({"updateStrategy": {"rollingUpdate": {"steps": [{"replicas": 1, "pauseSeconds": 5}]}}})),
            ["spec.updateStrategy.rollingUpdate.steps[0]: a step sets exactly one of replicas and pauseSeconds"]
        );
        assert_eq!(
            problems(json!({"updateStrategy": {"rollingUpdate": {"abortAction": "Rollback"}}})),
            [
                "spec.updateStrategy.rollingUpdate.abortAction: abortAction applies to a rollout in steps: set rollingUpdate.steps"
            ]
        );
        assert_eq!(
            problems(json!({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {"steps": [{"replicas": 1}]}}})),
            [
                "spec.updateStrategy.rollingUpdate: updateStrategy.rollingUpdate can only be set when updateStrategy.type is RollingUpdate"
            ]
        );
    }

    #[test]
    fn an_ab_test_takes_one_match_and_a_rolling_update_without_a_weight() {
        let ab = |matched: serde_json::Value| json!({"parentRef": {"name": "edge"}, "abTest": {"match": matched}});
        let header = json!({"header": {"name": "X-Variant", "value": "b"}});
        assert!(admit(json!({"traffic": ab(header.clone())})).is_ok());
        let both = json!({"header": {"name": "X-Variant", "value": "b"}, "cookie": {"name": "v", "value": "b"}});
        assert_eq!(
            problems(json!({"traffic": ab(both)})),
            ["spec.traffic.abTest.match: traffic.abTest.match takes exactly one of header and cookie"]
        );
        assert_eq!(
            problems(json!({"traffic": ab(json!({}))})),
            ["spec.traffic.abTest.match: traffic.abTest.match takes exactly one of header and cookie"]
        );
        let mut weighted = ab(header.clone());
        weighted["canaryWeight"] = json!(10);
        assert_eq!(
            problems(json!({"traffic": weighted})),
            [
                "spec.traffic.abTest: traffic.abTest and traffic.canaryWeight each decide where requests go during a rolling update; set one of them"
            ]
        );
        assert_eq!(
            problems(json!({"updateStrategy": {"type": "BlueGreen"}, "traffic": ab(header)})),
            [
                "spec.traffic.abTest: traffic.abTest splits requests between the pods of a rolling update held by rollingUpdate.partition or canaryReplicas; updateStrategy.type must be RollingUpdate"
            ]
        );
        let cookie = json!({"cookie": {"name": "variant", "value": "b;x"}});
        assert_eq!(
            problems(json!({"traffic": ab(cookie)})).len(),
            1,
            "a cookie value with ';' is refused"
        );
    }

    #[test]
    fn a_shadow_needs_a_route_and_takes_no_canary_weight() {
        assert_eq!(
            problems(json!({"updateStrategy": {"type": "Shadow"}})),
            [
                "spec.updateStrategy.type: updateStrategy.type Shadow sends a copy of every request to the new template's pods through the app's HTTPRoute: set spec.traffic"
            ]
        );
        let traffic = json!({"parentRef": {"name": "edge"}, "canaryWeight": 10});
        assert_eq!(
            problems(json!({"updateStrategy": {"type": "Shadow"}, "traffic": traffic})),
            [
                "spec.traffic.canaryWeight: traffic.canaryWeight splits requests during a rolling update; under Shadow every answer comes from the current pods"
            ]
        );
        assert!(
            admit(json!({"updateStrategy": {"type": "Shadow"}, "traffic": {"parentRef": {"name": "edge"}}})).is_ok()
        );
    }

    #[test]
    fn rolling_update_needs_the_rolling_update_type() {
        assert_eq!(
            problems(json!({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {"partition": 0}}})),
            [
                "spec.updateStrategy.rollingUpdate: updateStrategy.rollingUpdate can only be set when updateStrategy.type is RollingUpdate"
            ]
        );
    }

    #[test]
    fn max_unavailable_is_a_positive_number_or_percentage() {
        assert!(admit(json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}})).is_ok());
        assert!(admit(json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": "25%"}}})).is_ok());
        for bad in [json!(0), json!(-1), json!("0%"), json!("lots")] {
            let found = problems(json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": bad}}}));
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(
                found[0].starts_with("spec.updateStrategy.rollingUpdate.maxUnavailable: "),
                "{found:?}"
            );
        }
    }

    #[test]
    fn operator_labels_and_env_names_are_reserved() {
        let labels = problems(json!({"podLabels": {"app.kubernetes.io/instance": "other"}}));
        assert_eq!(labels.len(), 1);
        assert!(
            labels[0].starts_with("spec.podLabels: podLabels must not set"),
            "{labels:?}"
        );
        for key in ["1BAD", "with-dash"] {
            let env = problems(json!({"config": {"env": [{"name": key, "value": "x"}]}}));
            assert_eq!(env.len(), 1, "{key}: {env:?}");
            assert!(env[0].starts_with("spec.config.env[0].name: \""), "{key}: {env:?}");
            assert!(env[0].contains("does not match"), "{key}: {env:?}");
        }
        assert_eq!(
            problems(json!({"config": {"env": [{"name": "VISITCOUNTER_PORT", "value": "1"}]}})),
            [
                "spec.config.env[0].name: names starting with VISITCOUNTER_ are reserved for the variables the operator sets"
            ]
        );
        let value = problems(json!({"podLabels": {"tier": "not a label value"}}));
        assert_eq!(value.len(), 1, "{value:?}");
        assert!(value[0].starts_with("spec.podLabels.tier: "), "{value:?}");
    }

    #[test]
    fn liveness_success_threshold_must_be_one() {
        assert_eq!(
            problems(json!({"probes": {"liveness": {"successThreshold": 2}}})),
            [
                "spec.probes.liveness.successThreshold: a liveness probe's successThreshold must be 1 (Kubernetes refuses any other value)"
            ]
        );
    }

    #[test]
    fn names_that_cannot_name_the_children_are_refused() {
        let admission = Admission::new();
        for name in ["Web", "9web", &"a".repeat(53)] {
            let object = json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": {}});
            let found = admission.admit(&object).expect_err(name).to_string();
            assert!(
                found.starts_with("metadata.name must be a lowercase DNS label"),
                "{name}: {found}"
            );
        }
        let ok = json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "a".repeat(52)}, "spec": {}});
        assert!(admission.admit(&ok).is_ok());
    }

    #[test]
    fn other_kinds_and_missing_names_are_refused_first() {
        let found = Admission::new()
            .admit(&json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {}}))
            .unwrap_err()
            .to_string();
        assert_eq!(
            found,
            "apiVersion: expected visitcounter.dev/v1alpha1, found apps/v1\n\
             kind: expected VisitCounterApp, found StatefulSet\n\
             metadata.name: Required value"
        );
        let found = Admission::new().admit(&json!("text")).unwrap_err().to_string();
        assert_eq!(found, "expected a VisitCounterApp object, found a string");
    }

    #[test]
    fn dotted_paths_show_indexes_and_odd_keys() {
        let instance = json!({"spec": {"a": [{"b.c": 1}]}});
        assert_eq!(dotted_path("/spec/a/0/b.c", &instance), "spec.a[0][b.c]");
    }
}
