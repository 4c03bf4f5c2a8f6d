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
/// `visitcounter.dev/adopt: "true"` on an app lets the operator take over a
/// StatefulSet and Services of its names that nothing controls (those of a
/// Helm release, say): the StatefulSet is deleted with its pods and claims
/// left, and created again as the app's; the Services are taken over with
/// their node ports. Without it, such objects are refused.
pub const ADOPT_ANNOTATION: &str = "visitcounter.dev/adopt";

impl VisitCounterApp {
    /// Whether the app says the operator may take over objects of its
    /// children's names that nothing controls (`ADOPT_ANNOTATION`).
    pub fn adopts(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ADOPT_ANNOTATION))
            .is_some_and(|v| v == "true")
    }

    /// Whether the app carries `visitcounter.dev/paused: "true"`.
    pub fn is_paused(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PAUSED_ANNOTATION))
            .is_some_and(|v| v == "true")
    }
}
