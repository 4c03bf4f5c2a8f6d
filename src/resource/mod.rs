//! The `VisitCounterApp` custom resource: its spec, its status, and the schema
//! helpers that make the generated CRD structural and self-describing.

mod schema;
mod spec;
mod status;

pub use spec::*;
pub use status::*;

/// API group of the custom resource.
pub const GROUP: &str = "visitcounter.dev";
/// API version of the custom resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "visitcounter.dev/v1alpha1";
/// Kind of the custom resource.
pub const KIND: &str = "VisitCounterApp";
/// `visitcounter.dev/paused: "true"` on an app stops the operator from
/// changing its children until the annotation is removed.
pub const PAUSED_ANNOTATION: &str = "visitcounter.dev/paused";

impl VisitCounterApp {
    /// Whether the app carries `visitcounter.dev/paused: "true"`.
    pub fn is_paused(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PAUSED_ANNOTATION))
            .is_some_and(|v| v == "true")
    }
}
