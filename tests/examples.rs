//! Every example is a valid `VisitCounterApp`, checked two ways: as written,
//! against the generated CRD schema with a JSON Schema validator; and through
//! the same admission (defaults and CEL rules) that `render` uses. The rendered
//! children of each example are pinned by snapshots.

use std::path::{Path, PathBuf};

use serde_json::Value;
use visitcounter::{
    admission::{Admission, openapi::to_json_schema},
    children::BuildSettings,
    crd,
    render::render,
};

fn app_examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.contains("kind: VisitCounterApp")
        })
        .collect();
    files.sort();
    files
}

/// Every document of every app example, with the file it came from.
fn app_documents() -> Vec<(PathBuf, Value)> {
    app_examples()
        .into_iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
            documents.into_iter().map(move |d| (path.clone(), d))
        })
        .collect()
}

#[test]
fn the_three_examples_are_there() {
    let names: Vec<String> = app_examples()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["app-go.yaml", "app-python.yaml", "minimal.yaml"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}

#[test]
fn every_example_validates_against_the_crd_schema_as_written() {
    let validator = jsonschema::validator_for(&to_json_schema(&crd::openapi_schema())).unwrap();
    for (path, document) in app_documents() {
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn every_example_passes_admission_and_the_cel_rules() {
    let admission = Admission::new();
    for (path, document) in app_documents() {
        if let Err(rejected) = admission.admit(&document) {
            panic!("{}: {rejected}", path.display());
        }
    }
}

#[test]
fn rendered_children_of_every_example() {
    let admission = Admission::new();
    for path in app_examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let rendered = render(&text, &name, &admission, &BuildSettings::default()).unwrap();
        insta::assert_snapshot!(format!("render_{name}"), rendered);
    }
}

/// The seed's charts, as the examples reproduce them: ports, replicas,
/// resources, volumes, policy, partition, service account and Vault
/// annotations.
#[test]
fn examples_reproduce_the_seed_charts() {
    let admission = Admission::new();
    for (file, port, account) in [
        ("app-python.yaml", 8080, "app-python"),
        ("app-go.yaml", 8081, "internal-app"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(file);
        let document: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let app = admission.admit(&document).unwrap();
        let spec = &app.spec;
        assert_eq!((spec.port, spec.replicas), (port, 3), "{file}");
        assert_eq!(spec.resources.requests.cpu.as_ref().unwrap().0, "100m");
        assert_eq!(spec.resources.limits.memory.as_ref().unwrap().0, "128Mi");
        assert_eq!(spec.storage.size.0, "62Mi");
        assert_eq!(spec.pod_management_policy.as_str(), "Parallel");
        let partition = spec.update_strategy.rolling_update.as_ref().unwrap().partition;
        assert_eq!(partition, Some(0), "{file}");
        assert_eq!(spec.service.type_.as_str(), "NodePort");
        assert_eq!(spec.service_account_name.as_deref(), Some(account));
        assert_eq!(spec.config.json_env_var.as_deref(), Some("LAB12_KEY"));
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/app-go.yaml");
    let document: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let app = admission.admit(&document).unwrap();
    assert_eq!(app.spec.pod_annotations["vault.hashicorp.com/agent-inject"], "true");
    assert_eq!(app.spec.pod_annotations["vault.hashicorp.com/role"], "internal-app");
}
