//! `visitcounter render`: the children of `VisitCounterApp` objects, offline,
//! as one multi-document YAML stream ready for `kubectl apply -f -`.
//!
//! Every document is admitted before anything is printed, so a bad input gives
//! no output at all, never half a stream.

use serde_json::Value;

use crate::{
    admission::{Admission, Rejected},
    children::{BuildError, BuildSettings, Children, desired_children},
};

/// Why an input could not be rendered. `input` names the input (a path or
/// `<stdin>`).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{input}: not valid YAML: {message}")]
    Yaml { input: String, message: String },
    #[error("{input}: no VisitCounterApp found (the input is empty)")]
    Empty { input: String },
    #[error("{input}: {document} is not a valid VisitCounterApp:\n{}", indented(.rejected))]
    Rejected {
        input: String,
        document: String,
        rejected: Rejected,
    },
    #[error("{input}: {document}: {error}")]
    Build {
        input: String,
        document: String,
        error: BuildError,
    },
    #[error("cannot write the children as YAML: {0}")]
    Serialize(#[from] serde_saphyr::SerializeError),
}

/// Renders every `VisitCounterApp` in the YAML stream `input`.
pub fn render(
    input: &str,
    source: &str,
    admission: &Admission,
    settings: &BuildSettings,
) -> Result<String, RenderError> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(input)
        .map_err(|e| RenderError::Yaml {
            input: source.into(),
            message: e.to_string(),
        })?
        .into_iter()
        .filter(|doc: &Value| !doc.is_null())
        .collect();
    if documents.is_empty() {
        return Err(RenderError::Empty { input: source.into() });
    }
    let mut all = Vec::with_capacity(documents.len());
    for (index, document) in documents.iter().enumerate() {
        let label = describe_document(index, documents.len(), document);
        let app = admission.admit(document).map_err(|rejected| RenderError::Rejected {
            input: source.into(),
            document: label.clone(),
            rejected,
        })?;
        let children = desired_children(&app, settings).map_err(|error| RenderError::Build {
            input: source.into(),
            document: label,
            error,
        })?;
        all.push(children);
    }
    to_yaml_stream(&all)
}

/// The children of each app in apply order, as a YAML stream.
pub fn to_yaml_stream(all: &[Children]) -> Result<String, RenderError> {
    let mut documents = Vec::with_capacity(all.len() * 5);
    for children in all {
        if let Some(account) = &children.service_account {
            documents.push(serde_saphyr::to_string(account)?);
        }
        documents.push(serde_saphyr::to_string(&children.config_map)?);
        documents.push(serde_saphyr::to_string(&children.headless_service)?);
        documents.push(serde_saphyr::to_string(&children.service)?);
        for second in [&children.preview, &children.shadow].into_iter().flatten() {
            documents.push(serde_saphyr::to_string(&second.service)?);
        }
        if let Some(traffic) = &children.traffic {
            if let Some(versions) = &traffic.versions {
                documents.push(serde_saphyr::to_string(&versions.stable)?);
                documents.push(serde_saphyr::to_string(&versions.canary)?);
            }
            documents.push(serde_saphyr::to_string(&traffic.route)?);
        }
        documents.push(serde_saphyr::to_string(&children.stateful_set)?);
    }
    Ok(documents.join("---\n"))
}

fn describe_document(index: usize, count: usize, document: &Value) -> String {
    let name = document.pointer("/metadata/name").and_then(Value::as_str);
    match (count, name) {
        (1, Some(name)) => format!("\"{name}\""),
        (1, None) => "the document".into(),
        (_, Some(name)) => format!("document {} (\"{name}\")", index + 1),
        (_, None) => format!("document {}", index + 1),
    }
}

/// One problem a line, indented under the document it belongs to.
fn indented(rejected: &Rejected) -> String {
    let lines: Vec<String> = rejected.0.iter().map(|p| format!("  {p}")).collect();
    lines.join("\n")
}
