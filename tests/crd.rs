//! The committed CRD is what the binary prints, and its CEL rules compile and
//! use only what a CRD rule may. Whether the API server accepts them (its cost
//! budget among other things) only the API server can say: `tests/e2e/`
//! installs the CRD on a real one. kube's estimator passed rules that
//! Kubernetes 1.36 refused.

use std::{path::Path, process::Command};

use kube::core::cel::{ScopeContext, analyze_rule, compile_schema};
use serde_json::Value;

const COMMITTED: &str = include_str!("../crds/visitcounterapp.yaml");

#[test]
fn committed_crd_is_what_visitcounter_crd_prints() {
    let output = Command::new(env!("CARGO_BIN_EXE_visitcounter"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed == COMMITTED,
        "crds/visitcounterapp.yaml is stale: run `cargo run -- crd > crds/visitcounterapp.yaml`"
    );
}

/// Helm installs the chart's `crds/` copy; it must be the same bytes.
#[test]
fn the_charts_crd_is_the_committed_crd() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/visitcounter-operator/crds/visitcounterapp.yaml");
    let copy = std::fs::read_to_string(&chart).unwrap();
    assert!(
        copy == COMMITTED,
        "{} differs from crds/visitcounterapp.yaml: copy it over",
        chart.display()
    );
}

/// The chart's appVersion is the default image tag the Deployment runs, and
/// the operator's own default app image is tagged with the crate's version.
#[test]
fn the_charts_versions_are_the_crates() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/visitcounter-operator/Chart.yaml");
    let chart: Value = serde_saphyr::from_str(&std::fs::read_to_string(chart).unwrap()).unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn crd_names_subresources_and_columns() {
    let crd: Value = serde_saphyr::from_str(COMMITTED).unwrap();
    assert_eq!(crd["metadata"]["name"], "visitcounterapps.visitcounter.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["vca"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    assert_eq!(version["subresources"]["scale"]["specReplicasPath"], ".spec.replicas");
    assert_eq!(
        version["subresources"]["scale"]["labelSelectorPath"],
        ".status.selector"
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Replicas", "Ready", "Step", "NodePort", "Age"]);
}

/// Every property under `spec` carries a description, for `kubectl explain`.
#[test]
fn every_spec_field_is_described() {
    fn walk(path: &str, node: &Value, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                if child.get("description").is_none() {
                    missing.push(child_path.clone());
                }
                walk(&child_path, child, missing);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = node.get(key) {
                walk(&format!("{path}[]"), child, missing);
            }
        }
    }
    let schema = visitcounter::crd::openapi_schema();
    let mut missing = Vec::new();
    walk("spec", &schema["properties"]["spec"], &mut missing);
    walk("status", &schema["properties"]["status"], &mut missing);
    assert!(missing.is_empty(), "fields without a description: {missing:?}");
}

/// kube's analyzer does not know the variables a macro binds (`s` in
/// `list.all(s, ...)`) and calls them unavailable; the API server, which
/// e2e installs the CRD on, is the judge of those.
fn about_a_macro_variable(rule: &str, message: &str) -> bool {
    let Some(name) = message
        .strip_prefix("variable '")
        .and_then(|rest| rest.split_once('\''))
        .map(|(name, _)| name)
    else {
        return false;
    };
    ["all", "exists", "exists_one", "map", "filter"]
        .iter()
        .any(|m| rule.contains(&format!(".{m}({name},")))
}

#[test]
fn every_cel_rule_compiles_for_a_crd() {
    fn walk(path: &str, node: &Value, found: &mut usize, problems: &mut Vec<String>) {
        let Some(object) = node.as_object() else { return };
        if let Some(Value::Array(rules)) = object.get("x-kubernetes-validations") {
            let compiled = compile_schema(node);
            for error in compiled.compilation_errors() {
                problems.push(format!("{path}: {error}"));
            }
            for rule in rules {
                *found += 1;
                let rule = rule["rule"].as_str().unwrap();
                for warning in analyze_rule(rule, &compiled, ScopeContext::CrdValidation) {
                    if !about_a_macro_variable(rule, &warning.message) {
                        problems.push(format!("{path}: {rule}: {}", warning.message));
                    }
                }
            }
        }
        if let Some(Value::Object(props)) = object.get("properties") {
            for (name, child) in props {
                walk(&format!("{path}.{name}"), child, found, problems);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = object.get(key) {
                walk(&format!("{path}[]"), child, found, problems);
            }
        }
    }
    let mut found = 0;
    let mut problems = Vec::new();
    walk("", &visitcounter::crd::openapi_schema(), &mut found, &mut problems);
    assert!(found >= 10, "expected the CRD's CEL rules, found {found}");
    assert!(problems.is_empty(), "{problems:#?}");
}
