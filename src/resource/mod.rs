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
